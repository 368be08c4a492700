/**
 * Joins this daemon to the fleet (--lapi-url): bans from other hosts go
 * through the bans owner (the same guard, cap, book and firewall as local
 * ones), and every ban this host makes is pushed.
 */
import type { AllowList } from "../allowlist.ts";
import type { Bans } from "../bans/bans.ts";
import type { Config } from "../config.ts";
import type { Metrics } from "../report/metrics.ts";
import { type RunningFleet, startFleet } from "./wire.ts";

/** Starts the fleet link, or returns null without --lapi-url. */
export function joinFleet(
  cfg: Config,
  o: {
    bans: Bans;
    allow: AllowList;
    metrics: Metrics;
    warn: (line: string) => void;
    version: string;
  },
): RunningFleet | null {
  if (!cfg.fleet) return null;
  const b = o.bans;
  const fleet = startFleet(cfg.fleet, {
    version: o.version,
    metrics: o.metrics,
    daemon: {
      ban: (t, seconds) => b.banFrom("fleet", t, seconds),
      unban: (t) => b.unban(t),
      banned: (t) => b.has(t),
      isProtectedAddress: (t) => o.allow.isProtectedText(t),
      local: () => o.allow.local,
      allowed: () => o.allow.allowed,
      ranges: true, // the backends ban CIDR blocks (nftables interval sets, iptables -s NET)
      changed: () => {}, // the owner tells the capture thread itself
      warn: o.warn,
    },
  });
  b.onLocalBan = (scan) =>
    fleet.fleet.push({
      target: scan.src,
      seconds: cfg.banTime,
      ports: scan.ports.length,
      windowSeconds: scan.slow ? cfg.slowWindowSeconds : cfg.windowSeconds,
      at: Date.now(),
    });
  return fleet;
}
