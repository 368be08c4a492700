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
  Count: 13,
} as const;
