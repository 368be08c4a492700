/**
 * When the kernel need not be re-read: nf_tables numbers its ruleset, and
 * every committed transaction in the namespace moves that generation (a ban
 * or an unban, `nft delete element`, `nft flush`, `iptables -F` with
 * iptables-nft, another program's table). While it stands still since the
 * last full read, that read's list is still what the kernel holds, except
 * for elements that timed out (their end is in the list, so the caller
 * drops them as before). Asking costs one netlink round trip (tens of µs);
 * a full read costs a child process (`nft -j list table`, `iptables -S`
 * twice): about 5-10 ms of CPU with a few bans, every RECONCILE_MS, which
 * was a visible share of an idle daemon.
 *
 * A full read still happens at least every FULL_READ_MS, so nothing rests
 * on the generation alone for long; and on every read when the generation
 * cannot be asked (iptables-legacy, ipset, no netlink).
 */
import { NftSocket } from "../../ffi/nfnetlink.ts";
import type { Ban } from "../types.ts";

/** A full read of the kernel at least this often, whatever the generation says. */
export const FULL_READ_MS = 60_000;

/** Remembers the generation and the list of the last full read. */
export class KernelGeneration {
  #socket: NftSocket | null = null;
  #failed = false;
  #gen: number | null = null;
  #readAt = -Infinity;
  #found: Ban[] | null = null;
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
   * The last full read's list (copies) when the generation `gen`, asked
   * before this read, is the one of that read and it is recent; else null:
   * read the kernel and call took().
   */
  unchanged(gen: number | null): Ban[] | null {
    if (gen === null || gen !== this.#gen || this.#found === null) return null;
    if (this.now() - this.#readAt >= FULL_READ_MS) return null;
    this.skipped++;
    return this.#found.map((b) => ({ ...b }));
  }

  /** Records a full read, made after asking for `gen`, that found `found`. */
  took(gen: number | null, found: readonly Ban[]): void {
    this.#gen = gen;
    this.#readAt = this.now();
    this.#found = found.map((b) => ({ ...b }));
  }

  /** Forgets the last read (after a repair: read in full next time). */
  forget(): void {
    this.#gen = null;
    this.#found = null;
  }

  close(): void {
    this.#socket?.close();
    this.#socket = null;
  }
}
