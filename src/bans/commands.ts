/**
 * The subcommands that work on bans from another process: `bans`, `unban
 * ADDRESS` and `flush`. Without --firewall (or SB_FIREWALL) they look where
 * the bans are: the nftables table `inet scanblocker` and the iptables chain
 * SCANBLOCKER are this program's own, so their presence says which backend
 * a daemon used; every line says which backend it is about. A running
 * daemon sees an `unban` within its reconciliation period (src/bans/bans.ts).
 */
import { createFirewall, installedBackends } from "../firewall/firewall.ts";
import { bansWithReasons } from "../report/control.ts";
import { banListJson, formatBanList } from "../report/status.ts";
import type { Ban, FirewallKind } from "../types.ts";

/** What a subcommand needs of the configuration. */
export interface CommandSettings {
  command: "bans" | "unban" | "flush";
  unbanAddress: string | null;
  firewall: FirewallKind;
  firewallGiven: boolean;
  maxBans: number;
  /** `bans --json`: one JSON document. */
  json: boolean;
  /** Where a running daemon answers (reason and origin of each ban). */
  controlSocket: string;
}

/** Output of a subcommand: text for stdout and stderr, and the exit code. */
export interface CommandOutput {
  stdout: string;
  stderr: string[];
  code: number;
}

/** The backends to work on: the one named, or those holding scanblocker's chain or table. */
async function backends(s: CommandSettings): Promise<FirewallKind[]> {
  if (s.firewallGiven) return s.firewall === "none" ? [] : [s.firewall];
  return await installedBackends();
}

/** Runs `bans`, `unban` or `flush`; never throws for a firewall failure. */
export async function runBansCommand(s: CommandSettings): Promise<CommandOutput> {
  const out: CommandOutput = { stdout: "", stderr: [], code: 0 };
  const kinds = await backends(s);
  if (kinds.length === 0) {
    const where = s.firewallGiven ? s.firewall : "iptables or nftables";
    if (s.command === "bans") {
      out.stdout = s.json ? `{"bans":[]}\n` : `no active bans (no scanblocker rules in ${where})\n`;
    } else if (s.command === "unban") {
      out.stderr.push(`IP ${s.unbanAddress} is not banned (no scanblocker rules in ${where})`);
      out.code = 1;
    } else out.stdout = `Nothing to remove (no scanblocker rules in ${where}).\n`;
    return out;
  }
  const lists: { kind: FirewallKind; bans: Ban[] }[] = [];
  let unbanned: FirewallKind | null = null;
  for (const kind of kinds) {
    let failed = false;
    const fw = createFirewall(kind, {
      isProtected: () => false,
      maxBans: s.maxBans,
      onError: (m) => {
        failed = true;
        out.stderr.push(m);
      },
    });
    try {
      await fw.init();
      if (s.command === "bans") lists.push({ kind, bans: await fw.list() });
      else if (s.command === "unban") {
        if (await fw.unban(s.unbanAddress ?? "")) unbanned ??= kind;
      } else {
        await fw.flush();
        if (!failed) out.stdout += `Removed every rule scanblocker installed (${kind}).\n`;
      }
    } finally {
      await fw.close();
    }
    if (failed) out.code = 1;
  }
  if (s.command === "bans") out.stdout = await bansText(lists, s);
  if (s.command === "unban") {
    if (unbanned) out.stdout = `IP ${s.unbanAddress} unbanned (${unbanned}).\n`;
    else {
      out.stderr.push(`IP ${s.unbanAddress} is not banned (${kinds.join(", ")})`);
      out.code = 1;
    }
  }
  return out;
}

/**
 * The `bans` listing: a header and one row per ban with time left, reason,
 * origin (asked of the running daemon) and backend; `--json` as one
 * document; one line when there are none.
 */
async function bansText(
  lists: { kind: FirewallKind; bans: Ban[] }[],
  s: CommandSettings,
): Promise<string> {
  const all = lists.flatMap((l) => l.bans.map((b) => ({ ...b, backend: l.kind })));
  const now = Date.now();
  if (all.length === 0 && !s.json) {
    return `no active bans (${lists.map((l) => l.kind).join(", ")})\n`;
  }
  const r = await bansWithReasons(all, s.controlSocket);
  return s.json ? banListJson(r.bans, now) : formatBanList(r.bans, now, r.daemon);
}
