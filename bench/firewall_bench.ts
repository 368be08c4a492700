/**
 * Firewall runner figures, per backend, inside a namespace lab: time from
 * ban() to the runner's confirmation (median/p99 over sequential bans, on an
 * empty and on a 50,000-ban firewall), bans per second for 10,000 bans
 * requested at once, and the time init() takes to read back 50,000 existing
 * bans. The nftables backend runs twice: with a commandPrefix (the `nft -i`
 * runner) and as a program started *inside* the namespace, where it goes
 * through libnftables in process. Prints figures; never passes or fails on
 * time.
 *
 *   deno run -A bench/firewall_bench.ts
 *   (internally: ip netns exec NS deno run -A bench/firewall_bench.ts --inside nftables)
 */
import { createLab, run } from "../tests/netns.ts";
import { createFirewall } from "../src/firewall/firewall.ts";
import type { Firewall, FirewallKind } from "../src/types.ts";

const LATENCY_BANS = 40;
const BURST = 10_000;
const EXISTING = 50_000;

function make(kind: FirewallKind, prefix: string[], errors: string[]): Firewall {
  return createFirewall(kind, {
    isProtected: () => false,
    onError: (m) => errors.push(m),
    maxBans: 200_000,
    commandPrefix: prefix,
  });
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function latency(fw: Firewall, net: number, gapMs = 5): Promise<string> {
  const ms: number[] = [];
  for (let i = 0; i < LATENCY_BANS; i++) {
    const t = performance.now();
    const a = `10.${net}.${i >> 8}.${i & 255}`;
    // As the daemon does: the synchronous path when the backend has one.
    const r = fw.banNow(a, 3600) ?? await fw.ban(a, 3600);
    ms.push(performance.now() - t);
    if (r !== "banned") return `ban ${i} ${r}`;
    // One at a time, as scanners arrive (gap 0: back to back, the runners stay hot).
    if (gapMs > 0) await new Promise((res) => setTimeout(res, gapMs));
  }
  ms.sort((a, b) => a - b);
  return `median ${quantile(ms, 0.5).toFixed(3)} ms, p99 ${quantile(ms, 0.99).toFixed(3)} ms, ` +
    `min ${ms[0].toFixed(3)} ms (n=${ms.length})`;
}

/** Installs `n` bans directly (not through the backend), as a previous run would have left them. */
async function preload(kind: FirewallKind, prefix: string[], n: number): Promise<void> {
  const exp = Math.floor(Date.now() / 1000) + 7200;
  const addrs = Array.from(
    { length: n },
    (_, i) => `10.${200 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
  );
  let r;
  if (kind === "iptables") {
    const body = addrs.map((a) =>
      `-A SCANBLOCKER -s ${a}/32 -m comment --comment "scanblocker expires=${exp}" -j DROP`
    );
    r = await run([...prefix, "iptables-restore", "--noflush"], {
      stdin: `*filter\n${body.join("\n")}\nCOMMIT\n`,
    });
  } else {
    const lines: string[] = [];
    for (let i = 0; i < addrs.length; i += 4000) {
      const part = addrs.slice(i, i + 4000).map((a) => `${a} timeout 7200s`);
      lines.push(`add element inet scanblocker banned4 { ${part.join(", ")} }`);
    }
    r = await run([...prefix, "nft", "-f", "-"], {
      stdin: lines.join("\n") + "\n",
    });
  }
  if (r.code !== 0) throw new Error(`preload failed: ${r.stderr}`);
}

/** The figures for one backend, run with `prefix` in front of its commands ([] inside the namespace). */
async function benchFigures(
  kind: FirewallKind,
  prefix: string[],
  name: string,
): Promise<string[]> {
  const out: string[] = [];
  const errors: string[] = [];
  let fw = make(kind, prefix, errors);
  try {
    await fw.init();
    const path = fw.describePath();
    name = `${name} [${path}]`;
    out.push(`${name}: ban() to confirmation, empty firewall: ${await latency(fw, 11)}`);
    out.push(`${name}: same, back to back: ${await latency(fw, 13, 0)}`);

    const addrs = Array.from(
      { length: BURST },
      (_, i) => `10.${20 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
    );
    let t = performance.now();
    const res = await Promise.all(addrs.map((a) => fw.ban(a, 3600)));
    let s = (performance.now() - t) / 1000;
    const ok = res.filter((r) => r === "banned").length;
    out.push(
      `${name}: ${BURST} bans requested at once: ${(ok / s).toFixed(0)} bans/s ` +
        `(${ok} banned in ${(s * 1000).toFixed(0)} ms)`,
    );
    await fw.close();
    await fw.flush();

    fw = make(kind, prefix, errors);
    await fw.init();
    await preload(kind, prefix, EXISTING);
    await fw.close();
    fw = make(kind, prefix, errors);
    t = performance.now();
    const found = await fw.init();
    s = (performance.now() - t) / 1000;
    out.push(
      `${name}: init() with ${EXISTING} existing bans: ${
        (s * 1000).toFixed(0)
      } ms (${found.length} read back)`,
    );
    out.push(`${name}: ban() to confirmation, ${EXISTING} bans present: ${await latency(fw, 12)}`);
    t = performance.now();
    const res2 = await Promise.all(
      Array.from({ length: 1000 }, (_, i) => fw.ban(`10.30.${i >> 8}.${i & 255}`, 3600)),
    );
    s = (performance.now() - t) / 1000;
    out.push(
      `${name}: 1000 more bans at once with ${EXISTING} present: ` +
        `${(res2.filter((r) => r === "banned").length / s).toFixed(0)} bans/s`,
    );
    if (errors.length > 0) out.push(`${name}: ${errors.length} errors, first: ${errors[0]}`);
  } catch (e) {
    out.push(`${name}: bench failed: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    await fw.close();
  }
  return out;
}

/** One backend driven from outside its namespace (commandPrefix). */
async function benchKind(kind: FirewallKind): Promise<string[]> {
  const lab = await createLab("fwbench");
  try {
    const name = kind === "nftables" ? "nftables (nft -i)" : kind;
    return await benchFigures(kind, lab.prefix(lab.target), name);
  } finally {
    await lab.destroy();
  }
}

/** A backend run by a program inside the namespace: the netlink paths. */
async function benchInside(kind: FirewallKind): Promise<string[]> {
  const lab = await createLab("fwbenchlib");
  try {
    const r = await run([
      ...lab.prefix(lab.target),
      "timeout",
      "300",
      Deno.execPath(),
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      "--inside",
      kind,
    ]);
    const lines = r.stdout.split("\n").filter((l) => l.trim() !== "");
    if (r.code !== 0) lines.push(`${kind} (inside): exited ${r.code}: ${r.stderr.trim()}`);
    return lines;
  } finally {
    await lab.destroy();
  }
}

/** Runs the firewall benchmark for both backends and returns the figures as text. */
export async function benchFirewall(): Promise<string> {
  const lines: string[] = [];
  lines.push(...(await benchInside("nftables")));
  lines.push(...(await benchInside("iptables")));
  for (const kind of ["nftables", "iptables"] as FirewallKind[]) {
    lines.push(...(await benchKind(kind)));
  }
  return lines.join("\n");
}

if (import.meta.main) {
  if (Deno.args[0] === "--inside") {
    // Already inside the lab's namespace: no prefix, so the backend can use netlink.
    const kind = (Deno.args[1] ?? "nftables") as FirewallKind;
    console.log((await benchFigures(kind, [], `${kind} (in namespace)`)).join("\n"));
    // Leave nothing behind even if the outer process is interrupted before destroy().
    await make(kind, [], []).flush();
  } else console.log(await benchFirewall());
}
