/**
 * A real Prometheus server scrapes our /metrics and its query API returns the
 * connection-attempt count we produced. Everything runs on loopback inside a
 * network namespace the test creates and deletes.
 *
 * The first test serves a registry filled by this file; the second runs the
 * whole daemon (`deno run -P main.ts`) in a namespace lab and counts SYNs
 * hping3 really sent.
 *
 * This file is also its own helper: run as a script (`deno run -P`) inside the
 * namespace it either serves metrics ("serve N PORT") or polls Prometheus'
 * API ("query PROM_PORT PROMQL EXPECTED SECONDS").
 */

import assert from "node:assert/strict";
import { createLab, must, run } from "./netns.ts";
import { type Daemon, startDaemon } from "./daemon.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const SELF = new URL(import.meta.url).pathname;
const PROMETHEUS = "/usr/bin/prometheus";

/** Helper mode "serve": count N connection attempts, serve them until killed. */
async function serveMode(n: number, port: number): Promise<void> {
  const { createMetrics } = await import("../src/report/metrics.ts");
  const { startMetricsServer } = await import("../src/report/server.ts");
  const metrics = createMetrics("prometheus-test");
  for (let i = 0; i < n; i++) metrics.connectionAttempts.labels("ipv4").inc();
  startMetricsServer({ hostname: "127.0.0.1", port }, metrics, () => ({
    captureRunning: true,
    packetsSeen: n,
    firewall: "none",
    lastPacketTime: Date.now(),
  }));
  console.log("ready");
  // Runs until the test kills it; a bound in case the test itself dies.
  await new Promise((r) => setTimeout(r, 60_000));
  Deno.exit(0);
}

/** Helper mode "query": poll an instant query until it returns `expected` or time runs out. */
async function queryMode(port: number, promql: string, expected: number, seconds: number) {
  const deadline = Date.now() + seconds * 1000;
  let last = "";
  while (Date.now() < deadline) {
    try {
      const url = `http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(promql)}`;
      const r = await fetch(url, { signal: AbortSignal.timeout(2000) });
      last = await r.text();
      const body = JSON.parse(last) as {
        status: string;
        data?: { result?: { value: [number, string] }[] };
      };
      const result = body.data?.result ?? [];
      if (body.status === "success" && result.length === 1) {
        if (Number(result[0].value[1]) === expected) break;
      }
    } catch (e) {
      last = String(e);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  console.log(last);
}

if (import.meta.main) {
  const [mode, ...args] = Deno.args;
  if (mode === "serve") await serveMode(Number(args[0]), Number(args[1]));
  else if (mode === "query") await queryMode(Number(args[0]), args[1], Number(args[2]), 20);
  else throw new Error(`unknown mode ${mode}`);
}

/** Waits for a child to exit, killing it (TERM, then KILL) if it has not. */
async function stop(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch { /* already gone */ }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, 5000);
  await child.status;
  clearTimeout(timer);
}

/** Reads a child's stdout until a line equal to `want` appears (or throws after ms). */
async function waitForLine(child: Deno.ChildProcess, want: string, ms: number): Promise<void> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const timer = setTimeout(() => reader.cancel(), ms);
  try {
    while (!seen.split("\n").includes(want)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`no "${want}" line within ${ms} ms; got: ${seen}`);
      seen += value;
    }
  } finally {
    clearTimeout(timer);
    // Nothing more is needed from it; cancelling also closes the pipe.
    await reader.cancel().catch(() => {});
  }
}

/** Starts Prometheus in namespace `ns` scraping 127.0.0.1:appPort every second. */
async function startPrometheus(
  ns: string,
  dir: string,
  appPort: number,
  promPort: number,
): Promise<Deno.ChildProcess> {
  await Deno.writeTextFile(
    `${dir}/prometheus.yml`,
    [
      "global:",
      "  scrape_interval: 1s",
      "  evaluation_interval: 1s",
      "scrape_configs:",
      "  - job_name: scanblocker",
      "    static_configs:",
      `      - targets: ["127.0.0.1:${appPort}"]`,
      "",
    ].join("\n"),
  );
  return new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      ns,
      PROMETHEUS,
      `--config.file=${dir}/prometheus.yml`,
      `--storage.tsdb.path=${dir}/data`,
      `--web.listen-address=127.0.0.1:${promPort}`,
      "--log.level=warn",
    ],
    cwd: dir,
    stdout: "null",
    stderr: "null",
  }).spawn();
}

/** One instant-query result from Prometheus' HTTP API. */
interface QueryResult {
  metric: Record<string, string>;
  value: [number, string];
}

/**
 * Asks Prometheus (inside `ns`) for `promql` until it returns the single value
 * `expected` (at most 20 s), and returns the last result list.
 */
async function query(
  ns: string,
  promPort: number,
  promql: string,
  expected: number,
): Promise<QueryResult[]> {
  const q = await run([
    "timeout",
    "30",
    "ip",
    "netns",
    "exec",
    ns,
    "deno",
    "run",
    "-P",
    `--config=${ROOT}deno.json`,
    SELF,
    "query",
    String(promPort),
    promql,
    String(expected),
  ]);
  assert.equal(q.code, 0, q.stderr);
  const body = JSON.parse(q.stdout.trim()) as {
    status: string;
    data: { result: QueryResult[] };
  };
  assert.equal(body.status, "success", q.stdout);
  return body.data.result;
}

/** Checks that Prometheus holds exactly `n` IPv4 attempts from our target and scraped it fine. */
async function assertScraped(ns: string, promPort: number, appPort: number, n: number) {
  const result = await query(
    ns,
    promPort,
    'scanblocker_connection_attempts_total{family="ipv4"}',
    n,
  );
  assert.equal(result.length, 1, JSON.stringify(result));
  assert.equal(result[0].metric.job, "scanblocker");
  assert.equal(result[0].metric.instance, `127.0.0.1:${appPort}`);
  assert.equal(Number(result[0].value[1]), n);
  // The scrape itself was healthy (Prometheus parsed everything we sent).
  const up = await query(ns, promPort, 'up{job="scanblocker"}', 1);
  assert.equal(up[0]?.value[1], "1", JSON.stringify(up));
}

Deno.test({
  name: "prometheus: a real server scrapes /metrics and returns our count",
  ignore: Deno.uid() !== 0,
  async fn() {
    const ns = `sb-prom-${Deno.pid % 100000}-${Math.floor(Math.random() * 36 ** 4).toString(36)}`;
    const dir = await Deno.makeTempDir({ prefix: "sb-prom-" });
    const n = 17 + Math.floor(Math.random() * 1000);
    const appPort = 18080, promPort = 19090;
    const children: Deno.ChildProcess[] = [];
    await must(["ip", "netns", "add", ns]);
    try {
      await must(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"]);
      const app = new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          ns,
          "deno",
          "run",
          "-P",
          `--config=${ROOT}deno.json`,
          SELF,
          "serve",
          String(n),
          String(appPort),
        ],
        stdout: "piped",
        stderr: "null",
      }).spawn();
      children.push(app);
      await waitForLine(app, "ready", 15_000);
      children.push(await startPrometheus(ns, dir, appPort, promPort));
      await assertScraped(ns, promPort, appPort, n);
    } finally {
      for (const c of children) await stop(c);
      await run(["ip", "netns", "del", ns]);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "prometheus: scrapes the real daemon, which counted the SYNs hping3 sent",
  ignore: Deno.uid() !== 0,
  async fn() {
    const lab = await createLab("prom");
    const dir = await Deno.makeTempDir({ prefix: "sb-prom-" });
    const n = 20 + Math.floor(Math.random() * 30);
    const appPort = 18081, promPort = 19091;
    const children: Deno.ChildProcess[] = [];
    let daemon: Daemon | null = null;
    try {
      daemon = startDaemon(lab.target, [
        "-i",
        lab.targetIf,
        "--firewall",
        "none",
        "--metrics-addr",
        `127.0.0.1:${appPort}`,
      ]);
      children.push(await startPrometheus(lab.target, dir, appPort, promPort));
      // Capture is up once Prometheus sees the target (counter at 0).
      await query(lab.target, promPort, 'scanblocker_connection_attempts_total{family="ipv4"}', 0);
      // n SYNs to one port: connection attempts, not a scan. Bounded by -c and timeout.
      const h = await lab.exec(lab.scanner, [
        "timeout",
        "20",
        "hping3",
        "-q",
        "-S",
        "-p",
        "80",
        "-c",
        String(n),
        "-i",
        "u2000",
        lab.target4,
      ]);
      assert.match(h.stdout + h.stderr, new RegExp(`${n} packets transmitted`));
      await assertScraped(lab.target, promPort, appPort, n);
    } finally {
      await daemon?.stop();
      for (const c of children) await stop(c);
      await lab.destroy();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
