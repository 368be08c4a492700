/**
 * The event-loop lag sampler (src/report/lag.ts) wakes every fast period
 * while the process works and for a while after, every idle period when
 * nothing happens (an idle daemon's wake-ups cost CPU), and a blocked loop
 * shows as a late sample in either mode.
 */
import assert from "node:assert/strict";
import { sampleLag } from "../src/report/lag.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const periods = { fastMs: 10, idleMs: 100, busyForMs: 200 };

Deno.test("lag sampler: fast at start, slow once idle, fast again when the process works", async () => {
  const at: number[] = [];
  let cpu = 0;
  const t0 = performance.now();
  const stop = sampleLag(() => at.push(performance.now() - t0), () => cpu, periods);
  try {
    await sleep(180);
    const fast = at.length;
    assert.ok(fast >= 8, `fast at start: ${fast} samples in 180 ms`);
    await sleep(520); // the busy window ends at 200 ms
    const idle = at.filter((t) => t >= 300 && t < 700).length;
    assert.ok(idle >= 2 && idle <= 6, `idle: ${idle} samples in 400 ms (${at.join(", ")})`);
    // The process works: 50 ms of CPU since the last sample.
    cpu += 50_000;
    await sleep(250);
    const again = at.filter((t) => t >= 820 && t < 950).length;
    assert.ok(again >= 6, `fast again: ${again} samples in 130 ms`);
  } finally {
    stop();
  }
});

Deno.test("lag sampler: a loop blocked while idle is recorded late", async () => {
  const lateMs: number[] = [];
  const stop = sampleLag((s) => lateMs.push(s * 1000), () => 0, periods);
  try {
    await sleep(400); // idle by now
    const t = performance.now();
    while (performance.now() - t < 300) { /* blocked */ }
    await sleep(30);
    assert.ok(Math.max(...lateMs) >= 190, `late by ${Math.max(...lateMs).toFixed(0)} ms`);
  } finally {
    stop();
  }
});
