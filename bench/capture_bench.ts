/**
 * Capture benchmarks (print figures, never pass/fail):
 *  - offline: a 1,000,000-SYN capture read and decoded, as whole processes,
 *    against `tcpdump -r FILE -w /dev/null` with the same filter;
 *  - live: 1,000,000 SYNs from many sources sent with `tcpreplay --topspeed`
 *    into a lab veth: packets seen and pcap drops, ours and tcpdump's;
 *    (ours is the daemon's capture thread, counted through /metrics).
 * The production path's wake-up and ban latency: bench/ban_latency_bench.ts.
 * Run alone: `deno run -A bench/capture_bench.ts [offline|live]...`.
 */
import { DEFAULT_BUFFER_BYTES, DEFAULT_FILTER } from "../src/capture/capture.ts";
import { startDaemon } from "../tests/daemon.ts";
import { canUseNetns, createLab, run } from "../tests/netns.ts";
import { writeSynPcap } from "../tests/pcap_files.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const PACKETS = 1_000_000;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** GNU time, when installed: a child's CPU time (user + system), which waiting for a core does not inflate. */
const GNU_TIME = ["/usr/bin/time"].find((p) => {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
});

/** Wall time of a whole process and, with GNU time, its CPU time (ms; NaN without). */
async function timeProcess(
  cmd: string[],
): Promise<{ ms: number; cpuMs: number; code: number; out: string }> {
  const cpuFile = GNU_TIME ? await Deno.makeTempFile({ prefix: "sb-bench-cpu-" }) : "";
  const t0 = performance.now();
  const r = await run(GNU_TIME ? [GNU_TIME, "-o", cpuFile, "-f", "%U %S", ...cmd] : cmd);
  const ms = performance.now() - t0;
  let cpuMs = NaN;
  if (GNU_TIME) {
    const f = (await Deno.readTextFile(cpuFile)).trim().split("\n").at(-1)!.split(" ");
    cpuMs = (Number(f[0]) + Number(f[1])) * 1000;
    await Deno.remove(cpuFile);
  }
  return { ms, cpuMs, code: r.code, out: r.stdout };
}

/** The load average when a benchmark starts (other work on the machine skews wall times). */
export function loadAverage(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  } catch {
    return "unknown";
  }
}

/**
 * Our readers as whole processes: the capture+decode path alone, and the
 * whole program (main.ts -r); with SB_BENCH_BASELINE=DIR (a checkout of
 * other code, e.g. `git archive COMMIT | tar -x -C DIR`) also DIR's whole
 * program, in the same runs, for before/after figures on a shared machine.
 */
function ourReaders(): { name: string; cmd: (f: string) => string[] }[] {
  const deno = Deno.execPath();
  const whole = (root: string) => (f: string) => [
    deno,
    "run",
    "-P",
    "--quiet",
    "--config",
    `${root}deno.json`,
    `${root}main.ts`,
    "-r",
    f,
    // The destinations of writeSynPcap's frames: the flood arrives at this host.
    "--local",
    "10.255.0.1",
    "--local",
    "fd00::ffff:1",
  ];
  const base = Deno.env.get("SB_BENCH_BASELINE");
  const baseline = base
    ? [{ name: `baseline whole program (${base})`, cmd: whole(base.replace(/\/?$/, "/")) }]
    : [];
  return [
    {
      name: "read + decode (bench/read_file.ts: the program's reader + decodePacket)",
      cmd: (f) => [deno, "run", "-A", `${ROOT}bench/read_file.ts`, f],
    },
    {
      name: "whole program (main.ts -r --local DST: + allow-list, admission, rules, log, summary)",
      cmd: whole(ROOT),
    },
    ...baseline,
  ];
}

/**
 * Offline read rate against tcpdump, both as whole processes, median of 5
 * rounds (SB_BENCH_ROUNDS=N for more: the machine's speed drifts, and more
 * rounds hold the paired median better).
 */
export async function benchOffline(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "sb-bench-off-" });
  try {
    const file = `${dir}/syn.pcap`;
    writeSynPcap(file, PACKETS);
    const readers = ourReaders();
    const ours: number[][] = readers.map(() => []), oursCpu: number[][] = readers.map(() => []);
    const theirs: number[] = [], theirsCpu: number[] = [];
    const load = loadAverage();
    const rounds = Math.max(1, Number(Deno.env.get("SB_BENCH_ROUNDS") ?? 5) || 5);
    for (let i = 0; i < rounds; i++) {
      const t = await timeProcess(["tcpdump", "-r", file, "-w", "/dev/null", DEFAULT_FILTER]);
      if (t.code !== 0) return "offline: tcpdump failed";
      theirs.push(t.ms);
      theirsCpu.push(t.cpuMs);
      for (const [k, r] of readers.entries()) {
        const o = await timeProcess(r.cmd(file));
        if (o.code !== 0) return `offline: ${r.name} failed (exit ${o.code})`;
        ours[k].push(o.ms);
        oursCpu[k].push(o.cpuMs);
      }
    }
    const mt = median(theirs), mtc = median(theirsCpu);
    const runs = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(", ");
    const lines = [
      `offline: ${PACKETS} SYNs from ${PACKETS} distinct sources (pcap), default filter, whole processes, median of ${rounds}; load average at start ${load}`,
      `  tcpdump -r -w /dev/null: ${mt.toFixed(0)} ms (${
        (PACKETS / mt / 1000).toFixed(2)
      } Mpps); runs ${runs(theirs)} ms; CPU ${runs(theirsCpu)} ms`,
    ];
    for (const [k, r] of readers.entries()) {
      const mo = median(ours[k]), moc = median(oursCpu[k]);
      lines.push(`  ${r.name}: runs ${runs(ours[k])} ms; CPU ${runs(oursCpu[k])} ms`);
      lines.push(
        `  ${r.name}: ${mo.toFixed(0)} ms (${
          (PACKETS / mo / 1000).toFixed(2)
        } Mpps), ratio to tcpdump's rate ${(mt / mo).toFixed(2)}${
          k === 0 ? " (goal >= 0.5)" : " (goal >= 0.4)"
        }; by CPU time ${(mtc / moc).toFixed(2)}`,
      );
      // Each round runs tcpdump and ours back to back: the ratio within a
      // round holds when the machine's speed drifts between rounds.
      const paired = theirs.map((t, i) => t / ours[k][i]);
      lines.push(
        `  ${r.name}: paired (round by round) ${
          paired.map((x) => x.toFixed(2)).join(", ")
        }, median ${median(paired).toFixed(2)}`,
      );
    }
    return lines.join("\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** tcpreplay --topspeed of 1,000,000 SYNs: what our capture and tcpdump see and drop. */
export async function benchLive(): Promise<string> {
  if (!(await canUseNetns())) return "live: skipped (needs root for namespaces)";
  const dir = await Deno.makeTempDir({ prefix: "sb-bench-live-" });
  const lab = await createLab("blv");
  const lines: string[] = [];
  try {
    const file = `${dir}/syn.pcap`;
    writeSynPcap(file, PACKETS);
    const replay = async () => {
      const r = await lab.exec(lab.scanner, [
        "timeout",
        "120",
        "tcpreplay",
        "--topspeed",
        "-i",
        lab.scannerIf,
        file,
      ]);
      const m = /Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps/.exec(r.stdout);
      return m ? `${Number(m[1]).toFixed(0)} pps` : `exit ${r.code}`;
    };

    // Ours: the daemon's capture thread (the loop production runs), counters from /metrics.
    const d = startDaemon(lab.target, [
      "-i",
      lab.targetIf,
      "--firewall",
      "none",
      "--metrics-addr",
      "127.0.0.1:9471",
    ]);
    try {
      await d.waitFor(/Listening on: /, 20000);
      const metric = async (name: string) => {
        const r = await lab.exec(lab.target, ["curl", "-s", "-m", "5", "127.0.0.1:9471/metrics"]);
        return Number(new RegExp(`^${name} (\\S+)$`, "m").exec(r.stdout)?.[1] ?? NaN);
      };
      const t0 = performance.now();
      const rate = await replay();
      let seen = 0;
      for (let i = 0; i < 50 && seen < PACKETS; i++) {
        await new Promise((r) => setTimeout(r, 200));
        seen = await metric("scanblocker_packets_captured_total");
      }
      lines.push(
        `live (ours: the daemon's capture thread, default buffer ${
          DEFAULT_BUFFER_BYTES >> 20
        } MiB): sent ${PACKETS} at ${rate}; seen ${seen}, dropped by kernel ${await metric(
          "scanblocker_pcap_dropped_packets",
        )} (${((performance.now() - t0) / 1000).toFixed(1)} s)`,
      );
    } finally {
      await d.stop();
    }

    // tcpdump, same file, same lab.
    const td = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        lab.target,
        "timeout",
        "150",
        "tcpdump",
        "-i",
        lab.targetIf,
        "-n",
        "--immediate-mode",
        "-s",
        "128",
        "-B",
        "16384",
        "-w",
        "/dev/null",
        DEFAULT_FILTER,
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const out = td.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes("listening on")) {
      const { value, done } = await out.read();
      if (done) break;
      text += value;
    }
    const rate = await replay();
    await new Promise((r) => setTimeout(r, 1000));
    td.kill("SIGINT");
    for (;;) {
      const { value, done } = await out.read();
      if (done) break;
      text += value;
    }
    await td.status;
    const cap = /(\d+) packets captured/.exec(text)?.[1] ?? "?";
    const drop = /(\d+) packets dropped by kernel/.exec(text)?.[1] ?? "?";
    lines.push(
      `live (tcpdump -s 128 -B 16384 --immediate-mode): sent ${PACKETS} at ${rate}; captured ${cap}, dropped by kernel ${drop}`,
    );
    return lines.join("\n");
  } finally {
    await lab.destroy();
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  // Wake-up and ban latency of the production path: bench/ban_latency_bench.ts.
  const which = Deno.args.length ? Deno.args : ["offline", "live"];
  const benches: Record<string, () => Promise<string>> = {
    offline: benchOffline,
    live: benchLive,
  };
  for (const w of which) {
    const fn = benches[w];
    if (!fn) {
      console.error(`unknown benchmark "${w}" (offline, live)`);
      Deno.exit(2);
    }
    console.log(await fn());
  }
}
