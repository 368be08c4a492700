/**
 * What `scanblocker status` shows: the StatusSnapshot the daemon hands to the
 * control socket (src/report/control.ts), the small recorder of what the
 * daemon saw (last scans, why and from where each ban came), and the text
 * rendering of a snapshot. The daemon builds a snapshot on request only.
 */
import type { FirewallKind } from "../types.ts";
import { formatDuration } from "../firewall/firewall.ts";
import { localTimestamp } from "./log.ts";

/**
 * Where a ban came from, as the bans owner books it: "local" (this host
 * detected the scan), "restored" (in the firewall at start, or added there
 * from outside), "fleet" (another host, through CrowdSec's LAPI).
 */
export type BanOrigin = string;

/** One active ban as status and `bans` show it. */
export interface BanStatus {
  address: string;
  /** End of the ban, epoch ms; null = until removed. */
  expiresAt: number | null;
  /** Why, where known, e.g. "port scan: 4 ports"; null when unknown. */
  reason: string | null;
  origin: BanOrigin;
}

/** A source the detector tracks now, with the ports it tried within the window. */
export interface TopSource {
  address: string;
  /** Distinct destination ports within the window, ascending (main and slow rule together). */
  ports: number[];
  /** Already reported as a scanner (its ports are then no longer kept by the main rule). */
  detected: boolean;
}

/** One scan the daemon detected. */
export interface RecentScan {
  /** Packet time of the threshold probe, epoch ms. */
  at: number;
  src: string;
  dst: string;
  /** The rule that fired: "window", "psd" or "slow". */
  rule: string;
  /** Distinct ports when it fired. */
  ports: number;
  /** "banned" while the source is banned, else "not banned" (failed, refused, expired or removed). */
  outcome: string;
}

/** Everything `scanblocker status` prints, as one JSON document. */
export interface StatusSnapshot {
  version: string;
  pid: number;
  /** Daemon start, epoch ms. */
  startedAt: number;
  /** When this snapshot was taken, epoch ms. */
  now: number;
  interface: string;
  firewall: {
    backend: FirewallKind;
    /** How bans reach the kernel, e.g. "netlink" or "iptables-restore (reason)". */
    path: string;
    /** "ok", "error", "starting". */
    state: string;
  };
  packets: { seen: number; droppedByKernel: number };
  sources: { tracked: number; cap: number };
  scansDetected: number;
  /** Up to 10 sources by distinct ports, most first. */
  topSources: TopSource[];
  /** Active bans, soonest end first (until-removed last). */
  bans: BanStatus[];
  /** The last 10 scans, newest first. */
  recentScans: RecentScan[];
}

/** How many recent scans a recorder keeps. */
export const RECENT_SCANS = 10;

/** The last scans the daemon detected (neither the firewall nor the detector keeps them). */
export class StatusRecorder {
  readonly #recent: Omit<RecentScan, "outcome">[] = [];
  /** Scans detected since start. */
  scans = 0;

  /** A scan was detected. */
  scan(s: Omit<RecentScan, "outcome">): void {
    this.scans++;
    this.#recent.unshift(s);
    if (this.#recent.length > RECENT_SCANS) this.#recent.pop();
  }

  /** The last scans, newest first, each with whether its source is banned now. */
  recent(banned: (address: string) => boolean): RecentScan[] {
    return this.#recent.map((s) => ({ ...s, outcome: banned(s.src) ? "banned" : "not banned" }));
  }
}

/** Bans ordered soonest end first, until-removed last, then by address. */
export function sortBans<T extends { address: string; expiresAt: number | null }>(bans: T[]): T[] {
  return [...bans].sort((a, b) =>
    (a.expiresAt ?? Infinity) - (b.expiresAt ?? Infinity) ||
    a.address.localeCompare(b.address, "en", { numeric: true })
  );
}

/** The reason, or "-" when unknown. */
export function reasonText(r: string | null): string {
  return r ? r : "-";
}

/**
 * "12m 3s" (left), "until removed", or, for a rule past its expiry still in
 * the kernel (iptables while no daemon runs), how long ago it expired.
 */
export function timeLeft(expiresAt: number | null, now: number): string {
  if (expiresAt === null) return "until removed";
  if (expiresAt <= now) {
    return `expired ${formatDuration((now - expiresAt) / 1000)} ago, still dropping`;
  }
  return formatDuration((expiresAt - now) / 1000);
}

/** Rows as aligned columns (two spaces apart), the last column unpadded. */
export function columns(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) =>
    r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  ").trimEnd()
  );
}

/** Port list in ranges: "1-5, 22, 80". */
export function portRanges(ports: number[], max = 12): string {
  const parts: string[] = [];
  for (let i = 0; i < ports.length;) {
    let j = i;
    while (j + 1 < ports.length && ports[j + 1] === ports[j] + 1) j++;
    parts.push(i === j ? `${ports[i]}` : `${ports[i]}-${ports[j]}`);
    i = j + 1;
  }
  return parts.length > max ? `${parts.slice(0, max).join(", ")}, …` : parts.join(", ");
}

/** The text `scanblocker status` prints for a snapshot. */
export function formatStatus(s: StatusSnapshot): string {
  const out: string[] = [];
  out.push(
    `scanblocker ${s.version} (pid ${s.pid}), up ${formatDuration((s.now - s.startedAt) / 1000)}`,
    `interface:  ${s.interface}`,
    `firewall:   ${s.firewall.backend}${
      s.firewall.path ? ` via ${s.firewall.path}` : ""
    } (${s.firewall.state})`,
    `packets:    ${s.packets.seen} seen, ${s.packets.droppedByKernel} dropped by the kernel`,
    `sources:    ${s.sources.tracked} tracked (cap ${s.sources.cap})`,
    `scans:      ${s.scansDetected} detected`,
    "",
    `Top sources by distinct ports (${s.topSources.length}):`,
  );
  if (s.topSources.length === 0) out.push("  none");
  else {
    out.push(
      ...columns([
        ["  SOURCE", "PORTS", "TRIED"],
        ...s.topSources.map((t) => [
          `  ${t.address}`,
          t.detected && t.ports.length === 0 ? "scanner" : `${t.ports.length}`,
          portRanges(t.ports),
        ]),
      ]),
    );
  }
  out.push("", `Active bans (${s.bans.length}):`);
  if (s.bans.length === 0) out.push("  none");
  else {
    out.push(
      ...columns([
        ["  ADDRESS", "LEFT", "REASON", "ORIGIN"],
        ...s.bans.map((b) => [
          `  ${b.address}`,
          timeLeft(b.expiresAt, s.now),
          reasonText(b.reason),
          b.origin,
        ]),
      ]),
    );
  }
  out.push("", `Last scans (${s.recentScans.length}):`);
  if (s.recentScans.length === 0) out.push("  none");
  else {
    out.push(
      ...columns([
        ["  TIME", "SOURCE", "TARGET", "RULE", "PORTS", "OUTCOME"],
        ...s.recentScans.map((r) => [
          `  ${localTimestamp(r.at)}`,
          r.src,
          r.dst,
          r.rule,
          String(r.ports),
          r.outcome,
        ]),
      ]),
    );
  }
  return out.join("\n") + "\n";
}

/** Where a snapshot's parts come from (the daemon wires these; see takeSnapshot). */
export interface StatusSources {
  version: string;
  startedAt: number;
  interface: string;
  firewall: () => StatusSnapshot["firewall"];
  packets: () => StatusSnapshot["packets"];
  sources: () => StatusSnapshot["sources"];
  /** The `n` sources with the most distinct ports now. */
  top: (n: number) => Promise<TopSource[]>;
  /** The bans owner's book: every ban with its end, origin and reason. */
  bans: () => { address: string; expiresAt: number | null; origin: string; reason: string }[];
  recorder: StatusRecorder;
}

/** Builds a StatusSnapshot now (on a status request). */
export async function takeSnapshot(s: StatusSources): Promise<StatusSnapshot> {
  const top = await s.top(10);
  const now = Date.now();
  const active = s.bans().filter((b) => b.expiresAt === null || b.expiresAt > now);
  const held = new Set(active.map((b) => b.address));
  return {
    version: s.version,
    pid: Deno.pid,
    startedAt: s.startedAt,
    now,
    interface: s.interface,
    firewall: s.firewall(),
    packets: s.packets(),
    sources: s.sources(),
    scansDetected: s.recorder.scans,
    topSources: top,
    bans: sortBans(active).map((b) => ({
      address: b.address,
      expiresAt: b.expiresAt,
      reason: b.reason || null,
      origin: b.origin,
    })),
    recentScans: s.recorder.recent((a) => held.has(a)),
  };
}

/** A ban as `scanblocker bans` lists it: the firewall's ban and the backend holding it. */
export type ListedBan = BanStatus & { backend: string };

/** `scanblocker bans`: a header and one row per ban, with reason, origin and backend. */
export function formatBanList(bans: ListedBan[], now: number, daemon: boolean): string {
  const rows = sortBans(bans).map((b) => [
    b.address,
    timeLeft(b.expiresAt, now),
    reasonText(b.reason),
    b.origin,
    b.backend,
  ]);
  const expired = bans.some((b) => b.expiresAt !== null && b.expiresAt <= now)
    ? "(an expired rule still drops until the daemon runs again or `scanblocker unban ADDRESS`)\n"
    : "";
  const note = expired +
    (daemon ? "" : "(reason and origin unknown: no daemon answered on its control socket)\n");
  return columns([["ADDRESS", "LEFT", "REASON", "ORIGIN", "BACKEND"], ...rows]).join("\n") + "\n" +
    note;
}

/** `scanblocker bans --json`: one document, times as ISO 8601 and seconds left. */
export function banListJson(bans: ListedBan[], now: number): string {
  return JSON.stringify({
    bans: sortBans(bans).map((b) => ({
      address: b.address,
      backend: b.backend,
      expires: b.expiresAt === null ? null : new Date(b.expiresAt).toISOString(),
      seconds_left: b.expiresAt === null
        ? null
        : Math.max(0, Math.round((b.expiresAt - now) / 1000)),
      // Past its expiry but still in the kernel (it still drops).
      expired: b.expiresAt !== null && b.expiresAt <= now,
      reason: b.reason,
      origin: b.origin,
    })),
  }) + "\n";
}
