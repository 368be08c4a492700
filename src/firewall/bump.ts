/**
 * The speed bump: a few rules on the input path, in the backend's own table
 * or chain, that hold back a scanner's further closed-port probes until the
 * daemon's ban lands.
 *
 * Why: nmap sends its probes in bursts of 25-40 that arrive whole within
 * microseconds, and the kernel answers each closed port with a RST in the
 * same softirq, before any thread of this program can wake (30-90 µs cold,
 * milliseconds on a busy CPU). Only an action taken per packet in the kernel
 * can stop those answers. The bump never bans: it DROPS (instead of letting
 * the kernel RST) a SYN to a new port from a source that already tried more
 * than `ports` distinct closed ports within `windowSeconds`: the daemon's own
 * rule, so it only acts on sources the daemon is about to ban. Capture
 * (AF_PACKET) sees packets before netfilter, so detection is unchanged.
 *
 * Per SYN (new connections only), in order:
 *  - a local socket accepts it (a listener, also after DNAT/redirect): a
 *    connection, not a probe: leave it;
 *  - the source is exempt (allow-list, this host, the lockout guard,
 *    addresses never banned), or the port is one the daemon does not count
 *    (a listening port, as src/openports.ts): leave it;
 *  - the source tried this port within the window: a repeat: leave it;
 *  - else remember (source, port) and pass it through a per-source token
 *    bucket of `ports` tokens refilled at `ports` per `windowSeconds`: over,
 *    drop. A full set makes the remembering fail and the packet pass (fail
 *    open under a spoofed flood).
 *
 * Why the bucket never drops what the daemon would not flag: a drop at t
 * means the bucket ran dry, so for some s the new-port SYNs in [s, t]
 * number more than N + r·(t − s) (N = ports, r ≥ N/W, W = window). Each
 * is a distinct port within any span of W (a port is remembered for W + 1
 * s). Cover [s, t] with k = ceil((t − s)/W) spans of W: if each held at
 * most N ports, the total would be at most k·N ≤ N + N·(t − s)/W, a
 * contradiction; so some span of W held more than N distinct closed ports,
 * which is exactly what the daemon's sliding window flags.
 */
import { type Cidr, cidrContains, formatAddress, parseCidr } from "../address.ts";
import type { BumpConfig, BumpState, Family } from "../types.ts";

export type { BumpConfig, BumpState };

/** The start-up line's text for a bump state. */
export function describeBump(s: BumpState | null): string {
  if (s === null) return "off (no firewall)";
  return s.on ? `on (${s.what})` : `off (${s.why})`;
}

/** Blocks of addresses the daemon never bans (address.ts neverBanned), as CIDR text. */
const NEVER_BANNED = [
  "0.0.0.0/8",
  "127.0.0.0/8",
  "224.0.0.0/4",
  "255.255.255.255/32",
  "::/96",
  "ff00::/8",
];

/** The never-banned blocks as Cidrs (IPv4-mapped built by hand: parseCidr refuses mapped text). */
export function neverBannedBlocks(): Cidr[] {
  const mapped = new Uint8Array(16);
  mapped[10] = mapped[11] = 0xff;
  return [...NEVER_BANNED.map((t) => parseCidr(t)!), { family: 6, bytes: mapped, prefix: 96 }];
}

/**
 * The blocks of one family with every block held by another dropped (CIDR
 * blocks nest or are disjoint, so what is left never overlaps: nftables
 * interval sets refuse overlaps). A /0 becomes two /1 (ipset's hash:net
 * takes no /0). Sorted text, so two lists compare as strings.
 */
export function mergeBlocks(cidrs: readonly Cidr[], family: Family): string[] {
  const mine = cidrs.filter((c) => c.family === family).flatMap((c) => {
    if (c.prefix > 0) return [c];
    const hi = new Uint8Array(family === 4 ? 4 : 16);
    hi[0] = 0x80;
    return [{ ...c, prefix: 1 }, { family, bytes: hi, prefix: 1 }];
  });
  const kept = mine.filter((c, i) =>
    !mine.some((o, j) =>
      j !== i && o.prefix <= c.prefix && cidrContains(o, family, c.bytes) &&
      (o.prefix < c.prefix || j < i)
    )
  );
  const text = kept.map((c) => `${formatAddress(family, masked(c))}/${c.prefix}`);
  return [...new Set(text)].sort();
}

/** The block's address with the host bits cleared. */
function masked(c: Cidr): Uint8Array {
  const b = new Uint8Array(c.bytes.subarray(0, c.family === 4 ? 4 : 16));
  for (let i = 0; i < b.length; i++) {
    const bits = Math.max(0, Math.min(8, c.prefix - i * 8));
    b[i] &= (0xff << (8 - bits)) & 0xff;
  }
  return b;
}

/**
 * The refill rate of `ports` per `windowSeconds` in the units nft's `limit`
 * and iptables' hashlimit take: exact when a unit divides evenly, else
 * rounded UP per day (a faster refill only ever drops less).
 */
export function bumpRate(ports: number, windowSeconds: number): { n: number; unit: string } {
  const w = Math.max(1, windowSeconds);
  for (const [unit, secs] of [["second", 1], ["minute", 60], ["hour", 3600]] as const) {
    if ((ports * secs) % w === 0 && (ports * secs) / w >= 1) {
      return { n: (ports * secs) / w, unit };
    }
  }
  return { n: Math.max(1, Math.ceil((ports * 86400) / w)), unit: "day" };
}

/** The sets' capacity: a spoofed flood fills them, and then the bump lets everything pass. */
export const BUMP_SET_SIZE = 65536;

/** Key of the parts that need the rules rebuilt (not only the exempt lists refilled). */
export function bumpRulesKey(c: BumpConfig): string {
  return `${c.ports}/${c.windowSeconds}/${c.device ?? ""}`;
}

/** Key of the exempt lists, to skip refilling them when nothing changed. */
export function bumpListsKey(c: BumpConfig): string {
  return `${c.exempt4.join()}|${c.exempt6.join()}|${c.openPorts.join()}`;
}

/** The "on" text of the start-up line. */
export function bumpWhat(c: BumpConfig): string {
  return `SYNs to more than ${c.ports} closed ports within ${c.windowSeconds} s are dropped ` +
    `until the ban lands${c.device ? `, on ${c.device}` : ""}`;
}
