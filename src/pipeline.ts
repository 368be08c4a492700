/**
 * The per-packet path: walk a batch of pcap records with one DataView, decode
 * each into one reused ProbeEvent, keep connection attempts that arrive at
 * this host, log them, and feed the detector. Counters are plain numbers here
 * (main copies them into the metrics once per batch): nothing on this path
 * allocates for a packet that is not logged or reported.
 */
import { addressKey, formatAddress } from "./address.ts";
import type { AllowList } from "./allowlist.ts";
import { decodePacket } from "./decode.ts";
import { type Detector, Verdict } from "./detector.ts";
import type { EventLog } from "./log.ts";
import { DecodeStatus, type Family, newProbeEvent, TCP } from "./types.ts";

/** A batch of pcap records: u32 ts_sec, u32 ts_usec, u32 caplen, u32 len (host order), then data. */
export interface RecordBatch {
  view: DataView;
  start: number;
  end: number;
}

/** A detected scan, with copies of everything the caller may keep. */
export interface ScanReport {
  /** Packet time of the probe that crossed the threshold, epoch ms. */
  ms: number;
  family: Family;
  src: string;
  dst: string;
  /** Distinct ports seen up to and including the threshold probe. */
  ports: number[];
}

/** Summary of one scan for the offline report. */
export interface ScanSummary {
  src: string;
  dst: string;
  ports: Set<number>;
  firstMs: number;
  lastMs: number;
}

/** Settings of the pipeline. */
export interface PipelineOptions {
  linktype: number;
  detector: Detector;
  allow: AllowList;
  log: EventLog;
  /** true: every destination is this host (offline without --local). */
  everyDestinationLocal: boolean;
  /** Called synchronously when a scan is detected (the caller bans). */
  onScan: (scan: ScanReport) => void;
  /** Called for further probes from a source already reported. */
  onRepeatScanner: (ms: number, src: string) => void;
  /** Keep per-scan summaries (offline mode). */
  summarize: boolean;
}

/** Stateful packet processor; one per capture. */
export class Pipeline {
  readonly #o: PipelineOptions;
  readonly #ev = newProbeEvent();
  /** Frames seen. */
  packets = 0;
  /** Connection attempts arriving at this host, per family. */
  attempts4 = 0;
  attempts6 = 0;
  /** Frames that could not be decoded. */
  decodeErrors = 0;
  /** Packet time of the last frame, epoch ms (0 before the first). */
  lastPacketMs = 0;
  /** Scans found, by source (offline summary). */
  readonly scans = new Map<string, ScanSummary>();

  constructor(opts: PipelineOptions) {
    this.#o = opts;
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
      this.#probe(ev.family, ev.flags, ev.src, ev.sport, ev.dst, ev.dport, ms);
    }
  }

  #probe(
    family: Family,
    flags: number,
    src: Uint8Array,
    sport: number,
    dst: Uint8Array,
    dport: number,
    ms: number,
  ): void {
    // A connection attempt: SYN without ACK (ECN bits and others allowed).
    if ((flags & (TCP.SYN | TCP.ACK)) !== TCP.SYN) return;
    const o = this.#o;
    const allow = o.allow;
    const srcKey = addressKey(family, src);
    if (allow.isLocalKey(srcKey)) return; // this host's own outbound connection
    if (!o.everyDestinationLocal && !allow.isLocalKey(addressKey(family, dst))) return;
    if (family === 4) this.attempts4++;
    else this.attempts6++;
    o.log.newConnection(ms, family, src, sport, dst, dport);
    if (allow.isAllowed(family, src)) return; // loopback or --allow: logged, never counted

    const v = o.detector.observe(srcKey, dport, ms);
    if (v === Verdict.Counted || v === Verdict.Repeat) return;
    const s = formatAddress(family, src);
    if (v === Verdict.Scan) {
      const d = formatAddress(family, dst);
      const ports = o.detector.lastScanPorts;
      o.log.scanDetected(ms, family, src, dst);
      if (o.summarize) {
        const prev = this.scans.get(s);
        if (prev) {
          for (const p of ports) prev.ports.add(p);
          prev.lastMs = ms;
        } else {
          const firstMs = o.detector.lastScanFirstMs;
          this.scans.set(s, { src: s, dst: d, ports: new Set(ports), firstMs, lastMs: ms });
        }
      }
      o.onScan({ ms, family, src: s, dst: d, ports });
      return;
    }
    // Verdict.AlreadyDetected
    if (o.summarize) {
      const sum = this.scans.get(s);
      if (sum) {
        sum.ports.add(dport);
        sum.lastMs = ms;
      }
    }
    o.onRepeatScanner(ms, s);
  }
}
