/**
 * Is the capture thread still processing packets? It stamps a heartbeat on
 * every turn of its loop (at least once a second, as its poll(2) wait is
 * one second at most). A heartbeat that has not moved for STALL_MS while
 * the interface's receive counter (/sys/class/net/IF/statistics/rx_packets)
 * went up means packets arrive and nobody looks at them: /healthz says so
 * with a 503.
 */
import { readSystemFile } from "../../ffi/libc.ts";

/** How long the heartbeat may stand still before the capture counts as stalled. */
export const STALL_MS = 3000;

/** Packets the interface received so far; null when the kernel does not say (e.g. `any`). */
export function rxPackets(device: string): number | null {
  if (!/^[A-Za-z0-9_.:@-]{1,15}$/.test(device)) return null;
  const n = Number(readSystemFile(`/sys/class/net/${device}/statistics/rx_packets`)?.trim());
  return Number.isFinite(n) && n >= 0 ? n : null;
}

/** Tracks the heartbeat against the interface's receive counter. */
export class StallWatch {
  #beat = -1;
  #beatSeenAt = 0;
  #rxAtBeat: number | null = null;

  /**
   * Feeds the latest heartbeat (0 before the loop started) and receive count
   * at time `now`; returns true while the capture is stalled: the heartbeat
   * stood still for STALL_MS while packets kept arriving (or, when the
   * interface gives no count, for STALL_MS at all).
   */
  update(now: number, heartbeat: number, rx: number | null): boolean {
    if (heartbeat !== this.#beat) {
      this.#beat = heartbeat;
      this.#beatSeenAt = now;
      this.#rxAtBeat = rx;
      return false;
    }
    if (heartbeat === 0 || now - this.#beatSeenAt < STALL_MS) return false;
    return rx === null || this.#rxAtBeat === null || rx > this.#rxAtBeat;
  }
}
