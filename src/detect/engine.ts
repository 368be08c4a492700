/**
 * The detection engine as configured: the main rule, the slow-scan rule and
 * the outbound rule feeding one Pipeline. Built the same way by an offline
 * run (on the main thread) and by the live capture worker, so both apply the
 * same logic.
 */
import { formatAddress } from "../address.ts";
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
  outbound: Detector;
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
    /** Another engine's admission seeds (Admission.seeds): this one decodes for it. */
    admissionSeeds?: readonly [number, number];
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
    opts.admissionSeeds ? undefined : adviseHugePages,
    s.ipv6Prefix ?? 64,
    opts.admissionSeeds,
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
    outbound,
    admission,
    forget: (key) => {
      detector.forget(key);
      slow?.forget(key);
    },
  };
}

/** One source as `scanblocker status` lists it (see src/report/status.ts TopSource). */
export interface SourcePorts {
  address: string;
  ports: number[];
  detected: boolean;
}

/**
 * The `n` tracked sources with the most distinct ports now, the main and the
 * slow rule's ports together (the psd rule keeps scores, not ports); sources
 * already reported as scanners come first (the rules stop keeping their ports). Walks
 * every tracked source: on request only (100,000 sources take a few ms).
 */
export function topSources(e: Engine, n: number): SourcePorts[] {
  const all = new Map<number | string, { ports: Set<number>; detected: boolean }>();
  const add = (key: number | string, ports: number[], detected: boolean) => {
    const s = all.get(key) ?? { ports: new Set<number>(), detected: false };
    // The rules count targets: (destination hash << 16) | port.
    for (const t of ports) s.ports.add(t & 0xffff);
    s.detected ||= detected;
    all.set(key, s);
  };
  if (e.detector instanceof Detector) e.detector.forEachSource(add);
  if (e.slow instanceof Detector) e.slow.forEachSource(add);
  return [...all]
    // Reported scanners first: they tried more ports than the rules keep.
    .sort((a, b) =>
      Number(b[1].detected) - Number(a[1].detected) || b[1].ports.size - a[1].ports.size
    )
    .slice(0, n)
    .map(([key, s]) => ({
      address: keyAddress(key),
      ports: [...s.ports].sort((a, b) => a - b),
      detected: s.detected,
    }));
}

/** The address text of a detector key (see addressKey). */
function keyAddress(key: number | string): string {
  if (typeof key === "number") {
    return formatAddress(
      4,
      new Uint8Array([key >>> 24, (key >>> 16) & 255, (key >>> 8) & 255, key & 255]),
    );
  }
  const b = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    const c = key.charCodeAt(i);
    b[2 * i] = c >> 8;
    b[2 * i + 1] = c & 255;
  }
  return formatAddress(6, b);
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

/**
 * Applies new thresholds to a running engine (a reload) without losing what
 * it knows of each source; returns the names of the settings that only a
 * new engine can change (they wait for a restart).
 */
export function reconfigureEngine(e: Engine, from: EngineSettings, to: EngineSettings): string[] {
  const restart: string[] = [];
  if (to.detector !== from.detector) restart.push("detector");
  if (to.maxSources !== from.maxSources) restart.push("max-sources");
  if ((to.slowPorts > 0) !== (from.slowPorts > 0)) restart.push("slow-ports");
  const windowMs = to.windowSeconds * 1000;
  if (e.detector instanceof Detector) e.detector.reconfigure(to.ports, windowMs);
  e.outbound.reconfigure(to.ports, windowMs);
  if (e.slow instanceof Detector && to.slowPorts > 0) {
    e.slow.reconfigure(to.slowPorts, to.slowWindowSeconds * 1000);
  }
  return restart;
}
