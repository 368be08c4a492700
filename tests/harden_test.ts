/**
 * Hardening checks that need no namespace (issue 18): what a from-source
 * command prints, and the misleading messages of item 10.
 */
import assert from "node:assert/strict";
import { run } from "./netns.ts";

const root = new URL("..", import.meta.url).pathname;

Deno.test({
  name: "from source, `deno task start` prints nothing but the program's own output (item 11)",
  sanitizeResources: false,
  fn: async () => {
    const r = await run([
      "sh",
      "-c",
      `cd ${root} && NO_COLOR=1 timeout 60 deno task start --version`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^scanblocker \d/);
    assert.doesNotMatch(r.stderr, /experimental|Warning/i, r.stderr);
  },
});

import { LineOutput } from "../src/report/output.ts";
import { STALL_MS, StallReport, StallWatch } from "../src/capture/stall.ts";
import { startMetricsServer } from "../src/report/server.ts";
import { createMetrics } from "../src/report/metrics.ts";

/** A writer that takes `room` bytes, then refuses like a full non-blocking pipe. */
function pipe(room: number) {
  const taken: number[] = [];
  return {
    taken,
    more: (n: number) => (room += n),
    writeSync(p: Uint8Array): number {
      if (room === 0) throw new Deno.errors.WouldBlock("Resource temporarily unavailable");
      const n = Math.min(room, p.length);
      room -= n;
      taken.push(...p.subarray(0, n));
      return n;
    },
  };
}
const text = (b: number[]) => new TextDecoder().decode(new Uint8Array(b));
const enc = new TextEncoder();

Deno.test("LineOutput: a full output drops and counts whole lines, never blocks, never mixes (item 5)", () => {
  const p = pipe(10);
  const out = new LineOutput(p);
  // "aaaa\n" fits, "bbbbbbbb\n" is cut after 5 bytes, "cc\n" is not begun.
  assert.equal(out.write(enc.encode("aaaa\nbbbbbbbb\ncc\n")), 1);
  assert.equal(out.dropped, 1);
  assert.ok(out.blocked);
  // Still full: every new line is dropped; the cut line waits.
  assert.equal(out.write(enc.encode("dd\nee\n")), 2);
  assert.equal(out.dropped, 3);
  p.more(100);
  // Drained: the cut line is finished first, then the new ones go out.
  assert.equal(out.write(enc.encode("ff\n")), 0);
  assert.equal(text(p.taken), "aaaa\nbbbbbbbb\nff\n");
  assert.ok(!out.blocked);
  // A reader that left (EPIPE) is a refused write too, not an exception.
  const gone = new LineOutput({
    writeSync: () => {
      throw new Deno.errors.BrokenPipe("Broken pipe");
    },
  });
  assert.equal(gone.write(enc.encode("x\ny\n")), 2);
});

Deno.test("StallWatch: a still heartbeat while the interface receives is a stall (item 5)", () => {
  const w = new StallWatch();
  assert.equal(w.update(0, 0, 10), false, "not started yet");
  assert.equal(w.update(10_000, 0, 500), false, "not started yet, however long");
  assert.equal(w.update(10_000, 1, 500), false);
  assert.equal(w.update(10_000 + STALL_MS, 1, 500), false, "idle interface: nothing to process");
  assert.equal(w.update(10_000 + STALL_MS, 1, 501), true, "packets arrive, nobody processes them");
  assert.equal(w.update(10_001 + STALL_MS, 2, 502), false, "the loop turned again");
  assert.equal(
    w.update(10_001 + 2 * STALL_MS, 2, null),
    true,
    "no counter: a still heartbeat alone",
  );
});

Deno.test("StallReport: a stall is said on stderr when it begins and when it ends, and in a 0/1 gauge", () => {
  const lines: string[] = [];
  const gauge: number[] = [];
  const r = new StallReport("eth0", (l) => lines.push(l), (v) => gauge.push(v));
  r.update(1000, false);
  r.update(2000, true);
  r.update(3000, true);
  r.update(4000, true);
  assert.equal(lines.length, 1, "one line for the whole stall");
  assert.match(
    lines[0],
    /^capture stalled: .* 3 s while packets arrive on eth0; nothing is detected/,
  );
  r.update(9000, false);
  r.update(10000, false);
  assert.equal(lines.length, 2);
  assert.match(lines[1], /^capture moving again after about 10 s stalled$/);
  assert.deepEqual(gauge, [0, 1, 1, 1, 0, 0]);
});

Deno.test({
  name: '/healthz answers 503 "capture stalled" while the capture is stalled (item 5)',
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    let stalled = false;
    const server = startMetricsServer(
      { hostname: "127.0.0.1", port: 0 },
      createMetrics("test"),
      () => ({
        captureRunning: true,
        stalled,
        packetsSeen: 1,
        firewall: "none ok",
        lastPacketTime: null,
      }),
    );
    try {
      const get = async () => {
        const r = await fetch(`http://127.0.0.1:${server.port}/healthz`);
        return { code: r.status, body: await r.json() };
      };
      assert.equal((await get()).code, 200);
      stalled = true;
      const h = await get();
      assert.equal(h.code, 503);
      assert.equal(h.body.status, "capture stalled");
    } finally {
      await server.close();
    }
  },
});

import { runMain } from "./daemon.ts";

const fixture = (name: string) => new URL(`./fixtures/${name}`, import.meta.url).pathname;

Deno.test("-r with --firewall none claims no ban; --allow X/0 warns (item 10)", async () => {
  const r = await runMain(["-r", fixture("eth.pcap"), "--log-rate", "0", "--firewall", "none"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /Port scan detected/);
  assert.doesNotMatch(r.stdout, /banned\.|already in disallowed list/);
  for (const cidr of ["0.0.0.0/0", "::/0"]) {
    const w = await runMain(["-r", fixture("eth.pcap"), "--allow", cidr]);
    assert.equal(w.code, 0, w.stderr);
    assert.match(
      w.stderr,
      new RegExp(`${cidr.replace(/[./]/g, "\\$&")} covers every IPv[46] address`),
    );
  }
});

Deno.test("bad numbers and SB_* values say what is wrong and where they came from (item 10)", async () => {
  const neg = await runMain(["-r", fixture("eth.pcap"), "--ports", "-1"]);
  assert.equal(neg.code, 2);
  assert.match(neg.stderr, /^scanblocker: invalid --ports "-1": negative numbers are not allowed/);
  const env = await runMain(["-r", fixture("eth.pcap")], { SB_WINDOW: "soon" });
  assert.equal(env.code, 2);
  assert.match(env.stderr, /^scanblocker: invalid SB_WINDOW "soon"/);
});

import { Detector, Verdict } from "../src/detect/detector.ts";

Deno.test("Detector.reconfigure keeps each source's newest ports under new thresholds (item 7)", () => {
  const d = new Detector({ ports: 30, windowMs: 60_000, maxSources: 10 });
  for (let p = 1; p <= 10; p++) assert.equal(d.observe(1, p, p), Verdict.Counted);
  d.observe(2, 80, 1);
  // Down to 12: source 1 keeps its 10 ports; its 13th distinct port is a scan.
  d.reconfigure(12, 60_000);
  assert.deepEqual(d.portsOf(1), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.deepEqual(d.portsOf(2), [80]);
  assert.equal(d.observe(1, 11, 20), Verdict.Counted);
  assert.equal(d.observe(1, 12, 21), Verdict.Counted);
  assert.equal(d.observe(1, 13, 22), Verdict.Scan);
  // Down to 3: source 2 (1 port) keeps it; a source above the new count keeps its newest.
  const e = new Detector({ ports: 30, windowMs: 60_000, maxSources: 10 });
  for (let p = 1; p <= 10; p++) e.observe(7, p, p);
  e.reconfigure(3, 1000);
  assert.deepEqual(e.portsOf(7), [8, 9, 10]);
  assert.equal(e.observe(7, 11, 10), Verdict.Scan);
});

import { DropWatch } from "../src/report/output.ts";

Deno.test("DropWatch: one start per episode, one end with the count, every drop counted (item 5)", () => {
  let total = 0;
  const events: string[] = [];
  const w = new DropWatch(() => total);
  const on = {
    counted: (n: number) => events.push(`+${n}`),
    started: () => events.push("start"),
    ended: (n: number) => events.push(`end ${n}`),
  };
  w.check(true, on);
  total = 5;
  w.check(false, on);
  total = 9;
  w.check(false, on);
  w.check(false, on); // nothing new, but the output is still stuck
  w.check(true, on);
  total = 10;
  w.check(true, on);
  assert.deepEqual(events, ["+5", "start", "+4", "end 9", "+1", "start"]);
});
