/**
 * When the kernel need not be re-read: nf_tables numbers its ruleset, and
 * every committed transaction in the namespace moves that generation (a ban
 * or an unban, `nft delete element`, `nft flush`, `iptables -F` with
 * iptables-nft, another program's table). While it stands still since the
 * last full read, that read's list is still what the kernel holds, except
 * for elements that timed out, which the owner's book drops by their ends
 * as it did after the read; the read is then skipped and nothing is taken
 * again (with 10,000 bans, taking the same list every 5 s cost more than
 * the rest of an idle daemon). Asking costs one netlink round trip (tens of µs);
 * a full read costs a child process (`nft -j list table`, `iptables -S`
 * twice): about 5-10 ms of CPU with a few bans, every RECONCILE_MS, which
 * was a visible share of an idle daemon.
 *
 * A full read still happens at least every FULL_READ_MS, so nothing rests
 * on the generation alone for long; and on every read when the generation
 * cannot be asked (iptables-legacy, ipset, no netlink).
 */
import { NftSocket } from "../../ffi/nfnetlink.ts";

/** A full read of the kernel at least this often, whatever the generation says. */
export const FULL_READ_MS = 60_000;

/** Remembers the generation and the time of the last full read. */
export class KernelGeneration {
  #socket: NftSocket | null = null;
  #failed = false;
  #gen: number | null = null;
  #readAt = -Infinity;
  /** Full reads skipped because nothing changed (tests, metrics). */
  skipped = 0;

  constructor(readonly now: () => number = () => performance.now()) {}

  /** The generation now; null when it cannot be asked (then every read is full). */
  current(): number | null {
    if (this.#failed) return null;
    try {
      this.#socket ??= new NftSocket();
    } catch {
      this.#failed = true;
      return null;
    }
    const g = this.#socket.generation();
    return typeof g === "number" ? g : null;
  }

  /**
   * True when the generation `gen`, asked before this read, is the one of
   * the last full read and that read is recent: skip this read. Else read
   * the kernel and call took().
   */
  unchanged(gen: number | null): boolean {
    if (gen === null || gen !== this.#gen) return false;
    if (this.now() - this.#readAt >= FULL_READ_MS) return false;
    this.skipped++;
    return true;
  }

  /** Records a full read, made after asking for `gen`. */
  took(gen: number | null): void {
    this.#gen = gen;
    this.#readAt = this.now();
  }

  /** Forgets the last read (after a repair: read in full next time). */
  forget(): void {
    this.#gen = null;
  }

  close(): void {
    this.#socket?.close();
    this.#socket = null;
  }
}
