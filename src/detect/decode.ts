/**
 * Packet decoder: one captured frame (link layer → IPv4/IPv6 → TCP) into a
 * reused ProbeEvent.
 *
 * Shaped for the hot path (tens of millions of frames a second on one core):
 * DataView reads only, plain number arithmetic, no allocation, no closures,
 * no exceptions, and one shape of every argument. Each read is preceded by a
 * check against `offset + caplen`, so a truncated or hostile frame can never
 * make it read past the captured bytes (and the DataView can never throw).
 */
import type { DecodeStatus, ProbeEvent } from "../types.ts";

/** Link-layer header types (pcap LINKTYPE_* / DLT_* values) the decoder understands. */
export const LINKTYPE = {
  NULL: 0,
  ETHERNET: 1,
  RAW: 101,
  LOOP: 108,
  LINUX_SLL: 113,
  LINUX_SLL2: 276,
  IPV4: 228,
  IPV6: 229,
} as const;

/** DLT_RAW as pcap_datalink() reports it on most systems (12) and on OpenBSD (14). */
const DLT_RAW_12 = 12;
const DLT_RAW_14 = 14;

const ETH_IPV4 = 0x0800;
const ETH_IPV6 = 0x86dd;
const ETH_8021Q = 0x8100;
const ETH_8021AD = 0x88a8;
const ETH_QINQ_OLD = 0x9100;

/** At most this many stacked VLAN tags are walked; more is treated as malformed. */
const MAX_VLAN_TAGS = 4;
/** At most this many IPv6 extension headers are walked; more is treated as malformed. */
const MAX_IPV6_EXT = 8;

const IPPROTO_HOPOPTS = 0;
const IPPROTO_TCP = 6;
const IPPROTO_ROUTING = 43;
const IPPROTO_FRAGMENT = 44;
const IPPROTO_AH = 51;
const IPPROTO_DSTOPTS = 60;

/** Pseudo ethertype: decide IPv4/IPv6 from the version nibble (raw IP). */
const BY_VERSION = -1;

// DecodeStatus values as plain module constants: a literal on the hot path
// instead of a property load from the enum object.
const OK = 0 as DecodeStatus.Ok;
const SKIP = 1 as DecodeStatus.Skip;
const MALFORMED = 2 as DecodeStatus.Malformed;

/** True when `decodePacket` understands frames of this link type. */
export function isSupportedLinktype(linktype: number): boolean {
  switch (linktype) {
    case LINKTYPE.NULL:
    case LINKTYPE.ETHERNET:
    case LINKTYPE.RAW:
    case DLT_RAW_12:
    case DLT_RAW_14:
    case LINKTYPE.LOOP:
    case LINKTYPE.LINUX_SLL:
    case LINKTYPE.LINUX_SLL2:
    case LINKTYPE.IPV4:
    case LINKTYPE.IPV6:
      return true;
    default:
      return false;
  }
}

/**
 * Decodes one captured frame into `out` (fields family, src, dst, sport,
 * dport, flags; the caller sets tsSec/tsUsec). Never throws, never reads past
 * offset+caplen, allocates nothing.
 *
 * Ok: a TCP segment was decoded (its 20-byte base header was captured; options
 * cut off by the snaplen do not matter). Skip: well-formed but not IP/TCP, a
 * non-first fragment, or an unknown link type. Malformed: truncated or
 * inconsistent headers, more than 4 VLAN tags or 8 IPv6 extension headers,
 * and a first fragment too short to hold the TCP header (`nmap -f`). On
 * Skip/Malformed `out` may be partly overwritten.
 */
export function decodePacket(
  linktype: number,
  view: DataView,
  offset: number,
  caplen: number,
  out: ProbeEvent,
): DecodeStatus {
  const end = offset + caplen;
  // Also rejects NaN and a caplen that claims more than the buffer holds.
  if (!(offset >= 0 && caplen >= 0 && end <= view.byteLength)) return MALFORMED;

  let p = offset;
  let etype = 0;
  switch (linktype) {
    case LINKTYPE.ETHERNET:
      if (p + 14 > end) return MALFORMED;
      etype = view.getUint16(p + 12);
      p += 14;
      break;
    case LINKTYPE.LINUX_SLL:
      // pkttype(2) arphrd(2) addrlen(2) addr(8) protocol(2)
      if (p + 16 > end) return MALFORMED;
      etype = view.getUint16(p + 14);
      p += 16;
      break;
    case LINKTYPE.LINUX_SLL2:
      // protocol(2) reserved(2) ifindex(4) arphrd(2) pkttype(1) addrlen(1) addr(8)
      if (p + 20 > end) return MALFORMED;
      etype = view.getUint16(p);
      p += 20;
      break;
    case LINKTYPE.RAW:
    case DLT_RAW_12:
    case DLT_RAW_14:
      etype = BY_VERSION;
      break;
    case LINKTYPE.IPV4:
      etype = ETH_IPV4;
      break;
    case LINKTYPE.IPV6:
      etype = ETH_IPV6;
      break;
    case LINKTYPE.NULL: {
      // Address family in the byte order of the capturing host: families are
      // small numbers, so a value with high bits set is the other byte order.
      if (p + 4 > end) return MALFORMED;
      let fam = view.getUint32(p, true);
      if (fam > 0xffff) fam = view.getUint32(p, false);
      p += 4;
      etype = nullFamilyToEthertype(fam);
      if (etype === 0) return SKIP;
      break;
    }
    case LINKTYPE.LOOP:
      if (p + 4 > end) return MALFORMED;
      etype = nullFamilyToEthertype(view.getUint32(p, false));
      p += 4;
      if (etype === 0) return SKIP;
      break;
    default:
      return SKIP;
  }

  // Stacked 802.1Q / 802.1ad tags (also after a cooked header, where libpcap
  // re-inserts the tag the kernel stripped): TCI(2) then the inner ethertype.
  let tags = 0;
  while (etype === ETH_8021Q || etype === ETH_8021AD || etype === ETH_QINQ_OLD) {
    if (++tags > MAX_VLAN_TAGS) return MALFORMED;
    if (p + 4 > end) return MALFORMED;
    etype = view.getUint16(p + 2);
    p += 4;
  }

  if (etype === BY_VERSION) {
    if (p >= end) return MALFORMED;
    const v = view.getUint8(p) >>> 4;
    if (v === 4) etype = ETH_IPV4;
    else if (v === 6) etype = ETH_IPV6;
    else return MALFORMED;
  }
  if (etype === ETH_IPV4) return decodeIPv4(view, p, end, out);
  if (etype === ETH_IPV6) return decodeIPv6(view, p, end, out);
  return SKIP;
}

/** Maps a BSD loopback address family to an ethertype; 0 = not IP. */
function nullFamilyToEthertype(fam: number): number {
  if (fam === 2) return ETH_IPV4;
  // AF_INET6: 24 (NetBSD, OpenBSD, BSD/OS), 28 (FreeBSD, DragonFly), 30 (Darwin)
  if (fam === 24 || fam === 28 || fam === 30) return ETH_IPV6;
  return 0;
}

function decodeIPv4(view: DataView, p: number, end: number, out: ProbeEvent): DecodeStatus {
  if (p + 20 > end) return MALFORMED;
  const vihl = view.getUint8(p);
  if (vihl >>> 4 !== 4) return MALFORMED;
  const hlen = (vihl & 0x0f) << 2;
  if (hlen < 20) return MALFORMED;
  const total = view.getUint16(p + 2);
  // Total length 0 appears on locally sent TSO segments captured before
  // segmentation; then only the captured length bounds the packet.
  let ipEnd = end;
  if (total !== 0) {
    if (total < hlen) return MALFORMED;
    if (p + total < ipEnd) ipEnd = p + total; // drop Ethernet padding
  }
  if (p + hlen > ipEnd) return MALFORMED;
  // A fragment with a non-zero offset carries no TCP header.
  if ((view.getUint16(p + 6) & 0x1fff) !== 0) return SKIP;
  if (view.getUint8(p + 9) !== IPPROTO_TCP) return SKIP;
  const st = decodeTcp(view, p + hlen, ipEnd, total === 0 ? -1 : p + total, out);
  if (st !== OK) return st;
  out.family = 4;
  copy4(view, p + 12, out.src, out.srcW, 0);
  copy4(view, p + 16, out.dst, out.dstW, 0);
  return OK;
}

function decodeIPv6(view: DataView, p: number, end: number, out: ProbeEvent): DecodeStatus {
  if (p + 40 > end) return MALFORMED;
  if (view.getUint8(p) >>> 4 !== 6) return MALFORMED;
  const plen = view.getUint16(p + 4);
  // Payload length 0: a jumbogram or a TSO segment; the captured length bounds it.
  const realEnd = plen === 0 ? -1 : p + 40 + plen;
  let ipEnd = end;
  if (realEnd !== -1 && realEnd < ipEnd) ipEnd = realEnd;
  let nh = view.getUint8(p + 6);
  let q = p + 40;
  let n = 0;
  while (nh !== IPPROTO_TCP) {
    if (nh === IPPROTO_HOPOPTS || nh === IPPROTO_ROUTING || nh === IPPROTO_DSTOPTS) {
      if (++n > MAX_IPV6_EXT || q + 8 > ipEnd) return MALFORMED;
      const len = (view.getUint8(q + 1) + 1) << 3;
      nh = view.getUint8(q);
      q += len;
    } else if (nh === IPPROTO_FRAGMENT) {
      if (++n > MAX_IPV6_EXT || q + 8 > ipEnd) return MALFORMED;
      // A fragment with a non-zero offset carries no TCP header.
      if ((view.getUint16(q + 2) & 0xfff8) !== 0) return SKIP;
      nh = view.getUint8(q);
      q += 8;
    } else if (nh === IPPROTO_AH) {
      if (++n > MAX_IPV6_EXT || q + 8 > ipEnd) return MALFORMED;
      const len = (view.getUint8(q + 1) + 2) << 2;
      nh = view.getUint8(q);
      q += len;
    } else {
      return SKIP; // UDP, ICMPv6, ESP, no next header, ...
    }
  }
  const st = decodeTcp(view, q, ipEnd, realEnd, out);
  if (st !== OK) return st;
  out.family = 6;
  const src = out.src, dst = out.dst, sw = out.srcW, dw = out.dstW;
  copy4(view, p + 8, src, sw, 0);
  copy4(view, p + 12, src, sw, 4);
  copy4(view, p + 16, src, sw, 8);
  copy4(view, p + 20, src, sw, 12);
  copy4(view, p + 24, dst, dw, 0);
  copy4(view, p + 28, dst, dw, 4);
  copy4(view, p + 32, dst, dw, 8);
  copy4(view, p + 36, dst, dw, 12);
  return OK;
}

/**
 * TCP header at `q`; `end` bounds what may be read (captured and within the IP
 * length), `realEnd` is where the IP packet says it ends (-1: unknown). The
 * 20-byte base header must be captured; options may be cut by the snaplen but
 * must fit in the packet's real length.
 */
function decodeTcp(
  view: DataView,
  q: number,
  end: number,
  realEnd: number,
  out: ProbeEvent,
): DecodeStatus {
  if (q + 20 > end) return MALFORMED;
  const off = view.getUint8(q + 12);
  const hlen = (off >>> 4) << 2;
  if (hlen < 20) return MALFORMED;
  if (realEnd !== -1 && q + hlen > realEnd) return MALFORMED;
  out.sport = view.getUint16(q);
  out.dport = view.getUint16(q + 2);
  out.flags = view.getUint8(q + 13) | ((off & 1) << 8);
  return OK;
}

/**
 * Copies 4 bytes from the frame into an address buffer and its word into the
 * address's words: one 32-bit read and four byte stores (a Uint8Array store
 * keeps the low 8 bits) is measurably faster than four byte reads.
 */
function copy4(view: DataView, at: number, to: Uint8Array, words: Int32Array, i: number): void {
  const w = view.getUint32(at);
  words[i >> 2] = w;
  to[i] = w >>> 24;
  to[i + 1] = w >>> 16;
  to[i + 2] = w >>> 8;
  to[i + 3] = w;
}
