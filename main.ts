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
import { DEFAULT_FILTER, defaultInterface, runCapture } from "./src/capture/capture.ts";
import type { ScanNotice } from "./src/capture/protocol.ts";
import { Slot } from "./src/detect/counters.ts";
import { createEngine, type Engine, engineSettings, publishCounters } from "./src/detect/engine.ts";
import { LiveCapture } from "./src/capture/live.ts";
import { IptablesFirewall, NETLINK_MAX_RULES } from "./src/firewall/iptables.ts";
import { NFT_TABLE, NftablesFirewall } from "./src/firewall/nftables.ts";
import { type Config, ConfigError, parseConfig, readEnv, usage } from "./src/config.ts";
import { lockoutGuard } from "./src/lockout.ts";
import { OpenPorts } from "./src/openports.ts";
import { createFirewall, listBans } from "./src/firewall/firewall.ts";
import { EventLog, localTimestamp, writeAll } from "./src/report/log.ts";
import type { Metrics } from "./src/report/metrics.ts";
import type { Pipeline, ScanReport } from "./src/detect/pipeline.ts";
import { type MetricsServer, parseListenAddress, startMetricsServer } from "./src/report/server.ts";
import type { BanResult, Firewall } from "./src/types.ts";
import { BanBook } from "./src/bans/book.ts";

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
  if (cfg.local) allow.setLocal(cfg.local);
  else if (live) allow.setLocal(interfaceAddresses());

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

  // Listening sockets describe this machine, not the host of a capture file.
  const openPorts = live && !cfg.countOpenPorts ? new OpenPorts() : null;
  openPorts?.refresh();
  // The settings of the detection engine, wherever it runs.
  const everyDestinationLocal = (!live && cfg.local === null) || cfg.hooks.includes("forward");

  // Capture first: without it there is nothing to do.
  let pcap: Pcap | null = null;
  let capture: LiveCapture | null = null;
  let device = "";
  try {
    if (live) {
      device = cfg.device ?? defaultInterface();
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
    } else {
      pcap = Pcap.openOffline(cfg.read!, DEFAULT_FILTER);
    }
  } catch (e) {
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
    ? (await import("./src/report/metrics.ts")).createMetrics(VERSION)
    : nullMetrics();
  const log = new EventLog(cfg.logFormat, cfg.logRate, stdoutWrite);

  // The pipeline's counters: shared by the capture worker, or read from the
  // pipeline of an offline run.
  const counters = new Float64Array(Slot.Count);
  let engine: Engine | null = null;
  const readCounters = () => {
    if (capture) { for (let i = 0; i < Slot.Count; i++) counters[i] = capture.counter(i); }
    else if (engine) publishCounters(engine, log, counters);
    return counters;
  };

  // The metrics server first: a port in use ends the run before anything
  // touches the firewall.
  let firewallState = "starting";
  let server: MetricsServer | null = null;
  let captureRunning = true;
  const syncMetrics = metricsSync(metrics, readCounters);
  if (listen !== null && listen !== "off") {
    try {
      server = startMetricsServer(listen, metrics, () => {
        const c = readCounters();
        return {
          captureRunning,
          packetsSeen: c[Slot.Packets],
          firewall: `${cfg.firewall} ${firewallState}`,
          lastPacketTime: c[Slot.LastPacketMs] > 0 ? c[Slot.LastPacketMs] : null,
        };
      }, syncMetrics);
    } catch (e) {
      warn(e instanceof Error ? e.message : String(e));
      pcap?.close();
      await capture?.stop();
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
  // Bans the worker may still add itself: up to the cap, and with iptables
  // only while the chain is short (each rule appended costs ~1 µs per rule
  // already held; past that, iptables-restore batches them on this thread).
  const room = () =>
    Math.max(
      0,
      Math.min(cfg.maxBans, cfg.firewall === "iptables" ? NETLINK_MAX_RULES : Infinity) -
        banned.size,
    );

  /** A failed ban: the source's next probes count again, so the ban is tried again. */
  const forget = (src: string) => {
    if (capture) capture.forget(src);
    else {
      const a = parseAddress(src);
      if (a && engine) engine.forget(addressKey(a.family, a.bytes));
    }
  };
  const pending = new Set<Promise<void>>();
  const onScan = (scan: ScanReport, notice?: ScanNotice) => {
    metrics.scansDetected.inc();
    const detectedAt = notice?.detectedAt ?? preciseNow();
    const settle = (result: BanResult, at = preciseNow()) => {
      const when = live ? Date.now() : scan.ms;
      if (result === "banned") {
        // Packet time of the threshold probe to the firewall's confirmation.
        const latencyMs = Math.max(0, at - scan.ms);
        metrics.detectionToBan.observe(latencyMs / 1000);
        log.banned(
          when,
          scan.src,
          live ? { latencyMs, detectMs: detectedAt - scan.ms } : undefined,
        );
        capture?.bans({ add: [scan.src], room: room() });
      } else if (result === "already") {
        log.alreadyBanned(when, scan.src, false);
      } else {
        banned.delete(scan.src);
        forget(scan.src);
        warn(`IP ${scan.src} could not be banned (${result}, firewall ${cfg.firewall})`);
      }
      metrics.bans.inc({ backend: cfg.firewall, result: result === "refused" ? "failed" : result });
      metrics.activeBans.set(banned.size);
    };
    if (banned.has(scan.src, preciseNow())) {
      log.alreadyBanned(scan.ms, scan.src, false);
      metrics.bans.inc({ backend: cfg.firewall, result: "already" });
      return;
    }
    banned.add(scan.src, cfg.banTime > 0 ? detectedAt + cfg.banTime * 1000 : null);
    const pre = notice?.ban ?? null;
    if (pre?.ok) {
      // The worker put it into the kernel already.
      fw.adopt(scan.src, cfg.banTime, pre.expiresAt);
      settle("banned", pre.at);
      return;
    }
    if (pre) {
      firewallState = "error";
      metrics.firewallErrors.inc();
      warn(`${cfg.firewall}: ban ${scan.src}: ${pre.error}; trying again from the main thread`);
    }
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

  let code = 0;
  if (capture) {
    const c = capture;
    c.onScans = (notices) => {
      for (const n of notices) onScan(n.scan, n);
      log.flush();
    };
    c.onWarning = warn;
    code = await runLive(cfg, c, {
      device,
      allow,
      guarded,
      openPorts,
      server: server ? metricsText : null,
      existing: existing.length,
      firewallPath: firewallPath(fw),
      tick: (n) => {
        log.flush(Date.now());
        banned.prune(Date.now());
        metrics.activeBans.set(banned.size);
        syncMetrics();
        // The firewall is the source of truth: re-read it now and then.
        if (n % 30 === 0 && cfg.firewall !== "none") {
          fw.list().then((list) => {
            banned.replace(list);
            metrics.activeBans.set(banned.size);
            c.bans({ replace: list.map((b) => b.address), room: room() });
          });
        }
      },
      start: () => {
        const banTimeMs = cfg.banTime * 1000;
        const rules = fw instanceof IptablesFirewall ? fw.fastRules(cfg.banTime > 0) : null;
        const fast = fw instanceof NftablesFirewall && fw.path === "netlink"
          ? { table: NFT_TABLE.split(" ")[1], banTimeMs, room: room() }
          : rules
          ? { rules, banTimeMs, room: room() }
          : null;
        c.start(existing.map((b) => b.address), fast);
      },
    });
    captureRunning = false;
  } else {
    engine = createEngine(cfg, {
      linktype: pcap!.linktype,
      allow,
      log,
      openPorts: null,
      everyDestinationLocal,
      summarize: true,
      onScan,
      onRepeatScanner: (ms, src) => {
        if (banned.has(src, preciseNow())) log.alreadyBanned(ms, src, true);
      },
    });
    const pl = engine.pipeline;
    try {
      await runCapture(pcap!, (batch) => {
        pl.processBatch(batch);
        log.flush();
      }, new AbortController().signal);
    } catch (e) {
      // A damaged file: report it after everything read so far was processed.
      warn(e instanceof Error ? e.message : String(e));
      code = 1;
    }
    captureRunning = false;
    pcap!.close();
  }
  await Promise.all([...pending]);
  syncMetrics();
  log.flush(engine?.pipeline.lastPacketMs || Date.now());
  if (engine) stdoutWrite(summary(cfg, engine.pipeline));
  await fw.close();
  await server?.close();
  return code;
}

/**
 * The live run on the main thread: start-up lines, signals, the once-a-second
 * tick, refreshes of local addresses and open ports for the worker; returns
 * the exit code once a signal or a capture error ends it.
 */
async function runLive(
  cfg: Config,
  capture: LiveCapture,
  o: {
    device: string;
    allow: AllowList;
    guarded: string[];
    openPorts: OpenPorts | null;
    server: string | null;
    existing: number;
    /** How bans reach the kernel, e.g. "netlink"; empty for no firewall. */
    firewallPath: string;
    tick: (n: number) => void;
    start: () => void;
  },
): Promise<number> {
  let stopped = false;
  let wake: () => void = () => {};
  const stopWanted = new Promise<void>((r) => (wake = r));
  const stop = () => {
    stopped = true;
    wake();
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  warn(
    `Listening on: ${o.device} (snaplen ${cfg.snaplen}, buffer ${cfg.bufferSize} bytes, firewall ${cfg.firewall}${
      o.firewallPath ? ` via ${o.firewallPath}` : ""
    }, ${o.existing} bans restored)`,
  );
  warn(`localIPs: ${cfg.local ? "" : "(all interfaces) "}${o.allow.localText.join(" ")}`);
  if (cfg.allow.length > 0) warn(`allow-list: ${allowListText(cfg)}`);
  if (o.guarded.length > 0) {
    warn(`lockout guard (never banned; --lockout-guard off to disable): ${o.guarded.join(" ")}`);
  }
  let openList = o.openPorts?.list() ?? [];
  if (o.openPorts) {
    warn(
      `open ports (SYNs to them are not probes; --count-open-ports counts them): ${
        openList.join(" ") || "none"
      }`,
    );
  }
  if (cfg.realtime > 0) {
    warn(
      `capture thread: ${capture.realtime}${
        capture.realtime.startsWith("off")
          ? " (grant CAP_SYS_NICE for the fastest bans; --realtime 0 to silence this)"
          : " (--realtime 0 for normal scheduling)"
      }`,
    );
  }
  if (o.server) warn(`metrics: http://${o.server}/metrics`);
  o.start();

  let n = 0;
  const timer = setInterval(() => {
    n++;
    // Interfaces and addresses come and go: keep the list current.
    if (!cfg.local && n % 5 === 0) {
      try {
        const addrs = interfaceAddresses();
        o.allow.setLocal(addrs);
        capture.setLocal(addrs);
      } catch (e) {
        warn(`cannot refresh local addresses: ${e instanceof Error ? e.message : e}`);
      }
    }
    if (o.openPorts && n % 2 === 0) {
      try {
        o.openPorts.refresh();
        const now = o.openPorts.list();
        if (now.join() !== openList.join()) capture.setOpenPorts(openList = now);
      } catch { /* lastError keeps the reason; the old list stays */ }
    }
    o.tick(n);
  }, 1000);
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

/** Copies the pipeline's counters into the metrics (call before a scrape and once a second). */
/**
 * How bans reach the kernel, for the start-up line: netlink (the fast
 * path), or the runner with the reason the fast path is not in use.
 */
function firewallPath(fw: Firewall): string {
  if (fw instanceof NftablesFirewall) {
    return fw.path === "netlink" ? "netlink" : `${fw.path} (${fw.libError || "no libnftables"})`;
  }
  if (fw instanceof IptablesFirewall) {
    if (fw.path(4) === "netlink") {
      return fw.path(6) === "netlink" ? "netlink" : "netlink (IPv4 only)";
    }
    return `iptables-restore (${fw.fastError[4] || "not set up"})`;
  }
  return "";
}

function metricsSync(metrics: Metrics, read: () => Float64Array): () => void {
  const seen = new Float64Array(Slot.Count);
  const add = (slot: number, inc: (by: number) => void) => {
    const c = read()[slot];
    if (c > seen[slot]) inc(c - seen[slot]);
    seen[slot] = c;
  };
  return () => {
    add(Slot.Packets, (by) => metrics.packetsCaptured.inc(by));
    add(Slot.Attempts4, (by) => metrics.connectionAttempts.inc({ family: "ipv4" }, by));
    add(Slot.Attempts6, (by) => metrics.connectionAttempts.inc({ family: "ipv6" }, by));
    add(Slot.DecodeErrors, (by) => metrics.decodeErrors.inc(by));
    add(Slot.StealthProbes, (by) => metrics.stealthProbes.inc(by));
    add(Slot.OpenPortProbes, (by) => metrics.openPortSyns.inc(by));
    add(Slot.OutboundScans, (by) => metrics.outboundScans.inc(by));
    add(Slot.LogSuppressed, (by) => metrics.logSuppressed.inc(by));
    add(Slot.SourcesEvicted, (by) => metrics.sourcesEvicted.inc(by));
    add(Slot.SourcesAdmitted, (by) => metrics.sourcesAdmitted.inc(by));
    add(Slot.SourcesNotAdmitted, (by) => metrics.sourcesNotAdmitted.inc(by));
    const c = read();
    metrics.trackedSources.set(c[Slot.TrackedSources]);
    metrics.trackedSourcesLimit.set(c[Slot.SourcesLimit]);
    metrics.admissionMemory.set(c[Slot.AdmissionMemoryMs] / 1000);
    metrics.pcapDropped.set(c[Slot.PcapDropped]);
  };
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
