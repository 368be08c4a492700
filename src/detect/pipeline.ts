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
import { type Admission, Admit } from "./admission.ts";
import { type ScanDetector, Verdict } from "./detector.ts";
import type { EventLog } from "../report/log.ts";
import { DecodeStatus, type Family, newProbeEvent, type ProbeEvent, TCP } from "../types.ts";

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
  /** The source address's bytes (4 or 16); a prefix's bytes with the host part zero. */
  key: Uint8Array;
  /** Prefix length of the source: 32 or 128 for one address, less for an IPv6 prefix (`src` is then CIDR text). */
  prefix: number;
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
  /**
   * Where sources wait for their second distinct target before the rules
   * track them (admission.ts); null = every source goes straight in.
   */
  admission?: Admission | null;
  /** IPv6 sources are also counted per prefix of this length (1-127; 128 = off; default 64). */
  ipv6Prefix?: number;
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

/** #admitted's source was not looked up in the admission sketch yet. */
const NOT_SEEN = -1;

/** A slot's prefix bucket when the read-ahead did not key it, or found it protected. */
const PFX_UNKNOWN = -1, PFX_PROTECTED = -2;

/**
 * What the read-ahead made of a slot's packet: nothing to do (neither a probe
 * nor a SYN-ACK), a SYN-ACK (#accepted), a probe for #probe to place (this
 * host's own, or not to this host), a probe from elsewhere to this host (for
 * the rules: read ahead), or one from an allowed source (logged, never counted).
 */
const K_NONE = 0, K_SYNACK = 1, K_PROBE = 2, K_RULES = 3, K_ALLOWED = 4;

/** Packets decoded ahead per chunk of a batch (see Pipeline.processBatch). */
const CHUNK = 64;

/**
 * Where each of a chunk's arrays lies in its one buffer (Pipeline.chunkBytes):
 * the address slots (16 bytes a packet, as bytes and as words), the times,
 * the 32-bit and the 8-bit arrays, and a head of four counts.
 */
const L_SRCS = 0, L_DSTS = 16 * CHUNK, L_SRCW = 32 * CHUNK, L_DSTW = 48 * CHUNK;
const L_MS = 64 * CHUNK, L_SPORT = 72 * CHUNK, L_DPORT = 76 * CHUNK, L_KEY = 80 * CHUNK;
const L_PRINT = 84 * CHUNK, L_PFX = 88 * CHUNK, L_PFX_PRINT = 92 * CHUNK, L_BUCKETS = 96 * CHUNK;
const L_FAM = 104 * CHUNK, L_TYPES = 105 * CHUNK, L_KINDS = 106 * CHUNK, L_HEAD = 107 * CHUNK;
/** Bytes of a chunk: its arrays and head, rounded up to whole cache lines. */
export const CHUNK_BYTES = 108 * CHUNK;
/** The head's counts: packets with a slot, buckets to read ahead, frames walked, frames not decodable. */
const H_COUNT = 0, H_BUCKETS = 1, H_FRAMES = 2, H_ERRORS = 3;

/** CHUNK address buffers of 16 bytes in `buf` from `at`. */
function slots(buf: ArrayBuffer, at: number): Uint8Array[] {
  return Array.from({ length: CHUNK }, (_, i) => new Uint8Array(buf, at + 16 * i, 16));
}

/** CHUNK address buffers of 4 words in `buf` from `at`. */
function wordSlots(buf: ArrayBuffer, at: number): Int32Array[] {
  return Array.from({ length: CHUNK }, (_, i) => new Int32Array(buf, at + 16 * i, 4));
}

/** Bytes i to i + 3 of an address as a word, most significant first (signed, as ProbeEvent.srcW). */
function word(b: Uint8Array, i: number): number {
  return (b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3];
}

/** The mask of a 32-bit word holding `bits` leading prefix bits (<= 0: none, >= 32: all). */
function mask(bits: number): number {
  return bits >= 32 ? -1 : bits <= 0 ? 0 : -1 << (32 - bits);
}

/** 16-bit fold of an address, the high half of a target number. */
function addressHash(family: Family, b: Uint8Array): number {
  let h = 0;
  const n = family === 4 ? 4 : 16;
  for (let i = 0; i < n; i += 2) h ^= (b[i] << 8) | b[i + 1];
  return h;
}

/** addressHash of an address given as words (ProbeEvent.srcW/dstW). */
function wordsHash(family: Family, w: Int32Array): number {
  const x = family === 4 ? w[0] : w[0] ^ w[1] ^ w[2] ^ w[3];
  return ((x >>> 16) ^ x) & 0xffff;
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
  /** Sources admitted into the rules' tables (their second distinct target). */
  admitted = 0;
  /** SYNs this host accepted (it sent the SYN-ACK): taken back from the rules. */
  acceptedSyns = 0;
  /** Packet time of the last frame, epoch ms (0 before the first). */
  lastPacketMs = 0;
  /** Scans found, by source (offline summary). */
  readonly scans = new Map<string, ScanSummary>();

  constructor(opts: PipelineOptions) {
    this.chunkBytes = new Uint8Array(this.#chunk);
    this.#o = opts;
    this.#adm = opts.admission ?? null;
    const p = this.#p6 = opts.ipv6Prefix ?? 64;
    if (p < 128 && this.#adm !== null && this.#adm.prefix6 !== p) {
      throw new Error(`the admission sketch keys /${this.#adm.prefix6} prefixes, not /${p}`);
    }
    this.#m0 = mask(p);
    this.#m1 = mask(p - 32);
    this.#m2 = mask(p - 64);
    this.#m3 = mask(p - 96);
  }
  readonly #adm: Admission | null;
  readonly #p6: number;
  /** The IPv6 prefix's mask, word by word. */
  readonly #m0: number;
  readonly #m1: number;
  readonly #m2: number;
  readonly #m3: number;

  /** Whether every destination counts as this host (a reload changed --hook). */
  setEveryDestinationLocal(on: boolean): void {
    this.#o.everyDestinationLocal = on;
  }

  /**
   * Processes every record of a batch, in chunks of CHUNK packets: the
   * chunk is decoded first into its slots and the admission buckets of the
   * probes bound for the rules are keyed (decodeNext), then read in one
   * loop (touch), then the chunk's packets go through the rules in packet
   * order (#runChunk). Under a spoofed-source flood every packet's bucket is
   * a cache miss in a table of tens of MiB; taken one packet at a time they
   * are paid one after another (~0.23 µs each here), read ahead for a chunk
   * they overlap (bench/detector_bench.ts sketch).
   */
  processBatch(b: RecordBatch): void {
    const view = b.view, end = b.end;
    let off = b.start;
    do {
      off = this.decodeNext(view, off, end);
      this.#runChunk();
    } while (off >= 0);
  }

  /** One decoded chunk's state (its slots and its counts), for a decoding thread to hand over. */
  readonly chunkBytes: Uint8Array<ArrayBuffer>;

  /**
   * The second half of processBatch, for a chunk another pipeline decoded
   * (`decodeNext`; same settings, and the same admission keys): its bytes
   * at `at` in `from` are taken into this pipeline's chunk and run.
   */
  runDecoded(from: Uint8Array, at: number): void {
    this.chunkBytes.set(from.subarray(at, at + CHUNK_BYTES));
    const head = this.#head;
    this.packets += head[H_FRAMES];
    this.decodeErrors += head[H_ERRORS];
    this.#runChunk();
  }

  /**
   * Decodes records from `off` into the chunk's slots, up to CHUNK packets
   * bound for somewhere (a frame that is not a probe or a SYN-ACK takes no
   * slot), and keys the admission buckets of the probes bound for the rules.
   * Returns where the next chunk starts, or -1 at the batch's end. The first
   * half of processBatch; on its own for a decoding thread
   * (src/capture/decode_thread.ts), which hands `chunkBytes` over.
   */
  decodeNext(view: DataView, off: number, end: number): number {
    const o = this.#o, ev = this.#ev, adm = this.#adm;
    const srcs = this.#srcs, dsts = this.#dsts, fam = this.#fam, types = this.#types;
    const sport = this.#sport, dport = this.#dport, times = this.#ms, keyAt = this.#keyAt;
    const kinds = this.#kinds, pfxAt = this.#pfxAt, srcW = this.#srcW, dstW = this.#dstW;
    let n = 0, nb = 0, frames = 0, errors = 0, more = true;
    while (n < CHUNK) {
      if (off + 16 > end) {
        more = false;
        break;
      }
      const tsSec = view.getUint32(off, true);
      const tsUsec = view.getUint32(off + 4, true);
      const caplen = view.getUint32(off + 8, true);
      const data = off + 16;
      if (data + caplen > end) { // never read past the batch
        more = false;
        break;
      }
      off = data + caplen;
      frames++;
      ev.src = srcs[n];
      ev.dst = dsts[n];
      ev.srcW = srcW[n];
      ev.dstW = dstW[n];
      const st = decodePacket(o.linktype, view, data, caplen, ev);
      if (st !== DecodeStatus.Ok) {
        if (st === DecodeStatus.Malformed) errors++;
        continue;
      }
      times[n] = tsSec * 1000 + tsUsec / 1000;
      fam[n] = ev.family;
      sport[n] = ev.sport;
      dport[n] = ev.dport;
      keyAt[n] = -1;
      pfxAt[n] = PFX_UNKNOWN;
      const type = types[n] = probeType(ev.flags);
      if (type === T_NONE) {
        const synAck = (ev.flags & (TCP.SYN | TCP.ACK | TCP.RST)) === (TCP.SYN | TCP.ACK);
        kinds[n] = synAck ? K_SYNACK : K_NONE;
      } else if (!this.#toRules(ev)) kinds[n] = K_PROBE;
      else if (o.allow.isAllowed(ev.family, ev.src)) kinds[n] = K_ALLOWED;
      else {
        kinds[n] = K_RULES;
        if (adm !== null) nb = this.#keysOf(adm, n, nb);
      }
      n++;
    }
    this.packets += frames;
    this.decodeErrors += errors;
    const head = this.#head;
    head[H_COUNT] = n;
    head[H_BUCKETS] = nb;
    head[H_FRAMES] = frames;
    head[H_ERRORS] = errors;
    return more ? off : -1;
  }

  /** Reads the decoded chunk's buckets ahead, then runs its packets in order. */
  #runChunk(): void {
    const head = this.#head, n = head[H_COUNT], nb = head[H_BUCKETS];
    const times = this.#ms, kinds = this.#kinds, fam = this.#fam;
    if (nb > 0) this.#touched ^= this.#adm!.touch(this.#buckets, nb);
    for (let k = 0; k < n; k++) {
      const ms = times[k], kind = kinds[k];
      this.lastPacketMs = ms;
      if (kind >= K_PROBE) this.#probe(k, kind);
      else if (kind === K_SYNACK) {
        this.#accepted(fam[k] as Family, this.#srcs[k], this.#sport[k], this.#dsts[k]);
      }
    }
  }

  /**
   * One chunk's decoded packets (see processBatch), every array a view of
   * one buffer (chunkBytes), so that a chunk decoded on another thread is
   * taken over with one copy (runDecoded).
   */
  readonly #chunk = new ArrayBuffer(CHUNK_BYTES);
  readonly #srcs = slots(this.#chunk, L_SRCS);
  readonly #dsts = slots(this.#chunk, L_DSTS);
  readonly #srcW = wordSlots(this.#chunk, L_SRCW);
  readonly #dstW = wordSlots(this.#chunk, L_DSTW);
  readonly #fam = new Uint8Array(this.#chunk, L_FAM, CHUNK);
  /** Per slot: the probe type (probeType) and what the read-ahead made of the packet (K_*). */
  readonly #types = new Int8Array(this.#chunk, L_TYPES, CHUNK);
  readonly #kinds = new Uint8Array(this.#chunk, L_KINDS, CHUNK);
  readonly #sport = new Int32Array(this.#chunk, L_SPORT, CHUNK);
  readonly #dport = new Int32Array(this.#chunk, L_DPORT, CHUNK);
  readonly #ms = new Float64Array(this.#chunk, L_MS, CHUNK);
  /** The chunk's packets with a slot, buckets to read ahead, frames walked and frames not decodable. */
  readonly #head = new Int32Array(this.#chunk, L_HEAD, 4);
  /** What the read-ahead loads add up to (kept so that they are not optimised away). */
  #touched = 0;

  /** Admission buckets to read ahead: an IPv4 source's, an IPv6 source's and its prefix's. */
  readonly #buckets = new Int32Array(this.#chunk, L_BUCKETS, 2 * CHUNK);
  /** Per slot: the admission bucket and fingerprint of its source address (bucket -1: none). */
  readonly #keyAt = new Int32Array(this.#chunk, L_KEY, CHUNK);
  readonly #printAt = new Int32Array(this.#chunk, L_PRINT, CHUNK);
  /**
   * Per slot: the admission bucket and fingerprint of its IPv6 source's
   * prefix, or PFX_PROTECTED / PFX_UNKNOWN (not read ahead, or IPv4).
   */
  readonly #pfxAt = new Int32Array(this.#chunk, L_PFX, CHUNK);
  readonly #pfxPrintAt = new Int32Array(this.#chunk, L_PFX_PRINT, CHUNK);

  /**
   * Whether a just decoded probe goes on to the rules (not this host's own,
   * and to this host): only those are worth reading ahead. The allow-list
   * and open ports are left to #verdict (a wasted read ahead at worst).
   */
  #toRules(ev: ProbeEvent): boolean {
    const allow = this.#o.allow;
    if (allow.isLocalWords(ev.family, ev.srcW)) return false;
    return this.#o.everyDestinationLocal || allow.isLocalWords(ev.family, ev.dstW);
  }

  /**
   * Keys slot `slot`'s source (address, and for IPv6 its prefix) in the
   * admission sketch and appends their buckets to #buckets at `at`; returns
   * the new length.
   */
  #keysOf(adm: Admission, slot: number, at: number): number {
    const ev = this.#ev, w = ev.srcW, out = this.#buckets;
    adm.keyWords(ev.family, w);
    if (ev.family === 6 && this.#p6 < 128) {
      // The prefix's protection and bucket, worked out once for #verdict too.
      if (this.#protectedPrefix(w)) this.#pfxAt[slot] = PFX_PROTECTED;
      else {
        this.#pfxAt[slot] = out[at++] = adm.keyPrefixBucket;
        this.#pfxPrintAt[slot] = adm.keyPrefixPrint;
      }
    }
    this.#keyAt[slot] = out[at++] = adm.keyBucket;
    this.#printAt[slot] = adm.keyPrint;
    return at;
  }

  /**
   * A SYN-ACK: when this host sends it, the client's SYN to that port was
   * accepted (a local listener, a DNAT or redirect to a local or forwarded
   * service, a container), so it was a connection, not a probe: its target
   * is taken back from the client, and from the client's IPv6 prefix. The
   * SYN was counted at once when it came (a refused or unanswered SYN costs
   * no added latency); the SYN-ACK leaves within microseconds, before the
   * client's next SYN can arrive, so accepted connections never add up.
   */
  #accepted(family: Family, local: Uint8Array, port: number, client: Uint8Array): void {
    const o = this.#o, allow = o.allow;
    if (allow.isLocal(family, client)) return;
    if (!o.everyDestinationLocal && !allow.isLocal(family, local)) return;
    if (allow.isAllowed(family, client)) return;
    this.acceptedSyns++;
    const target = (addressHash(family, local) << 16) | port;
    const full = family === 4 ? 32 : 128;
    this.#forgive(family, client, full, target);
    if (family === 6 && this.#p6 < 128) {
      const pb = this.#prefixOf(client);
      if (!this.#prefixProtected()) this.#forgive(6, pb, this.#p6, target);
    }
  }

  /** Takes back `target` from a source (address or prefix) wherever it is counted. */
  #forgive(family: Family, b: Uint8Array, len: number, target: number): void {
    const o = this.#o, adm = this.#adm;
    if (adm !== null) {
      const a = family === 4 ? adm.forgive(0, 1, word(b, 0), 0, 0, 0, target) : adm.forgive(
        len,
        4,
        word(b, 0),
        word(b, 4),
        word(b, 8),
        word(b, 12),
        target,
      );
      if (a !== Admit.Admitted) return;
    }
    const key = sourceKey(family, b, len);
    o.detector.forgive(key, target);
    o.slow?.forgive(key, target);
  }

  /** The scan #verdict found, for #probe to log and report. */
  #report: ScanReport | null = null;
  /** The rule that gave #rules its verdict, and whether it was the slow one. */
  #det: ScanDetector | null = null;
  #slowHit = false;
  /** Prefix length of the source #verdict counted last (32/128: the address itself). */
  #prefix = 32;
  /** The masked prefix of the last #prefixOf. */
  readonly #prefixBytes = new Uint8Array(16);
  /** This host's and the allowed blocks' prefixes (4 words each), and the allow-list version they match. */
  #protected6 = new Int32Array(0);
  #protectedVersion = -1;

  /**
   * Feeds one target of a source to the rules. A source the rules do not
   * hold yet goes through the admission sketch first :
   * only its second distinct target brings it, with both targets, into the
   * rules' tables, so a one-packet-per-source flood never touches them, and
   * the source's key (a string for IPv6) is only made for admitted sources.
   */
  #rules(
    family: Family,
    b: Uint8Array,
    len: number,
    target: number,
    ms: number,
    pre: number,
    print: number,
  ): Verdict {
    if (pre < 0 || this.#adm === null) return this.#admitted(family, b, len, target, ms, NOT_SEEN);
    // Keyed when the chunk was read ahead: the flood's path, a lookup and nothing else.
    const a = this.#adm.seeKey(pre, print, target, ms);
    if (a === Admit.First) return Verdict.Counted;
    if (a === Admit.Repeat) return Verdict.Repeat;
    return this.#admitted(family, b, len, target, ms, a);
  }

  /**
   * #rules for a source the sketch promoted or had admitted (`seen`), or one
   * not looked up yet (NOT_SEEN: not read ahead, or no sketch).
   */
  #admitted(
    family: Family,
    b: Uint8Array,
    len: number,
    target: number,
    ms: number,
    seen: Admit | typeof NOT_SEEN,
  ): Verdict {
    const o = this.#o, adm = this.#adm;
    const slowRule = o.slow;
    let replayed = Verdict.Counted, slowReplayed = Verdict.Counted;
    // A prefix comes as its address, masked (into #prefixBytes) only when its bytes are needed.
    const kb = len === 128 || family === 4 ? b : this.#prefixOf(b);
    let key: number | string;
    if (adm !== null) {
      let a = seen;
      if (a === NOT_SEEN) {
        a = family === 4 ? adm.see(0, 1, word(kb, 0), 0, 0, 0, target, ms) : adm.see(
          len,
          4,
          word(kb, 0),
          word(kb, 4),
          word(kb, 8),
          word(kb, 12),
          target,
          ms,
        );
        if (a === Admit.First) return Verdict.Counted;
        if (a === Admit.Repeat) return Verdict.Repeat;
      }
      key = sourceKey(family, kb, len);
      if (a === Admit.Promote) {
        // The held first target, replayed: when the source was admitted
        // before (its marker pushed out since), it may be the one that
        // crosses a threshold, and then its verdict is this packet's.
        this.admitted++;
        replayed = o.detector.observe(key, adm.prevTarget, adm.prevMs);
        slowReplayed = slowRule?.observe(key, adm.prevTarget, adm.prevMs) ?? Verdict.Counted;
      }
    } else key = sourceKey(family, kb, len);
    let v = o.detector.observe(key, target, ms);
    if (replayed === Verdict.Scan) v = Verdict.Scan;
    this.#det = o.detector;
    this.#slowHit = false;
    if (slowRule !== null) {
      // One report per scanner, whichever rule saw it first.
      const observed = slowRule.observe(key, target, ms);
      const sv = slowReplayed === Verdict.Scan ? Verdict.Scan : observed;
      if (sv === Verdict.AlreadyDetected) v = Verdict.AlreadyDetected;
      else if (sv === Verdict.Scan && (v === Verdict.Counted || v === Verdict.Repeat)) {
        v = sv;
        this.#slowHit = true;
        this.#det = slowRule;
      }
    }
    return v;
  }

  /** Masks an IPv6 address to the configured prefix, into #prefixBytes. */
  #prefixOf(src: Uint8Array): Uint8Array {
    const len = this.#p6, pb = this.#prefixBytes, whole = len >> 3;
    let i = 0;
    for (; i < whole; i++) pb[i] = src[i];
    if (len & 7) pb[i] = src[i++] & (0xff << (8 - (len & 7)));
    for (; i < 16; i++) pb[i] = 0;
    return pb;
  }

  /**
   * True when the prefix in #prefixBytes holds one of this host's addresses
   * or an allowed block: never counted (nor banned) as a range. A few word
   * compares per IPv6 packet; the list is rebuilt when the allow-list changes.
   */
  #prefixProtected(): boolean {
    const b = this.#prefixBytes;
    return this.#protectedWords(
      word(b, 0),
      word(b, 4),
      word(b, 8),
      word(b, 12),
    );
  }

  /** #prefixProtected for the prefix of an address given as its words (kept in their array, see Admission.keyWords). */
  #protectedPrefix(w: Int32Array): boolean {
    return this.#protectedWords(w[0] & this.#m0, w[1] & this.#m1, w[2] & this.#m2, w[3] & this.#m3);
  }

  /** #prefixProtected for a prefix given as four (masked) words. */
  #protectedWords(w0: number, w1: number, w2: number, w3: number): boolean {
    if (this.#protectedVersion !== this.#o.allow.version) this.#protectPrefixes();
    const l = this.#protected6;
    for (let i = 0; i < l.length; i += 4) {
      if (l[i] === w0 && l[i + 1] === w1 && l[i + 2] === w2 && l[i + 3] === w3) return true;
    }
    return false;
  }

  /** Rebuilds #protected6 from the allow-list (apart: the per-packet test stays small). */
  #protectPrefixes(): void {
    const allow = this.#o.allow;
    const list: number[] = [];
    const add = (b: Uint8Array) => {
      const pb = this.#prefixOf(b);
      for (let i = 0; i < 16; i += 4) {
        list.push(word(pb, i));
      }
    };
    const saved = this.#prefixBytes.slice();
    for (const a of allow.local) if (a.family === 6) add(a.bytes);
    for (const c of allow.allowed) if (c.family === 6 && c.prefix >= this.#p6) add(c.bytes);
    add(new Uint8Array([...new Array(15).fill(0), 1]));
    this.#prefixBytes.set(saved);
    this.#protected6 = Int32Array.from(list);
    this.#protectedVersion = allow.version;
  }

  /**
   * Counts the probe in the rules and, when it crosses a threshold, reports
   * the scan through onScan (the caller bans) before anything is logged.
   * Allowed sources and SYNs to open ports are never counted (Verdict.Counted).
   * An IPv6 source is also counted as its prefix (a scanner that takes a new
   * address of its /64 for every probe), unless the address itself is already
   * reported; when the address is reported, its prefix forgets its ports so
   * that its neighbours are not blamed for them.
   */
  #verdict(
    k: number,
    kind: number,
    type: number,
    family: Family,
    src: Uint8Array,
    dport: number,
    ms: number,
  ): Verdict {
    const o = this.#o;
    if (kind === K_ALLOWED) return Verdict.Counted; // loopback or --allow: logged, never counted
    // A SYN to a port this host serves is a client, not a probe.
    if (type === T_SYN && o.openPorts !== null && o.openPorts.has(dport)) {
      this.openPortProbes++;
      return Verdict.Counted;
    }
    const target = (wordsHash(family, this.#dstW[k]) << 16) | dport;
    const full = family === 4 ? 32 : 128;
    // What the read-ahead worked out for this packet's source (its buckets and fingerprints).
    let v = this.#rules(family, src, full, target, ms, this.#keyAt[k], this.#printAt[k]);
    this.#prefix = full;
    if (family === 6 && this.#p6 < 128) v = this.#prefixVerdict(k, src, target, ms, v);
    if (v !== Verdict.Scan) return v;
    const prefix = this.#prefix;
    this.#report = this.#scanReport(
      type,
      family,
      prefix < full ? this.#prefixBytes : src,
      prefix,
      this.#dsts[k],
      ms,
    );
    o.banFirst?.(this.#report);
    return v;
  }

  /**
   * The part of #verdict for an IPv6 source's prefix (apart, so that
   * #verdict stays small enough for V8 to inline): `v` is the address's
   * verdict; sets #prefix when the prefix's verdict is the one returned.
   */
  #prefixVerdict(k: number, src: Uint8Array, target: number, ms: number, v: Verdict): Verdict {
    const o = this.#o, pfx = this.#pfxAt[k], p6 = this.#p6;
    const counted = pfx === PFX_UNKNOWN
      ? (this.#prefixOf(src), !this.#prefixProtected())
      : pfx !== PFX_PROTECTED;
    if (!counted) return v;
    if (v === Verdict.Counted || v === Verdict.Repeat) {
      const pv = this.#rules(6, src, p6, target, ms, pfx, this.#pfxPrintAt[k]);
      if (pv === Verdict.Scan || pv === Verdict.AlreadyDetected) {
        this.#prefix = p6;
        return pv;
      }
    } else if (v === Verdict.Scan) {
      const key = sourceKey(6, this.#prefixOf(src), p6);
      o.detector.forget(key);
      o.slow?.forget(key);
    }
    return v;
  }

  /** The report of a scan (and its offline summary). */
  #scanReport(
    type: number,
    family: Family,
    src: Uint8Array,
    prefix: number,
    dst: Uint8Array,
    ms: number,
  ): ScanReport {
    const isRange = prefix < (family === 4 ? 32 : 128);
    const s = isRange ? `${formatAddress(6, src)}/${prefix}` : formatAddress(family, src);
    const d = formatAddress(family, dst);
    const det = this.#det!;
    const targets = det.lastScanPorts;
    if (this.#o.summarize) {
      const prev = this.scans.get(s);
      if (prev) {
        for (const t of targets) prev.targets.add(t);
        prev.lastMs = ms;
      } else {
        const firstMs = det.lastScanFirstMs;
        this.scans.set(s, { src: s, dst: d, targets: new Set(targets), firstMs, lastMs: ms });
      }
    }
    return {
      ms,
      family,
      src: s,
      key: src.slice(0, family === 4 ? 4 : 16),
      prefix,
      dst: d,
      ports: targets.map((t) => t & 0xffff),
      scanType: TYPES[type] as ProbeType,
      slow: this.#slowHit,
    };
  }

  /** A probe in slot `k` of the chunk; `kind` is what the read-ahead made of it. */
  #probe(k: number, kind: number): void {
    // The time read from the slot: a double passed to a call is a heap number made for it.
    const o = this.#o, ms = this.#ms[k];
    const allow = o.allow;
    const family = this.#fam[k] as Family, type = this.#types[k];
    const src = this.#srcs[k], dst = this.#dsts[k], dport = this.#dport[k];
    if (kind !== K_PROBE) {
      // read ahead: not ours, to this host
    } else if (allow.isLocal(family, src)) {
      // This host's own connection: never counted against the peer, but many
      // ports of one remote host is a sign that this host is compromised.
      if (o.outbound !== null && !allow.isLocal(family, dst)) {
        const dstKey = addressKey(family, dst);
        const target = (addressHash(family, dst) << 16) | dport;
        const v = o.outbound.observe(dstKey, target, ms);
        if (v === Verdict.Scan) {
          this.outboundScans++;
          o.log.scanDetected(ms, family, src, dst, { outbound: true, scanType: TYPES[type] });
        }
      }
      return;
    } else if (!o.everyDestinationLocal && !allow.isLocal(family, dst)) return;
    if (type === T_SYN) {
      if (family === 4) this.attempts4++;
      else this.attempts6++;
    } else this.stealthProbes++;
    const v = this.#verdict(k, kind, type, family, src, dport, ms);
    // The ban comes first; the lines about this probe are written after it.
    o.log.newConnection(ms, family, src, this.#sport[k], dst, dport);
    if (v === Verdict.Counted || v === Verdict.Repeat) return;
    const isRange = this.#prefix < (family === 4 ? 32 : 128);
    if (v === Verdict.Scan) {
      const report = this.#report!;
      this.#report = null;
      o.log.scanDetected(ms, family, src, dst, {
        scanType: report.scanType,
        rule: report.slow ? "slow" : o.rule,
        source: report.src, // the text #scanReport made (CIDR for a range): not formatted twice
      });
      o.onScan(report);
      return;
    }
    // Verdict.AlreadyDetected
    const s = this.#repeatText(family, isRange ? this.#prefixBytes : src, this.#prefix, isRange);
    if (o.summarize) {
      const sum = this.scans.get(s);
      if (sum) {
        sum.targets.add((addressHash(family, dst) << 16) | dport);
        sum.lastMs = ms;
      }
    }
    o.onRepeatScanner(ms, s);
  }

  /** The source text of the last repeat, its bytes, family and prefix length (see #repeatText). */
  #lastRepeat = "";
  readonly #lastRepeatBytes = new Uint8Array(16);
  #lastRepeatKind = -1;

  /**
   * The text of a reported source sending more probes (CIDR for a range).
   * A scanner goes on for thousands of probes after its report: its text is
   * made once and reused while the same source keeps coming, instead of a
   * new string per packet.
   */
  #repeatText(family: Family, b: Uint8Array, len: number, isRange: boolean): string {
    const n = family === 4 ? 4 : 16, last = this.#lastRepeatBytes;
    const kind = family * 256 + len; // family and prefix length: 10.0.0.1 is not a00:1::
    let same = this.#lastRepeatKind === kind;
    for (let i = 0; same && i < n; i++) same = last[i] === b[i];
    if (same) return this.#lastRepeat;
    const s = isRange ? `${formatAddress(6, b)}/${len}` : formatAddress(family, b);
    last.set(b.subarray(0, n));
    this.#lastRepeatKind = kind;
    this.#lastRepeat = s;
    return s;
  }
}

/**
 * The rules' key of a source: addressKey for one address; for an IPv6
 * prefix, its eight 16-bit groups and its length as a ninth code unit, so it
 * never equals an address key (eight units).
 */
function sourceKey(family: Family, b: Uint8Array, len: number): number | string {
  if (family === 4 || len === 128) return addressKey(family, b);
  return String.fromCharCode(
    (b[0] << 8) | b[1],
    (b[2] << 8) | b[3],
    (b[4] << 8) | b[5],
    (b[6] << 8) | b[7],
    (b[8] << 8) | b[9],
    (b[10] << 8) | b[11],
    (b[12] << 8) | b[13],
    (b[14] << 8) | b[15],
    len,
  );
}
