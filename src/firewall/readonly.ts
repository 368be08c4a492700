/**
 * `scanblocker bans`: what the kernel holds, read without changing anything
 * (a listing must never create the chain, the jump or the table it lists).
 * A firewall it cannot read is said so, never shown as "no active bans".
 */
import type { Ban, FirewallKind } from "../types.ts";
import { formatDuration, NEEDS_RAW, RAW_GRANT } from "./firewall.ts";
import { IPT_CHAIN, parseIptablesRules } from "./iptables.ts";
import { IPSET_NAMES, IPSET_NET_NAMES, parseIpsetSave } from "./ipset.ts";
import { helperPath } from "./helpers.ts";
import { NFT_TABLE, parseNftBans } from "./nftables.ts";
import { firstLine, runCommand } from "./runner.ts";

/** The bans read, or why they could not be. */
export type ReadBans = { ok: true; bans: Ban[] } | { ok: false; error: string };

const GRANT = "run it as root or with CAP_NET_ADMIN";

/**
 * Reads the bans of backend `kind` from the kernel; creates nothing. The
 * iptables kinds read the rules per ban; "iptables" and "ipset" also the
 * ipset sets (a set that does not exist, or no ipset program, holds none).
 */
export async function readBans(kind: FirewallKind, prefix: string[] = []): Promise<ReadBans> {
  if (kind === "iptables" || kind === "iptables-rules" || kind === "ipset") {
    const bans: Ban[] = [];
    for (const [tool, family] of [["iptables", 4], ["ip6tables", 6]] as const) {
      // -S only reads; no -w: taking the xtables lock needs write access to /run.
      const r = await runCommand([...prefix, tool, "-S"]);
      if (r.code !== 0) {
        const grant = NEEDS_RAW.test(r.stderr) ? RAW_GRANT : GRANT;
        return {
          ok: false,
          error: `cannot read the ${tool} rules (${firstLine(r.stderr)}); ${grant}`,
        };
      }
      bans.push(...parseIptablesRules(r.stdout, family).bans);
    }
    if (kind !== "iptables-rules") {
      const r = await readSets(prefix);
      if (!r.ok) return r;
      bans.push(...r.bans);
    }
    return { ok: true, bans };
  }
  if (kind === "nftables") {
    const tables = await runCommand([...prefix, "nft", "list", "tables"]);
    if (tables.code !== 0) {
      return {
        ok: false,
        error: `cannot read the nftables table ${NFT_TABLE} (${
          firstLine(tables.stderr)
        }); ${GRANT}`,
      };
    }
    if (!tables.stdout.split("\n").some((l) => l.trim() === `table ${NFT_TABLE}`)) {
      return { ok: true, bans: [] };
    }
    const r = await runCommand([...prefix, "nft", "-j", "list", "table", ...NFT_TABLE.split(" ")]);
    if (r.code !== 0) {
      return {
        ok: false,
        error: `cannot read the nftables table ${NFT_TABLE} (${firstLine(r.stderr)}); ${GRANT}`,
      };
    }
    return { ok: true, bans: parseNftBans(r.stdout) };
  }
  return { ok: true, bans: [] };
}

/** The elements of the ipset sets of the iptables backend. */
async function readSets(prefix: string[]): Promise<ReadBans> {
  if (prefix.length === 0 && "error" in helperPath("ipset")) return { ok: true, bans: [] };
  const bans: Ban[] = [];
  for (const family of [4, 6] as const) {
    for (const name of [IPSET_NAMES[family], IPSET_NET_NAMES[family]]) {
      const r = await runCommand([...prefix, "ipset", "save", name]);
      if (r.code === 0) bans.push(...parseIpsetSave(r.stdout, family));
      else if (!/does not exist/.test(r.stderr)) {
        return {
          ok: false,
          error: `cannot read the ipset set ${name} (${firstLine(r.stderr)}); ${GRANT}`,
        };
      }
    }
  }
  return { ok: true, bans };
}

/**
 * One line per ban: address and time left, "until removed", or, for a rule
 * whose time is over but which is still in the kernel (iptables while the
 * daemon is down), how long ago it expired and that it still drops.
 */
export function formatBanList(bans: Ban[], now = Date.now()): string {
  if (bans.length === 0) return "no active bans";
  const sorted = [...bans].sort((a, b) =>
    a.family - b.family || a.address.localeCompare(b.address, "en", { numeric: true })
  );
  const width = sorted.reduce((w, b) => Math.max(w, b.address.length), 0);
  return sorted.map((b) => {
    const state = b.expiresAt === null
      ? "until removed"
      : b.expiresAt > now
      ? `${formatDuration((b.expiresAt - now) / 1000)} left`
      : `expired ${
        formatDuration((now - b.expiresAt) / 1000)
      } ago, still dropping (the daemon removes it when it runs; or: scanblocker unban ${b.address})`;
    return `${b.address.padEnd(width)}  ${state}`;
  }).join("\n");
}

/** The chain or table `bans` reads, for messages. */
export const LISTED = {
  iptables: `chain ${IPT_CHAIN} and ipset sets ${Object.values(IPSET_NAMES).join(", ")}`,
  "iptables-rules": `chain ${IPT_CHAIN}`,
  nftables: `table ${NFT_TABLE}`,
};
