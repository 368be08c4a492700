/**
 * The bans the daemon believes are in place, with their ends. Seeded from the
 * firewall at start and replaced by its list now and then (the firewall is the
 * source of truth), so a ban that expired or was removed with `scanblocker
 * unban` is not reported as "already in disallowed list".
 */
import type { Ban } from "../types.ts";

/** Address → end of its ban (epoch ms; null = until removed). */
export class BanBook {
  #ends = new Map<string, number | null>();

  constructor(bans: Ban[]) {
    this.replace(bans);
  }

  /** Bans held. */
  get size(): number {
    return this.#ends.size;
  }

  /** True when `address` is banned at `now` (epoch ms). */
  has(address: string, now: number): boolean {
    const end = this.#ends.get(address);
    return end !== undefined && (end === null || end > now);
  }

  /** Records a ban ending at `end` (null = until removed). */
  add(address: string, end: number | null): void {
    this.#ends.set(address, end);
  }

  /** Forgets one ban (it failed or was removed). */
  delete(address: string): void {
    this.#ends.delete(address);
  }

  /** Drops bans that ended before `now`. */
  prune(now: number): void {
    for (const [a, end] of this.#ends) if (end !== null && end <= now) this.#ends.delete(a);
  }

  /** Takes the firewall's list as the truth. */
  replace(bans: Ban[]): void {
    this.#ends = new Map(bans.map((b) => [b.address, b.expiresAt]));
  }
}
