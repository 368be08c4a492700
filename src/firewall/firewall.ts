/**
 * The firewall factory: picks the backend (iptables, nftables, none) behind
 * the one Firewall interface. Every backend refuses protected addresses and
 * invalid text before any command runs, batches the bans requested in one
 * tick, and reports failures through `onError` instead of throwing.
 */
import type { Ban, Firewall, FirewallKind } from "../types.ts";
import type { FirewallOptions } from "./base.ts";
import { IPT_CHAIN, IptablesFirewall } from "./iptables.ts";
import { NFT_TABLE, NftablesFirewall } from "./nftables.ts";
import { NoneFirewall } from "./none.ts";
import { runCommand } from "./runner.ts";

export type { FirewallHook, FirewallOptions } from "./base.ts";
export { normalizeHooks } from "./base.ts";

/** Default cap on bans held at once. */
export const DEFAULT_MAX_BANS = 65536;

/** Creates the backend named by `kind`; nothing runs until the first call. */
export function createFirewall(kind: FirewallKind, opts: FirewallOptions): Firewall {
  const o: FirewallOptions = {
    ...opts,
    maxBans: opts.maxBans > 0 ? opts.maxBans : DEFAULT_MAX_BANS,
  };
  switch (kind) {
    case "iptables":
      return new IptablesFirewall(o);
    case "nftables":
      return new NftablesFirewall(o);
    default:
      return new NoneFirewall(o);
  }
}

/**
 * The backends that hold scanblocker's rules in this namespace: nftables when
 * the table `inet scanblocker` exists, iptables when the chain SCANBLOCKER
 * exists in iptables or ip6tables. Only reads.
 */
export async function installedBackends(prefix: string[] = []): Promise<FirewallKind[]> {
  const [nft, ipt4, ipt6] = await Promise.all([
    runCommand([...prefix, "nft", "list", "table", ...NFT_TABLE.split(" ")]),
    runCommand([...prefix, "iptables", "-w", "-S", IPT_CHAIN]),
    runCommand([...prefix, "ip6tables", "-w", "-S", IPT_CHAIN]),
  ]);
  const out: FirewallKind[] = [];
  if (ipt4.code === 0 || ipt6.code === 0) out.push("iptables");
  if (nft.code === 0) out.push("nftables");
  return out;
}

/** "1h 2m 3s" style text for a number of seconds. */
export function formatDuration(seconds: number): string {
  let s = Math.max(0, Math.round(seconds));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  const parts: string[] = [];
  if (d) parts.push(`${d}d`);
  if (h) parts.push(`${h}h`);
  if (m) parts.push(`${m}m`);
  if (s || parts.length === 0) parts.push(`${s}s`);
  return parts.join(" ");
}

/** One human-readable line per ban: address and time left ("until removed" for ttl 0). */
export function formatBans(bans: Ban[], now = Date.now()): string {
  const sorted = [...bans].sort((a, b) =>
    a.family - b.family || a.address.localeCompare(b.address, "en", { numeric: true })
  );
  const width = sorted.reduce((w, b) => Math.max(w, b.address.length), 0);
  return sorted.map((b) => {
    const left = b.expiresAt === null
      ? "until removed"
      : `${formatDuration((b.expiresAt - now) / 1000)} left`;
    return `${b.address.padEnd(width)}  ${left}`;
  }).join("\n");
}

/** The active bans of a backend as text for `scanblocker bans` (call init() first). */
export async function listBans(fw: Firewall): Promise<string> {
  const bans = await fw.list();
  return bans.length === 0 ? "no active bans" : formatBans(bans);
}
