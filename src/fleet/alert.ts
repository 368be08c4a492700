/**
 * The alert scanblocker pushes for each ban it makes: one `POST /v1/alerts`
 * entry carrying an explicit ban decision (so the LAPI stores it as given,
 * origin `scanblocker`, instead of running its profiles), with the ports
 * count and window in the message. Every field 1.4.6's swagger requires is
 * present (`scenario_hash` may be empty; `events` must be a list).
 */
import type { AlertBody } from "./lapi.ts";
import { formatGoSeconds } from "./duration.ts";

/** The origin every decision scanblocker pushes carries. */
export const ORIGIN = "scanblocker";
/** The scenario name of a port-scan ban. */
export const SCENARIO = "scanblocker/port-scan";
/** Duration pushed for a ban "until removed" (--ban-time 0): ten years. */
const FOREVER_SECONDS = 10 * 365 * 86400;

/** A ban this host made, as the daemon reports it to the fleet. */
export interface FleetBan {
  /** Address (or CIDR) banned. */
  target: string;
  /** The ban's length in seconds (0 = until removed). */
  seconds: number;
  /** Distinct ports the source probed. */
  ports: number;
  /** The detection window those ports fell in, seconds. */
  windowSeconds: number;
  /** When the ban was made, epoch ms. */
  at: number;
}

/** The alert for one ban, from host `machine`, program version `version`. */
export function alertFor(ban: FleetBan, machine: string, version: string): AlertBody {
  const range = ban.target.includes("/");
  const scope = range ? "Range" : "Ip";
  const at = new Date(ban.at).toISOString();
  const seconds = ban.seconds > 0 ? ban.seconds : FOREVER_SECONDS;
  return {
    scenario: SCENARIO,
    scenario_hash: "",
    scenario_version: version,
    message:
      `${ban.target} scanned ${ban.ports} distinct ports in ${ban.windowSeconds}s (${machine})`,
    events_count: ban.ports,
    start_at: at,
    stop_at: at,
    capacity: ban.ports,
    leakspeed: formatGoSeconds(ban.windowSeconds),
    simulated: false,
    remediation: true,
    events: [],
    source: range
      ? { scope, value: ban.target, range: ban.target }
      : { scope, value: ban.target, ip: ban.target },
    decisions: [{
      origin: ORIGIN,
      type: "ban",
      scope,
      value: ban.target,
      duration: formatGoSeconds(seconds),
      scenario: SCENARIO,
    }],
  };
}
