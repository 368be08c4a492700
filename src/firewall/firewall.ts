/**
 * The firewall factory: picks the backend (iptables: ipset sets or one rule
 * per ban, see choice.ts; iptables-rules, ipset, nftables, none) behind
 * the one Firewall interface. Every backend refuses protected addresses and
 * invalid text before any command runs, batches the bans requested in one
 * tick, and reports failures through `onError` instead of throwing.
 */
import type { Ban, Firewall, FirewallKind } from "../types.ts";
import { DEFAULT_MAX_BANS, type FirewallOptions, withDefaults } from "./base.ts";
import { IPT_CHAIN, IptablesFirewall } from "./iptables.ts";
import { NFT_TABLE, NftablesFirewall } from "./nftables.ts";
import { IpsetFirewall, setMatchRule } from "./ipset.ts";
import { IptablesChoiceFirewall } from "./choice.ts";
import { NoneFirewall } from "./none.ts";
import { firstLine, runCommand } from "./runner.ts";

export type { FirewallHook, FirewallOptions } from "./base.ts";
export { normalizeHooks } from "./base.ts";

export { DEFAULT_MAX_BANS };

/** Creates the backend named by `kind`; nothing runs until the first call. */
export function createFirewall(kind: FirewallKind, opts: FirewallOptions): Firewall {
  const o = withDefaults(opts);
  switch (kind) {
    case "iptables":
      return new IptablesChoiceFirewall(o);
    case "iptables-rules":
      return new IptablesFirewall(o);
    case "ipset":
      return new IpsetFirewall(o);
    case "nftables":
      return new NftablesFirewall(o);
    default:
      return new NoneFirewall(o);
  }
}

/** Words of iptables/nft when the caller may not read the firewall. */
const NOT_ALLOWED = /Operation not permitted|Permission denied|must be root/i;
/** iptables listing a rule that matches an ipset set, without CAP_NET_RAW (see src/capabilities.ts). */
export const NEEDS_RAW = /socket to ipset/i;
/** What to grant when NEEDS_RAW matched. */
export const RAW_GRANT =
  "iptables needs CAP_NET_RAW as well to list the rule matching scanblocker's ipset sets: run it as root or with CAP_NET_ADMIN and CAP_NET_RAW";

/**
 * The backends that hold scanblocker's rules in this namespace: nftables when
 * the table `inet scanblocker` exists; when the chain SCANBLOCKER exists in
 * iptables or ip6tables, "iptables" if it matches the ipset sets (the
 * default backend's usual form, or --firewall ipset) and "iptables-rules" if
 * it holds one rule per ban (the form a daemon falls back to without ipset,
 * or --firewall iptables-rules): a subcommand then works on the bans in the
 * form they are in and never moves them. Only reads (no xtables lock); `error` says
 * why the firewall could not be read (without CAP_NET_ADMIN), so that is not
 * taken for "no bans". A missing tool counts as no rules of that kind.
 */
export async function installedBackends(
  prefix: string[] = [],
): Promise<{ kinds: FirewallKind[]; error: string | null }> {
  const [nft, ipt4, ipt6] = await Promise.all([
    runCommand([...prefix, "nft", "list", "tables"]),
    runCommand([...prefix, "iptables", "-S"]),
    runCommand([...prefix, "ip6tables", "-S"]),
  ]);
  for (const r of [nft, ipt4, ipt6]) {
    if (r.code !== 0 && NEEDS_RAW.test(r.stderr)) {
      return {
        kinds: [],
        error: `cannot read the firewall (${firstLine(r.stderr)}); ${RAW_GRANT}`,
      };
    }
    if (r.code !== 0 && NOT_ALLOWED.test(r.stderr)) {
      return {
        kinds: [],
        error: `cannot read the firewall (${
          firstLine(r.stderr)
        }); run it as root or with CAP_NET_ADMIN`,
      };
    }
  }
  const kinds: FirewallKind[] = [];
  const has = (t: string, line: string) => t.split("\n").some((l) => l.trim() === line);
  const chain = (t: string) => has(t, `-N ${IPT_CHAIN}`);
  const sets = (t: string) =>
    has(t, setMatchRule("scanblocker4")) || has(t, setMatchRule("scanblocker6"));
  if (sets(ipt4.stdout) || sets(ipt6.stdout)) kinds.push("iptables");
  else if (chain(ipt4.stdout) || chain(ipt6.stdout)) kinds.push("iptables-rules");
  if (nft.stdout.split("\n").some((l) => l.trim() === `table ${NFT_TABLE}`)) kinds.push("nftables");
  return { kinds, error: null };
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
