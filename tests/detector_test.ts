import assert from "node:assert/strict";
import { addressKey, parseAddress } from "../src/address.ts";
import { Detector, Verdict } from "../src/detect/detector.ts";

const key = (text: string) => {
  const a = parseAddress(text)!;
  return addressKey(a.family, a.bytes);
};
const det = (ports = 3, windowS = 60, maxSources = 100_000) =>
  new Detector({ ports, windowMs: windowS * 1000, maxSources });

Deno.test("five attempts to one port are not a scan", () => {
  const d = det();
  const k = key("10.0.0.2");
  const v = [0, 1, 2, 3, 4].map((i) => d.observe(k, 80, 1000 + i * 100));
  assert.deepEqual(v, [
    Verdict.Counted,
    Verdict.Repeat,
    Verdict.Repeat,
    Verdict.Repeat,
    Verdict.Repeat,
  ]);
});

Deno.test("four distinct ports within a second: scan at the fourth, reported once", () => {
  const d = det();
  const k = key("10.0.0.2");
  assert.equal(d.observe(k, 80, 0), Verdict.Counted);
  assert.equal(d.observe(k, 81, 200), Verdict.Counted);
  assert.equal(d.observe(k, 82, 400), Verdict.Counted);
  assert.equal(d.observe(k, 83, 600), Verdict.Scan);
  assert.deepEqual(d.lastScanPorts, [80, 81, 82, 83]);
  assert.equal(d.lastScanFirstMs, 0);
  assert.equal(d.observe(k, 84, 700), Verdict.AlreadyDetected);
  assert.equal(d.observe(k, 85, 800), Verdict.AlreadyDetected);
});

Deno.test("repeats do not count twice toward the threshold", () => {
  const d = det();
  const k = key("10.0.0.2");
  for (const p of [80, 80, 81, 81, 80, 82, 82]) assert.notEqual(d.observe(k, p, 10), Verdict.Scan);
  assert.equal(d.observe(k, 83, 20), Verdict.Scan);
});

Deno.test("ports 80-84 at 21-second intervals are not a scan with a 60 s window", () => {
  const d = det();
  const k = key("10.0.0.2");
  for (let i = 0; i < 5; i++) {
    assert.equal(d.observe(k, 80 + i, i * 21_000), Verdict.Counted, `port ${80 + i}`);
  }
  // …but the same pace is a scan with a 90 s window.
  const d2 = det(3, 90);
  const v = [0, 1, 2, 3].map((i) => d2.observe(k, 80 + i, i * 21_000));
  assert.equal(v[3], Verdict.Scan);
});

Deno.test("window edge: the 60 s window includes its end, like the original", () => {
  const d = det();
  const k = key("10.0.0.9");
  d.observe(k, 1, 0);
  d.observe(k, 2, 1);
  d.observe(k, 3, 2);
  assert.equal(d.observe(k, 4, 60_000), Verdict.Scan);
  const d2 = det();
  d2.observe(k, 1, 0);
  d2.observe(k, 2, 1);
  d2.observe(k, 3, 2);
  assert.equal(d2.observe(k, 4, 60_001), Verdict.Counted);
});

Deno.test("--ports and --window are honoured", () => {
  const d = det(10, 5);
  const k = key("10.0.0.3");
  for (let p = 1; p <= 10; p++) assert.equal(d.observe(k, p, p * 100), Verdict.Counted);
  assert.equal(d.observe(k, 11, 1200), Verdict.Scan);
  const d1 = det(1, 1);
  assert.equal(d1.observe(k, 1, 0), Verdict.Counted);
  assert.equal(d1.observe(k, 2, 500), Verdict.Scan);
});

Deno.test("IPv6 sources are tracked apart from each other and from IPv4", () => {
  const d = det();
  const a = key("fd77::1"), b = key("fd77::2"), c = key("10.0.0.1");
  assert.equal(typeof a, "string");
  for (let p = 0; p < 3; p++) {
    d.observe(a, 100 + p, p);
    d.observe(b, 200 + p, p);
    d.observe(c, 300 + p, p);
  }
  assert.equal(d.observe(a, 999, 10), Verdict.Scan);
  assert.equal(d.observe(b, 200, 10), Verdict.Repeat);
  assert.equal(d.observe(c, 999, 10), Verdict.Scan);
  assert.equal(d.observe(b, 999, 10), Verdict.Scan);
});

Deno.test("expired state is dropped and a quiet source starts over", () => {
  const d = det();
  const k = key("10.0.0.4");
  d.observe(k, 1, 0);
  d.observe(k, 2, 1000);
  d.observe(k, 3, 2000);
  d.expire(70_000);
  assert.equal(d.size, 0);
  assert.equal(d.observe(k, 4, 70_000), Verdict.Counted);
  // A detected scanner that stays quiet for a window is forgotten too.
  for (const p of [5, 6, 7]) d.observe(k, p, 70_001);
  assert.equal(d.size, 1);
  d.expire(200_000);
  assert.equal(d.size, 0);
});

Deno.test("expiry happens as the packet clock moves, without explicit calls", () => {
  const d = det(3, 1, 1_000_000);
  for (let i = 0; i < 5000; i++) d.observe(i, 80, i); // 5000 sources within 5 s
  // Only sources seen within the last second (plus at most one sweep interval) remain.
  assert.ok(d.size <= 1000 + 1024, `size ${d.size}`);
});

Deno.test("--max-sources holds with a million distinct sources; least recently seen goes first", () => {
  const d = det(3, 60, 100_000);
  const hot = key("192.0.2.1");
  d.observe(hot, 1, 0);
  d.observe(hot, 2, 0);
  for (let i = 0; i < 1_000_000; i++) {
    d.observe(0x0a000000 + i, 80, 1 + i / 1000); // spoofed 10.x sources within 1000 s… within window steps
    if (i % 50_000 === 0) d.observe(hot, 2, 1 + i / 1000); // keep the hot source recent
    assert.ok(d.size <= 100_000);
  }
  assert.equal(d.size <= 100_000, true);
  assert.ok(d.evicted > 800_000, `evicted ${d.evicted}`);
  // The recently seen source kept its state.
  assert.deepEqual(d.portsOf(hot).sort(), [1, 2]);
});
