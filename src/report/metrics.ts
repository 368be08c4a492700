/**
 * The Prometheus metrics of scanblocker: the program's own counters and
 * gauges, plus runtime metrics (CPU, memory, descriptors, start time, V8 heap,
 * event-loop lag) gathered in ways that give true values under Deno.
 *
 * prom-client's `collectDefaultMetrics` is not used: it was written for Node
 * and under Deno several of its collectors are wrong or dead. Checked with
 * prom-client 15.1.3 under `deno run -P`: its /proc reads need `--allow-all`,
 * so process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_heap_bytes and process_open_fds all read 0 and process_max_fds is
 * missing; with -A, process_heap_bytes is VmData (hundreds of MB of V8
 * address-space reservation, not a heap). nodejs_eventloop_lag_seconds stays
 * 0, nodejs_active_handles/requests are always 0 and the GC histogram never
 * appears. Each collector below was checked against /proc under Deno instead
 * (tests/metrics_test.ts).
 *
 * Names: `process_*` are the standard names every client library uses (the
 * Go tool's included), so existing dashboards work. The JavaScript heap and
 * event-loop lag are runtime metrics, named `deno_*` the way Go's client names
 * its runtime `go_*`: calling them `nodejs_*` would claim a runtime this is not.
 */

import process from "node:process";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { listSystemDirectory, readSystemFile } from "../../ffi/libc.ts";
import { LAG_PERIODS, sampleLag } from "./lag.ts";

/** Every metric the program updates, in a registry of its own. */
export interface Metrics {
  /** Its own registry (not prom-client's global one); `/metrics` serves it. */
  registry: Registry;
  /** scanblocker_connection_attempts_total{family="ipv4"|"ipv6"} */
  connectionAttempts: Counter<"family">;
  /** scanblocker_packets_captured_total */
  packetsCaptured: Counter;
  /** scanblocker_pcap_dropped_packets (set from pcap_stats) */
  pcapDropped: Gauge;
  /** scanblocker_decode_errors_total */
  decodeErrors: Counter;
  /** scanblocker_scans_detected_total */
  scansDetected: Counter;
  /** scanblocker_bans_total{backend,result="banned"|"already"|"failed"} */
  bans: Counter<"backend" | "result">;
  /** scanblocker_active_bans */
  activeBans: Gauge;
  /** scanblocker_tracked_sources */
  trackedSources: Gauge;
  /** scanblocker_tracked_sources_limit: how many the main rule can track (--max-sources) */
  trackedSourcesLimit: Gauge;
  /** scanblocker_sources_evicted_total: tracked sources forgotten because the tables were full */
  sourcesEvicted: Counter;
  /** scanblocker_sources_admitted_total: sources that tried a second distinct port and are tracked */
  sourcesAdmitted: Counter;
  /** scanblocker_sources_not_admitted_total: first probes forgotten within the window (a flood absorbed) */
  sourcesNotAdmitted: Counter;
  /** scanblocker_admission_memory_seconds: how long a one-probe source is remembered now */
  admissionMemory: Gauge;
  /** scanblocker_firewall_errors_total */
  firewallErrors: Counter;
  /** Chains, sets or hooks removed from outside and put back. */
  firewallRepairs: Counter;
  /** Bans the kernel no longer held when it was re-read (removed from outside). */
  bansLost: Counter;
  /** Bans removed early to make room for new ones when the table was full. */
  bansEvicted: Counter;
  /** scanblocker_detection_to_ban_seconds: threshold packet's time to rule in place. */
  detectionToBan: Histogram;
  /** scanblocker_log_lines_suppressed_total */
  logSuppressed: Counter;
  /** scanblocker_log_lines_dropped_total: lines stdout/stderr could not take (nobody reading) */
  logDropped: Counter;
  /** scanblocker_stealth_probes_total: NULL, FIN and Xmas probes arriving at this host */
  stealthProbes: Counter;
  /** scanblocker_open_port_syns_total: SYNs to listening ports, not counted toward scans */
  openPortSyns: Counter;
  /** scanblocker_outbound_scans_total: this host scanning a remote host (never banned) */
  outboundScans: Counter;
  /** scanblocker_metrics_server_problems_total{kind}: connections the metrics server turned away, failed accepts */
  serverProblems: Counter<"kind">;
  /** scanblocker_fleet_pushes_total{result="sent"|"rejected"|"dropped"|"expired"}: bans pushed to the CrowdSec LAPI */
  fleetPushes: Counter<"result">;
  /** scanblocker_fleet_decisions_total{action,origin}: LAPI decisions applied, removed, refused, failed, own */
  fleetDecisions: Counter<"action" | "origin">;
  /** scanblocker_reloads_total{result="applied"|"unchanged"|"refused"|"failed"}: SIGHUP reloads */
  reloads: Counter<"result">;
  /** scanblocker_capture_stalled: 1 while packets arrive and the capture thread has not turned its loop for 3 s */
  captureStalled: Gauge;
  /** scanblocker_fleet_lapi_up: 1 when the last LAPI call got an answer (0 also without a fleet) */
  fleetLapiUp: Gauge;
  /** scanblocker_fleet_last_pull_age_seconds: since the last successful pull (-1 before the first) */
  fleetLastPullAge: Gauge;
  /** scanblocker_fleet_push_queue: alerts waiting for the LAPI */
  fleetQueue: Gauge;
}

/** Buckets for detection-to-ban latency: 50 µs (a library call) up to 1 s (something is wrong). */
export const DETECTION_TO_BAN_BUCKETS: readonly number[] = [
  0.00005,
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
];

/** Buckets for event-loop lag: timers resolve to about 1 ms, a blocked loop shows in seconds. */
const LAG_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10];
/** USER_HZ: the unit of times in /proc/<pid>/stat, 100 on every Linux ABI. */
const CLOCK_TICKS_PER_SECOND = 100;

/**
 * Creates the registry and every metric. Also sets
 * `scanblocker_build_info{version,deno} 1` and registers the runtime metrics
 * (including a light unref'd timer that samples event-loop lag). Long on
 * purpose: a declarative table of metric definitions, one entry each.
 */
export function createMetrics(version: string): Metrics {
  const registry = new Registry();
  const registers = [registry];

  const metrics: Metrics = {
    registry,
    connectionAttempts: new Counter({
      name: "scanblocker_connection_attempts_total",
      help: "TCP connection attempts (SYN without ACK) seen to a local address.",
      labelNames: ["family"] as const,
      registers,
    }),
    packetsCaptured: new Counter({
      name: "scanblocker_packets_captured_total",
      help: "Packets handed over by libpcap.",
      registers,
    }),
    pcapDropped: new Gauge({
      name: "scanblocker_pcap_dropped_packets",
      help:
        "Packets dropped by the kernel because the capture buffer was full (pcap_stats ps_drop).",
      registers,
    }),
    decodeErrors: new Counter({
      name: "scanblocker_decode_errors_total",
      help: "Captured packets that could not be decoded.",
      registers,
    }),
    scansDetected: new Counter({
      name: "scanblocker_scans_detected_total",
      help: "Port scans detected.",
      registers,
    }),
    bans: new Counter({
      name: "scanblocker_bans_total",
      help: "Ban requests by firewall backend and result (banned, already, failed).",
      labelNames: ["backend", "result"] as const,
      registers,
    }),
    activeBans: new Gauge({
      name: "scanblocker_active_bans",
      help: "Bans currently in place.",
      registers,
    }),
    trackedSources: new Gauge({
      name: "scanblocker_tracked_sources",
      help: "Source addresses currently tracked by the detector.",
      registers,
    }),
    trackedSourcesLimit: new Gauge({
      name: "scanblocker_tracked_sources_limit",
      help:
        "Sources the detector can track at once (--max-sources); tracked / limit is how full it is.",
      registers,
    }),
    sourcesEvicted: new Counter({
      name: "scanblocker_sources_evicted_total",
      help: "Tracked sources forgotten because the detector's tables were full.",
      registers,
    }),
    sourcesAdmitted: new Counter({
      name: "scanblocker_sources_admitted_total",
      help: "Sources admitted to tracking: they tried a second distinct port.",
      registers,
    }),
    sourcesNotAdmitted: new Counter({
      name: "scanblocker_sources_not_admitted_total",
      help:
        "One-probe sources forgotten by the admission sketch within the window (a spoofed flood being absorbed).",
      registers,
    }),
    admissionMemory: new Gauge({
      name: "scanblocker_admission_memory_seconds",
      help:
        "How long the first probe of a new source is remembered now (age of the last one pushed out).",
      registers,
    }),
    firewallErrors: new Counter({
      name: "scanblocker_firewall_errors_total",
      help: "Firewall commands that failed.",
      registers,
    }),
    firewallRepairs: new Counter({
      name: "scanblocker_firewall_repairs_total",
      help: "Chains, sets or hook jumps found removed from outside and put back.",
      registers,
    }),
    bansLost: new Counter({
      name: "scanblocker_bans_removed_outside_total",
      help: "Bans the kernel no longer held when re-read (removed by unban, a flush or by hand).",
      registers,
    }),
    bansEvicted: new Counter({
      name: "scanblocker_bans_evicted_total",
      help: "Bans removed before their time to make room for new ones (the ban table was full).",
      registers,
    }),
    detectionToBan: new Histogram({
      name: "scanblocker_detection_to_ban_seconds",
      help: "Time from the packet that crossed the scan threshold to the ban rule being in place.",
      buckets: [...DETECTION_TO_BAN_BUCKETS],
      registers,
    }),
    logSuppressed: new Counter({
      name: "scanblocker_log_lines_suppressed_total",
      help: "Connection log lines not written because of the log rate limit.",
      registers,
    }),
    logDropped: new Counter({
      name: "scanblocker_log_lines_dropped_total",
      help:
        "Log lines dropped because stdout or stderr could not take them (a reader that does not read).",
      registers,
    }),
    stealthProbes: new Counter({
      name: "scanblocker_stealth_probes_total",
      help: "NULL, FIN and Xmas probes arriving at this host.",
      registers,
    }),
    openPortSyns: new Counter({
      name: "scanblocker_open_port_syns_total",
      help: "SYNs to ports with a listening socket, not counted toward scans.",
      registers,
    }),
    outboundScans: new Counter({
      name: "scanblocker_outbound_scans_total",
      help: "Port scans made by this host of a remote host (a sign of compromise; never banned).",
      registers,
    }),
    serverProblems: new Counter({
      name: "scanblocker_metrics_server_problems_total",
      help:
        "Metrics server connections closed unserved (kind: over_capacity, timeout, bad_request) and failed accepts (accept_error).",
      labelNames: ["kind"],
      registers,
    }),
    fleetPushes: new Counter({
      name: "scanblocker_fleet_pushes_total",
      help: "Bans pushed to the CrowdSec LAPI, by result (sent, rejected, dropped, expired).",
      labelNames: ["result"] as const,
      registers,
    }),
    fleetDecisions: new Counter({
      name: "scanblocker_fleet_decisions_total",
      help:
        "CrowdSec LAPI ban decisions by action (applied, removed, refused, failed, own) and origin.",
      labelNames: ["action", "origin"] as const,
      registers,
    }),
    reloads: new Counter({
      name: "scanblocker_reloads_total",
      help:
        "SIGHUP reloads by result: applied, unchanged, refused (a bad value: the old settings stay), failed.",
      labelNames: ["result"] as const,
      registers,
    }),
    captureStalled: new Gauge({
      name: "scanblocker_capture_stalled",
      help:
        "1 while packets arrive on the interface and the capture thread has not turned its loop for 3 s (nothing is detected).",
      registers,
    }),
    fleetLapiUp: new Gauge({
      name: "scanblocker_fleet_lapi_up",
      help: "1 when the last call to the CrowdSec LAPI got an answer; 0 when down or no fleet.",
      registers,
    }),
    fleetLastPullAge: new Gauge({
      name: "scanblocker_fleet_last_pull_age_seconds",
      help: "Seconds since the last successful pull of LAPI decisions; -1 before the first.",
      registers,
    }),
    fleetQueue: new Gauge({
      name: "scanblocker_fleet_push_queue",
      help: "Alerts waiting to be pushed to the CrowdSec LAPI.",
      registers,
    }),
  };
  // Both families exist from the start, so rate() and absent() behave.
  metrics.connectionAttempts.labels("ipv4").inc(0);
  metrics.connectionAttempts.labels("ipv6").inc(0);

  const buildInfo = new Gauge({
    name: "scanblocker_build_info",
    help: "Always 1; labels carry the scanblocker version and the Deno runtime version.",
    labelNames: ["version", "deno"] as const,
    registers,
  });
  buildInfo.labels(version, Deno.version.deno).set(1);

  registerRuntimeMetrics(registry);
  return metrics;
}

/** Fields of /proc/self/stat after the command name (field 3 onwards), or null. */
function readProcStat(): string[] | null {
  const text = readSystemFile("/proc/self/stat");
  if (!text) return null;
  // The command name (field 2) is in parentheses and may hold spaces.
  const close = text.lastIndexOf(")");
  if (close < 0) return null;
  return text.slice(close + 2).trim().split(" ");
}

/**
 * Process start as Unix seconds: now minus the time since start, which is
 * system uptime (/proc/uptime, 10 ms) minus the starttime ticks of
 * /proc/self/stat. (btime of /proc/stat is whole seconds and drifts with
 * clock adjustments, so it can be a second or more off.) Falls back to the
 * runtime's time origin.
 */
function processStartSeconds(): number {
  const fields = readProcStat();
  const uptime = Number(readSystemFile("/proc/uptime")?.split(" ")[0]);
  // Field 22 (starttime) is index 19 once fields 1 and 2 are cut off.
  const ticks = fields ? Number(fields[19]) : NaN;
  if (Number.isFinite(uptime) && Number.isFinite(ticks) && uptime > 0) {
    const age = Math.max(0, uptime - ticks / CLOCK_TICKS_PER_SECOND);
    return Math.round((Date.now() / 1000 - age) * 100) / 100;
  }
  return Math.round(performance.timeOrigin) / 1000;
}

/** Soft limit on open descriptors from /proc/self/limits; null when unknown or unlimited. */
function maxFds(): number | null {
  const line = readSystemFile("/proc/self/limits")?.split("\n").find((l) =>
    l.startsWith("Max open files")
  );
  const soft = line?.slice("Max open files".length).trim().split(/\s+/)[0];
  return soft && /^\d+$/.test(soft) ? Number(soft) : null;
}

/** Registers process_* and deno_* runtime metrics on the registry (a declarative list, hence long). */
function registerRuntimeMetrics(registry: Registry): void {
  const registers = [registry];

  // CPU: getrusage(RUSAGE_SELF) through node:process, microsecond resolution.
  // Each counter advances by its own delta since its last scrape, so none
  // ever goes back and none depends on the order of collection.
  const cpu = (
    name: string,
    help: string,
    read: (u: { user: number; system: number }) => number,
  ) => {
    let last = 0;
    new Counter({
      name,
      help,
      registers,
      collect() {
        const now = read(process.cpuUsage());
        if (now > last) this.inc((now - last) / 1e6);
        last = Math.max(last, now);
      },
    });
  };
  cpu("process_cpu_user_seconds_total", "Total user CPU time spent in seconds.", (u) => u.user);
  cpu(
    "process_cpu_system_seconds_total",
    "Total system CPU time spent in seconds.",
    (u) => u.system,
  );
  cpu(
    "process_cpu_seconds_total",
    "Total user and system CPU time spent in seconds.",
    (u) => u.user + u.system,
  );

  // Memory: Deno.memoryUsage() (RSS from the kernel, heap from V8), a few µs.
  const memoryGauge = (name: string, help: string, read: (m: Deno.MemoryUsage) => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(read(Deno.memoryUsage()));
      },
    });
  memoryGauge("process_resident_memory_bytes", "Resident memory size in bytes.", (m) => m.rss);
  new Gauge({
    name: "process_virtual_memory_bytes",
    help: "Virtual memory size in bytes.",
    registers,
    collect() {
      const vsize = Number(readProcStat()?.[20]);
      if (Number.isFinite(vsize) && vsize > 0) this.set(vsize);
    },
  });
  memoryGauge(
    "deno_heap_size_total_bytes",
    "V8 heap size in bytes (Deno.memoryUsage().heapTotal).",
    (m) => m.heapTotal,
  );
  memoryGauge(
    "deno_heap_size_used_bytes",
    "V8 heap in use in bytes (Deno.memoryUsage().heapUsed).",
    (m) => m.heapUsed,
  );
  memoryGauge(
    "deno_external_memory_bytes",
    "Memory of JavaScript objects bound to native memory, in bytes (Deno.memoryUsage().external).",
    (m) => m.external,
  );

  // Descriptors: count /proc/self/fd through libc (Deno wants --allow-all for
  // a plain readDir there); the listing includes the descriptor reading it.
  new Gauge({
    name: "process_open_fds",
    help: "Number of open file descriptors.",
    registers,
    collect() {
      const names = listSystemDirectory("/proc/self/fd");
      if (names && names.length > 1) this.set(names.length - 1);
    },
  });
  if (maxFds() !== null) {
    new Gauge({
      name: "process_max_fds",
      help: "Maximum number of open file descriptors.",
      registers,
      collect() {
        const limit = maxFds();
        if (limit !== null) this.set(limit);
      },
    });
  }
  new Gauge({
    name: "process_start_time_seconds",
    help: "Start time of the process since unix epoch in seconds.",
    registers,
  }).set(processStartSeconds());

  // Event-loop lag: a timer records how late it ran (src/report/lag.ts: every
  // 100 ms while the process works, every second when idle). Unref'd, so it
  // never keeps the program alive.
  const lag = new Histogram({
    name: "deno_eventloop_lag_seconds",
    help:
      `How late a timer ran, in seconds (event-loop lag); due every ${LAG_PERIODS.fastMs} ms while the process works, every ${LAG_PERIODS.idleMs} ms when idle.`,
    buckets: LAG_BUCKETS,
    registers,
  });
  sampleLag((s) => lag.observe(s), () => {
    const u = process.cpuUsage();
    return u.user + u.system;
  });
}
