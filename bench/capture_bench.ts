/**
 * Capture benchmarks (print figures, never pass/fail):
 *  - offline: a 1,000,000-SYN capture read and decoded, as whole processes,
 *    against `tcpdump -r FILE -w /dev/null` with the same filter;
 *  - live: 1,000,000 SYNs from many sources sent with `tcpreplay --topspeed`
 *    into a lab veth: packets seen and pcap drops, ours and tcpdump's;
 *  - wake-up latency: packet capture timestamp → onBatch, over an nmap scan.
 * Run alone: `deno run -A bench/capture_bench.ts [offline|live|latency]...`.
 */
import { realtimeMs } from "../ffi/libc.ts";
import type { Batch, Pcap } from "../ffi/pcap.ts";
import { DEFAULT_BUFFER_BYTES, DEFAULT_FILTER, runCapture } from "../src/capture/capture.ts";
import { decodePacket } from "../src/detect/decode.ts";
import { DecodeStatus, newProbeEvent } from "../src/types.ts";
import { canUseNetns, createLab, nmap, run } from "../tests/netns.ts";
import { openLiveIn, writeSynPcap } from "../tests/pcap_files.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const PACKETS = 1_000_000;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

async function timeProcess(cmd: string[]): Promise<{ ms: number; code: number; out: string }> {
  const t0 = performance.now();
  const r = await run(cmd);
  return { ms: performance.now() - t0, code: r.code, out: r.stdout };
}

/** Our readers as whole processes: the capture+decode path alone, and the whole program (main.ts -r). */
function ourReaders(): { name: string; cmd: (f: string) => string[] }[] {
  const deno = Deno.execPath();
  return [
    {
      name: "read + decode (bench/read_file.ts: libpcap batches + decodePacket)",
      cmd: (f) => [deno, "run", "-A", `${ROOT}bench/read_file.ts`, f],
    },
    {
      name: "whole program (main.ts -r --local DST: + allow-list, admission, rules, log, summary)",
      cmd: (f) => [
        deno,
        "run",
        "-P",
        "--quiet",
        "--config",
        `${ROOT}deno.json`,
        `${ROOT}main.ts`,
        "-r",
        f,
        // The destinations of writeSynPcap's frames: the flood arrives at this host.
        "--local",
        "10.255.0.1",
        "--local",
        "fd00::ffff:1",
      ],
    },
  ];
}

/** Offline read rate against tcpdump, both as whole processes, median of 5 runs each. */
export async function benchOffline(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "sb-bench-off-" });
  try {
    const file = `${dir}/syn.pcap`;
    writeSynPcap(file, PACKETS);
    const readers = ourReaders();
    const ours: number[][] = readers.map(() => []);
    const theirs: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = await timeProcess(["tcpdump", "-r", file, "-w", "/dev/null", DEFAULT_FILTER]);
      if (t.code !== 0) return "offline: tcpdump failed";
      theirs.push(t.ms);
      for (const [k, r] of readers.entries()) {
        const o = await timeProcess(r.cmd(file));
        if (o.code !== 0) return `offline: ${r.name} failed (exit ${o.code})`;
        ours[k].push(o.ms);
      }
    }
    const mt = median(theirs);
    const runs = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(", ");
    const lines = [
      `offline: ${PACKETS} SYNs from ${PACKETS} distinct sources (pcap), default filter, whole processes, median of 5`,
      `  tcpdump -r -w /dev/null: ${mt.toFixed(0)} ms (${
        (PACKETS / mt / 1000).toFixed(2)
      } Mpps); runs ${runs(theirs)} ms`,
    ];
    for (const [k, r] of readers.entries()) {
      const mo = median(ours[k]);
      lines.push(`  ${r.name}: runs ${runs(ours[k])} ms`);
      lines.push(
        `  ${r.name}: ${mo.toFixed(0)} ms (${
          (PACKETS / mo / 1000).toFixed(2)
        } Mpps), ratio to tcpdump's rate ${(mt / mo).toFixed(2)}${
          k === 0 ? " (goal >= 0.5)" : " (goal >= 0.4)"
        }`,
      );
    }
    return lines.join("\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Wall clock in microseconds, as precise as the kernel's packet timestamps. */
function realtimeUs(): number {
  return realtimeMs() * 1000;
}

/** Counts decoded records of every batch; optional per-packet hook for latency. */
function counter(linktype: number, perPacket?: (tsUs: number, nowUs: number) => void) {
  const ev = newProbeEvent();
  const state = { records: 0, decoded: 0 };
  const onBatch = (b: Batch) => {
    const nowUs = perPacket ? realtimeUs() : 0;
    for (let at = b.start; at < b.end;) {
      const caplen = b.view.getUint32(at + 8, true);
      if (decodePacket(linktype, b.view, at + 16, caplen, ev) === DecodeStatus.Ok) {
        state.decoded++;
      }
      if (perPacket) {
        perPacket(b.view.getUint32(at, true) * 1e6 + b.view.getUint32(at + 4, true), nowUs);
      }
      state.records++;
      at += 16 + caplen;
    }
  };
  return { state, onBatch };
}

async function settle(get: () => number, target: number, maxMs: number): Promise<void> {
  const end = Date.now() + maxMs;
  let last = -1, same = 0;
  while (Date.now() < end && get() < target) {
    await new Promise((r) => setTimeout(r, 100));
    const v = get();
    same = v === last ? same + 1 : 0;
    last = v;
    if (same >= 10) break;
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

    // Ours.
    for (const buffer of [DEFAULT_BUFFER_BYTES]) {
      const pcap: Pcap = openLiveIn(lab.target, lab.targetIf, buffer);
      const abort = new AbortController();
      const c = counter(pcap.linktype);
      const loop = runCapture(pcap, c.onBatch, abort.signal);
      try {
        const t0 = performance.now();
        const rate = await replay();
        await settle(() => c.state.records, PACKETS, 10000);
        const st = pcap.stats();
        lines.push(
          `live (ours, buffer ${
            buffer >> 20
          } MiB): sent ${PACKETS} at ${rate}; seen ${c.state.records}, decoded ${c.state.decoded}, pcap received ${st.received}, dropped ${st.dropped}, ifdropped ${st.ifDropped} (${
            ((performance.now() - t0) / 1000).toFixed(1)
          } s)`,
        );
      } finally {
        abort.abort();
        await loop.catch(() => {});
        pcap.close();
      }
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

/** Packet capture timestamp → onBatch delay over an nmap -sS scan of 1,000 ports (v4 and v6). */
export async function benchLatency(): Promise<string> {
  if (!(await canUseNetns())) return "latency: skipped (needs root for namespaces)";
  const lab = await createLab("blt");
  const pcap = openLiveIn(lab.target, lab.targetIf);
  const abort = new AbortController();
  const lat: number[] = [];
  const c = counter(pcap.linktype, (tsUs, nowUs) => lat.push(nowUs - tsUs));
  const loop = runCapture(pcap, c.onBatch, abort.signal);
  try {
    for (const [flag, addr] of [["-4", lab.target4], ["-6", lab.target6]]) {
      await nmap(lab, [flag, "-sS", "-T4", "-p", "1-1000", "-e", lab.scannerIf, addr], {
        seconds: 60,
      });
      // Idle gaps between scans: the capture sleeps in poll(2) and must wake.
      await new Promise((r) => setTimeout(r, 200));
    }
    // Single probes with idle time between them (the first packet after a quiet spell).
    const single: number[] = [];
    for (let i = 0; i < 20; i++) {
      const before = lat.length;
      await lab.exec(lab.scanner, ["hping3", "-c", "1", "-S", "-p", String(2000 + i), lab.target4]);
      await new Promise((r) => setTimeout(r, 30));
      if (lat.length > before) single.push(lat[before]);
    }
    await new Promise((r) => setTimeout(r, 200));
    const s = [...lat].sort((a, b) => a - b);
    const one = [...single].sort((a, b) => a - b);
    return [
      `wake-up latency, capture timestamp -> onBatch (nmap -sS 1000 ports, IPv4 + IPv6, ${s.length} SYNs):`,
      `  median ${percentile(s, 0.5).toFixed(0)} us, p99 ${
        percentile(s, 0.99).toFixed(0)
      } us, max ${s[s.length - 1]?.toFixed(0)} us`,
      `  single SYNs after idle (${one.length}): median ${
        percentile(one, 0.5)?.toFixed(0)
      } us, max ${one[one.length - 1]?.toFixed(0)} us`,
    ].join("\n");
  } finally {
    abort.abort();
    await loop.catch(() => {});
    pcap.close();
    await lab.destroy();
  }
}

if (import.meta.main) {
  const which = Deno.args.length ? Deno.args : ["offline", "live", "latency"];
  const benches: Record<string, () => Promise<string>> = {
    offline: benchOffline,
    live: benchLive,
    latency: benchLatency,
  };
  for (const w of which) {
    const fn = benches[w];
    if (!fn) {
      console.error(`unknown benchmark "${w}" (offline, live, latency)`);
      Deno.exit(2);
    }
    console.log(await fn());
  }
}
