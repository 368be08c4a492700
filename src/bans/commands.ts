/**
 * The subcommands that work on bans from another process: `bans`, `unban
 * ADDRESS` and `flush`. Without --firewall (or SB_FIREWALL) they look where
 * the bans are: the nftables table `inet scanblocker` and the iptables chain
 * SCANBLOCKER are this program's own, so their presence says which backend
 * a daemon used; every line says which backend it is about. A running
 * daemon sees an `unban` within its reconciliation period (src/bans/bans.ts).
 */
import { createFirewall, installedBackends } from "../firewall/firewall.ts";
import { readBans } from "../firewall/readonly.ts";
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
async function backends(
  s: CommandSettings,
): Promise<{ kinds: FirewallKind[]; error: string | null }> {
  if (s.firewallGiven) return { kinds: s.firewall === "none" ? [] : [s.firewall], error: null };
  return await installedBackends();
}

/** Runs `bans`, `unban` or `flush`; never throws for a firewall failure. */
export async function runBansCommand(s: CommandSettings): Promise<CommandOutput> {
  const out: CommandOutput = { stdout: "", stderr: [], code: 0 };
  const found = await backends(s);
  if (found.error !== null) return { stdout: "", stderr: [found.error], code: 2 };
  const kinds = found.kinds;
  if (s.command === "bans") return await listing(kinds, s);
  if (kinds.length === 0) {
    const where = s.firewallGiven ? s.firewall : "iptables or nftables";
    if (s.command === "unban") {
      out.stderr.push(`IP ${s.unbanAddress} is not banned (no scanblocker rules in ${where})`);
      out.code = 1;
    } else out.stdout = `Nothing to remove (no scanblocker rules in ${where}).\n`;
    return out;
  }
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
      if (s.command === "unban") {
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
 * `bans`: reads the kernel only (src/firewall/readonly.ts: never creates the
 * chain, jump or table it lists); a header and one row per ban with time
 * left (rules past their expiry that still drop marked as such), the reason
 * and origin the running daemon's book holds (asked over its control
 * socket), and the backend; `--json` as one document; one line when there
 * are none.
 */
async function listing(kinds: FirewallKind[], s: CommandSettings): Promise<CommandOutput> {
  const where = s.firewallGiven ? s.firewall : "iptables or nftables";
  const none = (text: string) => ({ stdout: s.json ? `{"bans":[]}\n` : text, stderr: [], code: 0 });
  if (kinds.length === 0) return none(`no active bans (no scanblocker rules in ${where})\n`);
  const lists: { kind: FirewallKind; bans: Ban[] }[] = [];
  for (const kind of kinds) {
    const r = await readBans(kind);
    if (!r.ok) return { stdout: "", stderr: [r.error], code: 2 };
    lists.push({ kind, bans: r.bans });
  }
  const all = lists.flatMap((l) => l.bans.map((b) => ({ ...b, backend: l.kind })));
  if (all.length === 0) return none(`no active bans (${kinds.join(", ")})\n`);
  const r = await bansWithReasons(all, s.controlSocket);
  const now = Date.now();
  const text = s.json ? banListJson(r.bans, now) : formatBanList(r.bans, now, r.daemon);
  return { stdout: text, stderr: [], code: 0 };
}
