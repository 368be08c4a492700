/**
 * What a reload (SIGHUP) changes: the allow-list, the thresholds, the log
 * settings and the hooks take effect at once, keeping detection state, bans
 * and the capture; the other settings need a restart, and the reload says
 * which of them changed.
 */
import { type Cidr, formatAddress } from "./address.ts";
import type { AllowList } from "./allowlist.ts";
import type { LiveCapture } from "./capture/live.ts";
import { type Config, loadConfig, readEnv } from "./config.ts";
import { engineSettings } from "./detect/engine.ts";
import type { EventLog } from "./report/log.ts";
import type { Firewall } from "./types.ts";

/** Settings a reload applies: Config key and option name. */
const RELOADABLE: readonly (readonly [keyof Config, string])[] = [
  ["allow", "allow"],
  ["ports", "ports"],
  ["windowSeconds", "window"],
  ["slowPorts", "slow-ports"],
  ["slowWindowSeconds", "slow-window"],
  ["logFormat", "log-format"],
  ["logRate", "log-rate"],
  ["hooks", "hook"],
];

/** Settings only a restart changes. */
const RESTART_ONLY: readonly (readonly [keyof Config, string])[] = [
  ["device", "interface"],
  ["firewall", "firewall"],
  ["banTime", "ban-time"],
  ["local", "local"],
  ["maxSources", "max-sources"],
  ["maxBans", "max-bans"],
  ["metricsAddr", "metrics-addr"],
  ["bufferSize", "buffer-size"],
  ["snaplen", "snaplen"],
  ["detector", "detector"],
  ["countOpenPorts", "count-open-ports"],
  ["lockoutGuard", "lockout-guard"],
  ["realtime", "realtime"],
];

/** A value as the reload line shows it. */
function show(v: unknown): string {
  if (Array.isArray(v)) {
    return v.map((x) =>
      typeof x === "object" && x !== null && "bytes" in x
        ? `${formatAddress(x.family, x.bytes)}${"prefix" in x ? `/${x.prefix}` : ""}`
        : String(x)
    ).join(",") || "none";
  }
  return v === null ? "default" : String(v);
}

/** The outcome of comparing the settings in force with those just read. */
export interface ReloadPlan {
  /** Reloadable settings that changed, e.g. "ports 3→12". */
  changes: string[];
  /** The Config keys to copy from the new settings. */
  apply: (keyof Config)[];
  /** Options that changed but wait for a restart. */
  restart: string[];
}

/** Compares `now` with `next`; turning the slow rule on or off waits for a restart too. */
export function planReload(now: Config, next: Config): ReloadPlan {
  const plan: ReloadPlan = { changes: [], apply: [], restart: [] };
  const slowToggled = (now.slowPorts > 0) !== (next.slowPorts > 0);
  for (const [key, name] of RELOADABLE) {
    const a = show(now[key]), b = show(next[key]);
    if (a === b) continue;
    if (slowToggled && (key === "slowPorts" || key === "slowWindowSeconds")) {
      plan.restart.push(name);
      continue;
    }
    plan.changes.push(`${name} ${a}→${b}`);
    plan.apply.push(key);
  }
  for (const [key, name] of RESTART_ONLY) {
    if (show(now[key]) !== show(next[key])) plan.restart.push(name);
  }
  return plan;
}

/** Lines warning that an allow-list entry covers a whole address family (nothing is ever banned). */
export function allowEverythingWarnings(cfg: Pick<Config, "allow">): string[] {
  return cfg.allow.filter((c) => c.prefix === 0).map((c) =>
    `--allow ${formatAddress(c.family, c.bytes)}/0 covers every IPv${c.family} address: ` +
    `no IPv${c.family} source will ever be banned`
  );
}

/** What became of a reload (scanblocker_reloads_total{result}; "failed": it threw). */
export type ReloadResult = "applied" | "unchanged" | "refused" | "failed";

/**
 * SIGHUP: reads the options, the SB_* variables and the --env-file again and
 * applies the allow-list, thresholds, log settings and hooks without losing
 * detection state, bans or the capture. A bad value keeps every old setting
 * and says why in one line; settings that need a restart are named. Returns
 * what became of it (scanblocker_reloads_total{result}).
 */
export async function reloadLive(
  argv: string[],
  cfg: Config,
  o: {
    warn: (line: string) => void;
    allow: AllowList;
    guarded: Cidr[];
    log: EventLog;
    capture: LiveCapture;
    fw: Firewall;
    onBans: (list: Awaited<ReturnType<Firewall["init"]>>) => void;
  },
): Promise<ReloadResult> {
  let next: Config;
  try {
    next = loadConfig(argv, readEnv());
  } catch (e) {
    o.warn(`SIGHUP: ${e instanceof Error ? e.message : e}; the old settings stay`);
    return "refused";
  }
  const plan = planReload(cfg, next);
  const later = plan.restart.length > 0
    ? `; ${plan.restart.join(", ")} changed but take effect at restart`
    : "";
  if (plan.apply.length === 0) {
    o.warn(`SIGHUP: settings re-read, nothing to change${later}`);
    return "unchanged";
  }
  const hooksBefore = cfg.hooks.join();
  Object.assign(cfg, Object.fromEntries(plan.apply.map((k) => [k, next[k]])));
  o.allow.setAllowed([...cfg.allow, ...o.guarded]);
  o.log.configure(cfg.logFormat, cfg.logRate);
  o.capture.settings({
    settings: engineSettings(cfg),
    allow: o.allow.allowed,
    everyDestinationLocal: cfg.hooks.includes("forward"),
    logFormat: cfg.logFormat,
    logRate: cfg.logRate,
  });
  if (cfg.hooks.join() !== hooksBefore && o.fw.setHooks) {
    o.fw.setHooks(cfg.hooks);
    o.onBans(await o.fw.init());
  }
  o.warn(`SIGHUP: reloaded: ${plan.changes.join(", ")}${later}`);
  for (const line of allowEverythingWarnings(cfg)) o.warn(line);
  return "applied";
}
