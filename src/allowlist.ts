/**
 * Who is never counted and never banned: loopback and the other addresses
 * of neverBanned (unspecified, multicast, broadcast, IPv4-mapped), this
 * host's own addresses (every address of every interface, kept current,
 * unless --local fixes the list) and the configured --allow CIDRs, IPv4 and
 * IPv6 alike. The one guard of every path: the capture worker and the
 * pipeline check bytes, the firewall checks text (ban, restore).
 */
import {
  type Address,
  addressKey,
  type Cidr,
  cidrContains,
  formatAddress,
  neverBanned,
  parseAddress,
  parseCidr,
} from "./address.ts";
import type { Family } from "./types.ts";

/** Loopback blocks: a range ban may not hold them. */
const LOOP4: Cidr = { family: 4, bytes: new Uint8Array([127, 0, 0, 0]), prefix: 8 };
const LOOP6: Cidr = {
  family: 6,
  bytes: new Uint8Array([...new Array(15).fill(0), 1]),
  prefix: 128,
};

/** Membership tests for local and allow-listed addresses, cheap enough per packet. */
export class AllowList {
  #allow: Cidr[];
  #local = new Set<number | string>();
  /** Text of the local addresses, for the start-up notice. */
  localText: string[] = [];
  /** The local addresses as last set. */
  local: Address[] = [];

  constructor(allow: Cidr[], local: Address[] = []) {
    this.#allow = allow;
    this.setLocal(local);
  }

  /** Replaces the set of this host's addresses. */
  setLocal(addrs: Address[]): void {
    const s = new Set<number | string>();
    for (const a of addrs) s.add(addressKey(a.family, a.bytes));
    this.#local = s;
    this.local = [...addrs];
    this.localText = addrs.map((a) => formatAddress(a.family, a.bytes));
    const v4 = addrs.filter((a) => a.family === 4), v6 = addrs.filter((a) => a.family === 6);
    this.#local4 = Int32Array.from(v4, (a) => addressKey(4, a.bytes) as number);
    this.#local6 = Int32Array.from(v6.flatMap((a) => words(a.bytes)));
    this.version++;
  }

  /** Adds CIDRs to the allow list (e.g. gateways found at start). */
  addAllowed(cidrs: Cidr[]): void {
    this.#allow.push(...cidrs);
    this.version++;
  }

  /** Changes with every setLocal/addAllowed (for caches derived from the lists). */
  version = 0;
  /** Local IPv4 keys, and local IPv6 addresses as four words each, for the per-packet tests. */
  #local4 = new Int32Array(0);
  #local6 = new Int32Array(0);

  /**
   * True for one of this host's addresses, tested on the bytes (no key
   * string for IPv6): a linear scan of the few addresses a host has, a set
   * past 16 of them.
   */
  isLocal(family: Family, b: Uint8Array): boolean {
    if (family === 4) {
      const l = this.#local4;
      const k = (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3];
      if (l.length > 16) return this.#local.has(k);
      for (let i = 0; i < l.length; i++) if (l[i] === k) return true;
      return false;
    }
    const l = this.#local6;
    if (l.length === 0) return false;
    if (l.length > 64) return this.#local.has(addressKey(6, b));
    const w0 = (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3];
    const w1 = (b[4] << 24) | (b[5] << 16) | (b[6] << 8) | b[7];
    const w2 = (b[8] << 24) | (b[9] << 16) | (b[10] << 8) | b[11];
    const w3 = (b[12] << 24) | (b[13] << 16) | (b[14] << 8) | b[15];
    for (let i = 0; i < l.length; i += 4) {
      if (l[i + 3] === w3 && l[i + 2] === w2 && l[i + 1] === w1 && l[i] === w0) return true;
    }
    return false;
  }

  /** isLocal for an address given as words (ProbeEvent.srcW/dstW): the per-packet form. */
  isLocalWords(family: Family, w: Int32Array): boolean {
    if (family === 4) {
      const l = this.#local4, k = w[0];
      if (l.length > 16) return this.#local.has(k);
      for (let i = 0; i < l.length; i++) if (l[i] === k) return true;
      return false;
    }
    const l = this.#local6;
    if (l.length === 0) return false;
    const w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
    if (l.length > 64) return this.#local.has(wordsKey(w0, w1, w2, w3));
    for (let i = 0; i < l.length; i += 4) {
      if (l[i + 3] === w3 && l[i + 2] === w2 && l[i + 1] === w1 && l[i] === w0) return true;
    }
    return false;
  }

  #guard: Cidr[] = [];

  /**
   * Replaces the lockout guard's blocks (gateways, resolvers, DHCP and NTP
   * servers, metadata service): allowed like --allow, but re-read while the
   * program runs, so kept apart from the configured list.
   */
  setGuard(cidrs: Cidr[]): void {
    this.#guard = [...cidrs];
  }

  /** The lockout guard's blocks as last set, a copy. */
  get guard(): Cidr[] {
    return [...this.#guard];
  }

  /** Replaces the allow-listed blocks (a reload). */
  setAllowed(cidrs: Cidr[]): void {
    this.#allow = [...cidrs];
  }

  /** The allow-listed blocks (configured and added), a copy. */
  get allowed(): Cidr[] {
    return [...this.#allow];
  }

  /** True for one of this host's addresses (by key, see addressKey). */
  isLocalKey(key: number | string): boolean {
    return this.#local.size !== 0 && this.#local.has(key);
  }

  /** True for loopback (and the rest of neverBanned), an --allow block or a lockout-guard block. */
  isAllowed(family: Family, bytes: Uint8Array): boolean {
    if (neverBanned(family, bytes) !== null) return true;
    const list = this.#allow;
    for (let i = 0; i < list.length; i++) {
      if (cidrContains(list[i], family, bytes)) return true;
    }
    const guard = this.#guard;
    for (let i = 0; i < guard.length; i++) {
      if (cidrContains(guard[i], family, bytes)) return true;
    }
    return false;
  }

  /** True for an address that must never be banned: loopback, local, allowed. */
  isProtected(family: Family, bytes: Uint8Array): boolean {
    return this.isAllowed(family, bytes) || this.#local.has(addressKey(family, bytes));
  }

  /**
   * True when the block `bytes/len` holds an address that must never be
   * banned: loopback, a local address, or an allowed block that overlaps it.
   * A range ban must not cut off anything a single-address ban would spare.
   */
  coversProtected(family: Family, bytes: Uint8Array, len: number): boolean {
    const block: Cidr = { family, bytes, prefix: len };
    for (const c of [family === 4 ? LOOP4 : LOOP6, ...this.#allow, ...this.#guard]) {
      if (c.family !== family) continue;
      // Two blocks overlap when the shorter one contains the other's start.
      if (c.prefix <= len ? cidrContains(c, family, bytes) : cidrContains(block, family, c.bytes)) {
        return true;
      }
    }
    for (const a of this.local) {
      if (a.family === family && cidrContains(block, family, a.bytes)) return true;
    }
    return false;
  }

  /**
   * isProtected for text input (the firewall guard): an address, or a CIDR
   * block that holds a protected address; unparsable text counts as protected,
   * and so does mapped text (`::ffff:a.b.c.d`), checked as the IPv6 address it is.
   */
  isProtectedText(text: string): boolean {
    if (text.includes("/")) {
      const c = parseCidr(text);
      return c === null || this.coversProtected(c.family, c.bytes, c.prefix);
    }
    const a = parseAddress(text, true);
    return a === null || this.isProtected(a.family, a.bytes);
  }
}

/** An IPv6 address's bytes as four 32-bit words. */
/** addressKey of an IPv6 address given as four words. */
function wordsKey(w0: number, w1: number, w2: number, w3: number): string {
  return String.fromCharCode(
    w0 >>> 16,
    w0 & 0xffff,
    w1 >>> 16,
    w1 & 0xffff,
    w2 >>> 16,
    w2 & 0xffff,
    w3 >>> 16,
    w3 & 0xffff,
  );
}

function words(b: Uint8Array): number[] {
  const w: number[] = [];
  for (let i = 0; i < 16; i += 4) {
    w.push((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]);
  }
  return w;
}

/** Every address of every interface (IPv4 and IPv6, link-local included). */
export function interfaceAddresses(): Address[] {
  const out: Address[] = [];
  for (const ni of Deno.networkInterfaces()) {
    const a = parseAddress(ni.address);
    if (a) out.push(a);
  }
  return out;
}
