/**
 * IP address parsing, formatting and keys. Addresses travel through the packet
 * path as bytes (see ProbeEvent); text is made only where a human or a
 * firewall command needs it.
 */
import type { Family } from "./types.ts";

/** A parsed address: family and its bytes (4 or 16 long). */
export interface Address {
  family: Family;
  bytes: Uint8Array;
}

/** A parsed CIDR block. */
export interface Cidr {
  family: Family;
  bytes: Uint8Array;
  prefix: number;
}

function parseV4(text: string, out: Uint8Array, at: number): boolean {
  const parts = text.split(".");
  if (parts.length !== 4) return false;
  for (let i = 0; i < 4; i++) {
    const p = parts[i];
    if (!/^\d{1,3}$/.test(p) || (p.length > 1 && p[0] === "0")) return false;
    const n = Number(p);
    if (n > 255) return false;
    out[at + i] = n;
  }
  return true;
}

/** An IPv6 zone id: an interface name (at most IFNAMSIZ-1 = 15 bytes) or index. */
const ZONE_ID = /^[A-Za-z0-9_.-]{1,15}$/;

function parseV6(text: string): Uint8Array | null {
  const out = new Uint8Array(16);
  let s = text;
  const zone = s.indexOf("%");
  if (zone >= 0) {
    // A zone id is an interface name or index: nothing else (no whitespace,
    // newline or control character) passes, whatever reads the text later.
    if (!ZONE_ID.test(s.slice(zone + 1))) return null;
    s = s.slice(0, zone);
  }
  if (s.length === 0 || s.length > 45) return null;
  const dbl = s.indexOf("::");
  if (dbl >= 0 && s.indexOf("::", dbl + 1) >= 0) return null;
  const parseGroups = (part: string): number[] | null => {
    if (part === "") return [];
    const groups: number[] = [];
    const items = part.split(":");
    for (let i = 0; i < items.length; i++) {
      const g = items[i];
      if (i === items.length - 1 && g.includes(".")) {
        const v4 = new Uint8Array(4);
        if (!parseV4(g, v4, 0)) return null;
        groups.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
        groups.push(parseInt(g, 16));
      }
    }
    return groups;
  };
  let groups: number[];
  if (dbl >= 0) {
    const head = parseGroups(s.slice(0, dbl));
    const tail = parseGroups(s.slice(dbl + 2));
    if (!head || !tail || head.length + tail.length > 7) return null;
    groups = [...head, ...new Array(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    const all = parseGroups(s);
    if (!all || all.length !== 8) return null;
    groups = all;
  }
  for (let i = 0; i < 8; i++) {
    out[i * 2] = groups[i] >> 8;
    out[i * 2 + 1] = groups[i] & 0xff;
  }
  return out;
}

/**
 * Parses an IPv4 or IPv6 address in text form (brackets allowed for IPv6);
 * null when invalid. Typed text `::ffff:a.b.c.d` means the IPv4 address
 * (as `ss` prints IPv4 peers of a dual-stack socket), unless `keepMapped`:
 * then it stays the IPv6 address it is (the guard, and firewall listings,
 * which must see it as such; see neverBanned).
 */
export function parseAddress(text: string, keepMapped = false): Address | null {
  let t = text.trim();
  if (t.startsWith("[") && t.endsWith("]")) t = t.slice(1, -1);
  if (t.includes(":")) {
    const b = parseV6(t);
    if (!b) return null;
    if (!keepMapped && isMapped(b)) return { family: 4, bytes: b.slice(12) };
    return { family: 6, bytes: b };
  }
  const b = new Uint8Array(4);
  return parseV4(t, b, 0) ? { family: 4, bytes: b } : null;
}

/** Parses `ADDR/PREFIX` (or a bare address, as a host block); null when invalid. */
export function parseCidr(text: string): Cidr | null {
  const slash = text.indexOf("/");
  const addr = parseAddress(slash >= 0 ? text.slice(0, slash) : text);
  if (!addr) return null;
  const max = addr.family === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p)) return null;
    prefix = Number(p);
    if (prefix > max) return null;
  }
  return { family: addr.family, bytes: addr.bytes, prefix };
}

/** True when the first `len` address bytes of `bytes` fall inside `cidr`. */
export function cidrContains(cidr: Cidr, family: Family, bytes: Uint8Array): boolean {
  if (cidr.family !== family) return false;
  let bits = cidr.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((bytes[i] & mask) !== (cidr.bytes[i] & mask)) return false;
  }
  return true;
}

/** True for the bytes of an IPv4-mapped IPv6 address (::ffff:0:0/96). */
function isMapped(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

/**
 * Why an address may never be banned whoever asks, or null: unspecified
 * (0.0.0.0/8, ::), loopback (127/8, ::1), multicast (224/4, ff00::/8), the
 * IPv4 broadcast, and IPv4-mapped (::ffff:0:0/96) or IPv4-compatible
 * (::/96) IPv6. None is the source of a real connection attempt: a packet
 * carrying one is spoofed. A mapped source in particular is refused rather
 * than read as the IPv4 address inside: real stacks never send one (RFC
 * 4291 2.5.5.2; Linux drops TCP SYNs from one), so it can only be forged,
 * and reading it as IPv4 would let anyone with IPv6 reach get an IPv4 host
 * banned around the IPv4 path's anti-spoofing. Cheap enough per packet.
 */
export function neverBanned(family: Family, b: Uint8Array): string | null {
  if (family === 4) {
    if (b[0] === 0) return "unspecified";
    if (b[0] === 127) return "loopback";
    if ((b[0] & 0xf0) === 0xe0) return "multicast";
    if (b[0] === 255 && b[1] === 255 && b[2] === 255 && b[3] === 255) return "broadcast";
    return null;
  }
  if (b[0] === 0xff) return "multicast";
  if (b[0] !== 0) return null;
  for (let i = 1; i < 10; i++) if (b[i] !== 0) return null;
  if (b[10] === 0xff && b[11] === 0xff) return "IPv4-mapped";
  if (b[10] !== 0 || b[11] !== 0 || b[12] !== 0 || b[13] !== 0) return "IPv4-compatible";
  if (b[14] === 0 && b[15] === 0) return "unspecified";
  if (b[14] === 0 && b[15] === 1) return "loopback";
  return "IPv4-compatible";
}

/** Formats address bytes as text: dotted quad, or RFC 5952 IPv6 (mapped as `::ffff:a.b.c.d`). */
export function formatAddress(family: Family, bytes: Uint8Array): string {
  if (family === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  if (isMapped(bytes)) return `::ffff:${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((bytes[i * 2] << 8) | bytes[i * 2 + 1]);
  // Longest run of zero groups (length >= 2) becomes "::".
  let bestAt = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (a: number[]) => a.map((x) => x.toString(16)).join(":");
  if (bestAt < 0) return hex(g);
  return `${hex(g.slice(0, bestAt))}::${hex(g.slice(bestAt + bestLen))}`;
}

/** Formats `addr:port`, bracketing IPv6 addresses as the log contract says. */
export function formatEndpoint(family: Family, bytes: Uint8Array, port: number): string {
  const a = formatAddress(family, bytes);
  return family === 6 ? `[${a}]:${port}` : `${a}:${port}`;
}

/**
 * A compact map key for an address: the IPv4 address as an unsigned 32-bit
 * number, an IPv6 address as an 8-character string. Cheap to compute per packet.
 */
export function addressKey(family: Family, bytes: Uint8Array): number | string {
  if (family === 4) {
    return (bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3];
  }
  // Eight UTF-16 code units, one per 16-bit group: one flat string, cheap to
  // build and to hash (a hex string built by concatenation is a rope that
  // every Map/Set lookup must flatten first).
  return String.fromCharCode(
    (bytes[0] << 8) | bytes[1],
    (bytes[2] << 8) | bytes[3],
    (bytes[4] << 8) | bytes[5],
    (bytes[6] << 8) | bytes[7],
    (bytes[8] << 8) | bytes[9],
    (bytes[10] << 8) | bytes[11],
    (bytes[12] << 8) | bytes[13],
    (bytes[14] << 8) | bytes[15],
  );
}

/** Canonical text form of an address given in any accepted text form (see parseAddress for `keepMapped`); null when invalid. */
export function canonicalAddress(text: string, keepMapped = false): string | null {
  const a = parseAddress(text, keepMapped);
  return a ? formatAddress(a.family, a.bytes) : null;
}

/** A ban target: one address, or a block given in CIDR form. */
export interface Target {
  family: Family;
  /** The address, or the block's first address (host bits cleared). */
  bytes: Uint8Array;
  /** 32 or 128 for one address. */
  prefix: number;
  /** Canonical text: the address alone, or `ADDR/LEN` for a block. */
  text: string;
}

/**
 * Parses a ban target: an address, or a CIDR block (its host bits are
 * cleared; a full-length block is the address itself). Null when invalid.
 */
export function parseTarget(text: string): Target | null {
  const c = typeof text === "string" ? parseCidr(text.trim()) : null;
  if (!c) return null;
  const full = c.family === 4 ? 32 : 128;
  const bytes = c.bytes.slice();
  for (let i = 0; i < bytes.length; i++) {
    const bits = c.prefix - i * 8;
    if (bits < 8) bytes[i] = bits <= 0 ? 0 : bytes[i] & (0xff << (8 - bits));
  }
  const addr = formatAddress(c.family, bytes);
  return {
    family: c.family,
    bytes,
    prefix: c.prefix,
    text: c.prefix === full ? addr : `${addr}/${c.prefix}`,
  };
}

/** Canonical text of a ban target (address or CIDR block); null when invalid. */
export function canonicalTarget(text: string, keepMapped = false): string | null {
  // As the kernel holds it (keepMapped): a mapped address in an IPv6 set stays IPv6.
  if (keepMapped && typeof text === "string" && !text.includes("/")) {
    return canonicalAddress(text, true);
  }
  return parseTarget(text)?.text ?? null;
}
