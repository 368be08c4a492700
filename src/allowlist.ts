/**
 * Who is never counted and never banned: loopback, this host's own addresses
 * (every address of every interface, kept current, unless --local fixes the
 * list) and the configured --allow CIDRs, IPv4 and IPv6 alike.
 */
import {
  type Address,
  addressKey,
  type Cidr,
  cidrContains,
  formatAddress,
  parseAddress,
} from "./address.ts";
import type { Family } from "./types.ts";

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
  }

  /** Adds CIDRs to the allow list (e.g. gateways found at start). */
  addAllowed(cidrs: Cidr[]): void {
    this.#allow.push(...cidrs);
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

  /** True for loopback, an --allow block or a lockout-guard block. */
  isAllowed(family: Family, bytes: Uint8Array): boolean {
    if (cidrContains(family === 4 ? LOOP4 : LOOP6, family, bytes)) return true;
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

  /** isProtected for text input (the firewall guard); unparsable text counts as protected. */
  isProtectedText(text: string): boolean {
    const a = parseAddress(text);
    return a === null || this.isProtected(a.family, a.bytes);
  }
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
