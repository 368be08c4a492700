/**
 * `deno task bench`: runs every benchmark in its own process (so that memory
 * and timing figures do not disturb one another) and prints their figures.
 * Benchmarks print numbers; none of them passes or fails on time.
 */

/** Benchmarks in the order they run: file and what it measures. */
export const BENCHES: readonly { file: string; what: string }[] = [
  { file: "bench/detector_bench.ts", what: "detector throughput and memory (issue 3)" },
  {
    file: "bench/capture_bench.ts",
    what: "capture: offline ratio to tcpdump, live drops (issue 9)",
  },
  {
    file: "bench/firewall_bench.ts",
    what: "firewall runners: ban latency, bans/s, restore time (issue 10)",
  },
  {
    file: "bench/ban_latency_bench.ts",
    what: "end to end: ports nmap learns before the ban (issue 10)",
  },
  { file: "bench/metrics_bench.ts", what: "/metrics latency under a SYN flood (issue 5)" },
  {
    file: "bench/fleet_bench.ts",
    what: "fleet: LAPI fan-out, 10,000 decisions at start, idle CPU joined (issue 16)",
  },
  {
    file: "bench/ban_table_bench.ts",
    what: "inbound throughput with the ban table empty and full, per backend (issue 20)",
  },
];

if (import.meta.main) {
  const only = Deno.args;
  for (const b of BENCHES) {
    if (only.length > 0 && !only.some((o) => b.file.includes(o))) continue;
    try {
      Deno.statSync(b.file);
    } catch {
      console.log(`\n## ${b.file}: not present, skipped`);
      continue;
    }
    console.log(`\n## ${b.file} — ${b.what}`);
    const t0 = performance.now();
    const p = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--v8-flags=--expose-gc", b.file],
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    const { code } = await p.status;
    console.log(
      `(${b.file} ${code === 0 ? "finished" : `exited ${code}`} in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s)`,
    );
  }
}
