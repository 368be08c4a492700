/**
 * The port-scan rule of the original tool, bounded: a source that tries MORE
 * than `ports` distinct destination ports within `windowMs` is a scanner.
 * Repeats to one port never count twice. The clock is the packet timestamp
 * (never wall time), so a replayed capture gives the same answers as the live
 * run did.
 *
 * Memory is known in advance (DESIGN principle 6): per tracked source one slot
 * in flat typed arrays holding at most `ports` (port, first-seen time) pairs —
 * proportional to the threshold, like the original's queue — plus one Map entry
 * from address key to slot. Slots form a doubly linked list in
 * least-recently-seen order, so touching, evicting the least recently seen
 * source at the `maxSources` cap, and dropping expired state are all O(1) per
 * source. (A Map used as an LRU by delete+re-insert leaves holes that make
 * "oldest entry" lookups O(n) under a spoofed-source flood.)
 */

/** What one observation came to. */
export const enum Verdict {
  /** A new distinct port, below the threshold. */
  Counted = 0,
  /** A port this source already tried within the window: normal traffic. */
  Repeat = 1,
  /** This probe crossed the threshold: report the scan (once per source). */
  Scan = 2,
  /** The source was already reported as a scanner. */
  AlreadyDetected = 3,
}

/** Detector settings. */
export interface DetectorOptions {
  /** A scan is MORE than this many distinct ports. */
  ports: number;
  /** Window in milliseconds. */
  windowMs: number;
  /** Sources tracked at once. */
  maxSources: number;
}

/** What the pipeline needs of a detector: the windowed rule here, or psd scoring. */
export interface ScanDetector {
  observe(key: number | string, target: number, tMs: number): Verdict;
  readonly size: number;
  evicted: number;
  lastScanPorts: number[];
  lastScanFirstMs: number;
  forget(key: number | string): void;
  expire(tMs: number): void;
}

const NIL = -1;

/** Sliding-window distinct-port counter per source. */
export class Detector implements ScanDetector {
  readonly #n: number;
  readonly #windowMs: number;
  readonly #max: number;
  readonly #slotOf = new Map<number | string, number>();
  // Slot storage, grown by doubling up to maxSources.
  #cap = 0;
  #keys: (number | string)[] = [];
  #prev = new Int32Array(0);
  #next = new Int32Array(0);
  #last = new Float64Array(0);
  #count = new Int32Array(0); // distinct ports held; -1 = detected
  #ports = new Int32Array(0); // cap * n
  #times = new Float64Array(0); // cap * n
  #head = NIL; // least recently seen
  #tail = NIL; // most recently seen
  #free: number[] = [];
  #used = 0;
  /** Sources forgotten because the cap was reached (for metrics). */
  evicted = 0;
  /** Ports of the last scan reported (valid right after a Scan verdict). */
  lastScanPorts: number[] = [];
  /** First-seen time of the oldest port of the last scan reported. */
  lastScanFirstMs = 0;

  constructor(opts: DetectorOptions) {
    this.#n = Math.max(1, opts.ports);
    this.#windowMs = opts.windowMs;
    this.#max = Math.max(1, opts.maxSources);
  }

  /** Number of sources tracked now. */
  get size(): number {
    return this.#slotOf.size;
  }

  /**
   * Records that `key` (see addressKey) tried `port` at packet time `tMs` and
   * says whether that makes it a scanner.
   */
  observe(key: number | string, port: number, tMs: number): Verdict {
    // Drop state that left the window: O(1) amortized, from the LRU head.
    const limit = tMs - this.#windowMs;
    while (this.#head !== NIL && this.#last[this.#head] < limit) this.#release(this.#head);

    let slot = this.#slotOf.get(key);
    if (slot === undefined) {
      slot = this.#allocate(key);
      this.#ports[slot * this.#n] = port;
      this.#times[slot * this.#n] = tMs;
      this.#count[slot] = 1;
      this.#last[slot] = tMs;
      return Verdict.Counted;
    }
    this.#touch(slot);
    if (tMs > this.#last[slot]) this.#last[slot] = tMs;
    let c = this.#count[slot];
    if (c < 0) return Verdict.AlreadyDetected;

    const base = slot * this.#n, ports = this.#ports, times = this.#times;
    // Ports first seen before the window no longer count.
    let drop = 0;
    while (drop < c && times[base + drop] < limit) drop++;
    if (drop > 0) {
      ports.copyWithin(base, base + drop, base + c);
      times.copyWithin(base, base + drop, base + c);
      c -= drop;
      this.#count[slot] = c;
    }
    for (let i = 0; i < c; i++) if (ports[base + i] === port) return Verdict.Repeat;
    if (c >= this.#n) {
      const list: number[] = [];
      for (let i = 0; i < c; i++) list.push(ports[base + i]);
      list.push(port);
      this.lastScanPorts = list;
      this.lastScanFirstMs = times[base];
      this.#count[slot] = -1;
      return Verdict.Scan;
    }
    ports[base + c] = port;
    times[base + c] = tMs;
    this.#count[slot] = c + 1;
    return Verdict.Counted;
  }

  /** Distinct ports a source tried within the window (for reports and tests). */
  portsOf(key: number | string): number[] {
    const slot = this.#slotOf.get(key);
    if (slot === undefined) return [];
    const c = Math.max(0, this.#count[slot]);
    return Array.from(this.#ports.subarray(slot * this.#n, slot * this.#n + c));
  }

  /** True when the source was reported as a scanner and is still tracked. */
  isDetected(key: number | string): boolean {
    const slot = this.#slotOf.get(key);
    return slot !== undefined && this.#count[slot] < 0;
  }

  /** Forgets one source (e.g. after a failed ban, so that it can be tried again). */
  forget(key: number | string): void {
    const slot = this.#slotOf.get(key);
    if (slot !== undefined) this.#release(slot);
  }

  /** Drops every source not seen within the window before `tMs`. */
  expire(tMs: number): void {
    const limit = tMs - this.#windowMs;
    while (this.#head !== NIL && this.#last[this.#head] < limit) this.#release(this.#head);
  }

  #allocate(key: number | string): number {
    let slot: number;
    if (this.#free.length > 0) slot = this.#free.pop()!;
    else if (this.#used < this.#cap) slot = this.#used++;
    else if (this.#cap < this.#max) {
      this.#grow();
      slot = this.#used++;
    } else {
      // At the cap: the least recently seen source is forgotten first.
      this.evicted++;
      this.#release(this.#head);
      slot = this.#free.pop()!;
    }
    this.#keys[slot] = key;
    this.#slotOf.set(key, slot);
    this.#link(slot);
    return slot;
  }

  #grow(): void {
    const cap = Math.min(this.#max, Math.max(1024, this.#cap * 2));
    const n = this.#n;
    const g32 = (a: Int32Array, len: number) => {
      const b = new Int32Array(len);
      b.set(a);
      return b;
    };
    const g64 = (a: Float64Array, len: number) => {
      const b = new Float64Array(len);
      b.set(a);
      return b;
    };
    this.#prev = g32(this.#prev, cap);
    this.#next = g32(this.#next, cap);
    this.#count = g32(this.#count, cap);
    this.#last = g64(this.#last, cap);
    this.#ports = g32(this.#ports, cap * n);
    this.#times = g64(this.#times, cap * n);
    this.#cap = cap;
  }

  #link(slot: number): void {
    this.#prev[slot] = this.#tail;
    this.#next[slot] = NIL;
    if (this.#tail !== NIL) this.#next[this.#tail] = slot;
    else this.#head = slot;
    this.#tail = slot;
  }

  #unlink(slot: number): void {
    const p = this.#prev[slot], n = this.#next[slot];
    if (p !== NIL) this.#next[p] = n;
    else this.#head = n;
    if (n !== NIL) this.#prev[n] = p;
    else this.#tail = p;
  }

  #touch(slot: number): void {
    if (this.#tail === slot) return;
    this.#unlink(slot);
    this.#link(slot);
  }

  #release(slot: number): void {
    this.#unlink(slot);
    this.#slotOf.delete(this.#keys[slot]);
    this.#keys[slot] = 0;
    this.#free.push(slot);
  }
}
