/**
 * The speed bump in iptables with ipset sets (see bump.ts): chain
 * SCANBLOCKER-BUMP, jumped to from INPUT right after the SCANBLOCKER jump
 * (not from SCANBLOCKER itself: that chain may be reached from FORWARD,
 * where the socket match is not allowed), and its sets:
 *  - `-m socket --nowildcard`: a socket takes the SYN, a listener on
 *    0.0.0.0/:: included (without --nowildcard xt_socket ignores those);
 *  - scanblocker-open (bitmap:port): ports the daemon does not count;
 *  - scanblocker4allow/6allow (hash:net): exempt sources;
 *  - scanblocker4seen/6seen (hash:ip,port): (source, port) tried within the
 *    window; the SET target cannot fail a rule, so a second look at the set
 *    after the add returns when the add failed (set full: fail open);
 *  - hashlimit per source: burst = --ports, refill --ports per --window.
 *    Its table is sized above the seen set's (sources reaching it have a
 *    seen entry), since a full hashlimit table drops every new source.
 * Checked on kernel 6.18 with iptables-nft 1.8.9 in namespaces.
 */
import type { Family } from "../types.ts";
import { BUMP_SET_SIZE, type BumpConfig, bumpRate } from "./bump.ts";

export const IPT_BUMP_CHAIN = "SCANBLOCKER-BUMP";
/** The sets of the bump, with their types (created before the rules that name them). */
export const BUMP_IPSETS = [
  { name: "scanblocker-open", args: ["bitmap:port", "range", "0-65535"] },
  { name: "scanblocker4allow", args: ["hash:net", "family", "inet"] },
  { name: "scanblocker6allow", args: ["hash:net", "family", "inet6"] },
  { name: "scanblocker4seen", args: ["hash:ip,port", "family", "inet", "timeout", "0"] },
  { name: "scanblocker6seen", args: ["hash:ip,port", "family", "inet6", "timeout", "0"] },
] as const;

/**
 * iptables-restore lines (table filter) that (re)build the chain and put
 * exactly one jump to it in INPUT, after the SCANBLOCKER jump; `listing` is
 * `iptables -S` output from before.
 */
export function iptBumpLines(family: Family, c: BumpConfig, listing: string): string[] {
  const { n, unit } = bumpRate(c.ports, c.windowSeconds);
  const ch = IPT_BUMP_CHAIN;
  const seen = `scanblocker${family}seen`;
  const lines = [
    `:${ch} - [0:0]`,
    `-A ${ch} -m socket --nowildcard -j RETURN`,
    `-A ${ch} -m set --match-set scanblocker-open dst -j RETURN`,
    `-A ${ch} -m set --match-set scanblocker${family}allow src -j RETURN`,
    `-A ${ch} -m set --match-set ${seen} src,dst -j RETURN`,
    `-A ${ch} -j SET --add-set ${seen} src,dst --timeout ${c.windowSeconds + 1}`,
    `-A ${ch} -m set ! --match-set ${seen} src,dst -j RETURN`,
    // The name carries the rate: a hashlimit table keeps the settings it was made with.
    `-A ${ch} -m hashlimit --hashlimit-above ${n}/${unit} --hashlimit-burst ${c.ports} ` +
    `--hashlimit-mode srcip --hashlimit-name sb${family}-${c.ports}-${c.windowSeconds} ` +
    `--hashlimit-htable-expire ${c.windowSeconds * 1000} ` +
    `--hashlimit-htable-max ${2 * BUMP_SET_SIZE} -j DROP`,
  ];
  const input = listing.split("\n").map((l) => l.trim()).filter((l) => l.startsWith("-A INPUT "));
  const old = input.filter((l) => l.endsWith(`-j ${ch}`));
  for (const l of old) lines.push(`-D ${l.slice(3)}`);
  const rest = input.filter((l) => !l.endsWith(`-j ${ch}`));
  const at = rest.indexOf("-A INPUT -j SCANBLOCKER") + 2; // 1-based, after it (1 when absent)
  const iif = c.device ? `-i ${c.device} ` : "";
  lines.push(`-I INPUT ${Math.max(1, at)} ${iif}-p tcp --tcp-flags SYN,ACK SYN -j ${ch}`);
  return lines;
}

/** Lines that remove the chain and INPUT's jumps to it, from `iptables -S` output. */
export function iptBumpRemoval(listing: string): string[] {
  const lines = listing.split("\n").map((l) => l.trim());
  const out = lines.filter((l) => l.startsWith("-A INPUT ") && l.endsWith(`-j ${IPT_BUMP_CHAIN}`))
    .map((l) => `-D ${l.slice(3)}`);
  if (lines.includes(`-N ${IPT_BUMP_CHAIN}`)) {
    out.push(`-F ${IPT_BUMP_CHAIN}`, `-X ${IPT_BUMP_CHAIN}`);
  }
  return out;
}

/** True when `iptables -S` output shows the chain and one jump to it. */
export function iptBumpPresent(listing: string): boolean {
  const lines = listing.split("\n").map((l) => l.trim());
  const jumps = lines.filter((l) =>
    l.startsWith("-A INPUT ") && l.endsWith(`-j ${IPT_BUMP_CHAIN}`)
  );
  return lines.includes(`-N ${IPT_BUMP_CHAIN}`) && jumps.length === 1;
}

/**
 * `ipset restore` text refilling the exempt sets and open ports, each
 * through a swap with a scratch copy so no moment sees them empty.
 */
export function ipsetBumpLists(c: BumpConfig): string {
  let t = "";
  for (
    const [set, items] of [
      ["scanblocker-open", c.openPorts.map(String)],
      ["scanblocker4allow", c.exempt4],
      ["scanblocker6allow", c.exempt6],
    ] as const
  ) {
    const tmp = `${set}-new`;
    t += `create ${tmp} ${BUMP_IPSETS.find((s) => s.name === set)!.args.join(" ")} -exist\n`;
    t += `flush ${tmp}\n`;
    for (const i of items) t += `add ${tmp} ${i} -exist\n`;
    t += `swap ${tmp} ${set}\ndestroy ${tmp}\n`;
  }
  return t;
}
