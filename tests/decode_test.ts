/**
 * Decoder unit tests on hand-built frames: every link type and layer, the
 * malformed and truncated variants, every prefix of every frame, and a check
 * that nothing outside [offset, offset+caplen) is ever read.
 */
import assert from "node:assert/strict";
import { decodePacket, isSupportedLinktype, LINKTYPE } from "../src/detect/decode.ts";
import { DecodeStatus, newProbeEvent, type ProbeEvent, TCP } from "../src/types.ts";
import {
  A4,
  A6,
  ah6,
  B4,
  B6,
  be16,
  eth,
  ext6,
  frag6,
  ipv4,
  ipv6,
  loopFrame,
  nullFrame,
  sll,
  sll2,
  tcp,
  type TcpSpec,
} from "./fixtures/frames.ts";

const Ok = DecodeStatus.Ok;
const Skip = DecodeStatus.Skip;
const Malformed = DecodeStatus.Malformed;
const SYN: number = TCP.SYN;
const ECN_SYN = TCP.SYN | TCP.ECE | TCP.CWR;

interface Want {
  family: 4 | 6;
  src: number[];
  dst: number[];
  sport: number;
  dport: number;
  flags: number;
}

interface Case {
  name: string;
  lt: number;
  frame: number[];
  status: DecodeStatus;
  want?: Want;
  /** Shortest caplen that decodes Ok (for Ok cases). */
  okAt?: number;
}

const cases: Case[] = [];

/** Adds an Ok case: `wrap` builds the frame around the TCP segment, which must end the frame. */
function ok(
  name: string,
  lt: number,
  family: 4 | 6,
  spec: TcpSpec,
  wrap: (seg: number[]) => number[],
  addrs: [number[], number[]] = family === 4 ? [A4, B4] : [A6, B6],
): void {
  const seg = tcp(spec);
  const frame = wrap(seg);
  cases.push({
    name,
    lt,
    frame,
    status: Ok,
    want: {
      family,
      src: addrs[0],
      dst: addrs[1],
      sport: spec.sport,
      dport: spec.dport,
      flags: spec.flags,
    },
    okAt: frame.length - seg.length + 20,
  });
}

function bad(name: string, lt: number, status: DecodeStatus, frame: number[]): void {
  cases.push({ name, lt, frame, status });
}

const syn = (sport: number, dport: number, flags: number = SYN): TcpSpec => ({
  sport,
  dport,
  flags,
});
const v4 = (seg: number[]) => ipv4({ src: A4, dst: B4 }, seg);
const v6 = (seg: number[], nh = 6) => ipv6({ src: A6, dst: B6, nh }, seg);

// ---- Ethernet and VLAN tags
ok("eth ipv4 syn", LINKTYPE.ETHERNET, 4, syn(40772, 22), (s) => eth(0x0800, v4(s)));
ok("eth ipv6 syn", LINKTYPE.ETHERNET, 6, syn(50000, 443), (s) => eth(0x86dd, v6(s)));
ok("802.1Q ipv4", LINKTYPE.ETHERNET, 4, syn(1, 80), (s) => eth(0x0800, v4(s), [[0x8100, 10]]));
ok("802.1Q ipv6", LINKTYPE.ETHERNET, 6, syn(2, 81), (s) => eth(0x86dd, v6(s), [[0x8100, 4094]]));
ok(
  "802.1ad+802.1Q ipv4",
  LINKTYPE.ETHERNET,
  4,
  syn(3, 82),
  (s) => eth(0x0800, v4(s), [[0x88a8, 100], [0x8100, 200]]),
);
ok(
  "0x9100+802.1Q ipv6",
  LINKTYPE.ETHERNET,
  6,
  syn(4, 83),
  (s) => eth(0x86dd, v6(s), [[0x9100, 7], [0x8100, 8]]),
);
ok(
  "four tags",
  LINKTYPE.ETHERNET,
  4,
  syn(5, 84),
  (s) => eth(0x0800, v4(s), [[0x88a8, 1], [0x8100, 2], [0x8100, 3], [0x8100, 4]]),
);
bad(
  "five tags",
  LINKTYPE.ETHERNET,
  Malformed,
  eth(0x0800, v4(tcp(syn(6, 85))), [[0x88a8, 1], [0x8100, 2], [0x8100, 3], [0x8100, 4], [
    0x8100,
    5,
  ]]),
);
{
  // A minimum-size frame: 40-byte IPv4 SYN padded to 46 bytes with non-zero bytes.
  const seg = tcp(syn(7, 86));
  const frame = eth(0x0800, [...v4(seg), 0xde, 0xad, 0xbe, 0xef, 0xfe, 0xed]);
  cases.push({
    name: "ethernet padding",
    lt: LINKTYPE.ETHERNET,
    frame,
    status: Ok,
    want: { family: 4, src: A4, dst: B4, sport: 7, dport: 86, flags: SYN },
    okAt: 14 + 20 + 20,
  });
}
bad("arp", LINKTYPE.ETHERNET, Skip, eth(0x0806, new Array(28).fill(1)));
bad("802.3 length frame", LINKTYPE.ETHERNET, Skip, eth(46, new Array(46).fill(0xaa)));
bad("vlan over arp", LINKTYPE.ETHERNET, Skip, eth(0x0806, new Array(28).fill(1), [[0x8100, 5]]));
bad("ethernet header only", LINKTYPE.ETHERNET, Malformed, eth(0x0800, []));
bad("ethernet 13 bytes", LINKTYPE.ETHERNET, Malformed, eth(0x0800, []).slice(0, 13));

// ---- Linux cooked captures
ok("sll ipv4", LINKTYPE.LINUX_SLL, 4, syn(1000, 1), (s) => sll(0x0800, v4(s)));
ok("sll ipv6", LINKTYPE.LINUX_SLL, 6, syn(1001, 2), (s) => sll(0x86dd, v6(s)));
ok(
  "sll re-inserted vlan",
  LINKTYPE.LINUX_SLL,
  4,
  syn(1002, 3),
  (s) => sll(0x8100, [...be16(42), ...be16(0x0800), ...v4(s)]),
);
bad("sll arp", LINKTYPE.LINUX_SLL, Skip, sll(0x0806, new Array(28).fill(0)));
bad("sll 802.2", LINKTYPE.LINUX_SLL, Skip, sll(0x0004, new Array(28).fill(0)));
ok("sll2 ipv4", LINKTYPE.LINUX_SLL2, 4, syn(2000, 4), (s) => sll2(0x0800, v4(s)));
ok("sll2 ipv6", LINKTYPE.LINUX_SLL2, 6, syn(2001, 5), (s) => sll2(0x86dd, v6(s)));
ok(
  "sll2 vlan ipv6",
  LINKTYPE.LINUX_SLL2,
  6,
  syn(2002, 6),
  (s) => sll2(0x8100, [...be16(42), ...be16(0x86dd), ...v6(s)]),
);
bad("sll2 arp", LINKTYPE.LINUX_SLL2, Skip, sll2(0x0806, new Array(28).fill(0)));

// ---- Raw IP (LINKTYPE_RAW and both DLT_RAW values), IPV4/IPV6 link types
for (const lt of [LINKTYPE.RAW, 12, 14]) {
  ok(`raw(${lt}) ipv4`, lt, 4, syn(3000, 7), v4);
  ok(`raw(${lt}) ipv6`, lt, 6, syn(3001, 8), (s) => v6(s));
  bad(
    `raw(${lt}) version 5`,
    lt,
    Malformed,
    ipv4({ src: A4, dst: B4, version: 5 }, tcp(syn(1, 1))),
  );
  bad(`raw(${lt}) empty`, lt, Malformed, []);
}
ok("linktype ipv4", LINKTYPE.IPV4, 4, syn(3002, 9), v4);
ok("linktype ipv6", LINKTYPE.IPV6, 6, syn(3003, 10), (s) => v6(s));
bad("linktype ipv4 carrying ipv6", LINKTYPE.IPV4, Malformed, v6(tcp(syn(1, 1))));
bad("linktype ipv6 carrying ipv4", LINKTYPE.IPV6, Malformed, v4(tcp(syn(1, 1))));

// ---- BSD loopback
ok("null le AF_INET", LINKTYPE.NULL, 4, syn(4000, 11), (s) => nullFrame(2, v4(s)));
ok("null be AF_INET", LINKTYPE.NULL, 4, syn(4001, 12), (s) => nullFrame(2, v4(s), false));
for (const fam of [24, 28, 30]) {
  ok(`null le AF_INET6=${fam}`, LINKTYPE.NULL, 6, syn(4002, fam), (s) => nullFrame(fam, v6(s)));
  ok(
    `null be AF_INET6=${fam}`,
    LINKTYPE.NULL,
    6,
    syn(4003, fam),
    (s) => nullFrame(fam, v6(s), false),
  );
}
bad("null AF_UNIX", LINKTYPE.NULL, Skip, nullFrame(1, v4(tcp(syn(1, 1)))));
bad("null 3 bytes", LINKTYPE.NULL, Malformed, [2, 0, 0]);
ok("loop AF_INET", LINKTYPE.LOOP, 4, syn(4100, 13), (s) => loopFrame(2, v4(s)));
ok("loop AF_INET6", LINKTYPE.LOOP, 6, syn(4101, 14), (s) => loopFrame(24, v6(s)));
bad("loop little-endian family", LINKTYPE.LOOP, Skip, nullFrame(2, v4(tcp(syn(1, 1)))));

// ---- IPv4
ok(
  "ipv4 options (ihl 6)",
  LINKTYPE.ETHERNET,
  4,
  syn(5000, 15),
  (s) => eth(0x0800, ipv4({ src: A4, dst: B4, options: [1, 1, 1, 0] }, s)),
);
ok(
  "ipv4 options (ihl 15)",
  LINKTYPE.ETHERNET,
  4,
  syn(5001, 16),
  (s) => eth(0x0800, ipv4({ src: A4, dst: B4, options: [7, 39, 4, ...new Array(36).fill(0)] }, s)),
);
bad(
  "ipv4 ihl 4",
  LINKTYPE.ETHERNET,
  Malformed,
  eth(0x0800, ipv4({ src: A4, dst: B4, ihl: 4 }, tcp(syn(1, 1)))),
);
bad(
  "ipv4 ihl beyond total length",
  LINKTYPE.ETHERNET,
  Malformed,
  eth(0x0800, ipv4({ src: A4, dst: B4, ihl: 15, totalLength: 40 }, tcp(syn(1, 1)))),
);
bad(
  "ipv4 version 6 under 0x0800",
  LINKTYPE.ETHERNET,
  Malformed,
  eth(0x0800, ipv4({ src: A4, dst: B4, version: 6 }, tcp(syn(1, 1)))),
);
bad(
  "ipv4 total length < ihl",
  LINKTYPE.ETHERNET,
  Malformed,
  eth(0x0800, ipv4({ src: A4, dst: B4, totalLength: 19 }, tcp(syn(1, 1)))),
);
bad(
  "ipv4 total length cuts tcp header",
  LINKTYPE.ETHERNET,
  Malformed,
  eth(0x0800, ipv4({ src: A4, dst: B4, totalLength: 30 }, tcp(syn(1, 1)))),
);
bad(
  "ipv4 total length cuts tcp options",
  LINKTYPE.ETHERNET,
  Malformed,
  eth(0x0800, ipv4({ src: A4, dst: B4, totalLength: 40 }, tcp({ ...syn(1, 1), doff: 6 }))),
);
ok(
  "ipv4 total length 0 (tso)",
  LINKTYPE.ETHERNET,
  4,
  syn(5002, 17),
  (s) => eth(0x0800, ipv4({ src: A4, dst: B4, totalLength: 0 }, s)),
);
bad(
  "ipv4 udp",
  LINKTYPE.ETHERNET,
  Skip,
  eth(0x0800, ipv4({ src: A4, dst: B4, proto: 17 }, new Array(8).fill(0))),
);
bad(
  "ipv4 icmp",
  LINKTYPE.ETHERNET,
  Skip,
  eth(0x0800, ipv4({ src: A4, dst: B4, proto: 1 }, new Array(8).fill(0))),
);
bad("ipv4 header only, udp", LINKTYPE.RAW, Skip, ipv4({ src: A4, dst: B4, proto: 17 }, []));
ok(
  "ipv4 first fragment",
  LINKTYPE.ETHERNET,
  4,
  syn(5003, 18),
  (s) => eth(0x0800, ipv4({ src: A4, dst: B4, moreFragments: true }, s)),
);
bad(
  "ipv4 non-first fragment",
  LINKTYPE.ETHERNET,
  Skip,
  eth(0x0800, ipv4({ src: A4, dst: B4, fragOffset: 185 }, tcp(syn(1, 1)))),
);
bad(
  "ipv4 non-first fragment, short",
  LINKTYPE.ETHERNET,
  Skip,
  eth(0x0800, ipv4({ src: A4, dst: B4, fragOffset: 1, moreFragments: true }, [1, 2, 3, 4])),
);

// ---- IPv6 extension headers
ok("ipv6 hop-by-hop", LINKTYPE.RAW, 6, syn(6000, 19), (s) => v6(ext6(6, 0, s), 0));
ok("ipv6 routing", LINKTYPE.RAW, 6, syn(6001, 20), (s) => v6(ext6(6, 2, s), 43));
ok("ipv6 destination options", LINKTYPE.RAW, 6, syn(6002, 21), (s) => v6(ext6(6, 1, s), 60));
ok("ipv6 first fragment", LINKTYPE.RAW, 6, syn(6003, 22), (s) => v6(frag6(6, 0, true, s), 44));
ok(
  "ipv6 atomic fragment",
  LINKTYPE.ETHERNET,
  6,
  syn(6004, 23),
  (s) => eth(0x86dd, v6(frag6(6, 0, false, s), 44)),
);
bad("ipv6 non-first fragment", LINKTYPE.RAW, Skip, v6(frag6(6, 100, true, tcp(syn(1, 1))), 44));
bad("ipv6 fragment at offset 8", LINKTYPE.RAW, Skip, v6(frag6(6, 1, true, tcp(syn(1, 1))), 44));
bad("ipv6 last fragment, short", LINKTYPE.RAW, Skip, v6(frag6(6, 3, false, [9, 9, 9]), 44));
ok("ipv6 auth header", LINKTYPE.RAW, 6, syn(6005, 24), (s) => v6(ah6(6, 3, s), 51));
ok(
  "ipv6 every extension header",
  LINKTYPE.ETHERNET,
  6,
  syn(6006, 25),
  (s) =>
    eth(
      0x86dd,
      v6(ext6(60, 0, ext6(43, 1, ext6(44, 0, frag6(51, 0, true, ah6(60, 1, ext6(6, 0, s)))))), 0),
      [[0x8100, 9]],
    ),
);
{
  // Eight destination-option headers are walked; nine are too many.
  let eight = tcp(syn(6007, 26));
  for (let i = 0; i < 8; i++) eight = ext6(i === 0 ? 6 : 60, 0, eight);
  const seg = tcp(syn(6007, 26));
  cases.push({
    name: "ipv6 eight extension headers",
    lt: LINKTYPE.RAW,
    frame: v6(eight, 60),
    status: Ok,
    want: { family: 6, src: A6, dst: B6, sport: 6007, dport: 26, flags: SYN },
    okAt: 40 + 64 + 20,
  });
  assert.equal(v6(eight, 60).length, 40 + 64 + seg.length);
  bad("ipv6 nine extension headers", LINKTYPE.RAW, Malformed, v6(ext6(60, 0, eight), 60));
}
bad("ipv6 udp", LINKTYPE.RAW, Skip, v6(new Array(8).fill(0), 17));
bad("ipv6 icmpv6", LINKTYPE.RAW, Skip, v6(new Array(8).fill(0), 58));
bad("ipv6 no next header", LINKTYPE.RAW, Skip, v6([], 59));
bad("ipv6 esp", LINKTYPE.RAW, Skip, v6(new Array(24).fill(0x5a), 50));
bad("ipv6 udp after hop-by-hop", LINKTYPE.RAW, Skip, v6(ext6(17, 0, new Array(8).fill(0)), 0));
bad(
  "ipv6 extension header beyond payload length",
  LINKTYPE.RAW,
  Malformed,
  ipv6({ src: A6, dst: B6, nh: 60, payloadLength: 16 }, ext6(6, 3, tcp(syn(1, 1)))),
);
bad(
  "ipv6 payload length cuts tcp",
  LINKTYPE.RAW,
  Malformed,
  ipv6({ src: A6, dst: B6, payloadLength: 12 }, tcp(syn(1, 1))),
);
ok(
  "ipv6 payload length 0 (jumbo/tso)",
  LINKTYPE.RAW,
  6,
  syn(6008, 27),
  (s) => ipv6({ src: A6, dst: B6, payloadLength: 0 }, s),
);
bad(
  "ipv6 version 4 under 0x86dd",
  LINKTYPE.ETHERNET,
  Malformed,
  eth(0x86dd, ipv6({ src: A6, dst: B6, version: 4 }, tcp(syn(1, 1)))),
);

// ---- TCP
ok("ecn syn", LINKTYPE.ETHERNET, 4, syn(7000, 28, ECN_SYN), (s) => eth(0x0800, v4(s)));
ok(
  "ecn syn with NS",
  LINKTYPE.ETHERNET,
  6,
  syn(7001, 29, ECN_SYN | TCP.NS),
  (s) => eth(0x86dd, v6(s)),
);
ok("syn-ack", LINKTYPE.ETHERNET, 4, syn(80, 40000, TCP.SYN | TCP.ACK), (s) => eth(0x0800, v4(s)));
ok("rst", LINKTYPE.ETHERNET, 4, syn(80, 40001, TCP.RST), (s) => eth(0x0800, v4(s)));
ok("xmas", LINKTYPE.ETHERNET, 4, syn(1, 2, 0x1ff), (s) => eth(0x0800, v4(s)));
ok("null scan", LINKTYPE.ETHERNET, 4, syn(65535, 65535, 0), (s) => eth(0x0800, v4(s)));
ok(
  "syn with 40 option bytes",
  LINKTYPE.ETHERNET,
  4,
  { ...syn(7002, 30), options: [2, 4, 5, 0xb4, 4, 2, 8, 10, ...new Array(32).fill(1)] },
  (s) => eth(0x0800, v4(s)),
);
ok(
  "syn with payload",
  LINKTYPE.ETHERNET,
  6,
  { ...syn(7003, 31), payload: [1, 2, 3, 4, 5, 6, 7, 8] },
  (s) => eth(0x86dd, v6(s)),
  [A6, B6],
);
bad("tcp data offset 4", LINKTYPE.RAW, Malformed, v4(tcp({ ...syn(1, 1), doff: 4 })));
bad("tcp data offset 0", LINKTYPE.RAW, Malformed, v6(tcp({ ...syn(1, 1), doff: 0 })));
bad("tcp 19 bytes", LINKTYPE.RAW, Malformed, v4(tcp(syn(1, 1)).slice(0, 19)));
bad("unknown link type", 9999, Skip, eth(0x0800, v4(tcp(syn(1, 1)))));

function garbageEvent(): ProbeEvent {
  const ev = newProbeEvent();
  ev.family = 6;
  ev.src.fill(0xee);
  ev.dst.fill(0xee);
  ev.sport = ev.dport = ev.flags = 0xeeee;
  return ev;
}

function fields(ev: ProbeEvent): Want {
  const n = ev.family === 4 ? 4 : 16;
  return {
    family: ev.family,
    src: [...ev.src.subarray(0, n)],
    dst: [...ev.dst.subarray(0, n)],
    sport: ev.sport,
    dport: ev.dport,
    flags: ev.flags,
  };
}

/** Decodes `frame[0..caplen)` placed at `offset` in a buffer whose other bytes are `fill`. */
function decodeIn(
  lt: number,
  frame: number[],
  caplen: number,
  offset: number,
  fill: number,
  tail: number,
): [DecodeStatus, Want] {
  const buf = new Uint8Array(offset + frame.length + tail).fill(fill);
  buf.set(frame.slice(0, caplen), offset);
  const ev = garbageEvent();
  const st = decodePacket(lt, new DataView(buf.buffer), offset, caplen, ev);
  return [st, fields(ev)];
}

Deno.test("decode: every hand-built frame gives the expected status and fields", () => {
  assert.ok(cases.length > 80, `only ${cases.length} cases`);
  for (const c of cases) {
    const buf = new Uint8Array(c.frame);
    const ev = garbageEvent();
    const st = decodePacket(c.lt, new DataView(buf.buffer), 0, buf.length, ev);
    assert.equal(st, c.status, c.name);
    if (c.want) assert.deepEqual(fields(ev), c.want, c.name);
  }
});

Deno.test("decode: every prefix of every frame is Malformed/Skip, or Ok with the right fields", () => {
  let checked = 0;
  for (const c of cases) {
    for (let caplen = 0; caplen <= c.frame.length; caplen++) {
      // A view that ends exactly at caplen: any read past it would throw a RangeError.
      const buf = new Uint8Array(c.frame.slice(0, caplen));
      const ev = garbageEvent();
      const st = decodePacket(c.lt, new DataView(buf.buffer), 0, caplen, ev);
      const what = `${c.name} caplen ${caplen}`;
      if (c.status === Ok && caplen >= c.okAt!) {
        assert.equal(st, Ok, what);
        assert.deepEqual(fields(ev), c.want, what);
      } else {
        assert.ok(st === Malformed || st === Skip, `${what}: status ${st}`);
        if (c.status !== Ok && caplen === c.frame.length) assert.equal(st, c.status, what);
      }
      checked++;
    }
  }
  assert.ok(checked > 5000, `${checked} prefixes`);
});

Deno.test("decode: bytes outside [offset, offset+caplen) never change the result", () => {
  for (const c of cases) {
    for (let caplen = 0; caplen <= c.frame.length; caplen++) {
      const base = decodeIn(c.lt, c.frame, caplen, 0, 0, 0);
      for (
        const [offset, fill, tail] of [[5, 0x00, 64], [11, 0xff, 64], [3, 0x81, 1], [64, 0x60, 200]]
      ) {
        const got = decodeIn(c.lt, c.frame, caplen, offset, fill, tail);
        assert.deepEqual(got, base, `${c.name} caplen ${caplen} offset ${offset} fill ${fill}`);
      }
    }
  }
});

Deno.test("decode: bad offset/caplen arguments are Malformed, never a throw", () => {
  const frame = new Uint8Array(eth(0x0800, v4(tcp(syn(1, 2)))));
  const view = new DataView(frame.buffer);
  const ev = newProbeEvent();
  assert.equal(decodePacket(LINKTYPE.ETHERNET, view, 0, frame.length + 1, ev), Malformed);
  assert.equal(decodePacket(LINKTYPE.ETHERNET, view, 1, frame.length, ev), Malformed);
  assert.equal(decodePacket(LINKTYPE.ETHERNET, view, -1, 10, ev), Malformed);
  assert.equal(decodePacket(LINKTYPE.ETHERNET, view, 0, -5, ev), Malformed);
  assert.equal(decodePacket(LINKTYPE.ETHERNET, view, NaN, 10, ev), Malformed);
  assert.equal(decodePacket(LINKTYPE.ETHERNET, view, 0, NaN, ev), Malformed);
  assert.equal(decodePacket(LINKTYPE.ETHERNET, view, frame.length, 0, ev), Malformed);
  assert.equal(decodePacket(LINKTYPE.ETHERNET, view, 0, frame.length, ev), Ok);
  // A DataView that is a window into a larger buffer: offsets are relative to it.
  const big = new Uint8Array(100).fill(0xff);
  big.set(frame, 30);
  const win = new DataView(big.buffer, 30, frame.length);
  assert.equal(decodePacket(LINKTYPE.ETHERNET, win, 0, frame.length, ev), Ok);
  assert.equal(decodePacket(LINKTYPE.ETHERNET, win, 0, frame.length + 1, ev), Malformed);
});

Deno.test("decode: consecutive frames reuse one event without leaking fields", () => {
  const ev = newProbeEvent();
  const f6 = new Uint8Array(eth(0x86dd, v6(tcp(syn(1111, 2222, ECN_SYN)))));
  const f4 = new Uint8Array(eth(0x0800, v4(tcp(syn(3333, 4444)))));
  assert.equal(decodePacket(LINKTYPE.ETHERNET, new DataView(f6.buffer), 0, f6.length, ev), Ok);
  assert.deepEqual(fields(ev), {
    family: 6,
    src: A6,
    dst: B6,
    sport: 1111,
    dport: 2222,
    flags: ECN_SYN,
  });
  assert.equal(decodePacket(LINKTYPE.ETHERNET, new DataView(f4.buffer), 0, f4.length, ev), Ok);
  assert.deepEqual(fields(ev), {
    family: 4,
    src: A4,
    dst: B4,
    sport: 3333,
    dport: 4444,
    flags: SYN,
  });
});

Deno.test("decode: isSupportedLinktype", () => {
  for (const lt of [0, 1, 12, 14, 101, 108, 113, 228, 229, 276]) {
    assert.ok(isSupportedLinktype(lt), `${lt}`);
  }
  for (const lt of [-1, 2, 6, 9, 105, 127, 192, 197, 9999, NaN]) {
    assert.ok(!isSupportedLinktype(lt), `${lt}`);
  }
  for (const lt of Object.values(LINKTYPE)) assert.ok(isSupportedLinktype(lt));
});
