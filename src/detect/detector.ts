/**
 * The port-scan rule of the original tool, bounded: a source that tries MORE
 * than `ports` distinct destination ports within `windowMs` is a scanner.
 * Repeats to one port never count twice. The clock is the packet timestamp
 * (never wall time), so a replayed capture gives the same answers as the live
 * run did.
 *
 * Memory is known in advance (DESIGN principle 6): per tracked source one slot
 * of a SourceTable (bounded, least recently seen forgotten first, expired
 * state dropped from its head) and, in flat typed arrays, at most `ports`
 * (port, first-seen time) pairs — proportional to the threshold, like the
 * original's queue.
 */

import { growFloat64, growInt32, NIL, SourceTable } from "./sources.ts";

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
  /**
   * Takes back one target the source was counted for: this host accepted
   * the connection (a SYN-ACK went back), so it was no probe.
   */
  forgive(key: number | string, target: number): void;
  readonly size: number;
  /** Sources that can be tracked at once. */
  readonly capacity: number;
  readonly evicted: number;
  lastScanPorts: number[];
  lastScanFirstMs: number;
  forget(key: number | string): void;
  expire(tMs: number): void;
}

/** Sliding-window distinct-port counter per source. */
export class Detector implements ScanDetector {
  #n: number;
  #windowMs: number;
  readonly #table: SourceTable;
  #last = new Float64Array(0);
  #count = new Int32Array(0); // distinct ports held; -1 = detected
  #ports = new Int32Array(0); // slots * n
  #times = new Float64Array(0); // slots * n
  /** Ports of the last scan reported (valid right after a Scan verdict). */
  lastScanPorts: number[] = [];
  /** First-seen time of the oldest port of the last scan reported. */
  lastScanFirstMs = 0;

  constructor(opts: DetectorOptions) {
    this.#n = Math.max(1, opts.ports);
    this.#windowMs = opts.windowMs;
    this.#table = new SourceTable(opts.maxSources, (cap) => {
      this.#last = growFloat64(this.#last, cap);
      this.#count = growInt32(this.#count, cap);
      this.#ports = growInt32(this.#ports, cap * this.#n);
      this.#times = growFloat64(this.#times, cap * this.#n);
    });
  }

  /**
   * New thresholds for the sources already tracked (a reload): each keeps
   * its most recent ports, up to the new count, so a scan under way is not
   * forgotten; the window applies from the next observation.
   */
  reconfigure(ports: number, windowMs: number): void {
    this.#windowMs = windowMs;
    const n = Math.max(1, ports);
    if (n === this.#n) return;
    const old = this.#n, cap = this.#count.length;
    const P = new Int32Array(cap * n), T = new Float64Array(cap * n);
    for (let slot = 0; slot < cap; slot++) {
      const c = this.#count[slot];
      if (c <= 0) continue;
      const keep = Math.min(c, n), from = slot * old + c - keep;
      P.set(this.#ports.subarray(from, from + keep), slot * n);
      T.set(this.#times.subarray(from, from + keep), slot * n);
      this.#count[slot] = keep;
    }
    this.#n = n;
    this.#ports = P;
    this.#times = T;
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
   * says whether that makes it a scanner.
   */
  observe(key: number | string, port: number, tMs: number): Verdict {
    // Drop state that left the window: O(1) amortized, from the LRU head.
    const limit = tMs - this.#windowMs;
    this.#expireBefore(limit);

    const table = this.#table;
    let slot = table.find(key);
    if (slot === undefined) {
      slot = table.add(key);
      this.#ports[slot * this.#n] = port;
      this.#times[slot * this.#n] = tMs;
      this.#count[slot] = 1;
      this.#last[slot] = tMs;
      return Verdict.Counted;
    }
    table.touch(slot);
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
    const slot = this.#table.find(key);
    if (slot === undefined) return [];
    const c = Math.max(0, this.#count[slot]);
    return Array.from(this.#ports.subarray(slot * this.#n, slot * this.#n + c));
  }

  /**
   * Calls `fn` for every tracked source with the distinct ports it tried
   * within the window (empty once detected: the rule stops keeping them).
   */
  forEachSource(fn: (key: number | string, ports: number[], detected: boolean) => void): void {
    this.#table.forEach((slot, key) => {
      const c = this.#count[slot];
      const base = slot * this.#n;
      fn(key, c > 0 ? Array.from(this.#ports.subarray(base, base + c)) : [], c < 0);
    });
  }

  /** True when the source was reported as a scanner and is still tracked. */
  isDetected(key: number | string): boolean {
    const slot = this.#table.find(key);
    return slot !== undefined && this.#count[slot] < 0;
  }

  /** Forgets one source (e.g. after a failed ban, so that it can be tried again). */
  forget(key: number | string): void {
    const slot = this.#table.find(key);
    if (slot !== undefined) this.#table.release(slot);
  }

  /** Takes back one counted target (an accepted connection); nothing once detected. */
  forgive(key: number | string, target: number): void {
    const slot = this.#table.find(key);
    if (slot === undefined) return;
    const c = this.#count[slot];
    const base = slot * this.#n, ports = this.#ports, times = this.#times;
    for (let i = 0; i < c; i++) {
      if (ports[base + i] !== target) continue;
      ports.copyWithin(base + i, base + i + 1, base + c);
      times.copyWithin(base + i, base + i + 1, base + c);
      this.#count[slot] = c - 1;
      return;
    }
  }

  /** Drops every source not seen within the window before `tMs`. */
  expire(tMs: number): void {
    this.#expireBefore(tMs - this.#windowMs);
  }

  #expireBefore(limit: number): void {
    const t = this.#table;
    while (t.head !== NIL && this.#last[t.head] < limit) t.release(t.head);
  }
}
