/**
 * The capture thread runs under SCHED_FIFO (default --realtime 10) so the
 * first probes of a scan are banned at once, but a flood must not let it
 * hold a core ahead of the main thread (on 2 cores /metrics p99 went from
 * 14 ms to 117-158 ms): during a flood it runs under normal scheduling, and
 * once idle again under SCHED_FIFO.
 */
import assert from "node:assert/strict";
import { startDaemon } from "./daemon.ts";
import { canUseNetns, createLab } from "./netns.ts";

const root = await canUseNetns();

/** Scheduling policy of every thread of `pid` (field 41 of /proc/PID/task/TID/stat; 1 = SCHED_FIFO). */
async function policies(pid: number): Promise<number[]> {
  const out: number[] = [];
  for await (const t of Deno.readDir(`/proc/${pid}/task`)) {
    try {
      const stat = await Deno.readTextFile(`/proc/${pid}/task/${t.name}/stat`);
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      out.push(Number(fields[41 - 3]));
    } catch { /* the thread ended */ }
  }
  return out;
}

const fifoThreads = async (pid: number) => (await policies(pid)).filter((p) => p === 1).length;

Deno.test({
  name: "capture thread: SCHED_FIFO when idle, normal scheduling during a flood, FIFO again after",
  ignore: !root,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const lab = await createLab("rt");
    const d = startDaemon(lab.target, [
      "-i",
      lab.targetIf,
      "--firewall",
      "none",
      "--metrics-addr",
      "off",
      "--log-rate",
      "10",
    ]);
    try {
      await d.waitFor(/capture thread: SCHED_FIFO 10/, 20000);
      assert.equal(await fifoThreads(d.pid), 1, d.stderr());
      // The admission table (48 MiB at the default --max-sources) is mapped
      // at start: a fresh scanner's first probe never pays a page fault. It
      // is mapped after the JIT warm-up, and both are done before the
      // start-up lines: a flood that begins at "Listening on:" meets a ready
      // thread (the lines used to come ~80 ms before it, while the ring filled).
      const status = await Deno.readTextFile(`/proc/${d.pid}/status`);
      const anon = Number(/RssAnon:\s+(\d+) kB/.exec(status)![1]) * 1024;
      assert.ok(
        anon >= 48 * 2 ** 20,
        `RssAnon ${(anon / 2 ** 20).toFixed(1)} MiB at the start-up lines`,
      );
      const flood = lab.exec(lab.scanner, [
        "timeout",
        "3",
        "hping3",
        "--flood",
        "-S",
        "-p",
        "80",
        "-q",
        lab.target4,
      ]);
      let during = 1;
      const until = Date.now() + 2500;
      while (Date.now() < until && during > 0) {
        await new Promise((r) => setTimeout(r, 100));
        during = await fifoThreads(d.pid);
      }
      await flood;
      assert.equal(during, 0, "the capture thread kept SCHED_FIFO during the flood");
      let after = 0;
      const again = Date.now() + 3000;
      while (Date.now() < again && after === 0) {
        await new Promise((r) => setTimeout(r, 100));
        after = await fifoThreads(d.pid);
      }
      assert.equal(after, 1, "SCHED_FIFO again once the flood is over");
    } finally {
      await d.stop();
      await lab.destroy();
    }
  },
});
