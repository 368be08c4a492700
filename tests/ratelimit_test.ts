/**
 * Repetitive stderr lines are rate-limited with a suppressed count
 * (src/report/ratelimit.ts), and the ban owner uses it: a firewall that
 * fails every ban (or a full ban table) under a flood of detections writes
 * a few lines and a count, not two lines per scan (issue 20 item 7).
 */
import assert from "node:assert/strict";
import { LineLimiter } from "../src/report/ratelimit.ts";
import { Bans } from "../src/bans/bans.ts";
import { createFirewall } from "../src/firewall/firewall.ts";
import type { ScanReport } from "../src/detect/pipeline.ts";

function clock(start = 1_700_000_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

Deno.test("LineLimiter: a burst per kind and interval, then one count when the interval ends", () => {
  const c = clock();
  const out: string[] = [];
  const l = new LineLimiter({
    burst: 3,
    intervalMs: 10_000,
    write: (s) => out.push(s),
    now: c.now,
  });
  for (let i = 0; i < 100; i++) l.line("ban-failed", `fail ${i}`, "failed-ban");
  // Another kind has its own budget.
  assert.equal(l.line("firewall", "fw 0"), true);
  assert.deepEqual(out, ["fail 0", "fail 1", "fail 2", "fw 0"]);
  assert.equal(l.suppressed, 97);
  c.advance(5_000);
  l.flush();
  assert.equal(out.length, 4, "not before the interval is over");
  c.advance(5_000);
  l.flush();
  assert.deepEqual(out.slice(4), ["97 more failed-ban lines suppressed in the last 10 s"]);
  l.flush();
  assert.equal(out.length, 5, "said once");
  // A new interval: the burst again.
  for (let i = 0; i < 4; i++) l.line("ban-failed", `again ${i}`, "failed-ban");
  assert.deepEqual(out.slice(5), ["again 0", "again 1", "again 2"]);
  // flush(true) at the end of a run says what is pending at once.
  l.flush(true);
  assert.deepEqual(out.slice(8), ["1 more failed-ban lines suppressed in the last 1 s"]);
});

Deno.test("LineLimiter: a line after the interval writes the count first, then itself", () => {
  const c = clock();
  const out: string[] = [];
  const l = new LineLimiter({ burst: 1, intervalMs: 1000, write: (s) => out.push(s), now: c.now });
  l.line("k", "a");
  l.line("k", "b");
  c.advance(1500);
  assert.equal(l.line("k", "c"), true);
  assert.deepEqual(out, ["a", "1 more k lines suppressed in the last 2 s", "c"]);
});

Deno.test("Bans: a firewall failing every ban writes a few lines and a count, not two per scan", async () => {
  const c = clock();
  const lines: string[] = [];
  const noop = { inc() {}, set() {}, observe() {} };
  let bans: Bans | null = null;
  // A real iptables backend whose commands cannot start: every ban fails and is reported.
  const fw = createFirewall("iptables", {
    isProtected: () => false,
    onError: (m) => bans?.failure(m),
    maxBans: 100,
    commandPrefix: ["/nonexistent/scanblocker-test-prefix"],
  });
  bans = new Bans({
    fw,
    banTime: 60,
    maxBans: 100,
    live: false,
    log: { banned() {}, alreadyBanned() {}, flush() {} },
    metrics: {
      scansDetected: noop,
      detectionToBan: noop,
      bans: noop,
      activeBans: noop,
      firewallErrors: noop,
      firewallRepairs: noop,
      bansLost: noop,
      bansEvicted: noop,
    },
    warn: (l) => lines.push(l),
    now: c.now,
  });
  await bans.start();
  lines.length = 0;
  const scan = (i: number): ScanReport => ({
    ms: c.now(),
    family: 4,
    src: `198.51.100.${i}`,
    key: new Uint8Array([198, 51, 100, i]),
    dst: "192.0.2.1",
    ports: [1, 2, 3, 4],
    scanType: "syn",
    slow: false,
    prefix: 32,
  });
  for (let i = 1; i <= 200; i++) bans.onScan(scan(i));
  await bans.settled();
  const failed = lines.filter((l) => /could not be banned/.test(l));
  assert.ok(failed.length > 0 && failed.length <= 5, `${failed.length} failed-ban lines`);
  assert.ok(lines.length <= 10, `${lines.length} lines for 200 failed bans:\n${lines.join("\n")}`);
  c.advance(10_000);
  bans.tick(c.now());
  const counts = lines.filter((l) => /more (failed-ban|firewall error) lines suppressed/.test(l));
  assert.ok(counts.length >= 1, lines.join("\n"));
  const total = counts.reduce((n, l) => n + Number(/^(\d+)/.exec(l)![1]), 0);
  assert.ok(total >= 195, `suppressed count ${total}`);
  await bans.close();
});
