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

/**
 * Says when a stall begins and ends: one line each on stderr and a 0/1
 * gauge, so a stall shows without a /healthz probe (or with the metrics off).
 */
export class StallReport {
  #since: number | null = null;

  constructor(
    private readonly device: string,
    private readonly warn: (line: string) => void,
    private readonly gauge: (stalled: 0 | 1) => void,
  ) {}

  /** Feeds the watch's verdict at time `now` (ms). */
  update(now: number, stalled: boolean): void {
    this.gauge(stalled ? 1 : 0);
    if (stalled && this.#since === null) {
      this.#since = now;
      this.warn(
        `capture stalled: the capture thread has not turned its loop for ${
          STALL_MS / 1000
        } s while packets arrive on ${this.device}; nothing is detected until it turns again`,
      );
    } else if (!stalled && this.#since !== null) {
      const s = (now - this.#since + STALL_MS) / 1000;
      this.#since = null;
      this.warn(`capture moving again after about ${s.toFixed(0)} s stalled`);
    }
  }
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
