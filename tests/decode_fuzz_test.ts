/**
 * Randomized decoder test: 1,000,000+ random and mutated frames over every
 * link type (seeded, so a failure is reproducible with SB_FUZZ_SEED), with
 * zero exceptions, sane fields on every Ok, and results that never depend on
 * bytes outside the captured range.
 */
import assert from "node:assert/strict";
import { decodePacket, LINKTYPE } from "../src/detect/decode.ts";
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
} from "./fixtures/frames.ts";

/** xorshift32: small, fast and reproducible. */
class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = (seed >>> 0) || 0x9e3779b9;
  }
  next(): number {
    let x = this.#s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#s = x >>> 0;
    return this.#s;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return this.next() % n;
  }
}

const LINKTYPES = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276];

/** Valid frames of every shape the decoder knows, as [linktype, bytes]. */
function templates(): [number, Uint8Array][] {
  const out: [number, Uint8Array][] = [];
  const seg = (flags: number, doff?: number) =>
    tcp({
      sport: 40000 + flags,
      dport: 22 + flags,
      flags,
      options: doff ? [2, 4, 5, 0xb4, 4, 2, 8, 10] : undefined,
    });
  const p4s = [
    ipv4({ src: A4, dst: B4 }, seg(TCP.SYN)),
    ipv4({ src: B4, dst: A4, options: [1, 1, 1, 0] }, seg(TCP.SYN | TCP.ECE | TCP.CWR, 1)),
    ipv4({ src: A4, dst: B4, moreFragments: true }, seg(TCP.SYN | TCP.ACK)),
    ipv4({ src: A4, dst: B4, fragOffset: 3 }, seg(TCP.RST)),
    ipv4({ src: A4, dst: B4, proto: 17 }, new Array(8).fill(0)),
  ];
  const s6 = seg(TCP.SYN | TCP.NS, 1);
  const p6s = [
    ipv6({ src: A6, dst: B6 }, seg(TCP.SYN)),
    ipv6({ src: B6, dst: A6, nh: 0 }, ext6(43, 0, ext6(60, 1, s6))),
    ipv6({ src: A6, dst: B6, nh: 44 }, frag6(6, 0, true, s6)),
    ipv6({ src: A6, dst: B6, nh: 44 }, frag6(6, 9, false, s6)),
    ipv6({ src: A6, dst: B6, nh: 51 }, ah6(60, 2, ext6(6, 0, s6))),
    ipv6({ src: A6, dst: B6, nh: 58 }, new Array(8).fill(0)),
  ];
  for (const p of p4s) {
    out.push([LINKTYPE.ETHERNET, new Uint8Array(eth(0x0800, p))]);
    out.push([LINKTYPE.ETHERNET, new Uint8Array(eth(0x0800, p, [[0x88a8, 3], [0x8100, 4]]))]);
    out.push([LINKTYPE.LINUX_SLL, new Uint8Array(sll(0x0800, p))]);
    out.push([LINKTYPE.LINUX_SLL2, new Uint8Array(sll2(0x0800, p))]);
    out.push([
      LINKTYPE.LINUX_SLL2,
      new Uint8Array(sll2(0x8100, [...be16(5), ...be16(0x800), ...p])),
    ]);
    out.push([LINKTYPE.RAW, new Uint8Array(p)]);
    out.push([12, new Uint8Array(p)]);
    out.push([LINKTYPE.IPV4, new Uint8Array(p)]);
    out.push([LINKTYPE.NULL, new Uint8Array(nullFrame(2, p))]);
    out.push([LINKTYPE.LOOP, new Uint8Array(loopFrame(2, p))]);
  }
  for (const p of p6s) {
    out.push([LINKTYPE.ETHERNET, new Uint8Array(eth(0x86dd, p))]);
    out.push([LINKTYPE.ETHERNET, new Uint8Array(eth(0x86dd, p, [[0x8100, 4]]))]);
    out.push([LINKTYPE.LINUX_SLL, new Uint8Array(sll(0x86dd, p))]);
    out.push([LINKTYPE.LINUX_SLL2, new Uint8Array(sll2(0x86dd, p))]);
    out.push([LINKTYPE.RAW, new Uint8Array(p)]);
    out.push([14, new Uint8Array(p)]);
    out.push([LINKTYPE.IPV6, new Uint8Array(p)]);
    out.push([LINKTYPE.NULL, new Uint8Array(nullFrame(28, p, false))]);
    out.push([LINKTYPE.NULL, new Uint8Array(nullFrame(30, p))]);
    out.push([LINKTYPE.LOOP, new Uint8Array(loopFrame(24, p))]);
  }
  return out;
}

/** Byte values that steer a decoder into its interesting branches. */
const MAGIC = [
  0x00,
  0xff,
  0x08,
  0x81,
  0x86,
  0xdd,
  0x88,
  0xa8,
  0x91,
  0x45,
  0x4f,
  0x40,
  0x60,
  0x06,
  0x00,
  0x2b,
  0x2c,
  0x3c,
  0x33,
  0x3b,
  0x50,
  0xf0,
  0x02,
  0x12,
  0x1c,
  0x1e,
  0x18,
];

function checkOk(ev: ProbeEvent): void {
  if (ev.family !== 4 && ev.family !== 6) throw new Error(`family ${ev.family}`);
  if (!(ev.sport >= 0 && ev.sport <= 0xffff && ev.dport >= 0 && ev.dport <= 0xffff)) {
    throw new Error(`ports ${ev.sport} ${ev.dport}`);
  }
  if (!(ev.flags >= 0 && ev.flags <= 0x1ff)) throw new Error(`flags ${ev.flags}`);
}

function sameEvent(a: ProbeEvent, b: ProbeEvent): boolean {
  if (a.family !== b.family || a.sport !== b.sport || a.dport !== b.dport) return false;
  if (a.flags !== b.flags) return false;
  const n = a.family === 4 ? 4 : 16;
  for (let i = 0; i < n; i++) if (a.src[i] !== b.src[i] || a.dst[i] !== b.dst[i]) return false;
  return true;
}

/**
 * A reference decoder written for clarity, not speed: it works on a copy of
 * the captured bytes and signals truncation with an exception, so it cannot
 * read past the capture by construction. The fast decoder must agree with it
 * on every frame: same status, and on Ok the same fields.
 */
class Stop {
  constructor(readonly status: DecodeStatus) {}
}

interface RefEvent {
  family: 4 | 6;
  src: number[];
  dst: number[];
  sport: number;
  dport: number;
  flags: number;
}

function refDecode(lt: number, b: Uint8Array): DecodeStatus | RefEvent {
  try {
    return refFrame(lt, b);
  } catch (e) {
    if (e instanceof Stop) return e.status;
    throw e;
  }
}

function refFrame(lt: number, b: Uint8Array): RefEvent {
  const malformed = new Stop(DecodeStatus.Malformed), skip = new Stop(DecodeStatus.Skip);
  const u8 = (at: number, lim = b.length) => {
    if (at >= lim) throw malformed;
    return b[at];
  };
  const u16 = (at: number, lim = b.length) => (u8(at, lim) << 8) | u8(at + 1, lim);
  const u32 = (at: number) => ((u16(at) << 16) | u16(at + 2)) >>> 0;
  const afToType = (af: number) => af === 2 ? 0x0800 : [24, 28, 30].includes(af) ? 0x86dd : 0;
  let pos: number;
  let type: number;
  if (lt === 1) [pos, type] = [14, u16(12)];
  else if (lt === 113) [pos, type] = [16, u16(14)];
  else if (lt === 276) [pos, type] = [20, u16(0) + 0 * u8(19)];
  else if (lt === 101 || lt === 12 || lt === 14) [pos, type] = [0, -1];
  else if (lt === 228) [pos, type] = [0, 0x0800];
  else if (lt === 229) [pos, type] = [0, 0x86dd];
  else if (lt === 0) {
    const le = (b[0] | (u8(1) << 8) | (b[2] << 16) | (u8(3) << 24)) >>> 0;
    [pos, type] = [4, afToType(le > 0xffff ? u32(0) : le)];
  } else if (lt === 108) [pos, type] = [4, afToType(u32(0))];
  else throw skip;
  if (lt === 1) u8(13);
  if (lt === 113) u8(15);
  if (type === 0) throw skip;
  for (let tags = 0; [0x8100, 0x88a8, 0x9100].includes(type); tags++) {
    if (tags === 4) throw malformed;
    u8(pos + 3);
    type = u16(pos + 2);
    pos += 4;
  }
  if (type === -1) {
    const v = u8(pos) >> 4;
    if (v !== 4 && v !== 6) throw malformed;
    type = v === 4 ? 0x0800 : 0x86dd;
  }
  if (type === 0x0800) {
    u8(pos + 19);
    if (u8(pos) >> 4 !== 4) throw malformed;
    const ihl = (u8(pos) & 15) * 4;
    const total = u16(pos + 2);
    if (ihl < 20 || (total !== 0 && total < ihl)) throw malformed;
    const lim = total === 0 ? b.length : Math.min(b.length, pos + total);
    u8(pos + ihl - 1, lim);
    if ((u16(pos + 6) & 0x1fff) !== 0 || u8(pos + 9) !== 6) throw skip;
    const t = refTcp(b, pos + ihl, lim, total === 0 ? Infinity : pos + total, u8);
    return {
      family: 4,
      src: [...b.slice(pos + 12, pos + 16)],
      dst: [...b.slice(pos + 16, pos + 20)],
      ...t,
    };
  }
  if (type !== 0x86dd) throw skip;
  u8(pos + 39);
  if (u8(pos) >> 4 !== 6) throw malformed;
  const plen = u16(pos + 4);
  const realEnd = plen === 0 ? Infinity : pos + 40 + plen;
  const lim = Math.min(b.length, realEnd);
  let nh = u8(pos + 6);
  let q = pos + 40;
  for (let n = 0; nh !== 6; n++) {
    if (![0, 43, 60, 44, 51].includes(nh)) throw skip;
    if (n === 8) throw malformed;
    u8(q + 7, lim);
    if (nh === 44 && (u16(q + 2) >> 3) !== 0) throw skip;
    const len = nh === 44 ? 8 : nh === 51 ? (u8(q + 1) + 2) * 4 : (u8(q + 1) + 1) * 8;
    nh = u8(q);
    q += len;
  }
  const t = refTcp(b, q, lim, realEnd, u8);
  return {
    family: 6,
    src: [...b.slice(pos + 8, pos + 24)],
    dst: [...b.slice(pos + 24, pos + 40)],
    ...t,
  };
}

function refTcp(
  b: Uint8Array,
  q: number,
  lim: number,
  realEnd: number,
  u8: (at: number, lim?: number) => number,
): { sport: number; dport: number; flags: number } {
  u8(q + 19, lim);
  const doff = (b[q + 12] >> 4) * 4;
  if (doff < 20 || q + doff > realEnd) throw new Stop(DecodeStatus.Malformed);
  return {
    sport: (b[q] << 8) | b[q + 1],
    dport: (b[q + 2] << 8) | b[q + 3],
    flags: b[q + 13] | ((b[q + 12] & 1) << 8),
  };
}

function sameAs(ev: ProbeEvent, r: RefEvent): boolean {
  if (ev.family !== r.family || ev.sport !== r.sport || ev.dport !== r.dport) return false;
  if (ev.flags !== r.flags) return false;
  for (let i = 0; i < r.src.length; i++) {
    if (ev.src[i] !== r.src[i] || ev.dst[i] !== r.dst[i]) return false;
  }
  return true;
}

const FRAMES = 1_000_000;

Deno.test("decode fuzz: 1,000,000 random and mutated frames, no exception, no out-of-range read", () => {
  const seed = Number(Deno.env.get("SB_FUZZ_SEED") ?? 20261122);
  const rng = new Rng(seed);
  const tpl = templates();
  const buf = new Uint8Array(2048);
  const view = new DataView(buf.buffer);
  const ev = newProbeEvent();
  const ev2 = newProbeEvent();
  const counts = [0, 0, 0];
  let okTemplate = 0;
  for (let i = 0; i < FRAMES; i++) {
    const mode = rng.int(8);
    const offset = rng.int(64);
    let lt: number;
    let caplen: number;
    if (mode === 0) {
      // Pure noise, on a real or an unknown link type.
      lt = rng.int(16) === 0 ? rng.int(300) : LINKTYPES[rng.int(LINKTYPES.length)];
      caplen = rng.int(160);
      for (let j = 0; j < caplen; j++) buf[offset + j] = rng.next() & 0xff;
    } else {
      const [tlt, t] = tpl[rng.int(tpl.length)];
      lt = rng.int(64) === 0 ? LINKTYPES[rng.int(LINKTYPES.length)] : tlt;
      buf.set(t, offset);
      caplen = t.length;
      const muts = mode === 1 ? 0 : rng.int(5);
      for (let m = 0; m < muts; m++) {
        const at = offset + rng.int(caplen);
        const r = rng.int(4);
        if (r === 0) buf[at] = rng.next() & 0xff;
        else if (r === 1) buf[at] = MAGIC[rng.int(MAGIC.length)];
        else if (r === 2) buf[at] ^= 1 << rng.int(8);
        else buf[at] = buf[at] + (rng.int(2) === 0 ? 1 : 255);
      }
      const cut = rng.int(4);
      if (cut === 0) caplen = rng.int(caplen + 1);
      else if (cut === 1) {
        // Longer than the template: random trailing bytes.
        const extra = rng.int(40);
        for (let j = 0; j < extra; j++) buf[offset + caplen + j] = rng.next() & 0xff;
        caplen += extra;
      }
    }
    // Sentinel bytes around the captured range.
    const fill = rng.next() & 0xff;
    buf.fill(fill, offset + caplen, offset + caplen + 64);
    if (offset > 0) buf.fill(fill, 0, offset);
    let st: DecodeStatus;
    try {
      st = decodePacket(lt, view, offset, caplen, ev);
    } catch (e) {
      throw new Error(`seed ${seed} frame ${i}: decodePacket threw: ${e}`);
    }
    if (st !== DecodeStatus.Ok && st !== DecodeStatus.Skip && st !== DecodeStatus.Malformed) {
      throw new Error(`seed ${seed} frame ${i}: status ${st}`);
    }
    counts[st]++;
    // The reference decoder must agree (on a copy of exactly the captured bytes).
    const want = refDecode(lt, buf.slice(offset, offset + caplen));
    if (typeof want === "number" ? want !== st : st !== DecodeStatus.Ok || !sameAs(ev, want)) {
      const hex = [...buf.subarray(offset, offset + caplen)].map((x) =>
        x.toString(16).padStart(2, "0")
      );
      throw new Error(
        `seed ${seed} frame ${i}: linktype ${lt}, status ${st}, reference ${
          JSON.stringify(want)
        }, ` +
          `event ${JSON.stringify({ ...ev, src: [...ev.src], dst: [...ev.dst] })}, frame ${
            hex.join("")
          }`,
      );
    }
    if (st === DecodeStatus.Ok) {
      checkOk(ev);
      if (mode !== 0) okTemplate++;
    }
    // Every 8th frame: different bytes outside the range must not change anything.
    if ((i & 7) === 0) {
      const fill2 = fill ^ 0xa5;
      buf.fill(fill2, offset + caplen, offset + caplen + 64);
      if (offset > 0) buf.fill(fill2, 0, offset);
      const st2 = decodePacket(lt, view, offset, caplen, ev2);
      if (st2 !== st || (st === DecodeStatus.Ok && !sameEvent(ev, ev2))) {
        throw new Error(`seed ${seed} frame ${i}: result depends on bytes outside the capture`);
      }
    }
  }
  console.log(`seed ${seed}: ok ${counts[0]}, skip ${counts[1]}, malformed ${counts[2]}`);
  // The mix must reach every outcome often, or the fuzzer is not exercising the decoder.
  assert.equal(counts[0] + counts[1] + counts[2], FRAMES);
  for (const c of counts) assert.ok(c > FRAMES / 50, `outcomes ${counts}`);
  assert.ok(okTemplate > FRAMES / 10, `ok from templates ${okTemplate}`);
});
