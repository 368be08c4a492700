/**
 * Capture files of a spoofed-source SYN flood with one real scanner among
 * it, for the flood tests and the detection bench: every flood packet comes
 * from a new source (a bijection of the packet number, so no source repeats)
 * to a random port; the scanner tries one new port every `gapS` seconds.
 * Raw-IP link type (no Ethernet header), written in large chunks.
 */

/** What to write. */
export interface FloodSpec {
  /** Flood packets per second of packet time. */
  rate: number;
  /** Seconds of packet time (the flood runs the whole time). */
  seconds: number;
  /** Family of the flood sources and of the scanner. */
  family: 4 | 6;
  /** Seconds between two probes of the scanner (its first probe comes at gapS / 4). */
  gapS: number;
  /**
   * The scanner's source for each probe: one address (default), or a new
   * address of one /64 for every probe (`rotate64`).
   */
  rotate64?: boolean;
  /** First second of packet time. */
  startSec?: number;
  /** No scanner in the file (a live test scans with real nmap). */
  noScanner?: boolean;
  /** IPv4 destination (default FLOOD_DST4). */
  dst4?: string;
  /** Ethernet frames with these destination and source MACs (12 bytes) instead of raw IP. */
  ethernet?: Uint8Array;
}

/** The scanner and destination of the files, and where to tell --local. */
export const FLOOD_DST4 = "10.255.0.1";
export const FLOOD_DST6 = "fd00:ff::1";
export const SCANNER4 = "192.0.2.77";
export const SCANNER6 = "2001:db8:1:2::77";
/** The /64 a rotating scanner takes its addresses from. */
export const SCANNER6_NET = "2001:db8:1:2::/64";

/** A bijection of 32-bit numbers (murmur3's finalizer), to spread flood sources. */
function scramble(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/**
 * Writes the capture; returns the scanner's probe times (epoch ms) and the
 * number of packets written.
 */
export function writeFloodPcap(
  path: string,
  spec: FloodSpec,
): { probes: number[]; packets: number } {
  const startMs = (spec.startSec ?? 1_700_000_000) * 1000;
  const total = Math.round(spec.rate * spec.seconds);
  const probes: number[] = [];
  for (let t = spec.gapS / 4; t < spec.seconds && !spec.noScanner; t += spec.gapS) {
    probes.push(startMs + t * 1000);
  }
  const eth = spec.ethernet ? 14 : 0;
  const dst4 = (spec.dst4 ?? FLOOD_DST4).split(".").map(Number);
  const ipLen = spec.family === 4 ? 40 : 60;
  const rec = 16 + eth + ipLen;
  const chunkPackets = 16384;
  const buf = new Uint8Array(chunkPackets * rec + 4 * rec);
  const v = new DataView(buf.buffer);
  const f = Deno.openSync(path, { write: true, create: true, truncate: true });
  const header = new Uint8Array(24);
  const hv = new DataView(header.buffer);
  hv.setUint32(0, 0xa1b2c3d4, true);
  hv.setUint16(4, 2, true);
  hv.setUint16(6, 4, true);
  hv.setUint32(16, 65535, true);
  hv.setUint32(20, spec.ethernet ? 1 : 101, true); // LINKTYPE_ETHERNET or LINKTYPE_RAW
  f.writeSync(header);
  let at = 0, next = 0, written = 0;
  const record = (ms: number, src: (o: number) => void, sport: number, dport: number) => {
    const sec = Math.floor(ms / 1000);
    v.setUint32(at, sec, true);
    v.setUint32(at + 4, Math.floor((ms - sec * 1000) * 1000), true);
    v.setUint32(at + 8, eth + ipLen, true);
    v.setUint32(at + 12, eth + ipLen, true);
    if (spec.ethernet) {
      buf.set(spec.ethernet, at + 16);
      v.setUint16(at + 28, spec.family === 4 ? 0x0800 : 0x86dd);
    }
    const ip = at + 16 + eth;
    let tcp: number;
    if (spec.family === 4) {
      buf[ip] = 0x45;
      v.setUint16(ip + 2, 40);
      buf[ip + 8] = 64;
      buf[ip + 9] = 6;
      src(ip + 12);
      buf.set(dst4, ip + 16);
      tcp = ip + 20;
    } else {
      v.setUint32(ip, 0x60000000);
      v.setUint16(ip + 4, 20);
      buf[ip + 6] = 6;
      buf[ip + 7] = 64;
      src(ip + 8);
      buf.set([0xfd, 0, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], ip + 24);
      tcp = ip + 40;
    }
    v.setUint16(tcp, sport);
    v.setUint16(tcp + 2, dport);
    v.setUint32(tcp + 4, 0x01020304);
    v.setUint32(tcp + 8, 0);
    buf[tcp + 12] = 0x50;
    buf[tcp + 13] = 0x02;
    v.setUint16(tcp + 14, 1024);
    v.setUint32(tcp + 16, 0);
    at += rec;
    written++;
  };
  const flush = () => {
    for (let o = 0; o < at;) o += f.writeSync(buf.subarray(o, at));
    at = 0;
  };
  try {
    for (let i = 0; i < total; i++) {
      const ms = startMs + (i * 1000) / spec.rate;
      while (next < probes.length && probes[next] <= ms) {
        const k = next++;
        record(
          probes[k],
          (o) => {
            if (spec.family === 4) buf.set([192, 0, 2, 77], o);
            else {
              buf.set([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0x77], o);
              if (spec.rotate64) v.setUint32(o + 12, 0x1000 + k);
            }
          },
          50000 + k,
          1 + k,
        );
      }
      const s = scramble(i + 0x5bd1e995);
      record(
        ms,
        (o) => {
          if (spec.family === 4) v.setUint32(o, s);
          else {
            // Random-looking global unicast sources: a new /64 and interface id each.
            v.setUint32(o, 0x20000000 | (scramble(i ^ 0x1234567) & 0x1fffffff));
            v.setUint32(o + 4, s);
            v.setUint32(o + 8, scramble(s));
            v.setUint32(o + 12, i);
          }
        },
        1024 + (s & 0x7fff),
        1 + (scramble(s) % 65535),
      );
      if (at >= chunkPackets * rec) flush();
    }
    flush();
  } finally {
    f.close();
  }
  return { probes, packets: written };
}
