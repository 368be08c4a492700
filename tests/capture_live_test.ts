/**
 * Live capture in network namespaces with real libpcap and real nmap/hping3,
 * through the loop production runs: the daemon's capture thread
 * (src/capture/worker.ts). Every SYN nmap sends is captured and decoded
 * (IPv4 and IPv6, on the interface and on "any"), and /healthz and /metrics
 * answer while the capture waits and while it is flooded (DESIGN principle 1).
 */
import assert from "node:assert/strict";
import { type Daemon, startDaemon } from "./daemon.ts";
import { createLab, esc, type Lab, nmap, run } from "./netns.ts";

const isRoot = Deno.uid() === 0;
if (!isRoot) console.log("capture_live_test: skipped (needs root for namespaces and capture)");

/** SYN without ACK, as tcpdump filters per family (IPv6: TCP right after the fixed header). */
const SYN_ONLY = { ip: "tcp[13] & 0x12 == 0x02", ip6: "ip6[6] == 6 and ip6[53] & 0x12 == 0x02" };

/** The daemon on `dev` in the lab's target namespace: no firewall, every connection logged. */
function daemonOn(lab: Lab, dev: string, port: number): Daemon {
  return startDaemon(lab.target, [
    "-i",
    dev,
    "--firewall",
    "none",
    "--log-rate",
    "0",
    "--metrics-addr",
    `127.0.0.1:${port}`,
  ]);
}

/** The destination ports of the daemon's "New connection" lines from `src` to `dst`, per line. */
function connections(d: Daemon, src: string, dst: string): number[] {
  const re = new RegExp(`New connection: ${esc(src)}:\\d+ -> ${esc(dst)}:(\\d+)$`, "gm");
  return [...d.stdout().matchAll(re)].map((m) => Number(m[1]));
}

/** A metric's value from the daemon's /metrics, fetched inside the namespace. */
async function metric(lab: Lab, port: number, name: string): Promise<number> {
  const r = await lab.exec(lab.target, ["curl", "-s", "-m", "5", `127.0.0.1:${port}/metrics`]);
  const m = new RegExp(`^${esc(name)} (\\S+)$`, "m").exec(r.stdout);
  return m ? Number(m[1]) : NaN;
}

/** Starts tcpdump on the scanner side and resolves once it listens; stop() returns SYNs seen. */
async function scannerTcpdump(lab: Lab, file: string) {
  const child = new Deno.Command("ip", {
    args: [
      ...lab.prefix(lab.scanner).slice(1),
      "timeout",
      "60",
      "tcpdump",
      "-i",
      lab.scannerIf,
      "-n",
      "-U",
      "--immediate-mode",
      "-Z",
      "root",
      "-s",
      "128",
      "-B",
      "16384",
      "-w",
      file,
      "tcp",
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const deadline = Date.now() + 10000;
  while (!seen.includes("listening on") && Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += value;
  }
  assert.match(seen, /listening on/, "scanner-side tcpdump started");
  const drain = (async () => {
    while (!(await reader.read()).done) { /* keep stderr flowing */ }
  })();
  return {
    async stop(): Promise<{ v4: number; v6: number }> {
      child.kill("SIGINT");
      await child.status;
      await drain;
      const count = async (expr: string) => {
        const r = await run([
          "tcpdump",
          "-n",
          "-r",
          file,
          `${expr} and ${SYN_ONLY[expr as "ip" | "ip6"]}`,
        ]);
        return r.stdout.trim() ? r.stdout.trim().split("\n").length : 0;
      };
      return { v4: await count("ip"), v6: await count("ip6") };
    },
  };
}

async function waitFor(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
}

Deno.test({
  name: "live capture: every SYN of an nmap scan (IPv4 and IPv6) is captured and decoded",
  ignore: !isRoot,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const lab = await createLab("cap");
    const dir = await Deno.makeTempDir({ prefix: "sb-live-" });
    const d = daemonOn(lab, lab.targetIf, 9461);
    // The same scan seen through "any" (Linux cooked headers).
    const dAny = daemonOn(lab, "any", 9462);
    try {
      await d.waitFor(/Listening on: /, 20000);
      await dAny.waitFor(/Listening on: /, 20000);
      const td = await scannerTcpdump(lab, `${dir}/scanner.pcap`);
      for (const [flag, addr] of [["-4", lab.target4], ["-6", lab.target6]]) {
        const r = await nmap(lab, [flag, "-sS", "-T4", "-p", "1-200", "-e", lab.scannerIf, addr], {
          seconds: 60,
        });
        assert.equal(r.code, 0, `nmap ${flag}: ${r.stderr}`);
      }
      const sent = await td.stop();
      assert.ok(sent.v4 >= 200 && sent.v6 >= 200, `nmap sent ${JSON.stringify(sent)}`);
      const v6src = `[${lab.scanner6}]`, v6dst = `[${lab.target6}]`;
      const seen = (x: Daemon) => ({
        v4: connections(x, lab.scanner4, lab.target4),
        v6: connections(x, v6src, v6dst),
      });
      await waitFor(() => {
        const a = seen(d), b = seen(dAny);
        return a.v4.length >= sent.v4 && a.v6.length >= sent.v6 && b.v4.length >= sent.v4 &&
          b.v6.length >= sent.v6;
      }, 5000);
      for (const [name, x] of [["interface", d], ["any", dAny]] as const) {
        const got = seen(x);
        const text = `${name}: captured v4 ${got.v4.length} v6 ${got.v6.length}, sent ${
          JSON.stringify(sent)
        }`;
        assert.equal(got.v4.length, sent.v4, `IPv4 SYNs captured = sent (${text})`);
        assert.equal(got.v6.length, sent.v6, `IPv6 SYNs captured = sent (${text})`);
        for (let p = 1; p <= 200; p++) {
          assert.ok(got.v4.includes(p) && got.v6.includes(p), `${name}: port ${p} seen`);
        }
      }
      assert.equal(await metric(lab, 9461, "scanblocker_pcap_dropped_packets"), 0, "no pcap drops");
      assert.equal(
        await metric(lab, 9461, 'scanblocker_connection_attempts_total{family="ipv4"}'),
        sent.v4,
      );
    } finally {
      await d.stop();
      await dAny.stop();
      await lab.destroy();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "live capture: /healthz and /metrics answer while waiting and while flooded",
  ignore: !isRoot,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const lab = await createLab("cfl");
    const d = daemonOn(lab, lab.targetIf, 9463);
    const get = async (path: string) => {
      const t0 = performance.now();
      const r = await lab.exec(lab.target, [
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-m",
        "5",
        `127.0.0.1:9463${path}`,
      ]);
      assert.equal(r.stdout, "200", `${path}: ${r.stdout} ${r.stderr}`);
      return performance.now() - t0;
    };
    try {
      await d.waitFor(/Listening on: /, 20000);
      // Waiting: no packets arrive, the server answers.
      await get("/healthz");
      await get("/metrics");
      // Flooded: hping3 at full speed for 3 seconds.
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
      await new Promise((r) => setTimeout(r, 500));
      const before = await metric(lab, 9463, "scanblocker_packets_captured_total");
      const latencies: number[] = [];
      for (let i = 0; i < 5; i++) latencies.push(await get(i % 2 ? "/healthz" : "/metrics"));
      const during = await metric(lab, 9463, "scanblocker_packets_captured_total");
      await flood;
      assert.ok(during - before > 1000, `the flood was being captured (${before} → ${during})`);
      // Each answer came (a blocked event loop would time them out); the
      // figures themselves are for the metrics bench, not a timed test.
      assert.equal(latencies.length, 5);
    } finally {
      await d.stop();
      await lab.destroy();
    }
  },
});
