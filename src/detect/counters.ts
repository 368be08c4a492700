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
  Count: 11,
} as const;
