/**
 * What a full ban table costs the traffic that is not banned, per backend,
 * inside a namespace lab: inbound TCP throughput and 64-byte UDP packets per
 * second received by the target (iperf3 from the scanner namespace), with
 * the backend's structures empty and holding BANS bans of other addresses
 * (put there by the backend itself, through its commandPrefix path). With
 * iptables-rules every inbound packet walks one rule per ban; iptables (the
 * default: ipset sets when ipset is usable), ipset and nftables look the
 * source up in a hash set. Every round is printed, then the medians. Prints figures; never passes or fails
 * on time. Each figure is the median of five runs of SECONDS seconds, the
 * empty and the full table measured in turns (two labs).
 *
 *   deno run -A bench/ban_table_bench.ts [BANS] [BACKEND...]
 */
import { createLab, type Lab, run } from "../tests/netns.ts";
import { createFirewall } from "../src/firewall/firewall.ts";
import type { FirewallKind } from "../src/types.ts";

const BANS = Number(Deno.args[0] ?? 65536);
const KINDS =
  (Deno.args.length > 1
    ? Deno.args.slice(1)
    : ["iptables", "iptables-rules", "ipset", "nftables"]) as FirewallKind[];
const SECONDS = 3;

interface Figures {
  tcpMbps: number;
  udpPps: number;
}

/** One iperf3 run from the scanner to the target: received bits/s or packets/s. */
async function iperf(lab: Lab, udp: boolean): Promise<number> {
  const port = String(5201 + Math.floor(Math.random() * 1000));
  const server = new Deno.Command("ip", {
    args: ["netns", "exec", lab.target, "timeout", "30", "iperf3", "-s", "-1", "-p", port],
    stdout: "null",
    stderr: "null",
  }).spawn();
  await new Promise((r) => setTimeout(r, 300));
  const args = ["-c", lab.target4, "-p", port, "-t", String(SECONDS), "-J"];
  if (udp) args.push("-u", "-l", "64", "-b", "0");
  const r = await run(["ip", "netns", "exec", lab.scanner, "timeout", "30", "iperf3", ...args]);
  await server.status;
  const j = JSON.parse(r.stdout);
  if (!udp) return j.end.sum_received.bits_per_second / 1e6;
  const s = j.end.sum;
  return (s.packets - s.lost_packets) / s.seconds;
}

const ROUNDS = 5;
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

/** A lab whose target runs backend `kind` holding `bans` bans of other addresses. */
async function labWith(kind: FirewallKind, bans: number, errors: string[]) {
  const lab = await createLab("tbl");
  const fw = createFirewall(kind, {
    isProtected: () => false,
    onError: (m) => errors.push(m),
    maxBans: bans + 10,
    commandPrefix: lab.prefix(lab.target),
  });
  await fw.init();
  const t = performance.now();
  const addrs = Array.from(
    { length: bans },
    (_, i) => `172.${16 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
  );
  const results = await Promise.all(addrs.map((a) => fw.ban(a, 3600)));
  return {
    lab,
    fw,
    fillMs: performance.now() - t,
    banned: results.filter((r) => r === "banned").length,
  };
}

// Two labs per backend, one empty and one full, measured in turns so that
// the machine's changing load falls on both alike; medians of ROUNDS turns.
for (const kind of KINDS) {
  const errors: string[] = [];
  const empty = await labWith(kind, 0, errors);
  const full = await labWith(kind, BANS, errors);
  try {
    const e: Figures[] = [], f: Figures[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      e.push({ tcpMbps: await iperf(empty.lab, false), udpPps: await iperf(empty.lab, true) });
      f.push({ tcpMbps: await iperf(full.lab, false), udpPps: await iperf(full.lab, true) });
      const [a, b] = [e[i], f[i]];
      console.log(
        `${kind} round ${i + 1}: empty TCP ${a.tcpMbps.toFixed(0)} Mbit/s, UDP ${
          a.udpPps.toFixed(0)
        } pkt/s | full TCP ${b.tcpMbps.toFixed(0)} Mbit/s (${
          ((b.tcpMbps / a.tcpMbps) * 100).toFixed(0)
        } %), UDP ${b.udpPps.toFixed(0)} pkt/s (${((b.udpPps / a.udpPps) * 100).toFixed(0)} %)`,
      );
    }
    const m = (v: Figures[], k: keyof Figures) => median(v.map((x) => x[k]));
    const pct = (a: number, b: number) => `${((a / b) * 100).toFixed(0)} %`;
    const [et, eu, ft, fu] = [m(e, "tcpMbps"), m(e, "udpPps"), m(f, "tcpMbps"), m(f, "udpPps")];
    console.log(
      `${kind.padEnd(8)} (${full.fw.describePath()}) median empty: TCP ${
        et.toFixed(0)
      } Mbit/s, UDP ${eu.toFixed(0)} pkt/s | ${full.banned} bans ` +
        `(added in ${(full.fillMs / 1000).toFixed(1)} s): TCP ${ft.toFixed(0)} Mbit/s (${
          pct(ft, et)
        }), ` +
        `UDP ${fu.toFixed(0)} pkt/s (${pct(fu, eu)})${
          errors.length ? ` | errors: ${errors.slice(0, 2).join("; ")}` : ""
        }`,
    );
  } finally {
    for (const x of [empty, full]) {
      await x.fw.flush();
      await x.fw.close();
      await x.lab.destroy();
    }
  }
}
