/**
 * Capture helpers for tests and benchmarks: Ethernet frames carrying TCP SYNs
 * (IPv4 and IPv6, many sources), written as classic pcap or as a minimal
 * pcapng (section header, interface description, enhanced packets), and a
 * live capture opened inside a lab namespace.
 */
import { Pcap } from "../ffi/pcap.ts";
import { DEFAULT_BUFFER_BYTES, DEFAULT_FILTER, DEFAULT_SNAPLEN } from "../src/capture/capture.ts";

/** One frame to write: capture time and bytes. */
export interface Frame {
  tsSec: number;
  tsUsec: number;
  data: Uint8Array;
}

/** TCP SYN flag bits for the frame builders. */
export const SYN = 0x02;
/** SYN+ACK, which the default filter keeps (this host accepting a connection). */
export const SYN_ACK = 0x12;
/** A bare ACK (an established connection's segment), which the default filter must drop. */
export const ACK = 0x10;
/** SYN with ECN's ECE and CWR set, which the default filter must keep. */
export const SYN_ECN = 0xc2;

function tcpHeader(out: DataView, at: number, sport: number, dport: number, flags: number): void {
  out.setUint16(at, sport);
  out.setUint16(at + 2, dport);
  out.setUint32(at + 4, 0x01020304);
  out.setUint32(at + 8, 0);
  out.setUint8(at + 12, 0x50);
  out.setUint8(at + 13, flags);
  out.setUint16(at + 14, 1024);
}

/** An Ethernet + IPv4 + TCP frame (54 bytes) from 10.(i>>16).(i>>8).i to 10.255.0.1. */
export function synFrame4(i: number, dport: number, flags = SYN): Uint8Array {
  const b = new Uint8Array(54);
  const v = new DataView(b.buffer);
  b.fill(0x02, 0, 6);
  b.fill(0x04, 6, 12);
  v.setUint16(12, 0x0800);
  v.setUint8(14, 0x45);
  v.setUint16(16, 40);
  v.setUint8(22, 64);
  v.setUint8(23, 6);
  b.set([10, (i >> 16) & 255, (i >> 8) & 255, i & 255], 26);
  b.set([10, 255, 0, 1], 30);
  tcpHeader(v, 34, 40000 + (i % 20000), dport, flags);
  return b;
}

/** An Ethernet + IPv6 + TCP frame (74 bytes) from fd00::(i) to fd00::ffff:1. */
export function synFrame6(i: number, dport: number, flags = SYN): Uint8Array {
  const b = new Uint8Array(74);
  const v = new DataView(b.buffer);
  b.fill(0x02, 0, 6);
  b.fill(0x04, 6, 12);
  v.setUint16(12, 0x86dd);
  v.setUint32(14, 0x60000000);
  v.setUint16(18, 20);
  v.setUint8(20, 6);
  v.setUint8(21, 64);
  b[22] = 0xfd;
  v.setUint32(34, i >>> 0);
  b[38] = 0xfd;
  v.setUint32(50, 0xffff0001);
  tcpHeader(v, 54, 40000 + (i % 20000), dport, flags);
  return b;
}

/** A classic pcap file (little-endian, microseconds) holding the frames. */
export function pcapBytes(frames: Frame[], linktype = 1, snaplen = 262144): Uint8Array {
  let size = 24;
  for (const f of frames) size += 16 + f.data.length;
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  v.setUint32(0, 0xa1b2c3d4, true);
  v.setUint16(4, 2, true);
  v.setUint16(6, 4, true);
  v.setUint32(16, snaplen, true);
  v.setUint32(20, linktype, true);
  let at = 24;
  for (const f of frames) {
    v.setUint32(at, f.tsSec, true);
    v.setUint32(at + 4, f.tsUsec, true);
    v.setUint32(at + 8, f.data.length, true);
    v.setUint32(at + 12, f.data.length, true);
    out.set(f.data, at + 16);
    at += 16 + f.data.length;
  }
  return out;
}

/** A minimal pcapng file: SHB, one IDB (Ethernet), one EPB per frame (microsecond stamps). */
export function pcapngBytes(frames: Frame[]): Uint8Array {
  const blocks: Uint8Array[] = [];
  const block = (type: number, body: Uint8Array) => {
    const len = 12 + body.length + ((4 - (body.length % 4)) % 4);
    const b = new Uint8Array(len);
    const v = new DataView(b.buffer);
    v.setUint32(0, type, true);
    v.setUint32(4, len, true);
    b.set(body, 8);
    v.setUint32(len - 4, len, true);
    blocks.push(b);
  };
  const shb = new DataView(new ArrayBuffer(16));
  shb.setUint32(0, 0x1a2b3c4d, true);
  shb.setUint16(4, 1, true);
  shb.setBigInt64(8, -1n, true);
  block(0x0a0d0d0a, new Uint8Array(shb.buffer));
  const idb = new DataView(new ArrayBuffer(8));
  idb.setUint16(0, 1, true);
  idb.setUint32(4, 262144, true);
  block(0x00000001, new Uint8Array(idb.buffer));
  for (const f of frames) {
    const body = new Uint8Array(20 + f.data.length);
    const v = new DataView(body.buffer);
    const ts = BigInt(f.tsSec) * 1000000n + BigInt(f.tsUsec);
    v.setUint32(0, 0, true);
    v.setUint32(4, Number(ts >> 32n), true);
    v.setUint32(8, Number(ts & 0xffffffffn), true);
    v.setUint32(12, f.data.length, true);
    v.setUint32(16, f.data.length, true);
    body.set(f.data, 20);
    block(0x00000006, body);
  }
  let size = 0;
  for (const b of blocks) size += b.length;
  const out = new Uint8Array(size);
  let at = 0;
  for (const b of blocks) {
    out.set(b, at);
    at += b.length;
  }
  return out;
}

/**
 * Writes a large pcap of SYNs from many sources (3 of 4 IPv4, 1 of 4 IPv6),
 * streamed in chunks; returns the number of packets written.
 */
export function writeSynPcap(path: string, count: number, startSec = 1700000000): number {
  const f = Deno.openSync(path, { write: true, create: true, truncate: true });
  try {
    f.writeSync(pcapBytes([]));
    const chunk = 10000;
    for (let i = 0; i < count; i += chunk) {
      const frames: Frame[] = [];
      for (let j = i; j < Math.min(count, i + chunk); j++) {
        const data = j % 4 === 3 ? synFrame6(j, 1 + (j % 1024)) : synFrame4(j, 1 + (j % 1024));
        frames.push({ tsSec: startSec + Math.floor(j / 100000), tsUsec: (j * 10) % 1000000, data });
      }
      const bytes = pcapBytes(frames).subarray(24);
      for (let at = 0; at < bytes.length;) at += f.writeSync(bytes.subarray(at));
    }
  } finally {
    f.close();
  }
  return count;
}

/**
 * Opens a live capture inside a namespace from this process: the main thread
 * joins the namespace (setns), libpcap creates its socket there, and the
 * thread goes back; the socket stays bound to the namespace's interface.
 */
export function openLiveIn(ns: string, device: string, bufferSize = DEFAULT_BUFFER_BYTES): Pcap {
  const libc = Deno.dlopen(
    "libc.so.6",
    {
      open: { parameters: ["buffer", "i32"], result: "i32" },
      close: { parameters: ["i32"], result: "i32" },
      setns: { parameters: ["i32", "i32"], result: "i32" },
    } as const,
  );
  const CLONE_NEWNET = 0x40000000;
  const path = (p: string) => new TextEncoder().encode(p + "\0");
  const home = libc.symbols.open(path("/proc/thread-self/ns/net"), 0);
  const there = libc.symbols.open(path(`/run/netns/${ns}`), 0);
  try {
    if (home < 0 || there < 0) throw new Error(`cannot open the namespace files of ${ns}`);
    if (libc.symbols.setns(there, CLONE_NEWNET) !== 0) throw new Error(`setns into ${ns} failed`);
    let pcap: Pcap | null = null;
    let error: unknown = null;
    try {
      pcap = Pcap.openLive({
        device,
        snaplen: DEFAULT_SNAPLEN,
        bufferSize,
        filter: DEFAULT_FILTER,
      });
    } catch (e) {
      error = e;
    }
    if (libc.symbols.setns(home, CLONE_NEWNET) !== 0) {
      pcap?.close();
      throw new Error("setns back to the original namespace failed");
    }
    if (!pcap) throw error;
    return pcap;
  } finally {
    libc.symbols.close(home);
    libc.symbols.close(there);
    libc.close();
  }
}
