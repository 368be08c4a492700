/**
 * The bans the daemon believes are in place: for each target its end, where
 * it came from and why. Seeded from the firewall at start and replaced by the
 * kernel's list on every reconciliation (the firewall is the source of
 * truth), so a ban that expired or was removed from outside is forgotten and
 * the next scan from that source is banned again.
 */
import type { Ban } from "../types.ts";

/** Where a ban came from. */
export type BanOrigin = "local" | "restored" | "fleet";

/** One ban in the book. */
export interface BookEntry {
  /** Canonical address text. */
  address: string;
  /** End of the ban, epoch ms; null = until removed. */
  expiresAt: number | null;
  origin: BanOrigin;
  /** Why, where known, e.g. "port scan: 5 ports within 60 s". */
  reason: string;
  /** When the book took it (performance.now()): a kernel list read earlier does not hold it yet. */
  since: number;
}

/** Address → its ban. */
export class BanBook {
  #entries = new Map<string, BookEntry>();

  constructor(bans: Ban[] = [], origin: BanOrigin = "restored") {
    for (const b of bans) this.add(b.address, b.expiresAt, origin, "", -Infinity);
  }

  /** Bans held. */
  get size(): number {
    return this.#entries.size;
  }

  /** True when `address` is banned at `now` (epoch ms). */
  has(address: string, now: number): boolean {
    const e = this.#entries.get(address);
    return e !== undefined && (e.expiresAt === null || e.expiresAt > now);
  }

  /** The entry of `address`, if any. */
  get(address: string): BookEntry | undefined {
    return this.#entries.get(address);
  }

  /** Records a ban ending at `end` (null = until removed). */
  add(
    address: string,
    end: number | null,
    origin: BanOrigin = "local",
    reason = "",
    since = performance.now(),
  ): void {
    this.#entries.set(address, { address, expiresAt: end, origin, reason, since });
  }

  /** Forgets one ban (it failed or was removed). */
  delete(address: string): void {
    this.#entries.delete(address);
  }

  /** Drops bans that ended before `now`. */
  prune(now: number): void {
    for (const [a, e] of this.#entries) {
      if (e.expiresAt !== null && e.expiresAt <= now) this.#entries.delete(a);
    }
  }

  /**
   * Takes the kernel's list, read from `readStartedAt` (performance.now()),
   * as the truth: what it lacks is forgotten, except entries taken after the
   * read began; what it holds that the book did not is added as "restored".
   * Returns the entries forgotten.
   */
  replace(bans: Ban[], readStartedAt = Infinity): BookEntry[] {
    const next = new Map<string, BookEntry>();
    for (const b of bans) {
      const had = this.#entries.get(b.address);
      next.set(b.address, {
        address: b.address,
        expiresAt: b.expiresAt,
        origin: had?.origin ?? "restored",
        reason: had?.reason ?? "",
        since: had?.since ?? -Infinity,
      });
    }
    const lost: BookEntry[] = [];
    for (const [a, e] of this.#entries) {
      if (next.has(a)) continue;
      if (e.since >= readStartedAt) next.set(a, e);
      else lost.push(e);
    }
    this.#entries = next;
    return lost;
  }

  /** The entry taken longest ago (the first a full table gives up), if any. */
  oldest(): BookEntry | undefined {
    for (const e of this.#entries.values()) return e;
    return undefined;
  }

  /** Every entry, oldest first (as the book took them). */
  entries(): BookEntry[] {
    return [...this.#entries.values()];
  }
}
