/**
 * The Grafana dashboard (deploy/grafana-dashboard.json): importable JSON whose
 * every PromQL expression names only metrics this program exposes. The
 * series names are parsed out of each expression and checked against the
 * registry; then the real daemon runs in a namespace lab, bans a real nmap
 * scanner, a real Prometheus scrapes its /metrics, every expression runs
 * against that Prometheus, and the core panels must have data.
 */
import assert from "node:assert/strict";
import { type Daemon, startDaemon } from "./daemon.ts";
import { canUseNetns, createLab, esc, type Lab, nmap } from "./netns.ts";

const root = new URL("..", import.meta.url).pathname;
const PROMETHEUS = "/usr/bin/prometheus";

interface Target {
  expr: string;
  legendFormat: string;
  datasource: { type: string; uid: string };
}
interface Panel {
  id: number;
  title: string;
  type: string;
  datasource: { type: string; uid: string };
  targets: Target[];
}
const dashboard = JSON.parse(await Deno.readTextFile(`${root}deploy/grafana-dashboard.json`)) as {
  __inputs: { name: string; pluginId: string }[];
  uid: string;
  panels: Panel[];
  templating: { list: { name: string; query: { query: string } }[] };
};
const targets = dashboard.panels.flatMap((p) => p.targets.map((t) => ({ panel: p.title, ...t })));

/** PromQL keywords that look like names. */
const KEYWORDS = new Set(["and", "or", "unless", "bool", "offset", "inf", "nan"]);

/** The series (metric) names an expression reads. */
export function seriesNames(expr: string): string[] {
  let e = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""'); // label values
  e = e.replace(/\{[^}]*\}/g, ""); // matchers
  e = e.replace(/\[[^\]]*\]/g, ""); // ranges
  e = e.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, "");
  const names: string[] = [];
  for (const m of e.matchAll(/(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const after = e.slice(m.index! + m[0].length).trimStart();
    if (after.startsWith("(") || KEYWORDS.has(m[0].toLowerCase())) continue;
    names.push(m[0]);
  }
  return [...new Set(names)];
}

/** An expression as Grafana sends it, with its variables filled in. */
const concrete = (expr: string) =>
  expr.replaceAll("$__rate_interval", "30s").replaceAll("$__range", "5m").replaceAll(
    "$instance",
    ".*",
  );

/** Metric names in an exposition, with histogram and summary series under their family name too. */
function exposedNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]/.exec(line);
    if (m) names.add(m[1]);
    // Declared families count even before their first labelled sample.
    const t = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)/.exec(line);
    if (t) {
      names.add(t[1]);
      if (t[2] === "histogram") {
        for (const s of ["_bucket", "_sum", "_count"]) names.add(t[1] + s);
      }
    }
  }
  return names;
}

Deno.test("grafana: the series-name parser reads what PromQL means", () => {
  assert.deepEqual(
    seriesNames(
      'histogram_quantile(0.99, sum by (le) (rate(a_bucket{instance=~"$x",le!="b"}[5m]))) / on (job) b_total or vector(0)',
    ),
    ["a_bucket", "b_total"],
  );
  assert.deepEqual(seriesNames('sum(rate(x_total{result="failed"}[1m])) > bool 0'), ["x_total"]);
});

Deno.test("grafana: importable JSON; every expression names only scanblocker_ metrics the registry exposes", async () => {
  assert.equal(dashboard.uid, "scanblocker");
  assert.deepEqual(dashboard.__inputs.map((i) => [i.name, i.pluginId]), [[
    "DS_PROMETHEUS",
    "prometheus",
  ]]);
  assert.equal(
    new Set(dashboard.panels.map((p) => p.id)).size,
    dashboard.panels.length,
    "unique ids",
  );
  assert.ok(targets.length >= 10);
  for (const t of targets) assert.equal(t.datasource.uid, "${DS_PROMETHEUS}", t.expr);
  const { createMetrics } = await import("../src/report/metrics.ts");
  const exposed = exposedNames(await createMetrics("test").registry.metrics());
  const used = new Set<string>();
  for (
    const t of [...targets, { expr: dashboard.templating.list[0].query.query, panel: "variable" }]
  ) {
    const expr = t.expr.replace(/^label_values\((\w+),.*\)$/, "$1");
    const names = seriesNames(expr);
    assert.ok(names.length > 0, `${t.panel}: no series in ${t.expr}`);
    for (const n of names) {
      assert.match(n, /^scanblocker_/, `${t.panel}: ${n} is not this program's metric`);
      used.add(n);
    }
  }
  for (const n of used) assert.ok(exposed.has(n), `${n} is not in the registry's exposition`);
  // The panels the operator asked for.
  for (
    const name of [
      "scanblocker_connection_attempts_total",
      "scanblocker_scans_detected_total",
      "scanblocker_active_bans",
      "scanblocker_bans_total",
      "scanblocker_detection_to_ban_seconds_bucket",
      "scanblocker_pcap_dropped_packets",
    ]
  ) assert.ok(used.has(name), name);
});

/** Prometheus' answer to an instant query, run from inside the namespace. */
async function query(lab: Lab, port: number, expr: string) {
  const r = await lab.exec(lab.target, [
    "curl",
    "-s",
    "--max-time",
    "5",
    "-G",
    "--data-urlencode",
    `query=${expr}`,
    `http://127.0.0.1:${port}/api/v1/query`,
  ]);
  try {
    return JSON.parse(r.stdout) as {
      status: string;
      error?: string;
      data?: { result: { metric: Record<string, string>; value: [number, string] }[] };
    };
  } catch {
    return { status: `curl ${r.code}: ${r.stdout}${r.stderr}` };
  }
}

/** Polls `expr` until `good` holds for its values (numbers), or 30 s pass. */
async function waitForData(
  lab: Lab,
  port: number,
  expr: string,
  good: (values: number[]) => boolean,
): Promise<number[]> {
  let last = "";
  for (const until = Date.now() + 30_000; Date.now() < until;) {
    const a = await query(lab, port, expr);
    last = JSON.stringify(a);
    const values = (a.data?.result ?? []).map((r) => Number(r.value[1]));
    if (a.status === "success" && values.length > 0 && good(values)) return values;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`no data for ${expr}; last answer ${last}`);
}

Deno.test({
  name:
    "grafana: every expression runs on a real Prometheus scraping the real daemon; core panels have data",
  ignore: !(await canUseNetns()) || !(await Deno.stat(PROMETHEUS).then(() => true, () => false)),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const lab = await createLab("graf");
    const dir = await Deno.makeTempDir({ prefix: "sb-graf-" });
    const appPort = 18082, promPort = 19092;
    let d: Daemon | null = null;
    let prom: Deno.ChildProcess | null = null;
    try {
      d = startDaemon(lab.target, [
        "-i",
        lab.targetIf,
        "--firewall",
        "nftables",
        "--lockout-guard",
        "off",
        "--metrics-addr",
        `127.0.0.1:${appPort}`,
        "--control-socket",
        `/run/scanblocker/test-graf-${Deno.pid}.sock`,
      ]);
      await d.waitFor(/Listening on: /, 20000);
      await Deno.writeTextFile(
        `${dir}/prometheus.yml`,
        `global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: scanblocker\n    static_configs:\n      - targets: ["127.0.0.1:${appPort}"]\n`,
      );
      prom = new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          lab.target,
          PROMETHEUS,
          `--config.file=${dir}/prometheus.yml`,
          `--storage.tsdb.path=${dir}/data`,
          `--web.listen-address=127.0.0.1:${promPort}`,
          "--log.level=warn",
        ],
        stdout: "null",
        stderr: "null",
      }).spawn();
      // Scraped before the scan, so rates see the counters rise.
      await waitForData(lab, promPort, 'up{job="scanblocker"}', (v) => v[0] === 1);
      await waitForData(lab, promPort, "scanblocker_scans_detected_total", (v) => v[0] === 0);
      const scan = await nmap(lab, ["-sS", "-p", "1-200", lab.target4]);
      assert.equal(scan.code, 0, scan.stderr);
      await d.waitFor(new RegExp(`IP ${esc(lab.scanner4)} banned\\.`));

      // Every name the dashboard reads is on the daemon's real /metrics.
      const m = await lab.exec(lab.target, ["curl", "-sf", `http://127.0.0.1:${appPort}/metrics`]);
      assert.equal(m.code, 0, m.stderr);
      const exposed = exposedNames(m.stdout);
      for (const t of targets) {
        for (const n of seriesNames(t.expr)) {
          assert.ok(exposed.has(n), `${t.panel}: ${n} not on /metrics`);
        }
      }

      // Core panels: data, and the values the scan implies.
      const positive = (v: number[]) => v.some((x) => x > 0);
      const finite = (v: number[]) => v.every((x) => Number.isFinite(x));
      const core: [RegExp, (v: number[]) => boolean][] = [
        [/connection_attempts_total/, positive],
        [/rate\(scanblocker_scans_detected_total/, positive],
        [/^sum\(scanblocker_active_bans/, (v) => v[0] === 1],
        [/result="banned"/, positive],
        [/histogram_quantile\(0\.5,/, (v) => finite(v) && v[0] > 0 && v[0] < 1],
        [/histogram_quantile\(0\.99,/, (v) => finite(v) && v[0] > 0],
        [/^sum\(scanblocker_pcap_dropped_packets/, finite],
        [/deriv\(scanblocker_pcap_dropped_packets/, finite],
      ];
      for (const [re, good] of core) {
        const t = targets.find((t) => re.test(t.expr));
        assert.ok(t, `no panel expression matches ${re}`);
        await waitForData(lab, promPort, concrete(t.expr), good);
      }
      // Every other expression is valid PromQL that Prometheus evaluates.
      for (const t of targets) {
        const a = await query(lab, promPort, concrete(t.expr));
        assert.equal(a.status, "success", `${t.panel}: ${t.expr}: ${a.error ?? a.status}`);
      }
    } finally {
      if (prom) {
        try {
          prom.kill("SIGTERM");
        } catch { /* gone */ }
        await prom.status;
      }
      if (d) await d.stop();
      await lab.destroy();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
