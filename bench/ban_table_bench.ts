/**
 * What a full ban table costs the traffic that is not banned, per backend,
 * inside a namespace lab: inbound TCP throughput and 64-byte UDP packets per
 * second received by the target (iperf3 from the scanner namespace), with
 * the backend's structures empty and holding BANS bans of other addresses
 * (put there by the backend itself, through its commandPrefix path). With
 * iptables every inbound packet walks one rule per ban; ipset and nftables
 * look the source up in a hash set. Prints figures; never passes or fails
 * on time. Each figure is the median of three runs of SECONDS seconds.
 *
 *   deno run -A bench/ban_table_bench.ts [BANS] [BACKEND...]
 */
import { createLab, type Lab, run } from "../tests/netns.ts";
import { createFirewall } from "../src/firewall/firewall.ts";
import type { FirewallKind } from "../src/types.ts";

const BANS = Number(Deno.args[0] ?? 65536);
const KINDS =
  (Deno.args.length > 1 ? Deno.args.slice(1) : ["iptables", "ipset", "nftables"]) as FirewallKind[];
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

const RUNS = 3;

/** Medians of RUNS runs each (the machine is shared and noisy). */
async function measure(lab: Lab): Promise<Figures> {
  const tcp: number[] = [], udp: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    tcp.push(await iperf(lab, false));
    udp.push(await iperf(lab, true));
  }
  const median = (v: number[]) => v.sort((a, b) => a - b)[Math.floor(v.length / 2)];
  return { tcpMbps: median(tcp), udpPps: median(udp) };
}

for (const kind of KINDS) {
  const lab = await createLab("tbl");
  try {
    const errors: string[] = [];
    const fw = createFirewall(kind, {
      isProtected: () => false,
      onError: (m) => errors.push(m),
      maxBans: BANS + 10,
      commandPrefix: lab.prefix(lab.target),
    });
    await fw.init();
    const empty = await measure(lab);
    const t = performance.now();
    const addrs = Array.from(
      { length: BANS },
      (_, i) => `172.${16 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
    );
    const results = await Promise.all(addrs.map((a) => fw.ban(a, 3600)));
    const fillMs = performance.now() - t;
    const banned = results.filter((r) => r === "banned").length;
    const full = await measure(lab);
    await fw.flush();
    await fw.close();
    const pct = (a: number, b: number) => `${((a / b) * 100).toFixed(0)} %`;
    console.log(
      `${kind.padEnd(8)} empty: TCP ${empty.tcpMbps.toFixed(0)} Mbit/s, UDP ${
        empty.udpPps.toFixed(0)
      } pkt/s | ${banned} bans (added in ${(fillMs / 1000).toFixed(1)} s): TCP ${
        full.tcpMbps.toFixed(0)
      } Mbit/s (${pct(full.tcpMbps, empty.tcpMbps)}), UDP ${full.udpPps.toFixed(0)} pkt/s (${
        pct(full.udpPps, empty.udpPps)
      })${errors.length ? ` | errors: ${errors.slice(0, 2).join("; ")}` : ""}`,
    );
  } finally {
    await lab.destroy();
  }
}
