/**
 * scanblocker: watch an interface (or read a capture file), detect TCP port
 * scans, ban the scanners in the host firewall and export Prometheus metrics.
 * This file only wires the wings together (capture → detect → bans/firewall →
 * report) and owns signals and exit codes: 0 normal end, 2 bad usage or
 * configuration, 1 any other fatal error.
 */
import denoJson from "./deno.json" with { type: "json" };
import { realtimeMs } from "./ffi/libc.ts";
import { Pcap } from "./ffi/pcap.ts";
import { Bans } from "./src/bans/bans.ts";
import { runBansCommand } from "./src/bans/commands.ts";
import { type GuardWatch, protectedAddresses } from "./src/bans/guard.ts";
import type { AllowList } from "./src/allowlist.ts";
import { helpersNeedRaw, raiseAmbientCapabilities } from "./src/capabilities.ts";
import { DEFAULT_FILTER } from "./src/capture/capture.ts";
import { HostWatch } from "./src/capture/host.ts";
import { LiveCapture } from "./src/capture/live.ts";
import { analyseFile } from "./src/capture/offline.ts";
import {
  type Config,
  ConfigError,
  DEFAULT_METRICS_ADDR,
  formatSettings,
  loadConfig,
  readEnv,
  usage,
} from "./src/config.ts";
import { Slot } from "./src/detect/counters.ts";
import { type Engine, engineSettings, publishCounters } from "./src/detect/engine.ts";
import { createFirewall } from "./src/firewall/firewall.ts";
import { resolvedHelpers } from "./src/firewall/helpers.ts";
import { joinFleet } from "./src/fleet/join.ts";
import type { RunningFleet } from "./src/fleet/wire.ts";
import { OpenPorts } from "./src/openports.ts";
import { preflight } from "./src/preflight.ts";
import { commandRefusal } from "./src/privilege.ts";
import { type Reporting, startReporting } from "./src/report/reporting.ts";
import { startupLines } from "./src/report/startup.ts";
import { startControlServer, statusCommand } from "./src/report/control.ts";
import { StatusRecorder, takeSnapshot } from "./src/report/status.ts";
import type { EventLog } from "./src/report/log.ts";
import { notice, openRunLog, stdoutWrite, warn } from "./src/report/stdio.ts";
import { offlineSummary } from "./src/report/summary.ts";
import { quietSignals, type StopSignals, stopSignals } from "./src/signals.ts";
import { allowEverythingWarnings, reloadLive } from "./src/reload.ts";

/** The program version, from deno.json. */
export const VERSION: string = denoJson.version;

const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e));

/** Runs the program with these arguments and returns its exit code. */
export async function main(argv: string[]): Promise<number> {
  // No signal may end the daemon or open a debugger (see src/signals.ts).
  quietSignals();
  let cfg: Config;
  try {
    cfg = loadConfig(argv, readEnv());
  } catch (e) {
    if (e instanceof ConfigError) {
      warn(e.message);
      return 2;
    }
    throw e;
  }
  // Helpers inherit CAP_NET_ADMIN (and CAP_NET_RAW for the ipset form of
  // iptables: src/capabilities.ts) and nothing else, whatever the caller handed down.
  raiseAmbientCapabilities(helpersNeedRaw(cfg.firewall));
  const refusal = commandRefusal(cfg);
  if (refusal) {
    warn(refusal);
    return 2;
  }
  switch (cfg.command) {
    case "help":
      stdoutWrite(usage() + "\n");
      return 0;
    case "version":
      stdoutWrite(`scanblocker ${VERSION} (deno ${Deno.version.deno}, v8 ${Deno.version.v8})\n`);
      return 0;
    case "config":
      stdoutWrite(formatSettings(cfg));
      return 0;
    case "status": {
      const r = await statusCommand(cfg.controlSocket, cfg.json);
      stdoutWrite(r.stdout);
      if (r.stderr) warn(r.stderr);
      return r.code;
    }
    case "bans":
    case "unban":
    case "flush": {
      const out = await runBansCommand({ ...cfg, command: cfg.command });
      for (const line of out.stderr) warn(line);
      stdoutWrite(out.stdout);
      return out.code;
    }
    case "run":
      return await daemon(cfg, argv);
  }
}

/** Live capture or offline analysis. */
async function daemon(cfg: Config, argv: string[]): Promise<number> {
  const live = cfg.read === null;
  const { allow, guarded, guard } = protectedAddresses(cfg, live, warn);
  for (const line of allowEverythingWarnings(cfg)) warn(line);
  const pre = preflight(cfg, live, warn);
  if ("exit" in pre) return pre.exit;
  const device = pre.device;
  // Listening sockets describe this machine, not the host of a capture file.
  const openPorts = live && !cfg.countOpenPorts ? new OpenPorts() : null;
  openPorts?.refresh();
  const everyDestinationLocal = (!live && cfg.local === null) || cfg.hooks.includes("forward");

  // Capture first: without it there is nothing to do.
  let pcap: Pcap | null = null;
  let capture: LiveCapture | null = null;
  try {
    if (live) {
      capture = await LiveCapture.open({
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
    } else pcap = Pcap.openOffline(cfg.read!, DEFAULT_FILTER);
  } catch (e) {
    warn(errorText(e));
    return live ? 1 : 2;
  }
  if (!live && cfg.fleet) warn("fleet: --lapi-url is ignored with -r (nothing is shared offline)");

  const { log, progress, restore } = openRunLog(cfg);
  const counters = new Float64Array(Slot.Count);
  let engine: Engine | null = null;
  let bans: Bans | null = null;
  let fleet = null as RunningFleet | null; // set by the live run (a callback)
  let captureRunning = true;
  let reports: Reporting;
  try {
    const asked = live || readEnv().SB_METRICS_ADDR || cfg.metricsAddr !== DEFAULT_METRICS_ADDR;
    reports = await startReporting(asked ? cfg.metricsAddr : "off", {
      version: VERSION,
      log,
      warn,
      device,
      counters: () => {
        if (capture) { for (let i = 0; i < Slot.Count; i++) counters[i] = capture.counter(i); }
        else if (engine) publishCounters(engine, log, counters);
        return counters;
      },
      health: () => ({
        captureRunning,
        firewall: `${cfg.firewall} ${bans?.state ?? "starting"}`,
        ...(fleet ? { fleet: fleet.status() } : {}),
      }),
      sync: () => fleet?.sync(),
    });
  } catch (e) {
    warn(errorText(e));
    pcap?.close();
    await capture?.stop();
    return 2; // the address given cannot be listened on: configuration
  }
  const { metrics, server } = reports;
  // Every outcome's series from the start at 0: a series born at 1 shows no rate.
  for (const result of ["banned", "already", "failed"]) {
    metrics.bans.inc({ backend: cfg.firewall, result }, 0);
  }

  const fw = createFirewall(cfg.firewall, {
    isProtected: (text) => allow.isProtectedText(text),
    onError: (m) => bans?.failure(m),
    // A full table: the oldest ban made room (src/firewall/base.ts).
    onEvict: (ban, line) => bans?.evicted(ban.address, line),
    maxBans: cfg.maxBans,
    hooks: cfg.hooks,
  });
  const b = bans = new Bans({ ...cfg, fw, live, log, metrics, warn, now: realtimeMs });
  const restored = await b.start();

  let code = 0;
  if (capture) {
    const c = capture;
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
      joined: (f) => (fleet = f),
      // SIGHUP: the settings, the lockout guard and (when they changed) the hooks, read again.
      reload: async () => {
        await reloadLive(argv, cfg, {
          warn,
          allow,
          guarded: [],
          log,
          capture: c,
          fw,
          onBans: () => b.reconcile(),
        });
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
      onEngine: (e) => (engine = e),
    });
    engine = run.engine;
    if (run.error !== null) {
      warn(run.error);
      code = 1;
    }
  }
  captureRunning = false;
  await b.settled();
  await fleet?.stop();
  reports.sync();
  log.flush(engine?.pipeline.lastPacketMs || Date.now());
  if (engine) stdoutWrite(offlineSummary(cfg.logFormat, engine.pipeline));
  await b.close();
  await server?.close();
  restore();
  return code;
}

/** What the live run needs from the set-up. */
interface LiveRun {
  device: string;
  allow: AllowList;
  guarded: string[];
  guard: GuardWatch | null;
  openPorts: OpenPorts | null;
  log: EventLog;
  reports: Reporting;
  restored: number;
  firewallPath: string;
  /** Hands the fleet link (if any) back to the set-up, for /healthz and the end. */
  joined: (fleet: RunningFleet | null) => void;
  /** SIGHUP: re-read the settings and apply what can change while running. */
  reload: () => Promise<void>;
}

/**
 * The live run on the main thread: start-up lines, the capture thread
 * started with the bans owner's fast path, the fleet, and the once-a-second
 * tick until a stop signal or a capture error; returns the exit code.
 */
async function runLive(cfg: Config, c: LiveCapture, b: Bans, o: LiveRun): Promise<number> {
  const stop = stopSignals(o.reload); // before anything is printed: a SIGTERM now ends cleanly
  // The last scans, for `scanblocker status` (the bans owner's book keeps the bans).
  const recorder = new StatusRecorder();
  c.onScans = (notices) => {
    for (const n of notices) {
      const { ms: at, src, dst, slow, ports } = n.scan;
      recorder.scan({ at, src, dst, rule: slow ? "slow" : cfg.detector, ports: ports.length });
      b.onScan(n.scan, n);
    }
    o.log.flush();
  };
  c.onWarning = warn;
  // Before the start-up lines: once they are out, `status` answers.
  const control = await startControlServer(cfg.controlSocket, () =>
    takeSnapshot({
      version: VERSION,
      startedAt: performance.timeOrigin,
      interface: o.device,
      firewall: () => ({ backend: cfg.firewall, path: o.firewallPath, state: b.state }),
      packets: () => ({
        seen: c.counter(Slot.Packets),
        droppedByKernel: c.counter(Slot.PcapDropped),
      }),
      sources: () => ({ tracked: c.counter(Slot.TrackedSources), cap: cfg.maxSources }),
      top: (n) => c.top(n),
      bans: () => b.entries(),
      recorder,
    })).catch((e) => {
      warn(`${errorText(e)}; \`scanblocker status\` will not work`);
      return null;
    });
  o.guard?.attach(c);
  const host = new HostWatch(c, o.allow, o.openPorts, cfg.local !== null, warn);
  const server = o.reports.server;
  const lines = startupLines(cfg, {
    device: o.device,
    allow: o.allow,
    guarded: o.guarded,
    openPorts: o.openPorts ? host.open : null,
    metricsUrl: server ? `http://${server.address}/metrics` : null,
    restored: o.restored,
    firewallPath: o.firewallPath,
    realtime: c.realtime,
    helpers: resolvedHelpers(),
  });
  for (const line of lines) notice(line);
  const start = b.attachCapture(c);
  c.start(start.banned, start.fast);
  const metrics = o.reports.metrics;
  o.joined(joinFleet(cfg, { bans: b, allow: o.allow, metrics, warn, version: VERSION }));
  const code = await untilStopped(c, stop, () => {
    o.log.flush(Date.now());
    host.tick();
    o.guard?.tick();
    b.tick();
    o.reports.tick();
  });
  await control?.close();
  return code;
}

/** Runs the live capture until a stop signal or a capture error, calling `tick` once a second. */
async function untilStopped(
  capture: LiveCapture,
  stop: StopSignals,
  tick: () => void,
): Promise<number> {
  const timer = setInterval(tick, 1000);
  let code = 0;
  const error = await Promise.race([capture.ended, stop.wanted.then(() => null)]);
  if (error !== null && !stop.stopped()) {
    warn(error);
    code = 1;
  }
  clearInterval(timer);
  await stop.remove();
  const last = await capture.stop();
  if (last !== null && code === 0 && error === null) {
    warn(last);
    code = 1;
  }
  return code;
}

if (import.meta.main) {
  let code = 1;
  try {
    code = await main(Deno.args);
  } catch (e) {
    warn(`fatal: ${errorText(e)}`);
  }
  Deno.exit(code);
}
