/**
 * scanblocker: watch an interface (or read a capture file), detect TCP port
 * scans, ban the scanners in the host firewall and export Prometheus metrics.
 * This file only wires the modules together (config → capture → pipeline →
 * firewall/log/metrics) and owns signals and exit codes: 0 normal end, 2 bad
 * usage or configuration, 1 any other fatal error.
 */
import denoJson from "./deno.json" with { type: "json" };
import { realtimeMs } from "./ffi/libc.ts";
import { Pcap } from "./ffi/pcap.ts";
import { addressKey, formatAddress, parseAddress, parseCidr } from "./src/address.ts";
import { AllowList, interfaceAddresses } from "./src/allowlist.ts";
import {
  capabilityAdvice,
  missingCapabilities,
  raiseAmbientCapabilities,
} from "./src/capabilities.ts";
import { DEFAULT_FILTER, defaultInterface, runCapture } from "./src/capture.ts";
import { type Config, ConfigError, parseConfig, readEnv, usage } from "./src/config.ts";
import { Detector, type ScanDetector } from "./src/detector.ts";
import { lockoutGuard } from "./src/lockout.ts";
import { OpenPorts } from "./src/openports.ts";
import { PSD_DEFAULTS, PsdDetector } from "./src/psd.ts";
import { createFirewall, listBans } from "./src/firewall/firewall.ts";
import { EventLog, localTimestamp, writeAll } from "./src/log.ts";
import type { Metrics } from "./src/metrics.ts";
import { Pipeline, type ScanReport } from "./src/pipeline.ts";
import { type MetricsServer, parseListenAddress, startMetricsServer } from "./src/server.ts";
import type { BanResult, Firewall } from "./src/types.ts";
import { BanBook } from "./src/banbook.ts";

/** The program version, from deno.json. */
export const VERSION: string = denoJson.version;

const encoder = new TextEncoder();
/** Wall-clock epoch milliseconds with sub-millisecond resolution (pcap stamps have microseconds). */
const preciseNow = realtimeMs;
const stdoutWrite = (text: string) => writeAll(Deno.stdout, encoder.encode(text));
const warn = (text: string) => writeAll(Deno.stderr, encoder.encode(`scanblocker: ${text}\n`));

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
  switch (cfg.command) {
    case "help":
      stdoutWrite(usage() + "\n");
      return 0;
    case "version":
      stdoutWrite(`scanblocker ${VERSION} (deno ${Deno.version.deno}, v8 ${Deno.version.v8})\n`);
      return 0;
    case "bans":
    case "unban":
    case "flush":
      return await subcommand(cfg);
    case "run":
      return await daemon(cfg);
  }
}

/** The firewall a command works on, guarded by the allow-list. */
function openFirewall(cfg: Config, allow: AllowList, onError: (m: string) => void): Firewall {
  return createFirewall(cfg.firewall, {
    isProtected: (text) => allow.isProtectedText(text),
    onError,
    maxBans: cfg.maxBans,
    // The daemon makes the hooks what it was told; subcommands leave them as found.
    ...(cfg.command === "run" ? { hooks: cfg.hooks } : {}),
  });
}

/** `bans`, `unban ADDRESS`, `flush`. */
async function subcommand(cfg: Config): Promise<number> {
  // After `setcap …+ep`, the firewall commands need the capabilities too.
  if (cfg.firewall !== "none") raiseAmbientCapabilities();
  let failed = false;
  const fw = openFirewall(cfg, new AllowList([]), (m) => {
    failed = true;
    warn(m);
  });
  try {
    await fw.init();
    if (cfg.command === "bans") {
      stdoutWrite(await listBans(fw));
    } else if (cfg.command === "unban") {
      const a = cfg.unbanAddress ?? "";
      if (await fw.unban(a)) stdoutWrite(`IP ${a} unbanned.\n`);
      else {
        warn(`IP ${a} is not banned (${cfg.firewall})`);
        return 1;
      }
    } else {
      await fw.flush();
      if (!failed) stdoutWrite(`Removed every rule scanblocker installed (${cfg.firewall}).\n`);
    }
  } finally {
    await fw.close();
  }
  return failed ? 1 : 0;
}

/** Live capture or offline analysis. */
async function daemon(cfg: Config): Promise<number> {
  const live = cfg.read === null;

  // Who is this host, and who is never banned.
  const allow = new AllowList([...cfg.allow]);
  let refreshLocal: ReturnType<typeof setInterval> | undefined;
  if (cfg.local) allow.setLocal(cfg.local);
  else if (live) {
    allow.setLocal(interfaceAddresses());
    // Interfaces and addresses come and go: keep the list current.
    refreshLocal = setInterval(() => {
      try {
        allow.setLocal(interfaceAddresses());
      } catch (e) {
        warn(`cannot refresh local addresses: ${e instanceof Error ? e.message : e}`);
      }
    }, 5000);
  }
  const stopTimers = () => clearInterval(refreshLocal);

  // A spoofed probe must not cut the host off from its gateways and resolvers.
  const guarded: string[] = [];
  if (live && cfg.lockoutGuard) {
    try {
      const g = lockoutGuard();
      for (const a of [...g.gateways, ...g.resolvers]) {
        const c = parseCidr(a);
        if (c) {
          allow.addAllowed([c]);
          guarded.push(a);
        }
      }
    } catch (e) {
      warn(`cannot read gateways/resolvers: ${e instanceof Error ? e.message : e}`);
    }
  }

  if (live) {
    const missing = missingCapabilities();
    for (const line of capabilityAdvice(missing, { firewall: cfg.firewall, live })) warn(line);
  }

  // Capture first: without it there is nothing to do.
  let pcap: Pcap;
  let device = "";
  try {
    if (live) {
      device = cfg.device ?? defaultInterface();
      pcap = Pcap.openLive({
        device,
        snaplen: cfg.snaplen,
        bufferSize: cfg.bufferSize,
        filter: DEFAULT_FILTER,
      });
    } else {
      pcap = Pcap.openOffline(cfg.read!, DEFAULT_FILTER);
    }
  } catch (e) {
    stopTimers();
    warn(e instanceof Error ? e.message : String(e));
    return live ? 1 : 2;
  }

  // Metrics server (in -r mode only when asked for explicitly). prom-client
  // takes ~50 ms to load, a third of a whole offline run: load it only when
  // something will read the metrics.
  const metricsText = live || readEnv().SB_METRICS_ADDR || cfg.metricsAddr !== ":8080"
    ? cfg.metricsAddr
    : "off";
  const listen = parseListenAddress(metricsText);
  const metrics: Metrics = listen !== null && listen !== "off"
    ? (await import("./src/metrics.ts")).createMetrics(VERSION)
    : nullMetrics();
  const log = new EventLog(cfg.logFormat, cfg.logRate, stdoutWrite);
  const detector: ScanDetector = cfg.detector === "psd"
    ? new PsdDetector({ ...PSD_DEFAULTS, maxSources: cfg.maxSources })
    : new Detector({
      ports: cfg.ports,
      windowMs: cfg.windowSeconds * 1000,
      maxSources: cfg.maxSources,
    });
  // The slow rule keeps up to 12 ports a source for an hour: a quarter of the
  // sources bounds its memory to about that of the main rule.
  const slow = cfg.slowPorts > 0
    ? new Detector({
      ports: cfg.slowPorts,
      windowMs: cfg.slowWindowSeconds * 1000,
      maxSources: Math.max(1, Math.floor(cfg.maxSources / 4)),
    })
    : null;
  const outbound = new Detector({
    ports: cfg.ports,
    windowMs: cfg.windowSeconds * 1000,
    maxSources: Math.max(1, Math.floor(cfg.maxSources / 10)),
  });
  // Listening sockets describe this machine, not the host of a capture file.
  const openPorts = live && !cfg.countOpenPorts ? new OpenPorts() : null;
  openPorts?.start();

  // The metrics server first: a port in use ends the run before anything
  // touches the firewall.
  let firewallState = "starting";
  let server: MetricsServer | null = null;
  let captureRunning = true;
  let pipeline: Pipeline | null = null;
  if (listen !== null && listen !== "off") {
    try {
      server = startMetricsServer(listen, metrics, () => ({
        captureRunning,
        packetsSeen: pipeline?.packets ?? 0,
        firewall: `${cfg.firewall} ${firewallState}`,
        lastPacketTime: pipeline && pipeline.lastPacketMs > 0 ? pipeline.lastPacketMs : null,
      }));
    } catch (e) {
      warn(e instanceof Error ? e.message : String(e));
      pcap.close();
      openPorts?.stop();
      stopTimers();
      return 1;
    }
  }

  const fw = openFirewall(cfg, allow, (m) => {
    firewallState = "error";
    metrics.firewallErrors.inc();
    warn(m);
  });
  const existing = await fw.init();
  if (firewallState === "starting") firewallState = "ok";
  // What the firewall holds: address → end of the ban (epoch ms; null = until
  // removed). Seeded from the firewall and re-read from it periodically, so a
  // ban that expired or was removed with `scanblocker unban` is not reported
  // as "already in disallowed list".
  const banned = new BanBook(existing);
  metrics.activeBans.set(banned.size);

  const pending = new Set<Promise<void>>();
  const onScan = (scan: ScanReport) => {
    metrics.scansDetected.inc();
    if (banned.has(scan.src, preciseNow())) {
      log.alreadyBanned(scan.ms, scan.src, false);
      metrics.bans.inc({ backend: cfg.firewall, result: "already" });
      return;
    }
    const detectedAt = preciseNow();
    banned.add(scan.src, cfg.banTime > 0 ? detectedAt + cfg.banTime * 1000 : null);
    const settle = (result: BanResult) => {
      const at = live ? Date.now() : scan.ms;
      if (result === "banned") {
        // Packet time of the threshold probe to the firewall's confirmation.
        const latencyMs = Math.max(0, preciseNow() - scan.ms);
        metrics.detectionToBan.observe(latencyMs / 1000);
        log.banned(at, scan.src, live ? { latencyMs, detectMs: detectedAt - scan.ms } : undefined);
      } else if (result === "already") {
        log.alreadyBanned(at, scan.src, false);
      } else {
        banned.delete(scan.src);
        // Forget the source so that its next probes can try the ban again.
        const a = parseAddress(scan.src);
        if (a) {
          detector.forget(addressKey(a.family, a.bytes));
          slow?.forget(addressKey(a.family, a.bytes));
        }
        warn(`IP ${scan.src} could not be banned (${result}, firewall ${cfg.firewall})`);
      }
      metrics.bans.inc({ backend: cfg.firewall, result: result === "refused" ? "failed" : result });
      metrics.activeBans.set(banned.size);
    };
    // The synchronous path (nftables over netlink) bans before the rest of
    // the batch is even looked at; the others confirm later.
    const now = fw.banNow(scan.src, cfg.banTime);
    if (now !== null) {
      settle(now);
      return;
    }
    const p = fw.ban(scan.src, cfg.banTime).then((result) => {
      settle(result);
      log.flush();
    });
    pending.add(p);
    p.finally(() => pending.delete(p));
  };
  pipeline = new Pipeline({
    linktype: pcap.linktype,
    detector,
    rule: cfg.detector,
    slow,
    outbound,
    openPorts,
    allow,
    log,
    // A router guarding forwarded traffic protects destinations beyond itself.
    everyDestinationLocal: (!live && cfg.local === null) || cfg.hooks.includes("forward"),
    onScan,
    onRepeatScanner: (ms, src) => {
      if (banned.has(src, preciseNow())) log.alreadyBanned(ms, src, true);
    },
    summarize: !live,
  });
  const pl = pipeline;

  // Copy the pipeline's plain counters into the metrics once per batch.
  let seen = { packets: 0, a4: 0, a6: 0, errors: 0, stealth: 0, open: 0, out: 0, sup: 0 };
  const syncMetrics = () => {
    metrics.packetsCaptured.inc(pl.packets - seen.packets);
    if (pl.attempts4 > seen.a4) {
      metrics.connectionAttempts.inc({ family: "ipv4" }, pl.attempts4 - seen.a4);
    }
    if (pl.attempts6 > seen.a6) {
      metrics.connectionAttempts.inc({ family: "ipv6" }, pl.attempts6 - seen.a6);
    }
    metrics.decodeErrors.inc(pl.decodeErrors - seen.errors);
    metrics.trackedSources.set(detector.size);
    metrics.stealthProbes.inc(pl.stealthProbes - seen.stealth);
    metrics.openPortSyns.inc(pl.openPortProbes - seen.open);
    metrics.outboundScans.inc(pl.outboundScans - seen.out);
    metrics.logSuppressed.inc(log.suppressedTotal - seen.sup);
    seen = {
      packets: pl.packets,
      a4: pl.attempts4,
      a6: pl.attempts6,
      errors: pl.decodeErrors,
      stealth: pl.stealthProbes,
      open: pl.openPortProbes,
      out: pl.outboundScans,
      sup: log.suppressedTotal,
    };
  };

  const abort = new AbortController();
  const stop = () => abort.abort();
  if (live) {
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGTERM", stop);
    warn(
      `Listening on: ${device} (snaplen ${cfg.snaplen}, buffer ${cfg.bufferSize} bytes, firewall ${cfg.firewall}, ${existing.length} bans restored)`,
    );
    warn(`localIPs: ${cfg.local ? "" : "(all interfaces) "}${allow.localText.join(" ")}`);
    if (cfg.allow.length > 0) warn(`allow-list: ${allowListText(cfg)}`);
    if (guarded.length > 0) {
      warn(`lockout guard (never banned; --lockout-guard off to disable): ${guarded.join(" ")}`);
    }
    if (openPorts) {
      warn(
        `open ports (SYNs to them are not probes; --count-open-ports counts them): ${
          openPorts.list().join(" ") || "none"
        }`,
      );
    }
    if (server) warn(`metrics: http://${metricsText}/metrics`);
  }
  let tick = 0;
  const statsTimer = live
    ? setInterval(() => {
      try {
        metrics.pcapDropped.set(pcap.stats().dropped);
      } catch { /* the handle is closing */ }
      log.flush(Date.now());
      banned.prune(Date.now());
      metrics.activeBans.set(banned.size);
      // The firewall is the source of truth: re-read it now and then.
      if (++tick % 30 === 0 && cfg.firewall !== "none") {
        fw.list().then((list) => {
          banned.replace(list);
          metrics.activeBans.set(banned.size);
        });
      }
    }, 1000)
    : undefined;

  let code = 0;
  try {
    await runCapture(pcap, (batch) => {
      pl.processBatch(batch);
      syncMetrics();
      log.flush();
    }, abort.signal);
  } catch (e) {
    // A capture that ends in an error (truncated file, interface gone): report
    // it after everything read so far was processed.
    warn(e instanceof Error ? e.message : String(e));
    code = 1;
  } finally {
    captureRunning = false;
    clearInterval(statsTimer);
    openPorts?.stop();
    stopTimers();
    if (live) {
      Deno.removeSignalListener("SIGINT", stop);
      Deno.removeSignalListener("SIGTERM", stop);
    }
  }
  try {
    if (live) metrics.pcapDropped.set(pcap.stats().dropped);
  } catch { /* ignore */ }
  pcap.close();
  await Promise.all([...pending]);
  syncMetrics();
  log.flush(pl.lastPacketMs || Date.now());
  if (!live) stdoutWrite(summary(cfg, pl));
  await fw.close();
  await server?.close();
  return code;
}

/** Metrics that go nowhere, for runs without a metrics server (every field, whatever it is). */
function nullMetrics(): Metrics {
  const noop: Record<string, unknown> = {};
  for (const m of ["inc", "set", "observe"]) noop[m] = () => {};
  noop.labels = () => noop;
  return new Proxy({}, { get: () => noop }) as unknown as Metrics;
}

function allowListText(cfg: Config): string {
  return cfg.allow.map((c) => `${formatAddress(c.family, c.bytes)}/${c.prefix}`).join(" ");
}

/** The offline report: packets, connection attempts, and every scan found. */
function summary(cfg: Config, pl: Pipeline): string {
  const scans = [...pl.scans.values()];
  if (cfg.logFormat === "json") {
    return JSON.stringify({
      event: "summary",
      packets: pl.packets,
      connection_attempts: pl.attempts4 + pl.attempts6,
      decode_errors: pl.decodeErrors,
      scans: scans.map((s) => ({
        src: s.src,
        dst: s.dst,
        ports: s.targets.size,
        first: new Date(s.firstMs).toISOString(),
        last: new Date(s.lastMs).toISOString(),
      })),
    }) + "\n";
  }
  const lines = [
    `Summary: ${pl.packets} packets, ${
      pl.attempts4 + pl.attempts6
    } connection attempts, ${scans.length} scans${
      pl.decodeErrors ? `, ${pl.decodeErrors} undecodable` : ""
    }`,
  ];
  for (const s of scans) {
    lines.push(
      `Scan: ${s.src} -> ${s.dst}, ${s.targets.size} distinct ports, first ${
        localTimestamp(s.firstMs)
      }, last ${localTimestamp(s.lastMs)}`,
    );
  }
  return lines.join("\n") + "\n";
}

if (import.meta.main) {
  let code = 1;
  try {
    code = await main(Deno.args);
  } catch (e) {
    warn(`fatal: ${e instanceof Error ? e.message : String(e)}`);
  }
  Deno.exit(code);
}
