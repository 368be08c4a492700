/**
 * The detection engine as configured: the main rule, the slow-scan rule and
 * the outbound rule feeding one Pipeline. Built the same way by an offline
 * run (on the main thread) and by the live capture worker, so both apply the
 * same logic.
 */
import type { AllowList } from "../allowlist.ts";
import type { Config } from "../config.ts";
import { adviseHugePages } from "../../ffi/libc.ts";
import { Admission, admissionSlots } from "./admission.ts";
import { Detector, type ScanDetector } from "./detector.ts";
import { Slot } from "./counters.ts";
import type { EventLog } from "../report/log.ts";
import { Pipeline, type ScanReport } from "./pipeline.ts";
import { PSD_DEFAULTS, PsdDetector } from "./psd.ts";

/** The settings the engine needs (a subset of Config, cloneable to a worker). */
export type EngineSettings = Pick<
  Config,
  | "ports"
  | "windowSeconds"
  | "maxSources"
  | "detector"
  | "slowPorts"
  | "slowWindowSeconds"
  | "ipv6Prefix"
>;

/** Only the engine's settings, so that the rest of a Config never crosses to the worker. */
export function engineSettings(c: EngineSettings): EngineSettings {
  const { ports, windowSeconds, maxSources, detector, slowPorts, slowWindowSeconds, ipv6Prefix } =
    c;
  return { ports, windowSeconds, maxSources, detector, slowPorts, slowWindowSeconds, ipv6Prefix };
}

/** The pipeline and the rules behind it. */
export interface Engine {
  pipeline: Pipeline;
  detector: ScanDetector;
  slow: ScanDetector | null;
  /** Where first-seen sources wait (admission.ts). */
  admission: Admission;
  /** Forgets a source in every inbound rule (its ban failed: the next probes try again). */
  forget(key: number | string): void;
}

/** Builds the rules and the pipeline over them. */
export function createEngine(
  s: EngineSettings,
  opts: {
    linktype: number;
    allow: AllowList;
    log: EventLog;
    openPorts: { has(port: number): boolean } | null;
    everyDestinationLocal: boolean;
    summarize: boolean;
    onScan: (scan: ScanReport) => void;
    banFirst?: (scan: ScanReport) => void;
    onRepeatScanner: (ms: number, src: string) => void;
  },
): Engine {
  const detector: ScanDetector = s.detector === "psd"
    ? new PsdDetector({ ...PSD_DEFAULTS, maxSources: s.maxSources })
    : new Detector({ ports: s.ports, windowMs: s.windowSeconds * 1000, maxSources: s.maxSources });
  // The slow rule keeps up to --slow-ports (7) ports a source for two hours:
  // a quarter of the sources bounds its memory to about that of the main
  // rule. Only admitted sources (two distinct targets) ever reach it.
  const slow = s.slowPorts > 0
    ? new Detector({
      ports: s.slowPorts,
      windowMs: s.slowWindowSeconds * 1000,
      maxSources: Math.max(1, Math.floor(s.maxSources / 4)),
    })
    : null;
  const outbound = new Detector({
    ports: s.ports,
    windowMs: s.windowSeconds * 1000,
    maxSources: Math.max(1, Math.floor(s.maxSources / 10)),
  });
  // A first target counts as long as the longest rule remembers one.
  const mainMs = s.detector === "psd" ? PSD_DEFAULTS.delayMs : s.windowSeconds * 1000;
  const horizonMs = Math.max(mainMs, slow ? s.slowWindowSeconds * 1000 : 0);
  const admission = new Admission(
    admissionSlots(s.maxSources),
    horizonMs,
    mainMs,
    adviseHugePages,
  );
  const pipeline = new Pipeline({
    ...opts,
    detector,
    rule: s.detector,
    slow,
    outbound,
    admission,
    ipv6Prefix: s.ipv6Prefix ?? 64,
  });
  return {
    pipeline,
    detector,
    slow,
    admission,
    forget: (key) => {
      detector.forget(key);
      slow?.forget(key);
    },
  };
}

/** Writes the engine's counters into `out` at the slots of capture_protocol.ts. */
export function publishCounters(e: Engine, log: EventLog, out: Float64Array): void {
  const pl = e.pipeline;
  out[Slot.Packets] = pl.packets;
  out[Slot.Attempts4] = pl.attempts4;
  out[Slot.Attempts6] = pl.attempts6;
  out[Slot.DecodeErrors] = pl.decodeErrors;
  out[Slot.StealthProbes] = pl.stealthProbes;
  out[Slot.OpenPortProbes] = pl.openPortProbes;
  out[Slot.OutboundScans] = pl.outboundScans;
  out[Slot.LogSuppressed] = log.suppressedTotal;
  out[Slot.TrackedSources] = e.detector.size;
  out[Slot.LastPacketMs] = pl.lastPacketMs;
  out[Slot.SourcesLimit] = e.detector.capacity;
  out[Slot.SourcesEvicted] = e.detector.evicted + (e.slow?.evicted ?? 0);
  out[Slot.SourcesAdmitted] = pl.admitted;
  out[Slot.SourcesNotAdmitted] = e.admission.notAdmitted;
  out[Slot.AdmissionMemoryMs] = e.admission.lastOverwrittenAgeMs;
}
