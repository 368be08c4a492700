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
import { DEFAULT_FILTER, defaultInterface, runCapture } from "./src/capture/capture.ts";
import { HostWatch } from "./src/capture/host.ts";
import { LiveCapture } from "./src/capture/live.ts";
import { type Config, ConfigError, parseConfig, readEnv, usage } from "./src/config.ts";
import { Slot } from "./src/detect/counters.ts";
import { createEngine, engineSettings, publishCounters } from "./src/detect/engine.ts";
import { createFirewall } from "./src/firewall/firewall.ts";
import { OpenPorts } from "./src/openports.ts";
import { counterSync, nullMetrics } from "./src/report/counters.ts";
import { EventLog, writeAll } from "./src/report/log.ts";
import type { Metrics } from "./src/report/metrics.ts";
import { type MetricsServer, parseListenAddress, startMetricsServer } from "./src/report/server.ts";
import { startupLines } from "./src/report/startup.ts";
import { offlineSummary } from "./src/report/summary.ts";
import { resolvedHelpers } from "./src/firewall/helpers.ts";
import { callerRefusal, ignoredPathVariables } from "./src/privilege.ts";

/** The program version, from deno.json. */
export const VERSION: string = denoJson.version;

const encoder = new TextEncoder();
const stdoutWrite = (text: string) => writeAll(Deno.stdout, encoder.encode(text));
const warn = (text: string) => writeAll(Deno.stderr, encoder.encode(`scanblocker: ${text}\n`));
const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e));

/** Runs the program with these arguments and returns its exit code. */
export async function main(argv: string[]): Promise<number> {
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
  const live = cfg.read === null;
  const { allow, guarded, guard } = protectedAddresses(cfg, live, warn);
  for (const name of ignoredPathVariables()) {
    warn(
      `${name} ignored: the program runs with capabilities its caller does not hold (run as root to use it)`,
    );
  }
  if (live) {
    const advice = capabilityAdvice(missingCapabilities(), { firewall: cfg.firewall, live });
    for (const line of advice) warn(line);
  }
  // Listening sockets describe this machine, not the host of a capture file.
  const openPorts = live && !cfg.countOpenPorts ? new OpenPorts() : null;
  openPorts?.refresh();
  const everyDestinationLocal = (!live && cfg.local === null) || cfg.hooks.includes("forward");

  // Capture first: without it there is nothing to do.
  let pcap: Pcap | null = null;
  let capture: LiveCapture | null = null;
  const device = live ? cfg.device ?? defaultInterface() : "";
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
  const metricsText = live || readEnv().SB_METRICS_ADDR || cfg.metricsAddr !== ":8080"
    ? cfg.metricsAddr
    : "off";
  const listen = parseListenAddress(metricsText);
  const serve = listen !== null && listen !== "off" ? listen : null;
  const metrics: Metrics = serve
    ? (await import("./src/report/metrics.ts")).createMetrics(VERSION)
    : nullMetrics();
  const log = new EventLog(cfg.logFormat, cfg.logRate, stdoutWrite);

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
  let captureRunning = true;

  // The metrics server before the firewall: a port in use ends the run first.
  let server: MetricsServer | null = null;
  if (serve) {
    try {
      server = startMetricsServer(serve, metrics, () => {
        const c = readCounters();
        return {
          captureRunning,
          packetsSeen: c[Slot.Packets],
          firewall: `${cfg.firewall} ${bans?.state ?? "starting"}`,
          lastPacketTime: c[Slot.LastPacketMs] > 0 ? c[Slot.LastPacketMs] : null,
        };
      }, syncMetrics);
    } catch (e) {
      warn(errorText(e));
      pcap?.close();
      await capture?.stop();
      return 1;
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
  if (capture) {
    const c = capture, b = bans;
    c.onScans = (notices) => {
      for (const n of notices) b.onScan(n.scan, n);
      log.flush();
    };
    c.onWarning = warn;
    // The lockout guard, kept current (guard.reload() on SIGHUP).
    guard?.attach(c);
    const host = new HostWatch(c, allow, openPorts, cfg.local !== null, warn);
    const url = server ? metricsUrl(serve!.hostname, server.port) : null;
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
    ) warn(line);
    const helpers = resolvedHelpers();
    if (helpers.length > 0) warn(`helpers: ${helpers.join(" ")}`);
    const start = b.attachCapture(c);
    c.start(start.banned, start.fast);
    code = await untilStopped(c, () => {
      log.flush(Date.now());
      host.tick();
      guard?.tick();
      b.tick();
      syncMetrics();
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
      }, new AbortController().signal);
    } catch (err) {
      // A damaged file: report it after everything read so far was processed.
      warn(errorText(err));
      code = 1;
    }
    pcap!.close();
  }
  captureRunning = false;
  await bans.settled();
  syncMetrics();
  log.flush(engine?.pipeline.lastPacketMs || Date.now());
  if (engine) stdoutWrite(offlineSummary(cfg.logFormat, engine.pipeline));
  await bans.close();
  await server?.close();
  return code;
}

/** The URL the metrics server really listens on (the port it got, IPv6 in brackets). */
function metricsUrl(host: string, port: number): string {
  return `http://${host.includes(":") ? `[${host}]` : host}:${port}/metrics`;
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
