/**
 * psd-style port-scan scoring (`--detector psd`), after Solar Designer's
 * scanlogd and the kernel's xt_psd match, with their defaults: each NEW
 * destination port a source tries adds a weight (3 for a port below 1024, 1
 * for the others) and a scan is a total weight of AT LEAST the threshold (21):
 * 7 privileged ports, 21 high ports, or a mix such as 5 privileged + 6 high.
 * (scanlogd and xt_psd both test `weight >= threshold`.)
 *
 * Decay rule (the one of scanlogd and xt_psd): a source's score lives only
 * while new ports keep coming. When the gap between the previous NEW port and
 * this one exceeds `delayMs` (3 s), the score restarts from this port alone.
 * Repeats of a port already counted add nothing and do not refresh that clock,
 * so a client hammering one service is never scored up. A gap of exactly
 * `delayMs` still counts (`now - timestamp <= delay`, as in both originals).
 * Slightly out-of-order timestamps (a negative gap) count as no gap.
 *
 * Unlike the windowed detector, psd has no long memory: a scan paced slower
 * than one new port per `delayMs` is never seen (the slow-scan window covers
 * that). Choose it for a low false-positive rate on busy hosts: a burst of
 * privileged ports is flagged fast, a client touching a few high ports is not.
 *
 * The clock is the packet timestamp, so replays give the live answers. Memory
 * is known in advance: like src/detect/detector.ts, one slot per tracked source in
 * flat typed arrays (at most `maxPortsPerSource` ports each) plus one Map
 * entry, and slots in a doubly linked list in least-recently-seen order, so
 * touching, evicting at the `maxSources` cap and expiring are O(1) per source.
 */
import { type ScanDetector, Verdict } from "./detector.ts";
import { growFloat64, growInt32, NIL, SourceTable } from "./sources.ts";

/** psd settings. */
export interface PsdOptions {
  /** A scan is a total weight of at least this (1..255 in xt_psd; here >= 1). */
  threshold: number;
  /** Longest gap between two new ports that keeps the score, in milliseconds. */
  delayMs: number;
  /** Weight of a new destination port below 1024. */
  lowPortWeight: number;
  /** Weight of a new destination port 1024 and above. */
  highPortWeight: number;
  /** Sources tracked at once; the least recently seen is forgotten first. */
  maxSources: number;
  /**
   * Ports remembered per source (to tell repeats from new ports). Default: the
   * most ports that can stay below the threshold, ceil(threshold / smallest
   * positive weight) - 1 (20 with the defaults, as scanlogd's 20). With a
   * smaller list, ports past it still add weight but a repeat of one of them
   * counts again (as in xt_psd).
   */
  maxPortsPerSource?: number;
}

/** The defaults of scanlogd (params.h) and xt_psd: 21 within 3 s, weights 3 and 1. */
export const PSD_DEFAULTS: Omit<PsdOptions, "maxSources"> = {
  threshold: 21,
  delayMs: 3000,
  lowPortWeight: 3,
  highPortWeight: 1,
};

/**
 * Weighted new-port scorer per source, with the same call shape as Detector.
 * A reported source stays reported (AlreadyDetected) while its packets keep
 * coming at most `delayMs` apart; after a longer silence it is forgotten and a
 * new burst is reported again (as xt_psd matches again).
 */
export class PsdDetector implements ScanDetector {
  readonly #threshold: number;
  readonly #delayMs: number;
  readonly #low: number;
  readonly #high: number;
  readonly #m: number; // ports per slot
  readonly #table: SourceTable;
  #weight = new Int32Array(0); // score; -1 = detected
  #count = new Int32Array(0); // ports remembered
  #last = new Float64Array(0); // last packet of any kind (LRU order, expiry)
  #stamp = new Float64Array(0); // last NEW port (the decay clock)
  #first = new Float64Array(0); // first port of the current run
  #ports = new Int32Array(0); // cap * m (ports, or pipeline targets)
  /** Ports of the last scan reported (valid right after a Scan verdict). */
  lastScanPorts: number[] = [];
  /** Time of the first port of the last scan reported. */
  lastScanFirstMs = 0;

  constructor(opts: PsdOptions) {
    this.#threshold = Math.max(1, Math.floor(opts.threshold));
    this.#delayMs = Math.max(0, opts.delayMs);
    this.#low = Math.max(0, Math.floor(opts.lowPortWeight));
    this.#high = Math.max(0, Math.floor(opts.highPortWeight));
    if (this.#low === 0 && this.#high === 0) {
      throw new RangeError("psd: both port weights are 0, nothing could ever be a scan");
    }
    const minW = Math.min(...[this.#low, this.#high].filter((w) => w > 0));
    this.#m = Math.max(
      1,
      Math.floor(opts.maxPortsPerSource ?? Math.ceil(this.#threshold / minW) - 1),
    );
    this.#table = new SourceTable(opts.maxSources, (cap) => {
      this.#weight = growInt32(this.#weight, cap);
      this.#count = growInt32(this.#count, cap);
      this.#last = growFloat64(this.#last, cap);
      this.#stamp = growFloat64(this.#stamp, cap);
      this.#first = growFloat64(this.#first, cap);
      this.#ports = growInt32(this.#ports, cap * this.#m);
    });
  }

  /** Number of sources tracked now. */
  get size(): number {
    return this.#table.size;
  }

  /** Sources forgotten because the cap was reached (for metrics). */
  get evicted(): number {
    return this.#table.evicted;
  }

  /** Sources that can be tracked at once. */
  get capacity(): number {
    return this.#table.max;
  }

  /**
   * Records that `key` (see addressKey) tried `port` at packet time `tMs` and
   * says whether that makes it a scanner. A port whose weight is 0 is ignored
   * (Counted, nothing stored).
   */
  observe(key: number | string, port: number, tMs: number): Verdict {
    // Sources silent for longer than the delay hold no score: drop them, O(1) amortized.
    this.expire(tMs);

    // `port` may be a pipeline target (address hash << 16 | port): weigh the port part.
    const w = (port & 0xffff) < 1024 ? this.#low : this.#high;
    const table = this.#table;
    let slot = table.find(key);
    if (slot === undefined) {
      if (w === 0) return Verdict.Counted;
      slot = table.add(key);
      this.#last[slot] = tMs;
      return this.#start(slot, port, w, tMs);
    }
    table.touch(slot);
    if (tMs > this.#last[slot]) this.#last[slot] = tMs;
    const weight = this.#weight[slot];
    if (weight < 0) return Verdict.AlreadyDetected;
    if (w === 0) return Verdict.Counted;
    // Gap since the previous NEW port too long: the score starts again.
    if (tMs - this.#stamp[slot] > this.#delayMs) return this.#start(slot, port, w, tMs);

    const base = slot * this.#m, ports = this.#ports, c = this.#count[slot];
    for (let i = 0; i < c; i++) if (ports[base + i] === port) return Verdict.Repeat;
    if (tMs > this.#stamp[slot]) this.#stamp[slot] = tMs;
    const total = weight + w;
    if (total >= this.#threshold) return this.#detect(slot, port);
    this.#weight[slot] = total;
    if (c < this.#m) {
      ports[base + c] = port;
      this.#count[slot] = c + 1;
    }
    return Verdict.Counted;
  }

  /** Current score of a source (0 when untracked, -1 once detected). */
  scoreOf(key: number | string): number {
    const slot = this.#table.find(key);
    return slot === undefined ? 0 : this.#weight[slot];
  }

  /** Ports counted in a source's current run (for reports and tests). */
  portsOf(key: number | string): number[] {
    const slot = this.#table.find(key);
    if (slot === undefined) return [];
    const b = slot * this.#m;
    return Array.from(this.#ports.subarray(b, b + this.#count[slot]));
  }

  /** True when the source was reported as a scanner and is still tracked. */
  isDetected(key: number | string): boolean {
    const slot = this.#table.find(key);
    return slot !== undefined && this.#weight[slot] < 0;
  }

  /** Forgets one source (e.g. after a failed ban, so that it can be tried again). */
  forget(key: number | string): void {
    const slot = this.#table.find(key);
    if (slot !== undefined) this.#table.release(slot);
  }

  /** Takes back one counted port and its weight (an accepted connection); nothing once detected. */
  forgive(key: number | string, port: number): void {
    const slot = this.#table.find(key);
    if (slot === undefined || this.#weight[slot] < 0) return;
    const b = slot * this.#m, ports = this.#ports, c = this.#count[slot];
    for (let i = 0; i < c; i++) {
      if (ports[b + i] !== port) continue;
      ports.copyWithin(b + i, b + i + 1, b + c);
      this.#count[slot] = c - 1;
      const w = (port & 0xffff) < 1024 ? this.#low : this.#high;
      this.#weight[slot] = Math.max(0, this.#weight[slot] - w);
      return;
    }
  }

  /** Drops every source not seen within `delayMs` before `tMs` (their score is void anyway). */
  expire(tMs: number): void {
    const limit = tMs - this.#delayMs, t = this.#table;
    while (t.head !== NIL && this.#last[t.head] < limit) t.release(t.head);
  }

  #start(slot: number, port: number, w: number, tMs: number): Verdict {
    this.#stamp[slot] = tMs;
    this.#first[slot] = tMs;
    this.#count[slot] = 0;
    if (w >= this.#threshold) return this.#detect(slot, port);
    this.#weight[slot] = w;
    this.#ports[slot * this.#m] = port;
    this.#count[slot] = 1;
    return Verdict.Counted;
  }

  #detect(slot: number, port: number): Verdict {
    const b = slot * this.#m;
    const list = Array.from(this.#ports.subarray(b, b + this.#count[slot]));
    list.push(port);
    this.lastScanPorts = list;
    this.lastScanFirstMs = this.#first[slot];
    this.#weight[slot] = -1;
    this.#count[slot] = 0;
    return Verdict.Scan;
  }
}
