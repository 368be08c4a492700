/**
 * The detection engine's counters, as slots of one Float64Array: shared by the
 * live capture worker over a SharedArrayBuffer, filled from the pipeline of an
 * offline run.
 */

/** Slots of the shared counter array (Float64Array over a SharedArrayBuffer). */
export const Slot = {
  Packets: 0,
  Attempts4: 1,
  Attempts6: 2,
  DecodeErrors: 3,
  StealthProbes: 4,
  OpenPortProbes: 5,
  OutboundScans: 6,
  LogSuppressed: 7,
  TrackedSources: 8,
  LastPacketMs: 9,
  PcapDropped: 10,
  /** Log lines the capture thread dropped because stdout could not take them. */
  LogDropped: 11,
  /** Date.now() of the capture loop's latest turn (at least once a second while it runs). */
  Heartbeat: 12,
  /** Sources the main rule can track at once (--max-sources). */
  SourcesLimit: 13,
  /** Sources the rules forgot because their tables were full. */
  SourcesEvicted: 14,
  /** Sources admitted into the rules' tables (their second distinct target). */
  SourcesAdmitted: 15,
  /** First probes pushed out of the admission sketch while younger than the window. */
  SourcesNotAdmitted: 16,
  /** How long a first probe is remembered now, ms (the age of the last one pushed out). */
  AdmissionMemoryMs: 17,
  Count: 18,
} as const;
