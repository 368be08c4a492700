/**
 * End-to-end ban latency (issue 10), per firewall backend, in a namespace
 * lab: the real daemon on the target, real nmap on the scanner.
 *  - ports answered: distinct ports that sent back a SYN-ACK or RST to a fresh
 *    scanner running `nmap -sS -T4 --top-ports 1000`, counted on the
 *    scanner's side by tcpdump (immediate mode, snaplen 128, large buffer);
 *    then the same with `--scan-delay 1ms` (a steady 1,000 probes a second);
 *    full-speed scans, each from a fresh address, every one printed (the
 *    worst is what an attacker gets); the same for an in-kernel nftables
 *    rule set in place of the daemon (the limit);
 *  - two settings per backend: the daemon's defaults (text log, default log
 *    rate, metrics on; 10 scans), then the JSON log at one connection line a
 *    second (5 scans) whose "banned" events carry the latency figures;
 *  - detection-to-ban: capture timestamp of the threshold packet to the
 *    firewall's confirmation, from the daemon's JSON "banned" events (the
 *    value the scanblocker_detection_to_ban_seconds histogram records), over
 *    20 fresh scanners.
 * Prints figures; never passes or fails on time.
 */
import { startDaemon } from "../tests/daemon.ts";
import { createLab, type Lab, run } from "../tests/netns.ts";

/** The backends this bench knows (iptables: the default, ipset sets when usable). */
const BACKENDS = ["nftables", "iptables", "iptables-rules", "ipset", "none"] as const;
type Backend = (typeof BACKENDS)[number];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * (s.length - 1) + 0.5))] : NaN;
}

/**
 * Distinct ports of the target that answered `src` (SYN-ACK or RST) while
 * `send` ran: nmap with these arguments (at most `timeoutS` seconds), or a
 * function that sends the traffic itself; counted on the scanner's side by
 * tcpdump. The bench's scans pass `-T4 --top-ports 1000`; tests import it.
 */
/** Reads tcpdump's standard error until its "listening on" line (or `ms`), then drains the rest. */
async function untilListening(stderr: ReadableStream<Uint8Array>, ms: number): Promise<void> {
  const reader = stderr.getReader();
  const dec = new TextDecoder();
  let text = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<null>((r) => (timer = setTimeout(() => r(null), ms)));
  try {
    while (!/listening on/.test(text)) {
      const r = await Promise.race([reader.read(), late]);
      if (r === null || r.done) break;
      text += dec.decode(r.value, { stream: true });
    }
  } finally {
    clearTimeout(timer);
  }
  // Keep reading, so that tcpdump never blocks on a full pipe.
  (async () => {
    while (!(await reader.read()).done) { /* drained */ }
  })().catch(() => {});
}

export async function portsAnswered(
  lab: Lab,
  src: string,
  send: string[] | (() => Promise<unknown>),
  timeoutS = 8,
): Promise<number> {
  const pcap = await Deno.makeTempFile({ suffix: ".pcap" });
  const filter = `tcp and src host ${lab.target4} and dst host ${src} and ` +
    "(tcp[13] & 0x12 == 0x12 or tcp[13] & 0x04 != 0)";
  const dump = new Deno.Command("ip", {
    args: ["netns", "exec", lab.scanner, "tcpdump", "-i", lab.scannerIf, "-n", "-s", "128"]
      .concat(["-B", "65536", "--immediate-mode", "-U", "-w", pcap, filter]),
    stdout: "null",
    stderr: "piped",
  }).spawn();
  // Until tcpdump captures ("listening on"): a fixed 700 ms was sometimes too short on a
  // loaded machine, and the answers went uncounted (a test saw 0 where 1 came back).
  await untilListening(dump.stderr, 10_000);
  if (typeof send === "function") await send();
  else {
    await lab.exec(
      lab.scanner,
      ["timeout", String(timeoutS), "nmap", "-n", "-Pn", "-sS", "--max-retries", "0"]
        .concat(["-S", src, "-e", lab.scannerIf, ...send, lab.target4]),
    );
  }
  await sleep(300);
  dump.kill("SIGINT");
  await dump.status;
  const r = await run(["tcpdump", "-nn", "-r", pcap]);
  await Deno.remove(pcap);
  const ports = new Set<string>();
  for (const line of r.stdout.split("\n")) {
    const m = / IP [\d.]+\.(\d+) > /.exec(line);
    if (m) ports.add(m[1]);
  }
  return ports.size;
}

/** One full-speed scan of the bench: nmap -T4 --top-ports 1000 (and `extra`). */
function scanAnswered(lab: Lab, src: string, extra: string[]): Promise<number> {
  return portsAnswered(lab, src, ["-T4", "--top-ports", "1000", ...extra], 6);
}

/** Full-speed scans per backend and settings; every one is printed, with median and worst. */
const FULL_RUNS = { default: 10, json: 5 } as const;

const median = (xs: number[]) => quantile(xs, 0.5);

/**
 * The physical limit, measured the same way: an in-kernel nftables rule set
 * (no daemon) that drops a source once it sent more than 3 SYNs in a minute.
 */
const KERNEL_REFERENCE = `table inet sbref {
  set banned4 { type ipv4_addr; flags dynamic,timeout; timeout 10m; }
  set meter4 { type ipv4_addr; size 65535; flags dynamic,timeout; timeout 1m; }
  chain input {
    type filter hook input priority filter - 20; policy accept;
    ip saddr @banned4 drop
    tcp flags & (syn | ack) == syn update @meter4 { ip saddr limit rate over 3/minute burst 3 packets } add @banned4 { ip saddr } drop
  }
}
`;

/** Fresh scanner addresses on the scanner's side of the veth. */
export async function scannerAddresses(lab: Lab, n: number): Promise<string[]> {
  const base = lab.scanner4.split(".").slice(0, 3).join(".");
  const addrs = Array.from({ length: n }, (_, i) => `${base}.${100 + i}`);
  for (const a of addrs) await lab.addScannerAddress(`${a}/24`);
  return addrs;
}

/** Ports answered to full-speed scans with the in-kernel reference rule set in place. */
async function benchKernel(): Promise<string[]> {
  const lab = await createLab("ref");
  try {
    const r = await new Deno.Command("ip", {
      args: ["netns", "exec", lab.target, "nft", "-f", "-"],
      stdin: "piped",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const w = r.stdin.getWriter();
    await w.write(new TextEncoder().encode(KERNEL_REFERENCE));
    await w.close();
    const o = await r.output();
    if (o.code !== 0) return [`kernel reference: FAILED: ${new TextDecoder().decode(o.stderr)}`];
    const n = FULL_RUNS.default;
    const addrs = await scannerAddresses(lab, n + 1);
    const full: number[] = [];
    for (const a of addrs.slice(0, n)) full.push(await scanAnswered(lab, a, []));
    const slow = await scanAnswered(lab, addrs[n], ["--scan-delay", "1ms"]);
    return [
      `in-kernel nftables reference: ports answered to nmap -T4 --top-ports 1000: ${
        spread(full)
      }; with --scan-delay 1ms: ${slow}`,
    ];
  } finally {
    await lab.destroy();
  }
}

/** "median M, worst W (a, b, c, …)" of ports-answered figures. */
function spread(xs: number[]): string {
  return `median ${median(xs)}, worst ${Math.max(...xs)} (${xs.join(", ")})`;
}

/**
 * The daemon's arguments for a backend: its defaults, or the JSON log that
 * carries latencies; SB_BENCH_DAEMON_ARGS (words) is added to both, e.g.
 * "--realtime 0" for a deployment without CAP_SYS_NICE (the printed
 * settings then name it).
 */
function daemonArgs(lab: Lab, backend: string, settings: "default" | "json"): string[] {
  const args = ["-i", lab.targetIf, "--firewall", backend, ...EXTRA_ARGS];
  if (settings === "default") return args;
  return [...args, "--metrics-addr", "off", "--log-format", "json", "--log-rate", "1"];
}

const EXTRA_ARGS = (Deno.env.get("SB_BENCH_DAEMON_ARGS") ?? "").split(/\s+/).filter((w) => w);

/** Runs the measurements for one backend and settings and returns printable lines. */
async function benchBackend(
  backend: Backend,
  settings: "default" | "json",
): Promise<string[]> {
  const lab = await createLab("lat");
  const out: string[] = [];
  const name = `${backend} (${
    settings === "default"
      ? `default settings${EXTRA_ARGS.length ? ` + ${EXTRA_ARGS.join(" ")}` : ""}`
      : `--log-format json --log-rate 1 --metrics-addr off${
        EXTRA_ARGS.length ? ` ${EXTRA_ARGS.join(" ")}` : ""
      }`
  })`;
  const d = startDaemon(lab.target, daemonArgs(lab, backend, settings));
  try {
    await d.waitFor(/Listening on: /, 20000);
    const via = /firewall (\S+ via [^,]+(?:\([^)]*\))?)/.exec(d.stderr() + d.stdout());
    if (via) out.push(`${name}: start-up line: firewall ${via[1]}`);
    const n = FULL_RUNS[settings];
    const addrs = await scannerAddresses(lab, n + 21);
    const full: number[] = [];
    for (const a of addrs.slice(0, n)) full.push(await scanAnswered(lab, a, []));
    const slow = await scanAnswered(lab, addrs[n], ["--scan-delay", "1ms"]);
    if (settings === "default") {
      out.push(
        `${name}: ports answered to nmap -T4 --top-ports 1000: ${
          spread(full)
        }; with --scan-delay 1ms: ${slow}`,
      );
      return out;
    }
    // 20 fresh scanners for the latency distribution.
    for (const a of addrs.slice(n + 1)) {
      await lab.exec(lab.scanner, [
        "timeout",
        "3",
        "nmap",
        "-n",
        "-Pn",
        "-sS",
        "-T4",
        "-p",
        "1-60",
        "--max-retries",
        "0",
        "-S",
        a,
        "-e",
        lab.scannerIf,
        lab.target4,
      ]);
    }
    await sleep(500);
    const lat: number[] = [], det: number[] = [], read: number[] = [];
    for (const line of d.stdout().split("\n")) {
      if (!line.startsWith("{")) continue;
      try {
        const e = JSON.parse(line);
        if (e.event === "banned" && typeof e.detection_to_ban_ms === "number") {
          lat.push(e.detection_to_ban_ms);
          det.push(e.capture_to_detection_ms);
          if (typeof e.capture_to_read_ms === "number") read.push(e.capture_to_read_ms);
        }
      } catch { /* not JSON */ }
    }
    out.push(
      `${name}: ports answered to nmap -T4 --top-ports 1000: ${
        spread(full)
      }; with --scan-delay 1ms: ${slow}`,
      `${name}: detection-to-ban over ${lat.length} bans: median ${
        quantile(lat, 0.5).toFixed(3)
      } ms, p99 ${quantile(lat, 0.99).toFixed(3)} ms; of which capture to detector: median ${
        quantile(det, 0.5).toFixed(3)
      } ms, p99 ${
        quantile(det, 0.99).toFixed(3)
      } ms; of which waiting in the ring until the capture thread read it: median ${
        quantile(read, 0.5).toFixed(3)
      } ms, p99 ${quantile(read, 0.99).toFixed(3)} ms, every one: ${
        read.map((x) => x.toFixed(2)).join(", ")
      }`,
    );
  } catch (e) {
    out.push(`${name}: FAILED: ${e instanceof Error ? e.message.split("\n")[0] : e}`);
  } finally {
    await d.stop();
    await lab.destroy();
  }
  return out;
}

/** Ban latency for the given backends ("none" shows the capture-to-detection share). */
export async function benchBanLatency(
  backends: readonly (Backend)[] = ["nftables", "iptables", "none"],
): Promise<string> {
  const lines: string[] = await benchKernel();
  for (const b of backends) {
    if (b !== "none") lines.push(...await benchBackend(b, "default"));
    lines.push(...await benchBackend(b, "json"));
  }
  return lines.join("\n");
}

if (import.meta.main) {
  const which = Deno.args.filter((a): a is Backend => (BACKENDS as readonly string[]).includes(a));
  console.log(await benchBanLatency(which.length ? which : undefined));
}
