/**
 * The detection engine's counters (src/detect/counters.ts slots) as
 * Prometheus metrics, and metrics that go nowhere for runs that serve none
 * (prom-client takes ~50 ms to load, a third of a short offline run, so it is
 * loaded only when something will read the metrics).
 */
import { Slot } from "../detect/counters.ts";
import type { Metrics } from "./metrics.ts";

/** Metrics that go nowhere, for runs without a metrics server (every field, whatever it is). */
export function nullMetrics(): Metrics {
  const noop: Record<string, unknown> = {};
  for (const m of ["inc", "set", "observe"]) noop[m] = () => {};
  noop.labels = () => noop;
  return new Proxy({}, { get: () => noop }) as unknown as Metrics;
}

/**
 * A function that copies the counters `read` returns into the metrics (call
 * it before a scrape and once a second): counters by their increase, gauges
 * as they are.
 */
export function counterSync(metrics: Metrics, read: () => Float64Array): () => void {
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
