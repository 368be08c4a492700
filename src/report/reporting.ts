/**
 * What a run reports besides its log lines: the Prometheus metrics (the
 * engine's shared counters copied in before each scrape and once a second),
 * the /metrics and /healthz server, the stall watch (packets arrive and
 * nobody looks at them) and the log-drop watch. The server starts before the
 * firewall is touched, so an address in use ends the run first.
 */
import { rxPackets, StallReport, StallWatch } from "../capture/stall.ts";
import { Slot } from "../detect/counters.ts";
import { counterSync, nullMetrics } from "./counters.ts";
import { logDropWatch } from "./drops.ts";
import type { EventLog } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import {
  type Health,
  type MetricsServer,
  parseListenAddress,
  startMetricsServer,
} from "./server.ts";
import { stderrOut, stdoutOut } from "./stdio.ts";

/** The running reports of a run. */
export interface Reporting {
  metrics: Metrics;
  server: MetricsServer | null;
  /** Copies the counters into the metrics and runs the watches (once a second). */
  tick(): void;
  /** Copies the counters into the metrics (at the end). */
  sync(): void;
}

/** What the reports read, provided by the run as it goes. */
export interface ReportSources {
  version: string;
  log: EventLog;
  warn: (line: string) => void;
  /** The engine's counters now (Slot layout). */
  counters(): Float64Array;
  /** The live capture's interface ("" offline): its receive counter shows a stall. */
  device: string;
  /** The rest of /healthz: capture running, firewall state, fleet. */
  health(): Pick<Health, "captureRunning" | "firewall" | "fleet">;
  /** Extra work before a scrape and once a second (the fleet's gauges). */
  sync(): void;
}

/**
 * Starts the reports on `metricsAddr` ("off" for none; with `-r` only when
 * asked for: prom-client takes ~50 ms to load, a third of an offline run).
 * Throws the server's Error when the address cannot be listened on.
 */
export async function startReporting(metricsAddr: string, s: ReportSources): Promise<Reporting> {
  const listen = parseListenAddress(metricsAddr);
  const serve = listen !== null && listen !== "off" ? listen : null;
  const metrics: Metrics = serve
    ? (await import("./metrics.ts")).createMetrics(s.version)
    : nullMetrics();
  const copy = counterSync(metrics, s.counters);
  const stall = new StallWatch();
  const stalled = () =>
    s.device !== "" &&
    stall.update(Date.now(), s.counters()[Slot.Heartbeat], rxPackets(s.device));
  const stallReport = new StallReport(s.device, s.warn, (v) => metrics.captureStalled.set(v));
  const drops = logDropWatch([stdoutOut, stderrOut], () => s.counters()[Slot.LogDropped], {
    metrics,
    warn: s.warn,
    log: s.log,
  });
  const sync = () => {
    copy();
    s.sync();
  };
  const server = serve
    ? startMetricsServer(serve, metrics, () => {
      const c = s.counters(), h = s.health();
      return {
        ...h,
        stalled: h.captureRunning && stalled(),
        packetsSeen: c[Slot.Packets],
        lastPacketTime: c[Slot.LastPacketMs] > 0 ? c[Slot.LastPacketMs] : null,
      };
    }, sync)
    : null;
  return {
    metrics,
    server,
    sync,
    tick: () => {
      drops();
      stallReport.update(Date.now(), s.health().captureRunning && stalled());
      sync();
    },
  };
}
