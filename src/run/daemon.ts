/**
 * A run of the daemon, live (`-i`) or offline (`-r`): the protected
 * addresses, the capture or the file, the reports, the firewall and its
 * bans owner, wired in the order of DESIGN.md's data flow; then the live
 * run (./live.ts) or the file's analysis, and an orderly end (bans settled,
 * fleet stopped, last log lines and summary, firewall and server closed).
 */
import { realtimeMs } from "../../ffi/libc.ts";
import { type CaptureFile, openCaptureFile } from "../capture/pcapfile.ts";
import type { AllowList } from "../allowlist.ts";
import { Bans } from "../bans/bans.ts";
import { protectedAddresses } from "../bans/guard.ts";
import { DEFAULT_FILTER } from "../capture/capture.ts";
import type { LiveCapture } from "../capture/live.ts";
import { analyseFile, decodingThread } from "../capture/offline.ts";
import { type Config, DEFAULT_METRICS_ADDR, readEnv } from "../config.ts";
import { Slot } from "../detect/counters.ts";
import { type Engine, engineSettings, publishCounters } from "../detect/engine.ts";
import { loadFirewall } from "../firewall/load.ts";
import type { RunningFleet } from "../fleet/wire.ts";
import type { OpenPorts } from "../openports.ts";
import { preflight } from "../preflight.ts";
import { allowEverythingWarnings, reloadLive, type ReloadResult } from "../reload.ts";
import type { EventLog } from "../report/log.ts";
import { type Reporting, startReporting } from "../report/reporting.ts";
import { errorText, openRunLog, stdoutWrite, warn } from "../report/stdio.ts";
import { offlineSummary } from "../report/summary.ts";
import { VERSION } from "../version.ts";

/** What the reports read while the run goes on (set as the parts start). */
interface RunState {
  capture: LiveCapture | null;
  engine: Engine | null;
  bans: Bans | null;
  fleet: RunningFleet | null;
  captureRunning: boolean;
}

/** Live capture or offline analysis; returns the exit code. */
export async function daemon(cfg: Config, argv: string[]): Promise<number> {
  const live = cfg.read === null;
  const { allow, guarded, guard } = protectedAddresses(cfg, live, warn);
  for (const line of allowEverythingWarnings(cfg)) warn(line);
  const pre = preflight(cfg, live, warn);
  if ("exit" in pre) return pre.exit;
  const device = pre.device;
  // A large file's decoding thread loads its code while this one sets up.
  const bytes = live ? null : fileBytes(cfg.read!);
  const thread = decodingThread(bytes);
  const openPorts = await openPortsOf(cfg, live);
  const everyDestinationLocal = (!live && cfg.local === null) || cfg.hooks.includes("forward");

  // Capture first: without it there is nothing to do.
  let pcap: CaptureFile | null = null;
  const s: RunState = {
    capture: null,
    engine: null,
    bans: null,
    fleet: null,
    captureRunning: true,
  };
  try {
    if (live) s.capture = await openLive(cfg, device, allow, openPorts, everyDestinationLocal);
    else pcap = openCaptureFile(cfg.read!, DEFAULT_FILTER);
  } catch (e) {
    warn(errorText(e));
    thread?.close();
    return live ? 1 : 2;
  }
  if (!live && cfg.fleet) warn("fleet: --lapi-url is ignored with -r (nothing is shared offline)");

  const { log, progress, restore } = openRunLog(cfg);
  let reports: Reporting;
  try {
    reports = await reportsOf(cfg, live, device, log, s);
  } catch (e) {
    warn(errorText(e));
    pcap?.close();
    thread?.close();
    await s.capture?.stop();
    return 2; // the address given cannot be listened on: configuration
  }
  const fw = await firewallOf(cfg, allow, s);
  const metrics = reports.metrics;
  const b = s.bans = new Bans({ ...cfg, fw, live, log, metrics, warn, now: realtimeMs });
  const restored = await b.start();

  let code = 0;
  if (s.capture) {
    const c = s.capture;
    const onBans = () => b.reconcileLater();
    const { runLive } = await import("./live.ts");
    code = await runLive(cfg, c, b, {
      device,
      allow,
      guarded,
      guard,
      openPorts,
      log,
      reports,
      restored,
      firewallPath: fw.describePath(),
      fw,
      joined: (f) => (s.fleet = f),
      // SIGHUP: the settings, the lockout guard and (when they changed) the hooks, read again.
      reload: async () => {
        let result: ReloadResult = "failed";
        try {
          result = await reloadLive(argv, cfg, {
            warn,
            allow,
            guarded: [],
            log,
            capture: c,
            fw,
            onBans,
          });
        } finally {
          metrics.reloads.inc({ result });
        }
        guard?.reload();
      },
    });
  } else {
    const run = await analyseFile(pcap!, {
      settings: engineSettings(cfg),
      allow,
      log,
      progress,
      everyDestinationLocal,
      bans: b,
      onEngine: (e) => (s.engine = e),
      bytes,
      thread,
    });
    s.engine = run.engine;
    if (run.error !== null) warn(run.error);
    code = run.error === null ? 0 : 1;
  }
  s.captureRunning = false;
  await finish(cfg, s, b, reports, log);
  restore();
  return code;
}

/**
 * This host's listening ports (live only: they describe this machine, not
 * the host of a capture file). Loaded only for a live run, like the rest of
 * the live-only code: an offline run starts ~20 ms sooner.
 */
async function openPortsOf(cfg: Config, live: boolean): Promise<OpenPorts | null> {
  if (!live || cfg.countOpenPorts) return null;
  const ports = new (await import("../openports.ts")).OpenPorts();
  ports.refresh();
  return ports;
}

/** The backend of `--firewall`, reporting to the bans owner once there is one. */
function firewallOf(cfg: Config, allow: AllowList, s: RunState) {
  return loadFirewall(cfg.firewall, {
    isProtected: (text) => allow.isProtectedText(text),
    onError: (m) => s.bans?.failure(m),
    // A full table: the oldest ban made room (src/firewall/base.ts).
    onEvict: (ban, line) => s.bans?.evicted(ban.address, line),
    maxBans: cfg.maxBans,
    hooks: cfg.hooks,
  });
}

/** Opens the live capture thread with the detection settings and what is protected. */
async function openLive(
  cfg: Config,
  device: string,
  allow: AllowList,
  openPorts: OpenPorts | null,
  everyDestinationLocal: boolean,
): Promise<LiveCapture> {
  const { LiveCapture } = await import("../capture/live.ts");
  return await LiveCapture.open({
    device,
    snaplen: cfg.snaplen,
    bufferSize: cfg.bufferSize,
    filter: DEFAULT_FILTER,
    settings: engineSettings(cfg),
    allow: allow.allowed,
    local: allow.local,
    everyDestinationLocal,
    openPorts: openPorts ? openPorts.list() : null,
    logFormat: cfg.logFormat,
    logRate: cfg.logRate,
    realtime: cfg.realtime,
  });
}

/** Starts the metrics and the server (offline only when asked for); throws on a bad address. */
async function reportsOf(
  cfg: Config,
  live: boolean,
  device: string,
  log: EventLog,
  s: RunState,
): Promise<Reporting> {
  const counters = new Float64Array(Slot.Count);
  const asked = live || readEnv().SB_METRICS_ADDR || cfg.metricsAddr !== DEFAULT_METRICS_ADDR;
  const reports = await startReporting(asked ? cfg.metricsAddr : "off", {
    version: VERSION,
    log,
    warn,
    device,
    counters: () => {
      const c = s.capture;
      if (c) { for (let i = 0; i < Slot.Count; i++) counters[i] = c.counter(i); }
      else if (s.engine) publishCounters(s.engine, log, counters);
      return counters;
    },
    health: () => ({
      captureRunning: s.captureRunning,
      firewall: `${cfg.firewall} ${s.bans?.state ?? "starting"}`,
      ...(s.fleet ? { fleet: s.fleet.status() } : {}),
    }),
    sync: () => s.fleet?.sync(),
  });
  // Every outcome's series from the start at 0: a series born at 1 shows no rate.
  for (const result of ["banned", "already", "failed"]) {
    reports.metrics.bans.inc({ backend: cfg.firewall, result }, 0);
  }
  return reports;
}

/** The orderly end: bans settled, the fleet stopped, the last lines, everything closed. */
async function finish(
  cfg: Config,
  s: RunState,
  b: Bans,
  reports: Reporting,
  log: EventLog,
): Promise<void> {
  await b.settled();
  await s.fleet?.stop();
  reports.sync();
  log.flush(s.engine?.pipeline.lastPacketMs || Date.now());
  if (s.engine) stdoutWrite(offlineSummary(cfg.logFormat, s.engine.pipeline));
  await b.close();
  await reports.server?.close();
}

/** Size of a capture file, null for standard input or when it cannot be read. */
function fileBytes(path: string): number | null {
  if (path === "-") return null;
  try {
    return Deno.statSync(path).size;
  } catch {
    return null;
  }
}
