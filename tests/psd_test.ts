import assert from "node:assert/strict";
import { addressKey, parseAddress } from "../src/address.ts";
import { Verdict } from "../src/detect/detector.ts";
import { PSD_DEFAULTS, PsdDetector } from "../src/detect/psd.ts";

const key = (text: string) => {
  const a = parseAddress(text)!;
  return addressKey(a.family, a.bytes);
};
const psd = (maxSources = 100_000) => new PsdDetector({ ...PSD_DEFAULTS, maxSources });

Deno.test("psd defaults are those of scanlogd/xt_psd", () => {
  assert.deepEqual(PSD_DEFAULTS, {
    threshold: 21,
    delayMs: 3000,
    lowPortWeight: 3,
    highPortWeight: 1,
  });
});

Deno.test("psd: 7 privileged ports within 3 s are a scan at the 7th", () => {
  const d = psd();
  const k = key("10.0.0.2");
  for (let i = 0; i < 6; i++) {
    assert.equal(d.observe(k, 20 + i, i * 400), Verdict.Counted, `port ${20 + i}`);
  }
  assert.equal(d.scoreOf(k), 18);
  assert.equal(d.observe(k, 1023, 2600), Verdict.Scan);
  assert.deepEqual(d.lastScanPorts, [20, 21, 22, 23, 24, 25, 1023]);
  assert.equal(d.lastScanFirstMs, 0);
  assert.ok(d.isDetected(k));
  assert.equal(d.observe(k, 30, 2700), Verdict.AlreadyDetected);
});

Deno.test("psd: 20 high ports are not a scan, the 21st is (weight >= threshold)", () => {
  const d = psd();
  const k = key("10.0.0.3");
  for (let i = 0; i < 20; i++) {
    assert.equal(d.observe(k, 1024 + i, i * 100), Verdict.Counted, `port ${1024 + i}`);
  }
  assert.equal(d.scoreOf(k), 20);
  assert.equal(d.portsOf(k).length, 20);
  assert.equal(d.observe(k, 5000, 2100), Verdict.Scan);
  assert.equal(d.lastScanPorts.length, 21);
  assert.equal(d.lastScanPorts[20], 5000);
  assert.equal(d.observe(k, 5001, 2200), Verdict.AlreadyDetected);
});

Deno.test("psd: mixed weights, 5 privileged + 6 high = 21", () => {
  const d = psd();
  const k = key("10.0.0.4");
  const ports = [22, 8080, 80, 8443, 443, 3000, 25, 3306, 5432, 110, 6379];
  const v = ports.map((p, i) => d.observe(k, p, i * 10));
  assert.deepEqual(v.slice(0, 10), new Array(10).fill(Verdict.Counted));
  assert.equal(v[10], Verdict.Scan);
});

Deno.test("psd: repeats add no weight and do not refresh the decay clock", () => {
  const d = psd();
  const k = key("10.0.0.5");
  // A client on 80/443 forever: never a scan.
  for (let i = 0; i < 1000; i++) {
    const v = d.observe(k, i % 2 ? 443 : 80, i * 5);
    assert.notEqual(v, Verdict.Scan);
  }
  assert.equal(d.scoreOf(k), 6);
  // Repeats every second for 5 s do not keep the score alive: the next new port restarts it.
  const k2 = key("10.0.0.6");
  for (let i = 0; i < 6; i++) d.observe(k2, 20 + i, i * 100); // 18 at 500 ms
  for (let t = 1000; t <= 3000; t += 1000) assert.equal(d.observe(k2, 20, t), Verdict.Repeat);
  assert.equal(d.scoreOf(k2), 18);
  // 3.5 s after the last NEW port (0.5 s after a repeat), the run starts again with this port.
  assert.equal(d.observe(k2, 2000, 4000), Verdict.Counted);
  assert.equal(d.scoreOf(k2), 1);
  assert.deepEqual(d.portsOf(k2), [2000]);
});

Deno.test("psd: a gap longer than the delay resets the score; exactly the delay does not", () => {
  const d = psd();
  const k = key("10.0.0.7");
  // Privileged ports every 3.0 s: the gap equals the delay, still counted.
  for (let i = 0; i < 6; i++) assert.equal(d.observe(k, 100 + i, i * 3000), Verdict.Counted);
  assert.equal(d.observe(k, 106, 18_000), Verdict.Scan);
  // Every 3.001 s: each port starts a new run, never a scan.
  const k2 = key("10.0.0.8");
  for (let i = 0; i < 50; i++) {
    assert.equal(d.observe(k2, 100 + i, i * 3001), Verdict.Counted, `port ${100 + i}`);
    assert.equal(d.scoreOf(k2), 3);
  }
  // After a reset, ports of the old run count as new again.
  const k3 = key("10.0.0.9");
  d.observe(k3, 22, 0);
  d.observe(k3, 22, 5000);
  assert.deepEqual(d.portsOf(k3), [22]);
  assert.equal(d.scoreOf(k3), 3);
});

Deno.test("psd: silent sources expire, and a detected one can be reported again after", () => {
  const d = psd();
  const k = key("10.0.0.10");
  for (let i = 0; i < 7; i++) d.observe(k, 1 + i, i);
  assert.ok(d.isDetected(k));
  d.expire(3006);
  assert.ok(d.isDetected(k), "still within the delay");
  d.expire(3007);
  assert.equal(d.size, 0);
  assert.ok(!d.isDetected(k));
  for (let i = 0; i < 6; i++) assert.equal(d.observe(k, 1 + i, 10_000 + i), Verdict.Counted);
  assert.equal(d.observe(k, 7, 10_010), Verdict.Scan);
});

Deno.test("psd: forget clears a detected source", () => {
  const d = psd();
  const k = key("192.0.2.1");
  for (let i = 0; i < 7; i++) d.observe(k, 1 + i, 0);
  assert.ok(d.isDetected(k));
  d.forget(k);
  assert.ok(!d.isDetected(k));
  assert.equal(d.observe(k, 1, 1), Verdict.Counted);
});

Deno.test("psd: IPv6 string keys are kept apart", () => {
  const d = psd();
  const a = key("2001:db8::1"), b = key("2001:db8::2");
  assert.equal(typeof a, "string");
  for (let i = 0; i < 6; i++) {
    assert.equal(d.observe(a, 20 + i, i), Verdict.Counted);
    assert.equal(d.observe(b, 20 + i, i), Verdict.Counted);
  }
  assert.equal(d.observe(a, 26, 10), Verdict.Scan);
  assert.ok(!d.isDetected(b));
  assert.equal(d.scoreOf(b), 18);
  assert.equal(d.observe(b, 26, 10), Verdict.Scan);
});

Deno.test("psd: a shorter port list still scores, and repeats past it count again (xt_psd)", () => {
  const d = new PsdDetector({ ...PSD_DEFAULTS, maxSources: 10, maxPortsPerSource: 2 });
  const k = key("10.0.0.11");
  d.observe(k, 2000, 0);
  d.observe(k, 2001, 0);
  d.observe(k, 2002, 0); // not remembered
  assert.equal(d.observe(k, 2001, 0), Verdict.Repeat);
  assert.equal(d.observe(k, 2002, 0), Verdict.Counted);
  assert.equal(d.scoreOf(k), 4);
});

Deno.test("psd: zero weight ignores those ports; both zero is refused", () => {
  const d = new PsdDetector({ ...PSD_DEFAULTS, highPortWeight: 0, maxSources: 10 });
  const k = key("10.0.0.12");
  for (let i = 0; i < 100; i++) assert.equal(d.observe(k, 2000 + i, i), Verdict.Counted);
  assert.equal(d.size, 0);
  assert.throws(
    () => new PsdDetector({ ...PSD_DEFAULTS, lowPortWeight: 0, highPortWeight: 0, maxSources: 1 }),
    RangeError,
  );
});

Deno.test("psd: a million sources stay under the cap, least recently seen evicted first", () => {
  const cap = 50_000;
  const d = psd(cap);
  const n = 1_000_000;
  // All within one delay window, so only the cap (not expiry) bounds memory.
  for (let i = 0; i < n; i++) d.observe(0x0a000000 + i, 22, i / 1000);
  assert.equal(d.size, cap);
  assert.equal(d.evicted, n - cap);
  assert.equal(d.scoreOf(0x0a000000), 0, "oldest forgotten");
  assert.equal(d.scoreOf(0x0a000000 + n - 1), 3, "newest kept");
  // Touching an old-but-kept source moves it to the back of the eviction order.
  const kept = 0x0a000000 + n - cap;
  assert.equal(d.observe(kept, 23, 999), Verdict.Counted);
  d.observe(0x0b000000, 22, 999.5);
  assert.equal(d.scoreOf(kept), 6, "recently seen source kept");
  assert.equal(d.scoreOf(kept + 1), 0, "least recently seen evicted");
  // A scan still works at the cap.
  for (let i = 0; i < 6; i++) d.observe(kept, 30 + i, 999.9);
  assert.ok(d.isDetected(kept));
});
