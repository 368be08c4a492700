/**
 * The JavaScript capture-file reader (src/capture/pcapfile.ts) against
 * libpcap's path (Pcap.openOffline) on the same files: the same records,
 * byte for byte, in the same batches' order, the same link type and the
 * same damage messages — for the default filter and other filters (their
 * BPF programs run by src/capture/bpf.ts), on random and mutated frames of
 * several link types, both byte orders, nanosecond stamps and records longer
 * than the snapshot length; and what it leaves to libpcap.
 */
import assert from "node:assert/strict";
import { Pcap } from "../ffi/pcap.ts";
import { DEFAULT_FILTER } from "../src/capture/capture.ts";
import { openCaptureFile, PcapFile } from "../src/capture/pcapfile.ts";
import { bpfSource } from "../src/capture/bpf.ts";
import { compileFilter } from "../ffi/pcap.ts";
import { type Frame, pcapBytes, pcapngBytes, synFrame4, synFrame6 } from "./pcap_files.ts";

type Reader = Pick<Pcap, "linktype" | "dispatch" | "close">;

/** Every record a reader hands out (hex of header + bytes), and the error at the end if any. */
function drain(r: Reader): { records: string[]; error: string | null; linktype: number } {
  const records: string[] = [];
  let error: string | null = null;
  try {
    for (;;) {
      const b = r.dispatch();
      if (!b) break;
      let n = 0;
      for (let at = b.start; at < b.end; n++) {
        const caplen = b.view.getUint32(at + 8, true);
        const bytes = new Uint8Array(b.view.buffer, b.view.byteOffset + at, 16 + caplen);
        records.push(Array.from(bytes, (x) => x.toString(16).padStart(2, "0")).join(""));
        at += 16 + caplen;
      }
      assert.deepStrictEqual(n, b.count, "a batch's count is its records");
    }
  } catch (e) {
    error = (e as Error).message;
  } finally {
    r.close();
  }
  return { records, error, linktype: r.linktype };
}

/** Writes bytes to a fresh file; returns its path. */
function file(bytes: Uint8Array): string {
  const path = Deno.makeTempFileSync({ suffix: ".pcap" });
  Deno.writeFileSync(path, bytes);
  return path;
}

/** Both readers on one file and filter: equal records, link type and error. */
function same(bytes: Uint8Array, filter: string, what: string): number {
  const path = file(bytes);
  try {
    const js = PcapFile.open(path, filter);
    assert(js !== null, `${what}: the JavaScript reader takes the file`);
    const ours = drain(js!);
    const theirs = drain(Pcap.openOffline(path, filter));
    assert.deepStrictEqual(ours.linktype, theirs.linktype, `${what}: link type`);
    assert.deepStrictEqual(ours.records.length, theirs.records.length, `${what}: records kept`);
    assert.deepStrictEqual(ours.records, theirs.records, `${what}: records`);
    assert.deepStrictEqual(ours.error, theirs.error, `${what}: error`);
    return ours.records.length;
  } finally {
    Deno.removeSync(path);
  }
}

/** A small deterministic generator (tests must not depend on luck). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    return s;
  };
}

/**
 * Frames around what filters test: SYNs and other flags (IPv4/IPv6), VLAN
 * tags, IPv6 extension headers, fragments, odd IHLs, truncations, random
 * bytes, other ethertypes.
 */
function frames(n: number, seed: number): Frame[] {
  const r = rng(seed);
  const out: Frame[] = [];
  for (let i = 0; i < n; i++) {
    const kind = r() % 10;
    let d: Uint8Array;
    if (kind < 3) d = synFrame4(i, 1 + (r() % 2000), r() % 256);
    else if (kind < 5) d = synFrame6(i, 1 + (r() % 2000), r() % 256);
    else if (kind === 9) d = Uint8Array.from({ length: r() % 120 }, () => r() & 0xff);
    else if (kind === 8) {
      // An 802.1Q tag between the MAC addresses and the ethertype.
      const plain = r() % 2 ? synFrame4(i, 443, 2) : synFrame6(i, 443, 2);
      d = new Uint8Array(plain.length + 4);
      d.set(plain.subarray(0, 12));
      d.set([0x81, 0x00, 0x00, r() % 16], 12);
      d.set(plain.subarray(12), 16);
    } else {
      d = kind < 7 ? synFrame4(i, 80, 2) : synFrame6(i, 80, 2);
      const flips = 1 + (r() % 3);
      for (let f = 0; f < flips; f++) {
        // Bytes filters and the decoder look at: ethertype, IHL, flags/fragment, protocol, next header, TCP flags.
        const spots = [12, 13, 14, 20, 21, 23, 47, 54 + 13, 20 + 13, 34 + 13];
        d[spots[r() % spots.length] % d.length] = r() & 0xff;
      }
      if (r() % 4 === 0) d = d.subarray(0, r() % d.length);
    }
    out.push({ tsSec: 1700000000 + i, tsUsec: r() % 1000000, data: d });
  }
  return out;
}

const FILTERS = [
  DEFAULT_FILTER,
  "",
  "tcp port 80",
  "tcp[tcpflags] & tcp-syn != 0 and len > 50",
  "ip[2:2] > 50 or ip6 and tcp",
  "vlan and tcp",
  "tcp[13] * 3 - 1 == 5 or (ip[8] / 2) % 7 == 3",
];

Deno.test("JS reader: the records libpcap keeps, byte for byte, for every filter", () => {
  for (const [i, filter] of FILTERS.entries()) {
    const kept = same(pcapBytes(frames(3000, 7 + i)), filter, `filter "${filter}"`);
    assert(kept > 0, `filter "${filter}" keeps some records`);
  }
});

Deno.test("JS reader: other link types (raw IP, Linux cooked) and batch boundaries", () => {
  const raw = frames(70000, 3).map((f) => ({ ...f, data: f.data.subarray(14) }));
  assert(same(pcapBytes(raw, 101), DEFAULT_FILTER, "raw") > 1000);
  const sll = frames(500, 4).filter((f) => f.data.length >= 14).map((f) => {
    const d = new Uint8Array(f.data.length + 2);
    d.set(f.data.subarray(12, 14), 14); // protocol at 14, the network header at 16
    d.set(f.data.subarray(14), 16);
    return { ...f, data: d };
  });
  assert(same(pcapBytes(sll, 113), DEFAULT_FILTER, "sll") > 50);
});

/** The same file in big-endian, or with nanosecond stamps. */
function rewritten(bytes: Uint8Array, bigEndian: boolean, nano: boolean): Uint8Array {
  const out = bytes.slice();
  const v = new DataView(out.buffer), src = new DataView(bytes.buffer);
  const le = !bigEndian;
  v.setUint32(0, nano ? 0xa1b23c4d : 0xa1b2c3d4, le);
  v.setUint16(4, 2, le);
  v.setUint16(6, 4, le);
  v.setUint32(16, src.getUint32(16, true), le);
  v.setUint32(20, src.getUint32(20, true), le);
  for (let at = 24; at < out.length;) {
    const caplen = src.getUint32(at + 8, true);
    v.setUint32(at, src.getUint32(at, true), le);
    v.setUint32(at + 4, src.getUint32(at + 4, true) * (nano ? 1000 : 1) + (nano ? 999 : 0), le);
    v.setUint32(at + 8, caplen, le);
    v.setUint32(at + 12, src.getUint32(at + 12, true), le);
    at += 16 + caplen;
  }
  return out;
}

Deno.test("JS reader: byte-swapped files, nanosecond stamps, records over the snapshot length", () => {
  const base = pcapBytes(frames(2000, 11));
  same(rewritten(base, true, false), DEFAULT_FILTER, "big-endian");
  same(rewritten(base, false, true), DEFAULT_FILTER, "nanoseconds");
  same(rewritten(base, true, true), DEFAULT_FILTER, "big-endian nanoseconds");
  // Snapshot length 60: longer records are cut to 60 bytes as libpcap does.
  same(pcapBytes(frames(2000, 12), 1, 60), DEFAULT_FILTER, "snaplen 60");
  same(pcapBytes(frames(2000, 12), 1, 60), "", "snaplen 60 unfiltered");
});

Deno.test("JS reader: damage after the last complete record, worded as libpcap words it", () => {
  const good = pcapBytes(frames(1000, 21));
  const kept = same(good, "", "whole");
  for (const cut of [5, 16 + 10, 7]) {
    assert.deepStrictEqual(same(good.subarray(0, good.length - cut), "", `cut ${cut}`), kept - 1);
  }
  const huge = good.slice();
  new DataView(huge.buffer).setUint32(24 + 16 + synFrame4(0, 1).length + 8, 300000, true);
  same(huge, "", "a record longer than any snapshot");
  same(huge, DEFAULT_FILTER, "the same, filtered");
});

Deno.test("JS reader: what it leaves to libpcap, which opens it as before", () => {
  const ng = file(pcapngBytes([{ tsSec: 1, tsUsec: 2, data: synFrame4(1, 22) }]));
  const oldVersion = pcapBytes([{ tsSec: 1, tsUsec: 2, data: synFrame4(1, 22) }]);
  new DataView(oldVersion.buffer).setUint16(6, 3, true);
  const v23 = file(oldVersion);
  try {
    assert.deepStrictEqual(PcapFile.open(ng, DEFAULT_FILTER), null, "pcapng");
    assert.deepStrictEqual(PcapFile.open(v23, DEFAULT_FILTER), null, "version 2.3");
    assert.deepStrictEqual(PcapFile.open("-", DEFAULT_FILTER), null, "standard input");
    assert.deepStrictEqual(
      PcapFile.open("/nonexistent/x.pcap", DEFAULT_FILTER),
      null,
      "missing file",
    );
    assert.deepStrictEqual(PcapFile.open("/tmp", DEFAULT_FILTER), null, "a directory");
    const viaLibpcap = openCaptureFile(ng, DEFAULT_FILTER);
    assert(viaLibpcap instanceof Pcap, "pcapng goes to libpcap");
    assert.deepStrictEqual(drain(viaLibpcap).records.length, 1);
    assert.throws(() => openCaptureFile("/nonexistent/x.pcap", DEFAULT_FILTER), /does not exist/);
  } finally {
    Deno.removeSync(ng);
    Deno.removeSync(v23);
  }
});

Deno.test("BPF compiler: only the program's numbers reach the generated source", () => {
  const src = bpfSource(compileFilter(1, 262144, "tcp port 80 or host 10.0.0.1"));
  // Everything is a keyword, a label, a register, a number or an operator of the templates.
  const words = new Set(src.match(/[A-Za-z_]\w*/g));
  const allowed = new Set([
    "let",
    "a",
    "x",
    "if",
    "return",
    "break",
    "else",
    "v",
    "p",
    "c",
    "w",
    "m",
    "getUint8",
    "getUint16",
    "getUint32",
    "Math",
    "imul",
    "floor",
  ]);
  for (const w of words) assert(allowed.has(w) || /^L\d+$/.test(w), `unexpected word ${w}`);
});

Deno.test("JS reader: V8 compiles the read loop about once, not over and over (every one of 5 runs)", async () => {
  // Before the loop ran at open, V8's first on-stack compilation of it
  // lacked the feedback of the code after the loop and was thrown away and
  // redone 7-24 times on this file (40-100 on 1,000,000 records). Run once at
  // open, before V8 keeps a function's feedback (its 8th call), with the loop
  // in a method, half the runs still did: 15, 5, 5, 20 times in 8 runs.
  const path = Deno.makeTempFileSync({ suffix: ".pcap" });
  try {
    const frames = Array.from({ length: 200000 }, (_, i) => ({
      tsSec: 1700000000 + Math.floor(i / 1000),
      tsUsec: i % 1000,
      data: i % 4 === 3 ? synFrame6(i, 1 + (i % 1024)) : synFrame4(i, 1 + (i % 1024)),
    }));
    Deno.writeFileSync(path, pcapBytes(frames));
    const reader = new URL("../bench/read_file.ts", import.meta.url).pathname;
    const counts: number[] = [];
    for (let i = 0; i < 5; i++) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--v8-flags=--trace-deopt", reader, path],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      // V8's trace and the reader's own line share standard output (and may cut into each other).
      const text = new TextDecoder().decode(out.stdout);
      counts.push((text.match(/bailout[^\n]*JSFunction (#records|walkRecords) /g) ?? []).length);
    }
    assert.ok(Math.max(...counts) <= 2, `the read loop was deoptimised ${counts.join(", ")} times`);
  } finally {
    Deno.removeSync(path);
  }
});
