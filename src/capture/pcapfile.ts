/**
 * Capture files read in JavaScript: a classic pcap file (the format tcpdump
 * writes) is read in large blocks straight into the batch buffer, filtered
 * by libpcap's own compiled program run in src/capture/bpf.ts, and handed
 * to the pipeline as the same batches libpcap's path makes (records in host
 * byte order, microsecond stamps), without copying a record that passes.
 * The batches are slices of the block, each starting where the last ended.
 *
 * Why: libpcap's path (pcap_dispatch → BPF → pcap_dump into memory) reads
 * each record with fread, filters and writes it again — tcpdump's whole work
 * — and took ~0.35 s of a 1,000,000-SYN file, more than the detection.
 * Anything this reader does not take — pcapng, standard input or a pipe, a
 * version other than 2.4, FCS bits, a link type the decoder does not know,
 * or a file it cannot open — goes to libpcap (`openCaptureFile`), which also
 * words every error about opening a file. Damage after the header is
 * reported as libpcap words it, after the complete records before it.
 */
import { type Batch, compileFilter, Pcap } from "../../ffi/pcap.ts";
import { isSupportedLinktype, LINKTYPE } from "../detect/decode.ts";
import { type BpfFilter, compileBpf } from "./bpf.ts";

/** What an offline run needs of a capture file, whoever reads it. */
export type CaptureFile = Pick<
  Pcap,
  "linktype" | "live" | "source" | "dispatch" | "position" | "interrupt" | "close"
>;

/** Opens a capture file: in JavaScript when it can, else through libpcap. */
export function openCaptureFile(path: string, filter: string): CaptureFile {
  return PcapFile.open(path, filter) ?? Pcap.openOffline(path, filter);
}

const FILE_HEADER = 24;
const RECORD = 16;
/** libpcap's MAXIMUM_SNAPLEN: a longer record is damage, not a packet. */
const MAX_SNAPLEN = 262144;
/** DLT_RAW, what libpcap reports for LINKTYPE_RAW files (and compiles filters for). */
const DLT_RAW = 12;
/**
 * Read block: holds one of the longest records (measured: 4 MiB blocks were
 * no faster on the 1,000,000-SYN file, paired runs).
 */
const BLOCK_BYTES = 512 << 10;
/**
 * Records a batch: small enough that the pipeline finds a batch's bytes in
 * the cache (batches of a whole 4 MiB block took 0.3 s more on the
 * 1,000,000-SYN file), large enough to amortise a call.
 */
const MAX_BATCH = 1024;

/** Calls of the record walk on the empty block at open (see the constructor). */
const WARM_UP_CALLS = 10;

/** Magic numbers as read little-endian: [byte-swapped, nanosecond stamps]. */
const MAGICS = new Map<number, [boolean, boolean]>([
  [0xa1b2c3d4, [false, false]],
  [0xa1b23c4d, [false, true]],
  [0xd4c3b2a1, [true, false]],
  [0x4d3cb2a1, [true, true]],
]);

/** A classic pcap file read in JavaScript (see the module comment). */
export class PcapFile {
  readonly linktype: number;
  readonly live = false;
  readonly source: string;
  /** The filter it was opened with (a decoding thread opens the file again with it). */
  readonly filter: string;

  #file: Deno.FsFile;
  /** The file's byte order is this host's (little-endian): records need no rewriting for it. */
  readonly #le: boolean;
  #nano: boolean;
  #snap: number;
  #prog: BpfFilter | null;
  #buf = new Uint8Array(BLOCK_BYTES);
  #view = new DataView(this.#buf.buffer);
  #batch: Batch = { view: this.#view, start: 0, end: 0, count: 0 };
  /** Bytes of the block holding data, and where the next record starts. */
  #have = 0;
  #at = 0;
  /** File offset of the block's first byte. */
  #base = FILE_HEADER;
  #eof = false;
  #done = false;
  #closed = false;
  #pendingError: Error | null = null;

  private constructor(
    file: Deno.FsFile,
    source: string,
    header: DataView,
    swapped: boolean,
    nano: boolean,
    filter: string,
  ) {
    this.#file = file;
    this.source = source;
    this.filter = filter;
    this.#le = !swapped;
    this.#nano = nano;
    const link = header.getUint32(20, !swapped);
    this.linktype = link === LINKTYPE.RAW ? DLT_RAW : link;
    const snap = header.getUint32(16, !swapped);
    this.#snap = snap === 0 || snap > MAX_SNAPLEN ? MAX_SNAPLEN : snap;
    this.#prog = filter ? compileBpf(compileFilter(this.linktype, this.#snap, filter)) : null;
    // On the empty block, so that the code after the loop has run before V8
    // compiles the loop on the stack (OSR) in the first real call: compiled
    // without that code's type feedback, it was thrown away and compiled again
    // 40-100 times a run (--trace-deopt). Ten times: V8 keeps a function's
    // type feedback from its 8th call on (lazy feedback allocation), and with
    // one call 2 runs in 5 still threw the loop away 5-111 times; with ten
    // calls and the loop in walkRecords, 0 times in 20 runs.
    for (let i = 0; i < WARM_UP_CALLS; i++) this.#records();
  }

  /** The file read in JavaScript, or null when libpcap should read it. */
  static open(path: string, filter: string): PcapFile | null {
    if (path === "-") return null;
    let file: Deno.FsFile;
    try {
      file = Deno.openSync(path, { read: true });
    } catch {
      return null; // libpcap says why, in its words
    }
    try {
      const h = new Uint8Array(FILE_HEADER);
      if (!file.statSync().isFile || readFully(file, h) !== FILE_HEADER) return close(file);
      const v = new DataView(h.buffer);
      const kind = MAGICS.get(v.getUint32(0, true));
      if (!kind) return close(file);
      const [swapped, nano] = kind;
      const link = v.getUint32(20, !swapped);
      if (v.getUint16(4, !swapped) !== 2 || v.getUint16(6, !swapped) !== 4) return close(file);
      if (link > 0xffff || !isSupportedLinktype(link)) return close(file);
      return new PcapFile(file, path, v, swapped, nano, filter);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** The next batch of records that pass the filter (count may be 0); null at the end. */
  dispatch(): Batch | null {
    if (this.#pendingError) {
      const e = this.#pendingError;
      this.#pendingError = null;
      this.#done = true;
      throw e;
    }
    if (this.#done) return null;
    this.#refill();
    const b = this.#records();
    if (b.count === 0 && this.#at >= this.#have && this.#eof) {
      this.#done = true;
      if (this.#pendingError) return this.dispatch();
      return null;
    }
    return b;
  }

  /**
   * When the next record is not whole in the block: moves what there is of
   * it to the front and reads the file until the block is full.
   */
  #refill(): void {
    if (this.#eof) return;
    const left = this.#have - this.#at;
    if (left >= RECORD && RECORD + this.#view.getUint32(this.#at + 8, this.#le) <= left) {
      return;
    }
    if (this.#at > 0) {
      this.#buf.copyWithin(0, this.#at, this.#have);
      this.#base += this.#at;
      this.#have -= this.#at;
      this.#at = 0;
    }
    try {
      while (!this.#eof && this.#have < this.#buf.length) {
        const n = this.#file.readSync(this.#buf.subarray(this.#have));
        if (n === null) this.#eof = true;
        else this.#have += n;
      }
    } catch (e) {
      this.#eof = true;
      this.#damaged(`error reading dump file: ${e instanceof Error ? e.message : e}`);
    }
  }

  /**
   * Walks the complete records of the block (walkRecords), keeping those the
   * filter passes at the front.
   */
  #records(): Batch {
    const start = this.#at, r = this.#walked;
    const rewrite = !this.#le || this.#nano;
    walkRecords(
      this.#view,
      this.#buf,
      this.#le,
      rewrite,
      this.#nano,
      this.#prog,
      this.#snap,
      start,
      this.#have,
      r,
    );
    const at = r[0];
    if (r[3] >= 0) {
      this.#damaged(`invalid packet capture length ${r[3]}, bigger than maximum of ${MAX_SNAPLEN}`);
      this.#have = at;
    }
    this.#at = at;
    if (this.#eof) this.#truncated();
    // One Batch object, refilled, rather than a literal per call.
    const b = this.#batch;
    b.start = start;
    b.end = r[1];
    b.count = r[2];
    return b;
  }

  /** What walkRecords found: [where it stopped, end of the kept records, their count, a bad length or -1]. */
  readonly #walked = new Int32Array(4);

  /** At the end of the file: a record cut short is the file's damage. */
  #truncated(): void {
    const v = this.#view, le = this.#le, at = this.#at, left = this.#have - at;
    if (left <= 0 || (left >= RECORD && RECORD + v.getUint32(at + 8, le) <= left)) return;
    this.#damaged(
      left < RECORD
        ? `truncated dump file; tried to read ${RECORD} header bytes, only got ${left}`
        : `truncated dump file; tried to read ${v.getUint32(at + 8, le)} captured bytes, only got ${
          left - RECORD
        }`,
    );
    this.#at = this.#have;
  }

  #damaged(msg: string): void {
    this.#pendingError ??= new Error(
      `capture file "${this.source}" is damaged after its last complete packet: ${msg}`,
    );
  }

  /** Bytes of the file read so far (for progress). */
  position(): number | null {
    return this.#base + this.#at;
  }

  /** Ends the reading: the next dispatch returns null. */
  interrupt(): void {
    this.#done = true;
  }

  /** Closes the file; safe to call twice. */
  close(): void {
    this.#done = true;
    if (this.#closed) return;
    this.#closed = true;
    this.#file.close();
  }
}

function close(file: Deno.FsFile): null {
  file.close();
  return null;
}

/** Reads until `into` is full or the file ends; the bytes read. */
function readFully(file: Deno.FsFile, into: Uint8Array): number {
  let have = 0;
  while (have < into.length) {
    const n = file.readSync(into.subarray(have));
    if (n === null) break;
    have += n;
  }
  return have;
}

/**
 * Walks the complete records of `v` from `start` to `have`, at most
 * MAX_BATCH kept, keeping those the filter passes at the front (in place: a
 * record moves only once one before it was dropped, or its header needs
 * rewriting to this host's order and microseconds). Results into `r` (see
 * PcapFile.#walked); a length over MAX_SNAPLEN stops it there. A function of
 * its own, its state all in arguments: V8 compiles its loop on the stack
 * (OSR) with the feedback of every access in it (a private field read or
 * written around the loop, as in a method, was thrown away 5-111 times a run).
 */
function walkRecords(
  v: DataView,
  buf: Uint8Array,
  le: boolean,
  rewrite: boolean,
  nano: boolean,
  prog: BpfFilter | null,
  snap: number,
  start: number,
  have: number,
  r: Int32Array,
): void {
  let at = start, out = start, count = 0, bad = -1;
  while (count < MAX_BATCH && at + RECORD <= have) {
    const caplen = v.getUint32(at + 8, le);
    if (caplen > MAX_SNAPLEN) {
      bad = caplen;
      break;
    }
    if (at + RECORD + caplen > have) break;
    const len = v.getUint32(at + 12, le);
    const keep = caplen < snap ? caplen : snap;
    if (prog === null || prog(v, at + RECORD, keep, len) !== 0) {
      if (out !== at || rewrite || keep !== caplen) {
        const sec = v.getUint32(at, le), frac = v.getUint32(at + 4, le);
        buf.copyWithin(out + RECORD, at + RECORD, at + RECORD + keep);
        v.setUint32(out, sec, true);
        v.setUint32(out + 4, nano ? Math.floor(frac / 1000) : frac, true);
        v.setUint32(out + 8, keep, true);
        v.setUint32(out + 12, len, true);
      }
      out += RECORD + keep;
      count++;
    }
    at += RECORD + caplen;
  }
  r[0] = at;
  r[1] = out;
  r[2] = count;
  r[3] = bad;
}
