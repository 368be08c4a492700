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

/** Waits until `cond` holds, up to `ms`; true when it did. */
async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = performance.now() + ms;
  while (!cond() && performance.now() < end) await sleep(10);
  return cond();
}

// Judged on the gaps between samples, not on counts in fixed windows: on a
// loaded machine a timer can run 60 ms late, and the sampler rightly turns
// fast for busyForMs after a late sample (a count-in-a-window test failed so).
Deno.test("lag sampler: fast at start, slow once idle, fast again when the process works", async () => {
  const at: number[] = [];
  let cpu = 0;
  const t0 = performance.now();
  const stop = sampleLag(() => at.push(performance.now() - t0), () => cpu, periods);
  /** Gaps between samples, of the samples from `from` ms on. */
  const gapsAfter = (from: number) => {
    const gaps: number[] = [];
    for (let i = 1; i < at.length; i++) if (at[i - 1] >= from) gaps.push(at[i] - at[i - 1]);
    return gaps;
  };
  try {
    assert.ok(await until(() => at.length >= 5, 2000), "samples at start");
    const first = at.slice(1, 5).map((t, i) => t - at[i]).sort((a, b) => a - b);
    assert.ok(first[1] <= 40, `fast at start: gaps ${first.map((g) => g.toFixed(0))} ms`);
    // Idle after the busy window (200 ms): a gap of about idleMs.
    assert.ok(
      await until(() => gapsAfter(200).some((g) => g >= 80), 3000),
      `idle: no gap of ~100 ms after the busy window (${at.map((t) => t.toFixed(0)).join(", ")})`,
    );
    // The process works: 50 ms of CPU since the last sample. The sampler
    // reads the CPU time once an idle period, so within two periods it is fast again.
    const workAt = performance.now() - t0;
    cpu += 50_000;
    assert.ok(
      await until(() => gapsAfter(workAt).some((g) => g <= 25), 2000),
      `fast again: no short gap after ${workAt.toFixed(0)} ms (${
        at.map((t) => t.toFixed(0)).join(", ")
      })`,
    );
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
