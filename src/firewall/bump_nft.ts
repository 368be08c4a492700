/**
 * The speed bump in nftables (see bump.ts): sets and a base chain `bump` in
 * the backend's own table, on the input hook just after the chain holding
 * the ban drops (priority filter - 9 against its - 10: a banned source is
 * dropped there first). A chain of its own rather than a jump from the input
 * chain: a subcommand (`scanblocker unban`) sets up the table without
 * knowing the bump's settings and rewrites the input chain; it never
 * touches this one.
 * Checked on kernel 6.18 in namespaces: `socket transparent` ends the rule
 * when no socket is found (so the two rules together skip exactly the
 * packets a local socket takes, also after a `redirect`), and
 * `limit rate over N/… burst N packets` lets N packets through a fresh
 * element before it drops.
 */
import { BUMP_SET_SIZE, type BumpConfig, bumpRate } from "./bump.ts";

/** The bump's base chain in the backend's table, and its priority. */
export const NFT_BUMP_CHAIN = "bump";
export const NFT_BUMP_PRIORITY = -9;

/** Rules of the `bump` chain (also the count reconcile expects). */
export function nftBumpRules(c: BumpConfig): string[] {
  const { n, unit } = bumpRate(c.ports, c.windowSeconds);
  const limit = `limit rate over ${n}/${unit} burst ${c.ports} packets`;
  // Remembered one second longer than the window: a port tried again just
  // at the window's edge is still a repeat (the bump may only err lenient).
  const seen = `timeout ${c.windowSeconds + 1}s`;
  const rate = `timeout ${c.windowSeconds}s`;
  const rules = [
    // New connections only (a SYN without ACK), on the interface the daemon watches.
    "meta l4proto != tcp return",
    "tcp flags & (syn | ack) != syn return",
    ...(c.device ? [`iifname != ${JSON.stringify(c.device)} return`] : []),
    // A local socket takes it (listener, also after DNAT/redirect): a connection.
    "socket transparent 0 return",
    "socket transparent 1 return",
    "tcp dport @sb_open return",
  ];
  for (const [ip, f] of [["ip", 4], ["ip6", 6]] as const) {
    rules.push(
      `${ip} saddr @sb_exempt${f} return`,
      `${ip} saddr . tcp dport @sb_seen${f} return`,
      // One rule: when the seen set is full the add fails, the rule ends and
      // the packet passes (fail open under a spoofed flood), as does a full rate set.
      `add @sb_seen${f} { ${ip} saddr . tcp dport ${seen} } ` +
        `update @sb_rate${f} { ${ip} saddr ${rate} ${limit} } drop`,
    );
  }
  return rules;
}

/**
 * The bump's set-up transaction, after the table's own: sets (the dynamic
 * ones emptied, since their elements carry the old limit), chain, rules,
 * exempt lists.
 */
export function nftBumpSetup(table: string, c: BumpConfig): string {
  let t = `add set ${table} sb_exempt4 { type ipv4_addr; flags interval; }
add set ${table} sb_exempt6 { type ipv6_addr; flags interval; }
add set ${table} sb_open { type inet_service; }
`;
  for (const [ip, f] of [["ipv4_addr", 4], ["ipv6_addr", 6]] as const) {
    const size = `size ${BUMP_SET_SIZE}; flags dynamic,timeout;`;
    t += `add set ${table} sb_seen${f} { type ${ip} . inet_service; ${size} }
add set ${table} sb_rate${f} { type ${ip}; ${size} }
flush set ${table} sb_seen${f}
flush set ${table} sb_rate${f}
`;
  }
  t +=
    `add chain ${table} ${NFT_BUMP_CHAIN} { type filter hook input priority filter - ${-NFT_BUMP_PRIORITY}; policy accept; }
flush chain ${table} ${NFT_BUMP_CHAIN}
`;
  for (const r of nftBumpRules(c)) t += `add rule ${table} ${NFT_BUMP_CHAIN} ${r}\n`;
  return t + nftBumpLists(table, c);
}

/** Takes the bump's chain away (a bump turned off, or refused after a change). */
export function nftBumpRemoval(table: string): string {
  return `add chain ${table} ${NFT_BUMP_CHAIN}\ndelete chain ${table} ${NFT_BUMP_CHAIN}\n`;
}

/** Refills the exempt sources and open ports (one transaction: never an empty moment). */
export function nftBumpLists(table: string, c: BumpConfig): string {
  let t = "";
  for (
    const [set, items] of [
      ["sb_exempt4", c.exempt4],
      ["sb_exempt6", c.exempt6],
      ["sb_open", c.openPorts.map(String)],
    ] as const
  ) {
    t += `flush set ${table} ${set}\n`;
    if (items.length > 0) t += `add element ${table} ${set} { ${items.join(", ")} }\n`;
  }
  return t;
}
