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
import { addressKey, parseAddress } from "./src/address.ts";
import { Bans } from "./src/bans/bans.ts";
import { protectedAddresses } from "./src/bans/guard.ts";
import { runBansCommand } from "./src/bans/commands.ts";
import {
  capabilityAdvice,
  missingCapabilities,
  raiseAmbientCapabilities,
} from "./src/capabilities.ts";
import {
  DEFAULT_FILTER,
  defaultInterface,
  interfaceProblem,
  runCapture,
} from "./src/capture/capture.ts";
import { HostWatch } from "./src/capture/host.ts";
import { LiveCapture } from "./src/capture/live.ts";
import {
  type Config,
  ConfigError,
  DEFAULT_METRICS_ADDR,
  formatSettings,
  parseConfig,
  readEnv,
  usage,
} from "./src/config.ts";
import { Slot } from "./src/detect/counters.ts";
import { createEngine, engineSettings, publishCounters } from "./src/detect/engine.ts";
import { createFirewall } from "./src/firewall/firewall.ts";
import { OpenPorts } from "./src/openports.ts";
import { counterSync, nullMetrics } from "./src/report/counters.ts";
import { EventLog, journalStreams, Severity, stderrLine, writeAll } from "./src/report/log.ts";
import { offlineProgress } from "./src/report/progress.ts";
import { type ControlServer, startControlServer, statusCommand } from "./src/report/control.ts";
import { StatusRecorder, takeSnapshot } from "./src/report/status.ts";
import type { Metrics } from "./src/report/metrics.ts";
import { type MetricsServer, parseListenAddress, startMetricsServer } from "./src/report/server.ts";
import { startupLines } from "./src/report/startup.ts";
import { offlineSummary } from "./src/report/summary.ts";
import { resolvedHelpers } from "./src/firewall/helpers.ts";
import { callerRefusal, ignoredPathVariables } from "./src/privilege.ts";
import { quietSignals } from "./src/signals.ts";
import { LineOutput, nonBlockingStdio } from "./src/report/output.ts";
import { logDropWatch } from "./src/report/drops.ts";
import { rxPackets, StallWatch } from "./src/capture/stall.ts";
import { lockFirewall } from "./src/instance.ts";
import { type RunningFleet, startFleet } from "./src/fleet/wire.ts";

/** The program version, from deno.json. */
export const VERSION: string = denoJson.version;

const encoder = new TextEncoder();
const stdoutWrite = (text: string) => writeAll(Deno.stdout, encoder.encode(text));
/** Where stdout and stderr go: the journal gets severity prefixes and no timestamps. */
const journal = journalStreams();
/** stderr through a LineOutput: never blocks once the daemon made it non-blocking. */
const stderrOut = new LineOutput(Deno.stderr);
const stderr = (text: string, severity: Severity) =>
  stderrOut.write(encoder.encode(stderrLine(text, severity, journal.stderr)));
/** An error or warning on stderr (`<3>` in the journal). */
const warn = (text: string) => stderr(text, Severity.Error);
/** A start-up notice on stderr (`<6>` in the journal). */
const notice = (text: string) => stderr(text, Severity.Info);
const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e));

/** Runs the program with these arguments and returns its exit code. */
export async function main(argv: string[]): Promise<number> {
  // No signal may end the daemon or open a debugger (see src/signals.ts).
  quietSignals();
  let cfg: Config;
  try {
    cfg = parseConfig(argv, readEnv());
  } catch (e) {
    if (e instanceof ConfigError) {
      warn(e.message);
      return 2;
    }
    throw e;
  }
  // Helpers inherit CAP_NET_ADMIN and nothing else, whatever the caller handed down.
  raiseAmbientCapabilities();
  const refusal = firewallCaller(cfg);
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
      return await daemon(cfg);
  }
}

/**
 * Why this caller may not run a command that changes the firewall (unban,
 * flush, the daemon with a firewall), or null; see src/privilege.ts.
 */
function firewallCaller(cfg: Config): string | null {
  const changes = cfg.command === "unban" || cfg.command === "flush" ||
    (cfg.command === "run" && cfg.firewall !== "none");
  return changes
    ? callerRefusal(cfg.command === "run" ? "scanblocker" : `scanblocker ${cfg.command}`)
    : null;
}

/** Live capture or offline analysis. */
async function daemon(cfg: Config): Promise<number> {
  const startedAt = Date.now();
  const live = cfg.read === null;
  const { allow, guarded } = protectedAddresses(cfg, live, warn);
  for (const name of ignoredPathVariables()) {
    warn(
      `${name} ignored: the program runs with capabilities its caller does not hold (run as root to use it)`,
    );
  }
  if (live) {
    // Configuration (exit 2): it could not do its job, and a restart would not help.
    const advice = capabilityAdvice(missingCapabilities(), { firewall: cfg.firewall, live });
    for (const line of advice) warn(line);
    if (advice.length > 0) return 2;
  }
  // One daemon per firewall (the lock is released when the process ends).
  const lock = cfg.firewall === "none" ? null : lockFirewall();
  if (lock && !lock.held) {
    warn("error" in lock ? lock.error : lock.warning);
    if ("error" in lock) return 2;
  }
  // Listening sockets describe this machine, not the host of a capture file.
  const openPorts = live && !cfg.countOpenPorts ? new OpenPorts() : null;
  openPorts?.refresh();
  const everyDestinationLocal = (!live && cfg.local === null) || cfg.hooks.includes("forward");

  // Capture first: without it there is nothing to do.
  let pcap: Pcap | null = null;
  let capture: LiveCapture | null = null;
  let device = "";
  if (live) {
    try {
      device = cfg.device ?? defaultInterface();
    } catch (e) {
      warn(errorText(e));
      return 2;
    }
    const problem = interfaceProblem(device);
    if (problem !== null) {
      warn(problem);
      return 2;
    }
  }
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

  // Metrics (in -r mode only when asked for explicitly): prom-client takes
  // ~50 ms to load, a third of a whole offline run.
  const metricsText = live || readEnv().SB_METRICS_ADDR || cfg.metricsAddr !== DEFAULT_METRICS_ADDR
    ? cfg.metricsAddr
    : "off";
  const listen = parseListenAddress(metricsText);
  const serve = listen !== null && listen !== "off" ? listen : null;
  const metrics: Metrics = serve
    ? (await import("./src/report/metrics.ts")).createMetrics(VERSION)
    : nullMetrics();
  // Every outcome's series from the start at 0: a series born at 1 shows no rate.
  for (const result of ["banned", "already", "failed"]) {
    metrics.bans.inc({ backend: cfg.firewall, result }, 0);
  }
  // A live daemon's log never waits for its reader (see src/report/output.ts).
  const restoreStdio = live ? nonBlockingStdio() : () => {};
  const stdoutOut = new LineOutput(Deno.stdout);
  // Offline on a terminal: a progress line on stderr, erased before each write to stdout.
  const progress = live
    ? null
    : offlineProgress(cfg.read!, Deno.stderr.isTerminal(), (t) =>
      writeAll(Deno.stderr, encoder.encode(t)));
  const out = live
    ? (t: string) => stdoutOut.write(encoder.encode(t))
    : progress
    ? (text: string) => {
      progress.clear();
      stdoutWrite(text);
    }
    : stdoutWrite;
  const log = new EventLog(cfg.logFormat, cfg.logRate, out, { journal: journal.stdout });

  // The engine's counters: shared by the capture worker, or read from an offline engine.
  const counters = new Float64Array(Slot.Count);
  let engine: ReturnType<typeof createEngine> | null = null;
  const readCounters = () => {
    if (capture) { for (let i = 0; i < Slot.Count; i++) counters[i] = capture.counter(i); }
    else if (engine) publishCounters(engine, log, counters);
    return counters;
  };
  const syncMetrics = counterSync(metrics, readCounters);
  let bans: Bans | null = null;
  // The CrowdSec LAPI link (--lapi-url), started with the live capture; never with -r.
  let fleet: RunningFleet | null = null;
  if (!live && cfg.fleet) warn("fleet: --lapi-url is ignored with -r (nothing is shared offline)");
  // Packets arriving but nobody processing them: /healthz answers 503.
  const stall = new StallWatch();
  const stalled = () =>
    capture !== null &&
    stall.update(Date.now(), capture.counter(Slot.Heartbeat), rxPackets(device));
  const checkDrops = logDropWatch([stdoutOut, stderrOut], () => readCounters()[Slot.LogDropped], {
    metrics,
    warn,
    log,
  });
  let captureRunning = true;

  // The metrics server before the firewall: a port in use ends the run first.
  let server: MetricsServer | null = null;
  if (serve) {
    try {
      server = startMetricsServer(serve, metrics, () => {
        const c = readCounters();
        return {
          captureRunning,
          stalled: captureRunning && stalled(),
          packetsSeen: c[Slot.Packets],
          firewall: `${cfg.firewall} ${bans?.state ?? "starting"}`,
          lastPacketTime: c[Slot.LastPacketMs] > 0 ? c[Slot.LastPacketMs] : null,
          ...(fleet ? { fleet: fleet.status() } : {}),
        };
      }, () => {
        syncMetrics();
        fleet?.sync();
      });
    } catch (e) {
      warn(errorText(e));
      pcap?.close();
      await capture?.stop();
      return 2; // the address given cannot be listened on: configuration
    }
  }

  const fw = createFirewall(cfg.firewall, {
    isProtected: (text) => allow.isProtectedText(text),
    onError: (m) => bans?.failure(m),
    maxBans: cfg.maxBans,
    hooks: cfg.hooks,
  });
  bans = new Bans({
    fw,
    banTime: cfg.banTime,
    maxBans: cfg.maxBans,
    live,
    log,
    metrics,
    warn,
    now: realtimeMs,
  });
  const restored = await bans.start();

  let code = 0;
  let control: ControlServer | null = null;
  if (capture) {
    const c = capture, b = bans;
    // The last scans, for `scanblocker status` (the book keeps the bans).
    const recorder = new StatusRecorder();
    c.onScans = (notices) => {
      for (const n of notices) {
        const rule = n.scan.slow ? "slow" : cfg.detector;
        recorder.scan({
          at: n.scan.ms,
          src: n.scan.src,
          dst: n.scan.dst,
          rule,
          ports: n.scan.ports.length,
        });
        b.onScan(n.scan, n);
      }
      log.flush();
    };
    control = await startControlServer(cfg.controlSocket, () =>
      takeSnapshot({
        version: VERSION,
        startedAt,
        interface: device,
        firewall: () => ({ backend: cfg.firewall, path: fw.describePath(), state: b.state }),
        packets: () => ({
          seen: readCounters()[Slot.Packets],
          droppedByKernel: readCounters()[Slot.PcapDropped],
        }),
        sources: () => ({ tracked: readCounters()[Slot.TrackedSources], cap: cfg.maxSources }),
        top: (n) => c.top(n),
        bans: () => b.entries(),
        recorder,
      })).catch((e) => {
        warn(`${errorText(e)}; \`scanblocker status\` will not work`);
        return null;
      });
    c.onWarning = warn;
    const host = new HostWatch(c, allow, openPorts, cfg.local !== null, warn);
    const url = server ? `http://${server.address}/metrics` : null;
    for (
      const line of startupLines(cfg, {
        device,
        allow,
        guarded,
        openPorts: openPorts ? host.open : null,
        metricsUrl: url,
        restored,
        firewallPath: fw.describePath(),
        realtime: c.realtime,
      })
    ) notice(line);
    const helpers = resolvedHelpers();
    if (helpers.length > 0) notice(`helpers: ${helpers.join(" ")}`);
    const start = b.attachCapture(c);
    c.start(start.banned, start.fast);
    // Bans from the fleet go through the same owner, guard and firewall as local ones.
    fleet = cfg.fleet && startFleet(cfg.fleet, {
          version: VERSION,
          metrics,
          daemon: {
            ban: (t, seconds) => b.banFrom("fleet", t, seconds),
            unban: (t) => b.unban(t),
            banned: (t) => b.has(t),
            isProtectedAddress: (t) => allow.isProtectedText(t),
            local: () => allow.local,
            allowed: () => allow.allowed,
            ranges: false, // the backends ban single addresses today
            changed: () => {}, // the owner tells the capture thread itself
            warn,
          },
        }) || null;
    b.onLocalBan = (scan) =>
      fleet?.fleet.push({
        target: scan.src,
        seconds: cfg.banTime,
        ports: scan.ports.length,
        windowSeconds: scan.slow ? cfg.slowWindowSeconds : cfg.windowSeconds,
        at: Date.now(),
      });
    code = await untilStopped(c, () => {
      checkDrops();
      stalled();
      log.flush(Date.now());
      host.tick();
      b.tick();
      syncMetrics();
      fleet?.sync();
    });
  } else {
    engine = createEngine(cfg, {
      linktype: pcap!.linktype,
      allow,
      log,
      openPorts: null,
      everyDestinationLocal,
      summarize: true,
      onScan: (scan) => bans!.onScan(scan),
      onRepeatScanner: (ms, src) => bans!.repeat(ms, src),
    });
    const e = engine;
    bans.forgetSource = (src) => {
      const a = parseAddress(src);
      if (a) e.forget(addressKey(a.family, a.bytes));
    };
    try {
      await runCapture(pcap!, (batch) => {
        e.pipeline.processBatch(batch);
        log.flush();
        progress?.update(pcap!.position(), e.pipeline.packets);
      }, new AbortController().signal);
    } catch (err) {
      // A damaged file: report it after everything read so far was processed.
      warn(errorText(err));
      code = 1;
    }
    progress?.clear();
    pcap!.close();
  }
  captureRunning = false;
  await bans.settled();
  await fleet?.stop();
  syncMetrics();
  log.flush(engine?.pipeline.lastPacketMs || Date.now());
  if (engine) stdoutWrite(offlineSummary(cfg.logFormat, engine.pipeline));
  await control?.close();
  await bans.close();
  await server?.close();
  restoreStdio();
  return code;
}

/**
 * Runs the live capture until SIGINT/SIGTERM or a capture error, calling
 * `tick` once a second; returns the exit code.
 */
async function untilStopped(capture: LiveCapture, tick: () => void): Promise<number> {
  let stopped = false;
  let wake: () => void = () => {};
  const stopWanted = new Promise<void>((r) => (wake = r));
  const stop = () => {
    stopped = true;
    wake();
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  const timer = setInterval(tick, 1000);
  let code = 0;
  const error = await Promise.race([capture.ended, stopWanted.then(() => null)]);
  if (error !== null && !stopped) {
    warn(error);
    code = 1;
  }
  clearInterval(timer);
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
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
