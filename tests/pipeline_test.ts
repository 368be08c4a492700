import assert from "node:assert/strict";
import { parseAddress, parseCidr } from "../src/address.ts";
import { AllowList } from "../src/allowlist.ts";
import { LINKTYPE } from "../src/detect/decode.ts";
import { Admission } from "../src/detect/admission.ts";
import { Detector } from "../src/detect/detector.ts";
import { EventLog } from "../src/report/log.ts";
import { Pipeline, type ScanReport } from "../src/detect/pipeline.ts";

/** A raw-IP TCP frame (no link header). */
function frame(src: string, dst: string, sport: number, dport: number, flags = 0x02): Uint8Array {
  const s = parseAddress(src)!, d = parseAddress(dst)!;
  const tcp = new Uint8Array(20);
  const tv = new DataView(tcp.buffer);
  tv.setUint16(0, sport);
  tv.setUint16(2, dport);
  tcp[12] = 5 << 4;
  tcp[13] = flags;
  if (s.family === 4) {
    const ip = new Uint8Array(20 + 20);
    const v = new DataView(ip.buffer);
    ip[0] = 0x45;
    v.setUint16(2, 40);
    ip[8] = 64;
    ip[9] = 6;
    ip.set(s.bytes, 12);
    ip.set(d.bytes, 16);
    ip.set(tcp, 20);
    return ip;
  }
  const ip = new Uint8Array(40 + 20);
  const v = new DataView(ip.buffer);
  ip[0] = 0x60;
  v.setUint16(4, 20);
  ip[6] = 6;
  ip[7] = 64;
  ip.set(s.bytes, 8);
  ip.set(d.bytes, 24);
  ip.set(tcp, 40);
  return ip;
}

/** Packs frames into pcap records (host order, as pcap_dump writes them). */
function batch(frames: { ms: number; data: Uint8Array }[]) {
  const size = frames.reduce((n, f) => n + 16 + f.data.length, 0);
  const buf = new Uint8Array(size);
  const v = new DataView(buf.buffer);
  let off = 0;
  for (const f of frames) {
    v.setUint32(off, Math.floor(f.ms / 1000), true);
    v.setUint32(off + 4, (f.ms % 1000) * 1000, true);
    v.setUint32(off + 8, f.data.length, true);
    v.setUint32(off + 12, f.data.length, true);
    buf.set(f.data, off + 16);
    off += 16 + f.data.length;
  }
  return { view: v, start: 0, end: size };
}

function setup(
  opts: {
    local?: string[];
    allow?: string[];
    everyDestinationLocal?: boolean;
    slow?: boolean;
    outbound?: boolean;
    open?: number[];
  } = {},
) {
  const out: string[] = [];
  const log = new EventLog("text", 0, (t) => out.push(t));
  const allow = new AllowList(
    (opts.allow ?? []).map((c) => parseCidr(c)!),
    (opts.local ?? []).map((a) => parseAddress(a)!),
  );
  const scans: ScanReport[] = [];
  const repeats: string[] = [];
  const pl = new Pipeline({
    linktype: LINKTYPE.RAW,
    detector: new Detector({ ports: 3, windowMs: 60_000, maxSources: 1000 }),
    rule: "window",
    slow: opts.slow ? new Detector({ ports: 12, windowMs: 3_600_000, maxSources: 1000 }) : null,
    outbound: opts.outbound ? new Detector({ ports: 3, windowMs: 60_000, maxSources: 1000 }) : null,
    openPorts: opts.open ? new Set(opts.open) : null,
    allow,
    log,
    everyDestinationLocal: opts.everyDestinationLocal ?? false,
    onScan: (s) => scans.push(s),
    onRepeatScanner: (_ms, src) => repeats.push(src),
    summarize: true,
  });
  const run = (frames: Uint8Array[], stepMs = 10) => {
    pl.processBatch(
      batch(frames.map((data, i) => ({ ms: 1_600_000_000_000 + i * stepMs, data }))),
    );
    log.flush();
  };
  return { pl, run, scans, repeats, lines: () => out.join("").split("\n").filter(Boolean) };
}

const probes = (src: string, dst: string, ports: number[]) =>
  ports.map((p, i) => frame(src, dst, 40000 + i, p));

Deno.test("a scan of this host is reported once, with its ports", () => {
  const t = setup({ local: ["10.0.0.2"] });
  t.run(probes("10.0.0.1", "10.0.0.2", [21, 22, 23, 25, 80, 443]));
  assert.equal(t.scans.length, 1);
  assert.deepEqual(t.scans[0].ports, [21, 22, 23, 25]);
  assert.equal(t.scans[0].src, "10.0.0.1");
  assert.equal(t.repeats.length, 2);
  assert.equal(
    t.lines().filter((l) => l.includes("Port scan detected: 10.0.0.1 -> 10.0.0.2")).length,
    1,
  );
  assert.equal(t.pl.attempts4, 6);
  const sum = t.pl.scans.get("10.0.0.1")!;
  assert.equal(sum.targets.size, 6);
});

Deno.test("this host's own outbound connections are not counted against the peer", () => {
  const t = setup({ local: ["10.0.0.2"] });
  t.run(probes("10.0.0.2", "10.0.0.1", Array.from({ length: 20 }, (_, i) => 1000 + i)));
  assert.equal(t.scans.length, 0);
  assert.equal(t.pl.attempts4, 0);
  assert.equal(t.lines().length, 0);
});

Deno.test("allow-listed and loopback sources are logged but never counted", () => {
  const t = setup({
    local: ["10.0.0.2", "127.0.0.1", "::1"],
    allow: ["192.168.0.0/16", "fd00:1::/32"],
  });
  t.run([
    ...probes("192.168.4.4", "10.0.0.2", [1, 2, 3, 4, 5]),
    ...probes("127.0.0.5", "127.0.0.1", [1, 2, 3, 4, 5]),
    ...probes("fd00:1:2::9", "::1", [1, 2, 3, 4, 5]),
  ]);
  assert.equal(t.scans.length, 0);
  assert.equal(t.lines().filter((l) => l.includes("New connection: 192.168.4.4")).length, 5);
  assert.equal(t.lines().filter((l) => l.includes("New connection: [fd00:1:2::9]")).length, 5);
});

Deno.test("IPv6 scans are detected", () => {
  const t = setup({ local: ["fd77::2"] });
  t.run(probes("fd77::1", "fd77::2", [22, 80, 443, 8080]));
  assert.equal(t.scans.length, 1);
  assert.equal(t.scans[0].family, 6);
  assert.equal(t.scans[0].src, "fd77::1");
  assert.ok(
    t.lines().includes(
      t.lines().find((l) => l.endsWith("Port scan detected: fd77::1 -> fd77::2"))!,
    ),
  );
});

Deno.test("SYN-ACK, RST and ACK segments are not connection attempts; ECN SYNs are", () => {
  const t = setup({ local: ["10.0.0.2"] });
  t.run([
    frame("10.0.0.1", "10.0.0.2", 1, 1, 0x12),
    frame("10.0.0.1", "10.0.0.2", 1, 2, 0x04),
    frame("10.0.0.1", "10.0.0.2", 1, 3, 0x10),
    frame("10.0.0.1", "10.0.0.2", 1, 4, 0xc2),
  ]);
  assert.equal(t.pl.attempts4, 1);
});

Deno.test("without --local in -r mode every destination counts as this host", () => {
  const t = setup({ everyDestinationLocal: true });
  t.run(probes("10.9.9.9", "203.0.113.5", [1, 2, 3, 4]));
  assert.equal(t.scans.length, 1);
});

Deno.test("malformed frames are counted, not thrown", () => {
  const t = setup({ local: ["10.0.0.2"] });
  const f = frame("10.0.0.1", "10.0.0.2", 1, 80);
  t.run([f.subarray(0, 30), new Uint8Array([0x45, 0, 0]), f]);
  assert.equal(t.pl.packets, 3);
  assert.equal(t.pl.decodeErrors, 2);
  assert.equal(t.pl.attempts4, 1);
});

Deno.test("NULL, FIN and Xmas probes count like SYNs and carry their type", () => {
  for (const [flags, type] of [[0x00, "null"], [0x01, "fin"], [0x29, "xmas"]] as const) {
    const t = setup({ local: ["10.0.0.2"] });
    t.run([1, 2, 3, 4].map((p) => frame("10.0.0.1", "10.0.0.2", 5555, p, flags)));
    assert.equal(t.scans.length, 1, type);
    assert.equal(t.scans[0].scanType, type);
    assert.equal(t.pl.attempts4, 0);
    assert.equal(t.pl.stealthProbes, 4);
  }
  const t = setup({ local: ["10.0.0.2"] });
  t.run([1, 2, 3, 4].map((p) => frame("10.0.0.1", "10.0.0.2", 5555, p, 0x14))); // RST+ACK
  assert.equal(t.scans.length, 0);
});

Deno.test("slow scans: 13 ports at one a minute are caught by the long window only", () => {
  const slow = setup({ local: ["10.0.0.2"], slow: true });
  slow.run(probes("10.0.0.1", "10.0.0.2", Array.from({ length: 14 }, (_, i) => 100 + i)), 61_000);
  assert.equal(slow.scans.length, 1);
  assert.equal(slow.scans[0].slow, true);
  assert.equal(slow.scans[0].ports.length, 13);
  const off = setup({ local: ["10.0.0.2"], slow: false });
  off.run(probes("10.0.0.1", "10.0.0.2", Array.from({ length: 14 }, (_, i) => 100 + i)), 61_000);
  assert.equal(off.scans.length, 0);
  // A fast scan is reported once, not again by the slow rule.
  const both = setup({ local: ["10.0.0.2"], slow: true });
  both.run(probes("10.0.0.1", "10.0.0.2", Array.from({ length: 40 }, (_, i) => 100 + i)));
  assert.equal(both.scans.length, 1);
  assert.equal(both.scans[0].slow, false);
});

Deno.test("horizontal: two addresses of this host with two ports each is a scan", () => {
  const t = setup({ local: ["10.0.0.2", "10.0.0.3"] });
  t.run([
    ...probes("10.0.0.1", "10.0.0.2", [22, 80]),
    ...probes("10.0.0.1", "10.0.0.3", [22, 80]),
  ]);
  assert.equal(t.scans.length, 1);
  assert.deepEqual(t.scans[0].ports, [22, 80, 22, 80]);
  const one = setup({ local: ["10.0.0.2", "10.0.0.3"] });
  one.run([...probes("10.0.0.1", "10.0.0.2", [22, 80]), ...probes("10.0.0.1", "10.0.0.3", [22])]);
  assert.equal(one.scans.length, 0);
});

Deno.test("outbound scans are reported, never passed on for a ban", () => {
  const t = setup({ local: ["10.0.0.2"], outbound: true });
  t.run(probes("10.0.0.2", "198.51.100.7", [1, 2, 3, 4, 5]));
  assert.equal(t.scans.length, 0);
  assert.equal(t.pl.outboundScans, 1);
  assert.deepEqual(
    t.lines().filter((l) => l.includes("Outbound port scan detected: 10.0.0.2 -> 198.51.100.7"))
      .length,
    1,
  );
});

Deno.test("SYNs to open ports are not probes; closed ports still are", () => {
  const t = setup({ local: ["10.0.0.2"], open: [22, 25, 80, 443] });
  t.run(probes("10.0.0.1", "10.0.0.2", [80, 443, 22, 25, 80, 443]));
  assert.equal(t.scans.length, 0);
  assert.equal(t.pl.openPortProbes, 6);
  assert.equal(t.pl.attempts4, 6);
  const c = setup({ local: ["10.0.0.2"], open: [22, 25, 80, 443] });
  c.run(probes("10.0.0.1", "10.0.0.2", [1, 2, 3, 4]));
  assert.equal(c.scans.length, 1);
});

Deno.test("a batch is read ahead in chunks yet gives what one packet at a time gives", () => {
  // 8 scanners of 6 ports interleaved (IPv4 and IPv6), a malformed frame every 7th
  // packet and one SYN-ACK: several chunks of read-ahead, with the admission sketch.
  const frames: Uint8Array[] = [];
  for (let p = 0; p < 6; p++) {
    for (let s = 0; s < 8; s++) {
      const src = s % 2 === 0 ? `10.0.1.${s}` : `2001:db8:${s}::1`;
      const dst = s % 2 === 0 ? "10.0.0.2" : "2001:db8::2";
      frames.push(frame(src, dst, 40000 + p, 1000 + p));
      if (frames.length % 7 === 0) frames.push(new Uint8Array([0x45, 0, 0]));
    }
  }
  frames.push(frame("10.0.0.2", "10.0.1.0", 1000, 40000, 0x12));
  for (let i = 0; i < 200; i++) frames.push(frame(`10.9.${i >> 8}.${i & 255}`, "10.0.0.2", 1, 80));
  const make = () => {
    const out: string[] = [];
    const log = new EventLog("text", 0, (t) => out.push(t));
    const scans: string[] = [], repeats: string[] = [];
    const pl = new Pipeline({
      linktype: LINKTYPE.RAW,
      detector: new Detector({ ports: 3, windowMs: 60_000, maxSources: 1000 }),
      rule: "window",
      slow: null,
      outbound: null,
      openPorts: null,
      allow: new AllowList([], [parseAddress("10.0.0.2")!, parseAddress("2001:db8::2")!]),
      log,
      everyDestinationLocal: false,
      onScan: (s) => scans.push(`${s.ms} ${s.src} ${s.ports.join(",")}`),
      onRepeatScanner: (ms, src) => repeats.push(`${ms} ${src}`),
      summarize: true,
      admission: new Admission(1 << 12, 60_000),
      ipv6Prefix: 128,
    });
    return { pl, log, out, scans, repeats };
  };
  const ms0 = 1_600_000_000_000;
  const whole = make(), single = make();
  whole.pl.processBatch(batch(frames.map((data, i) => ({ ms: ms0 + i, data }))));
  whole.log.flush();
  frames.forEach((data, i) => {
    single.pl.processBatch(batch([{ ms: ms0 + i, data }]));
    single.log.flush();
  });
  assert.equal(whole.scans.length, 8);
  assert.deepEqual(whole.scans, single.scans);
  assert.equal(whole.repeats.length, 16);
  assert.deepEqual(whole.repeats, single.repeats);
  assert.deepEqual(whole.out.join(""), single.out.join(""));
  for (
    const k of [
      "packets",
      "decodeErrors",
      "attempts4",
      "attempts6",
      "admitted",
      "lastPacketMs",
    ] as const
  ) {
    assert.equal(whole.pl[k], single.pl[k], k);
  }
  assert.equal(whole.pl.decodeErrors, 7);
  // A record cut short at the end of a batch stops the batch, as before.
  const cut = batch([{ ms: ms0, data: frames[0] }, { ms: ms0 + 1, data: frames[1] }]);
  const t = make();
  t.pl.processBatch({ ...cut, end: cut.end - 1 });
  assert.equal(t.pl.packets, 1);
});

Deno.test("repeats of reported scanners carry their own source, also when they alternate", () => {
  const t = setup({ local: ["10.0.0.2", "2001:db8::2"] });
  const a = probes("10.0.0.1", "10.0.0.2", [1, 2, 3, 4]);
  const b = probes("10.0.0.3", "10.0.0.2", [1, 2, 3, 4]);
  const c = probes("2001:db8::1", "2001:db8::2", [1, 2, 3, 4]);
  const d = probes("a00:1::", "2001:db8::2", [1, 2, 3, 4]); // first bytes of c's and a's
  t.run([...a, ...b, ...c, ...d]);
  assert.equal(t.scans.length, 4);
  t.run([a[0], d[0], b[0], a[1], c[0], d[1], c[1], b[1]]);
  assert.deepEqual(t.repeats, [
    "10.0.0.1",
    "a00:1::",
    "10.0.0.3",
    "10.0.0.1",
    "2001:db8::1",
    "a00:1::",
    "2001:db8::1",
    "10.0.0.3",
  ]);
});
