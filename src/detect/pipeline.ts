/**
 * The per-packet path: walk a batch of pcap records with one DataView, decode
 * each into one reused ProbeEvent, classify it (SYN attempt, or a NULL, FIN or
 * Xmas stealth probe), decide its direction (arriving at this host, or this
 * host probing out), log it, and feed the detectors. Counters are plain
 * numbers here (main copies them into the metrics once per batch): nothing on
 * this path allocates for a packet that is not logged or reported.
 *
 * A detector counts distinct *targets*: (destination address, port) pairs
 * folded into one 32-bit number (a 16-bit hash of the address, the port), so
 * a scan spread over several addresses of a multi-address host or gateway is
 * seen, while on a single-address host it is exactly the original's
 * "distinct ports".
 */
import { addressKey, formatAddress } from "../address.ts";
import type { AllowList } from "../allowlist.ts";
import { decodePacket } from "./decode.ts";
import { type ScanDetector, Verdict } from "./detector.ts";
import type { EventLog } from "../report/log.ts";
import { DecodeStatus, type Family, newProbeEvent, TCP } from "../types.ts";

/** A batch of pcap records: u32 ts_sec, u32 ts_usec, u32 caplen, u32 len (host order), then data. */
export interface RecordBatch {
  view: DataView;
  start: number;
  end: number;
}

/** Kind of probe: a SYN connection attempt or a stealth probe. */
export type ProbeType = "syn" | "null" | "fin" | "xmas";

/** A detected scan, with copies of everything the caller may keep. */
export interface ScanReport {
  /** Packet time of the probe that crossed the threshold, epoch ms. */
  ms: number;
  family: Family;
  src: string;
  /** The source address's bytes (4 or 16). */
  key: Uint8Array;
  dst: string;
  /** Distinct ports seen up to and including the threshold probe. */
  ports: number[];
  /** Type of the probe that crossed the threshold. */
  scanType: ProbeType;
  /** Found by the long (slow-scan) window rather than the main rule. */
  slow: boolean;
}

/** Summary of one scan for the offline report. */
export interface ScanSummary {
  src: string;
  dst: string;
  /** Distinct targets (address hash << 16 | port). */
  targets: Set<number>;
  firstMs: number;
  lastMs: number;
}

/** Settings of the pipeline. */
export interface PipelineOptions {
  linktype: number;
  /** The main rule (windowed distinct ports, or psd scoring). */
  detector: ScanDetector;
  /** Name of the main rule for reports: "window" or "psd". */
  rule: string;
  /** The long window for slow scans; null = off. */
  slow: ScanDetector | null;
  /** Counts this host's probes of remote hosts; null = off. */
  outbound: ScanDetector | null;
  /** Ports with a listening socket on this host; probes to them do not count. null = count every port. */
  openPorts: { has(port: number): boolean } | null;
  allow: AllowList;
  log: EventLog;
  /** true: every destination is this host (offline without --local, or a router guarding forwarded traffic). */
  everyDestinationLocal: boolean;
  /** Called synchronously when a scan is detected, after its line is logged (the caller bans). */
  onScan: (scan: ScanReport) => void;
  /**
   * Called first, as soon as the threshold is crossed and before any line
   * about the probe is formatted: the capture worker bans here.
   */
  banFirst?: (scan: ScanReport) => void;
  /** Called for further probes from a source already reported. */
  onRepeatScanner: (ms: number, src: string) => void;
  /** Keep per-scan summaries (offline mode). */
  summarize: boolean;
}

const TYPES: readonly ProbeType[] = ["syn", "null", "fin", "xmas"];
const T_NONE = -1, T_SYN = 0, T_NULL = 1, T_FIN = 2, T_XMAS = 3;

/** Classifies TCP flags: SYN without ACK, or a NULL/FIN/Xmas stealth probe; -1 for anything else. */
export function probeType(flags: number): number {
  if ((flags & (TCP.SYN | TCP.ACK)) === TCP.SYN) return T_SYN;
  const f = flags & 0x3f; // ECE, CWR and NS do not change the kind of probe
  if (f === 0) return T_NULL;
  if (f === TCP.FIN) return T_FIN;
  if (f === (TCP.FIN | TCP.PSH | TCP.URG)) return T_XMAS;
  return T_NONE;
}

/** 16-bit fold of an address, the high half of a target number. */
function addressHash(family: Family, b: Uint8Array): number {
  let h = 0;
  const n = family === 4 ? 4 : 16;
  for (let i = 0; i < n; i += 2) h ^= (b[i] << 8) | b[i + 1];
  return h;
}

/** Stateful packet processor; one per capture. */
export class Pipeline {
  readonly #o: PipelineOptions;
  readonly #ev = newProbeEvent();
  /** Frames seen. */
  packets = 0;
  /** SYN connection attempts arriving at this host, per family. */
  attempts4 = 0;
  attempts6 = 0;
  /** NULL, FIN and Xmas probes arriving at this host. */
  stealthProbes = 0;
  /** Probes to ports with a listening socket (not counted toward scans). */
  openPortProbes = 0;
  /** Frames that could not be decoded. */
  decodeErrors = 0;
  /** Scans this host made of remote hosts. */
  outboundScans = 0;
  /** Packet time of the last frame, epoch ms (0 before the first). */
  lastPacketMs = 0;
  /** Scans found, by source (offline summary). */
  readonly scans = new Map<string, ScanSummary>();

  constructor(opts: PipelineOptions) {
    this.#o = opts;
  }

  /** Whether every destination counts as this host (a reload changed --hook). */
  setEveryDestinationLocal(on: boolean): void {
    this.#o.everyDestinationLocal = on;
  }

  /** Processes every record of a batch. */
  processBatch(b: RecordBatch): void {
    const view = b.view, end = b.end, o = this.#o, ev = this.#ev;
    let off = b.start;
    while (off + 16 <= end) {
      const tsSec = view.getUint32(off, true);
      const tsUsec = view.getUint32(off + 4, true);
      const caplen = view.getUint32(off + 8, true);
      const data = off + 16;
      if (data + caplen > end) break; // never read past the batch
      off = data + caplen;
      this.packets++;
      const st = decodePacket(o.linktype, view, data, caplen, ev);
      if (st !== DecodeStatus.Ok) {
        if (st === DecodeStatus.Malformed) this.decodeErrors++;
        continue;
      }
      const ms = tsSec * 1000 + tsUsec / 1000;
      this.lastPacketMs = ms;
      const type = probeType(ev.flags);
      if (type !== T_NONE) this.#probe(type, ev.family, ev.src, ev.sport, ev.dst, ev.dport, ms);
    }
  }

  /** The scan #verdict found, for #probe to log and report. */
  #report: ScanReport | null = null;

  /**
   * Counts the probe in the rules and, when it crosses a threshold, reports
   * the scan through onScan (the caller bans) before anything is logged.
   * Allowed sources and SYNs to open ports are never counted (Verdict.Counted).
   */
  #verdict(
    type: number,
    family: Family,
    src: Uint8Array,
    srcKey: number | string,
    dst: Uint8Array,
    dport: number,
    ms: number,
  ): Verdict {
    const o = this.#o;
    if (o.allow.isAllowed(family, src)) return Verdict.Counted; // loopback or --allow: logged, never counted
    // A SYN to a port this host serves is a client, not a probe.
    if (type === T_SYN && o.openPorts !== null && o.openPorts.has(dport)) {
      this.openPortProbes++;
      return Verdict.Counted;
    }
    const target = (addressHash(family, dst) << 16) | dport;
    let slow = false;
    let v = o.detector.observe(srcKey, target, ms);
    let det = o.detector;
    if (o.slow !== null) {
      // One report per scanner, whichever rule saw it first.
      const sv = o.slow.observe(srcKey, target, ms);
      if (sv === Verdict.AlreadyDetected) v = Verdict.AlreadyDetected;
      else if (sv === Verdict.Scan && (v === Verdict.Counted || v === Verdict.Repeat)) {
        v = sv;
        slow = true;
        det = o.slow;
      }
    }
    if (v !== Verdict.Scan) return v;
    const s = formatAddress(family, src);
    const d = formatAddress(family, dst);
    const targets = det.lastScanPorts;
    if (o.summarize) {
      const prev = this.scans.get(s);
      if (prev) {
        for (const t of targets) prev.targets.add(t);
        prev.lastMs = ms;
      } else {
        const firstMs = det.lastScanFirstMs;
        this.scans.set(s, { src: s, dst: d, targets: new Set(targets), firstMs, lastMs: ms });
      }
    }
    const ports = targets.map((t) => t & 0xffff);
    const report = {
      ms,
      family,
      src: s,
      key: src.slice(0, family === 4 ? 4 : 16),
      dst: d,
      ports,
      scanType: TYPES[type] as ProbeType,
      slow,
    };
    this.#report = report;
    o.banFirst?.(report);
    return v;
  }

  #probe(
    type: number,
    family: Family,
    src: Uint8Array,
    sport: number,
    dst: Uint8Array,
    dport: number,
    ms: number,
  ): void {
    const o = this.#o;
    const allow = o.allow;
    const srcKey = addressKey(family, src);
    if (allow.isLocalKey(srcKey)) {
      // This host's own connection: never counted against the peer, but many
      // ports of one remote host is a sign that this host is compromised.
      const dstKey = o.outbound !== null ? addressKey(family, dst) : 0;
      if (o.outbound !== null && !allow.isLocalKey(dstKey)) {
        const target = (addressHash(family, dst) << 16) | dport;
        const v = o.outbound.observe(dstKey, target, ms);
        if (v === Verdict.Scan) {
          this.outboundScans++;
          o.log.scanDetected(ms, family, src, dst, { outbound: true, scanType: TYPES[type] });
        }
      }
      return;
    }
    if (!o.everyDestinationLocal && !allow.isLocalKey(addressKey(family, dst))) return;
    if (type === T_SYN) {
      if (family === 4) this.attempts4++;
      else this.attempts6++;
    } else this.stealthProbes++;
    const v = this.#verdict(type, family, src, srcKey, dst, dport, ms);
    // The ban comes first; the lines about this probe are written after it.
    o.log.newConnection(ms, family, src, sport, dst, dport);
    if (v === Verdict.Counted || v === Verdict.Repeat) return;
    if (v === Verdict.Scan) {
      const report = this.#report!;
      this.#report = null;
      o.log.scanDetected(ms, family, src, dst, {
        scanType: report.scanType,
        rule: report.slow ? "slow" : o.rule,
      });
      o.onScan(report);
      return;
    }
    // Verdict.AlreadyDetected
    const s = formatAddress(family, src);
    if (o.summarize) {
      const sum = this.scans.get(s);
      if (sum) {
        sum.targets.add((addressHash(family, dst) << 16) | dport);
        sum.lastMs = ms;
      }
    }
    o.onRepeatScanner(ms, s);
  }
}
