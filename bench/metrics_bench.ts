/**
 * /metrics latency while the daemon captures a SYN flood.
 *
 * In a namespace lab the whole daemon (`deno run -P main.ts -i t0 --firewall
 * none --metrics-addr 127.0.0.1:PORT`) runs in the target namespace; a client
 * in the same namespace scrapes /metrics back to back, first idle, then while
 * `hping3 --flood -S` (bounded by `timeout`) floods t0 from the scanner
 * namespace. Prints the median and p99 latency of each phase, the flood rate
 * (tx counter of the scanner's veth), packets captured and pcap drops.
 *
 * Run alone: `deno run -A bench/metrics_bench.ts` (root; it creates and
 * deletes its own namespaces). Run as "client URL SECONDS" it is its own
 * scraping helper inside the namespace.
 */

import { type Daemon, startDaemon } from "../tests/daemon.ts";
import { createLab, type Lab, run } from "../tests/netns.ts";

const SELF = new URL(import.meta.url).pathname;
const METRICS_PORT = 18099;
const IDLE_SECONDS = 3;
const FLOOD_SECONDS = 6;
/**
 * hping3 processes (SB_BENCH_FLOODERS). On the 2-core test box one reaches
 * about 175,000 SYN/s beside the daemon, two about 240,000.
 */
const FLOODERS = Number(Deno.env.get("SB_BENCH_FLOODERS") ?? "2");
/** Flood starts this long before the latency window, so the window sees a steady flood. */
const FLOOD_WARMUP_SECONDS = 1;

/** Result of one scraping run. */
interface ClientResult {
  latenciesMs: number[];
  errors: number;
}

/** Client mode: GET url back to back (10 ms apart) for `seconds`, print latencies as JSON. */
async function clientMode(url: string, seconds: number): Promise<void> {
  const end = performance.now() + seconds * 1000;
  const result: ClientResult = { latenciesMs: [], errors: 0 };
  while (performance.now() < end) {
    const t0 = performance.now();
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(5000) });
      await r.text();
      if (r.ok) result.latenciesMs.push(performance.now() - t0);
      else result.errors++;
    } catch {
      result.errors++;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  console.log(JSON.stringify(result));
}

/** The q-quantile (0..1) of numbers, nearest rank. */
function quantile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

/** One sample value from exposition text (exact name with labels), or NaN. */
function sample(text: string, name: string): number {
  for (const line of text.split("\n")) {
    if (line.startsWith(name + " ")) return Number(line.slice(name.length + 1));
  }
  return NaN;
}

/** tx or rx packet counter of an interface inside a namespace. */
async function linkPackets(lab: Lab, ns: string, dev: string, dir: "tx" | "rx"): Promise<number> {
  const r = await lab.exec(ns, ["ip", "-s", "-j", "link", "show", dev]);
  const info = JSON.parse(r.stdout) as { stats64: Record<string, { packets: number }> }[];
  return info[0].stats64[dir].packets;
}

/** Runs the client helper in the target namespace. */
async function scrape(lab: Lab, seconds: number): Promise<ClientResult> {
  const r = await run([
    "timeout",
    String(seconds + 30),
    ...lab.prefix(lab.target),
    "deno",
    "run",
    "-A",
    SELF,
    "client",
    `http://127.0.0.1:${METRICS_PORT}/metrics`,
    String(seconds),
  ]);
  if (r.code !== 0) throw new Error(`scrape client failed (${r.code}): ${r.stderr.trim()}`);
  return JSON.parse(r.stdout.trim()) as ClientResult;
}

/** Fetches /metrics once from inside the target namespace. */
async function metricsText(lab: Lab): Promise<string> {
  const r = await run([
    "timeout",
    "20",
    ...lab.prefix(lab.target),
    "deno",
    "eval",
    `const r = await fetch("http://127.0.0.1:${METRICS_PORT}/metrics"); console.log(await r.text());`,
  ]);
  return r.code === 0 ? r.stdout : "";
}

/** Starts the daemon in the lab and measures; returns the report text. */
export async function benchMetricsUnderFlood(): Promise<string> {
  const lab = await createLab("mbench");
  let daemon: Daemon | null = null;
  try {
    daemon = startDaemon(lab.target, [
      "-i",
      lab.targetIf,
      "--firewall",
      "none",
      "--metrics-addr",
      `127.0.0.1:${METRICS_PORT}`,
    ]);
    const state: { exited: Deno.CommandStatus | null } = { exited: null };
    daemon.status.then((st) => state.exited = st);

    // Ready when /metrics answers (bounded: 30 s).
    const readyBy = Date.now() + 30_000;
    let before = "";
    while (Date.now() < readyBy && !state.exited) {
      before = await metricsText(lab);
      if (before.includes("scanblocker_packets_captured_total")) break;
      await new Promise((r) => setTimeout(r, 300));
    }
    if (!before.includes("scanblocker_packets_captured_total")) {
      await new Promise((r) => setTimeout(r, 200));
      throw new Error(
        `daemon did not serve /metrics within 30 s (exit ${state.exited?.code ?? "-"}):\n${
          daemon.stderr().slice(-20000)
        }`,
      );
    }

    const idle = await scrape(lab, IDLE_SECONDS);

    // The target's kernel would answer every SYN with a RST, which costs as
    // much CPU as the flood itself; drop them in the target namespace's raw
    // table instead (capture sees packets before netfilter, so the daemon
    // still sees every one). This firewall is the lab's, not the machine's.
    await lab.exec(lab.target, [
      "iptables",
      "-t",
      "raw",
      "-I",
      "PREROUTING",
      "-p",
      "tcp",
      "--dport",
      "80",
      "-j",
      "DROP",
    ]);

    const tx0 = await linkPackets(lab, lab.scanner, lab.scannerIf, "tx");
    const rx0 = await linkPackets(lab, lab.target, lab.targetIf, "rx");
    const m0 = await metricsText(lab);
    const t0 = performance.now();
    // A SYN flood to one port (not a scan: nothing gets banned), bounded in time.
    const floods = Array.from({ length: FLOODERS }, () =>
      new Deno.Command("timeout", {
        args: [
          String(FLOOD_SECONDS + FLOOD_WARMUP_SECONDS),
          ...lab.prefix(lab.scanner),
          "hping3",
          "--flood",
          "-q",
          "-S",
          "-p",
          "80",
          lab.target4,
        ],
        stdout: "null",
        stderr: "null",
      }).spawn());
    await new Promise((r) => setTimeout(r, FLOOD_WARMUP_SECONDS * 1000));
    const busy = await scrape(lab, FLOOD_SECONDS - 1);
    for (const f of floods) await f.status;
    const seconds = (performance.now() - t0) / 1000;
    const tx1 = await linkPackets(lab, lab.scanner, lab.scannerIf, "tx");
    const rx1 = await linkPackets(lab, lab.target, lab.targetIf, "rx");
    // Let the daemon drain its buffer and refresh pcap_stats (once a second).
    await new Promise((r) => setTimeout(r, 2500));
    const m1 = await metricsText(lab);

    const sent = tx1 - tx0, received = rx1 - rx0;
    const captured = sample(m1, "scanblocker_packets_captured_total") -
      sample(m0, "scanblocker_packets_captured_total");
    const dropped = sample(m1, "scanblocker_pcap_dropped_packets") -
      sample(m0, "scanblocker_pcap_dropped_packets");
    const fmt = (r: ClientResult) =>
      `median ${quantile(r.latenciesMs, 0.5).toFixed(2)} ms, p99 ${
        quantile(r.latenciesMs, 0.99).toFixed(2)
      } ms, max ${
        quantile(r.latenciesMs, 1).toFixed(2)
      } ms (${r.latenciesMs.length} scrapes, ${r.errors} errors)`;
    return [
      "metrics under SYN flood (daemon: deno run -P main.ts -i t0 --firewall none)",
      `  /metrics idle:        ${fmt(idle)}`,
      `  /metrics under flood: ${fmt(busy)}`,
      `  flood: ${sent} SYNs in ${seconds.toFixed(1)} s = ${
        Math.round(sent / seconds)
      } SYN/s (${FLOODERS} x hping3 --flood -S; t0 received ${received})`,
      `  captured: ${captured} packets; pcap dropped: ${dropped}` +
      ` (${received > 0 ? ((100 * dropped) / received).toFixed(2) : "?"} % of received)`,
      `  daemon rss after: ${
        (sample(m1, "process_resident_memory_bytes") / 2 ** 20).toFixed(0)
      } MiB, cpu: ${
        (sample(m1, "process_cpu_seconds_total") - sample(m0, "process_cpu_seconds_total"))
          .toFixed(2)
      } s during the flood`,
    ].join("\n");
  } finally {
    await daemon?.stop();
    await lab.destroy();
  }
}

if (import.meta.main) {
  if (Deno.args[0] === "client") await clientMode(Deno.args[1], Number(Deno.args[2]));
  else console.log(await benchMetricsUnderFlood());
}
