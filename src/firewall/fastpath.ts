/**
 * The firewall's synchronous ban path, as a capability a backend offers to the
 * capture thread: a plain, cloneable description (`FastBan`) that crosses to
 * the worker, and the `FastBanner` that carries it out there over netlink.
 * The capture wing only knows this module, never a concrete backend: the
 * backend says what the thread may do (an nftables set element, or a copy of
 * iptables-nft's own rule), and this module does exactly that.
 */
import { NftSocket } from "../../ffi/nfnetlink.ts";
import type { Family, FastBan } from "../types.ts";
import { banExpiry, expiryDigits } from "./expiry.ts";

export type { FastBan };
export { banExpiry, expiryDigits };

/** The outcome of one fast ban: confirmed (with the expiry written), failed, or not for this path. */
export type FastResult =
  | { ok: true; at: number; expiresAt: number | null }
  | { ok: false; error: string }
  | null;

/** Carries out a FastBan on the thread that owns it (opens its own netlink socket). */
export class FastBanner {
  readonly #nl: NftSocket;

  /** Opens the socket and prebuilds the messages; throws when netlink cannot be used. */
  constructor(readonly desc: FastBan) {
    this.#nl = new NftSocket(desc.table);
    if (desc.table) this.#nl.prepare(desc.banTimeMs);
    for (const t of [desc.rules?.[4], desc.rules?.[6]]) if (t) this.#nl.prepareRule(t);
  }

  /**
   * Bans `key` (address bytes of `family`) now; null when this path does not
   * take it (no room, no rule for the family, an expiry of another width).
   * `now` returns CLOCK_REALTIME epoch ms (the confirmation time).
   */
  ban(family: Family, key: Uint8Array, now: () => number): FastResult {
    const d = this.desc;
    if (d.room <= 0) return null;
    const expiresAt = banExpiry(d.banTimeMs / 1000);
    let err: string | null;
    if (d.table) {
      err = this.#nl.addOne(family === 4 ? "banned4" : "banned6", key, d.banTimeMs);
      if (err !== null) err += ` (netlink, table inet ${d.table})`;
    } else if (d.ipset) {
      const set = d.ipset[family];
      err = this.#nl.ipset(set, [{ key, timeoutMs: d.banTimeMs }]);
      if (err !== null) err += ` (netlink, ipset ${set})`;
    } else {
      const rule = d.rules?.[family] ?? null;
      const text = expiryDigits(expiresAt);
      if (!rule || (text !== null && text.length !== rule.textLen)) return null;
      err = this.#nl.addRule(rule, key, text);
      if (err !== null) err += ` (netlink, chain ${rule.chain})`;
    }
    if (err !== null) return { ok: false, error: err };
    d.room--;
    return { ok: true, at: now(), expiresAt };
  }

  /** Closes the socket. */
  close(): void {
    this.#nl.close();
  }
}
