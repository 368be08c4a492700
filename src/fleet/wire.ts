/**
 * The fleet joined to today's daemon: a FleetBans over the firewall (bans
 * from the LAPI go through the same guarded Firewall as local ones, one batch
 * per pull), a FleetSink over the Prometheus metrics, and the /healthz field.
 * main.ts calls startFleet() once; when one module owns every ban
 * (src/bans/), that module implements FleetBans instead of this adapter.
 */
import type { Address, Cidr } from "../address.ts";
import type { FleetConfig } from "../config.ts";
import type { Metrics } from "../report/metrics.ts";
import type { BanResult } from "../types.ts";
import { rangeTouches } from "./decisions.ts";
import { Fleet, type FleetAdd, type FleetBans, type FleetStatus } from "./fleet.ts";

/** What the adapter needs from the daemon: the firewall, the guard, and a resync. */
export interface FleetDaemon {
  /** Firewall.ban: one guarded ban (requests made in one tick go out as one batch). */
  ban(target: string, seconds: number): Promise<BanResult>;
  /** Firewall.unban. */
  unban(target: string): Promise<boolean>;
  /** True when the firewall holds a ban for this address now. */
  banned(target: string): boolean;
  /** The allow-list's text check (loopback, local, --allow, lockout guard). */
  isProtectedAddress(text: string): boolean;
  /** This host's addresses and the allowed blocks, for ranges. */
  local(): Address[];
  allowed(): Cidr[];
  /** True when the firewall backend takes CIDR targets. */
  ranges: boolean;
  /** Bans were added (with their ends, epoch ms) or removed: update the book and the capture worker. */
  changed(added: { target: string; end: number }[], removed: string[]): void;
  warn(line: string): void;
}

/**
 * A FleetBans over the daemon's firewall. An add for a target the fleet
 * banned earlier with a shorter end re-adds it with the longer time; a local
 * ban already in place is left as this host made it.
 */
export function firewallFleetBans(d: FleetDaemon): FleetBans {
  /** Targets the fleet banned here → end (epoch ms). */
  const ends = new Map<string, number>();
  let rangeWarned = false;
  return {
    isProtected: (target) =>
      target.includes("/")
        ? rangeTouches(target, d.local(), d.allowed())
        : d.isProtectedAddress(target),
    async apply(adds: FleetAdd[], removes: string[]): Promise<string[]> {
      const failed: string[] = [];
      const now = Date.now();
      const extend = adds.filter((a) => {
        const end = ends.get(a.target);
        return end !== undefined && end > now && d.banned(a.target);
      }).map((a) => a.target);
      // Only what the fleet banned here: a local ban stays as this host made it.
      const gone = [...new Set([...removes.filter((t) => ends.has(t)), ...extend])];
      const removed = await Promise.all(gone.map((t) => d.unban(t)));
      for (const t of gone) ends.delete(t);
      const take: FleetAdd[] = [];
      for (const a of adds) {
        if (a.target.includes("/") && !d.ranges) {
          failed.push(a.target);
          if (!rangeWarned) {
            rangeWarned = true;
            d.warn(
              `fleet: range decisions (first: ${a.target}) are not applied: this firewall backend bans single addresses only`,
            );
          }
        } else take.push(a);
      }
      const results = await Promise.all(take.map((a) => d.ban(a.target, a.seconds)));
      const added: { target: string; end: number }[] = [];
      take.forEach((a, i) => {
        const r = results[i];
        if (r === "banned" || r === "already") {
          const end = now + a.seconds * 1000;
          if (r === "banned") ends.set(a.target, end);
          added.push({ target: a.target, end });
        } else failed.push(a.target);
      });
      const readded = new Set(adds.map((a) => a.target));
      d.changed(added, gone.filter((t, i) => removed[i] && !readded.has(t)));
      return failed;
    },
  };
}

/** The Prometheus side of the fleet: counters by result/action, gauges refreshed by sync(). */
function metricsSink(metrics: Metrics) {
  return {
    pushed: (result: string, n: number) => metrics.fleetPushes.inc({ result }, n),
    decision: (action: string, origin: string, n: number) =>
      metrics.fleetDecisions.inc({ action, origin: origin || "unknown" }, n),
  };
}

/** A started fleet with its metrics refresh. */
export interface RunningFleet {
  fleet: Fleet;
  /** Copies the LAPI state into the gauges (once a second and before a scrape). */
  sync(): void;
  status(): FleetStatus;
  stop(): Promise<void>;
}

/** Builds and starts the fleet for this daemon. */
export function startFleet(
  cfg: FleetConfig,
  o: { version: string; metrics: Metrics; daemon: FleetDaemon },
): RunningFleet {
  const fleet = new Fleet(
    {
      url: cfg.url,
      machine: cfg.machine,
      password: cfg.password,
      apiKey: cfg.apiKey,
      caPem: cfg.caPem,
      clientCertPem: cfg.clientCertPem,
      clientKeyPem: cfg.clientKeyPem,
      version: o.version,
      pollMs: cfg.pollMs,
      origins: cfg.origins,
      warn: o.daemon.warn,
      sink: metricsSink(o.metrics),
    },
    firewallFleetBans(o.daemon),
  );
  for (const result of ["sent", "rejected", "dropped", "expired"]) {
    o.metrics.fleetPushes.inc({ result }, 0);
  }
  fleet.start();
  const sync = () => {
    const s = fleet.status();
    o.metrics.fleetLapiUp.set(fleet.up ? 1 : 0);
    o.metrics.fleetLastPullAge.set(s.lastPullAgeSeconds ?? -1);
    o.metrics.fleetQueue.set(s.queued);
  };
  sync();
  return { fleet, sync, status: () => fleet.status(), stop: () => fleet.stop() };
}
