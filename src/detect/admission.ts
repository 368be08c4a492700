/**
 * Admission to the detection state: where a source waits until it has tried
 * a second distinct target. A spoofed-source SYN flood is one packet per
 * source, so it never gets past this sketch and can never push a real
 * scanner out of the per-source tables behind it (DESIGN principle 10); a
 * real scanner's second probe finds its first one here and moves it, with
 * both targets and their times, into the protected tier.
 *
 * Shape: a set-associative table of 16-way buckets, each bucket a FIFO (a
 * cursor per bucket names the entry a newcomer takes; a hit moves its entry
 * to the newest place). One entry is 12 bytes: a 32-bit fingerprint of the
 * source, the target (address hash << 16 | port) and the first-seen time in
 * tenths of a second (negative once the source was admitted: a marker that
 * sends its next packets straight to the rules). The bucket index and the
 * fingerprint come from two independent keyed hashes (a random seed per
 * process, so an attacker cannot aim spoofed sources at a scanner's bucket),
 * so two sources are confused only when both collide: about 16 in 2^32 per
 * lookup — and a confusion only hands one foreign target to a source, never a
 * detection (a rule still needs its other targets, exactly counted).
 *
 * Why this and not a sketch of distinct counts (SpreadSketch, RGS): our
 * thresholds are 4 ports, not hundreds, so the whole first-seen state of a
 * source is one target, and remembering it exactly costs no more than an
 * estimator while giving zero false detections. What a flood can do is make
 * the sketch forget a first probe: an entry survives until 16 newer ones land
 * in its bucket, i.e. about `capacity / 2` arrivals with probability 0.99
 * (Poisson(8) < 16). With the default 4 Mi entries (48 MiB) a first probe is
 * kept for ~2 s of a 1,000,000 pps flood and ~20 s of a 100,000 pps one, and
 * a scanner that loses one probe is admitted by the next pair. Measured
 * (bench/detector_bench.ts flood, default settings): a scanner at one port
 * every 2 s is detected by its 5th probe up to 1,000,000 flood packets/s, one
 * every 10 s up to 200,000/s; no flood source was ever detected. A random
 * read of this table is the price: ~0.1 µs idle, several times that on a
 * loaded machine. The pipeline does not pay it packet after packet: it keys
 * a chunk of 64 packets first and reads their buckets in a loop of their own
 * (`touch`), so the misses overlap, and then `seeKey` finds the lines in
 * cache. Measured (`bench/detector_bench.ts sketch`: 1,000,000 distinct
 * sources through the default engine, CPU time, against the same pipeline
 * with a 192 KiB table, loaded machine, two turns with the code before):
 * the table cost ~0.23-0.24 µs a packet read one by one, ~0.07-0.12 µs read
 * ahead; the whole engine went from ~0.49 to ~0.33-0.40 µs. A prototype with 8-byte
 * entries in one line (16-bit fingerprint and time beside the target) was
 * faster still, but 16 bits would let ~120 flood sources a second into the
 * rules' tables at 1,000,000 pps, and a 16-bit time cannot span the slow
 * rule's 2 h at 0.1 s; the three-line bucket stays.
 */

/** What `see` found. */
export const enum Admit {
  /** First target of this source (now held here). */
  First = 0,
  /** The target already held for this source: nothing new. */
  Repeat = 1,
  /** A second distinct target: admit the source; `prevTarget`/`prevMs` hold the first one. */
  Promote = 2,
  /** The source was admitted before: the rules' tables hold it. */
  Admitted = 3,
}

const WAYS = 16;
const WAYS_LOG = 4;
/** Int32 words per bucket: 16 fingerprints, 16 targets, 16 times (three adjacent cache lines). */
const BUCKET = 48;

/** murmur3's 32-bit finalizer: every input bit affects every output bit. */
export function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** The mask of a 32-bit word holding `bits` leading prefix bits (<= 0: none, >= 32: all). */
function mask(bits: number): number {
  return bits >= 32 ? -1 : bits <= 0 ? 0 : -1 << (32 - bits);
}

function randomSeed(): number {
  return crypto.getRandomValues(new Int32Array(1))[0];
}

/** Entries for a --max-sources setting: 40 per tracked source, a power of two, 4 Mi at the default. */
export function admissionSlots(maxSources: number): number {
  const want = Math.max(1024, Math.min(1 << 24, maxSources * 40));
  return 1 << Math.ceil(Math.log2(want));
}

/**
 * The first-seen sketch.
 * An admitted source keeps a marker entry (negative time) so that its next
 * packets go straight to the rules; a flood may push the marker out, and
 * then the source simply passes First → Promote again, its held target
 * replayed with its own time, so no probe of it is lost.
 */
export class Admission {
  readonly #shift: number;
  /** Per bucket: fingerprints, targets, times (tenths of a second since #base; 0 = free; < 0 = admitted). */
  readonly #t: Int32Array<ArrayBuffer>;
  /** Per bucket: the entry the next newcomer takes (a FIFO: scanning for the oldest cost 50 ns). */
  readonly #cursor: Uint8Array<ArrayBuffer>;
  readonly #horizonDs: number;
  readonly #pressureDs: number;
  readonly #seedBucket: number;
  readonly #seedPrint: number;
  #base = -1;
  /** First target and its time (epoch ms) after a Promote. */
  prevTarget = 0;
  prevMs = 0;
  /** First-seen sources pushed out while younger than the pressure age (a flood is being absorbed). */
  notAdmitted = 0;
  /** -1 until an entry is pushed out (then the whole horizon is remembered). */
  #lastAgeDs = -1;
  /** Entries the sketch holds. */
  readonly capacity: number;
  /** The IPv6 prefix length (keyWords' prefix) and its mask, word by word. */
  get prefix6(): number {
    return this.#p6;
  }
  readonly #p6: number;
  readonly #m0: number;
  readonly #m1: number;
  readonly #m2: number;
  readonly #m3: number;

  /**
   * `slots` is rounded up to a power of two (≥ 16); `horizonMs` is how long a
   * first target may count (the longest window of the rules behind it);
   * pushing out a first target younger than `pressureMs` (the main window)
   * counts as not admitted. `advise` may ask the kernel for huge pages for
   * the table (random reads of 48 MiB through 4 KiB pages miss the TLB).
   * `prefix6` is the IPv6 prefix length the pipeline counts (128: none), for
   * `keyWords`. `seeds` (another sketch's `seeds`) gives the same buckets
   * and fingerprints as that sketch: a thread that keys packets for it.
   */
  constructor(
    slots: number,
    horizonMs: number,
    pressureMs = horizonMs,
    advise?: (table: Int32Array<ArrayBuffer>) => void,
    prefix6 = 64,
    seeds?: readonly [number, number],
  ) {
    this.#seedBucket = seeds?.[0] ?? randomSeed();
    this.#seedPrint = seeds?.[1] ?? randomSeed();
    this.#p6 = prefix6;
    this.#m0 = mask(prefix6);
    this.#m1 = mask(prefix6 - 32);
    this.#m2 = mask(prefix6 - 64);
    this.#m3 = mask(prefix6 - 96);
    const bits = Math.max(WAYS_LOG, Math.ceil(Math.log2(Math.max(WAYS, slots))));
    this.capacity = 1 << bits;
    this.#shift = 32 - (bits - WAYS_LOG);
    this.#t = new Int32Array((this.capacity >>> WAYS_LOG) * BUCKET);
    this.#cursor = new Uint8Array(this.capacity >>> WAYS_LOG);
    advise?.(this.#t);
    this.#horizonDs = Math.ceil(horizonMs / 100);
    this.#pressureDs = Math.ceil(pressureMs / 100);
  }

  /**
   * Maps every page of the table now (one write per 4 KiB page; with huge
   * pages the first write of each 2 MiB maps all of it). Otherwise the
   * first probe of a fresh source that lands on an unmapped page pays the
   * page fault, and with huge pages that is zeroing 2 MiB: 0.1-0.5 ms on the
   * live path, measured, while the scanner's next probes wait in the ring.
   * The live capture calls it at start (about 10-20 ms for 48 MiB).
   */
  prefault(): void {
    const t = this.#t;
    for (let i = 0; i < t.length; i += 1024) t[i] = 0;
  }

  /** The keyed hashes' secret seeds (see the constructor), for a thread that keys packets for this sketch. */
  get seeds(): readonly [number, number] {
    return [this.#seedBucket, this.#seedPrint];
  }

  /** Age (ms) of the last entry pushed out: how long a first probe is remembered now. */
  get lastOverwrittenAgeMs(): number {
    return this.#lastAgeDs < 0 ? this.#horizonDs * 100 : this.#lastAgeDs * 100;
  }

  /** Bytes held by the sketch's array (its pages are mapped as buckets are first touched). */
  get bytes(): number {
    return this.#t.byteLength;
  }

  /** Bucket and fingerprint of the last `key` call. */
  keyBucket = 0;
  keyPrint = 1;

  /** The bucket and fingerprint of the last IPv6 `keyWords` call's prefix. */
  keyPrefixBucket = 0;
  keyPrefixPrint = 1;

  /**
   * Computes the bucket and the fingerprint of a source (same key arguments
   * as `see`) into keyBucket/keyPrint, for `touch` and `seeKey`. Two keyed
   * hashes: one picks the bucket, the other is the fingerprint.
   *
   * An IPv6 prefix (a prefix key: its masked address) has a bucket, and
   * the addresses of that prefix all have the one next to it (bucket ^ 1):
   * the two reads of a packet fall side by side, and a flood from one
   * prefix churns those two buckets only. Not one bucket for both (tried:
   * an IPv6 flood then lands its two entries a packet in pairs, which
   * doubles the variance of a bucket's arrivals, and a first probe was
   * pushed out about ten times as often: a scanner at one port every 10 s
   * under a 100,000/s IPv6 flood was missed in 3 runs of 40). Side by side,
   * a bucket still takes at most one entry of any packet.
   */
  key(tag: number, n: number, w0: number, w1: number, w2: number, w3: number): void {
    let fp = mix32(w0 ^ this.#seedPrint ^ Math.imul(tag, 0x9e3779b1));
    if (n === 1) this.keyBucket = mix32(w0 ^ this.#seedBucket ^ tag) >>> this.#shift;
    else {
      this.keyBucket = tag === 128
        ? this.#bucket6(w0 & this.#m0, w1 & this.#m1, w2 & this.#m2, w3 & this.#m3) ^ 1
        : this.#bucket6(w0, w1, w2, w3);
      fp = mix32(mix32(mix32(fp + w1) + w2) + w3);
    }
    this.keyPrint = fp === 0 ? 1 : fp;
  }

  /**
   * `key` of an address given as its words (ProbeEvent.srcW: one for IPv4,
   * four for IPv6) into keyBucket/keyPrint; for IPv6 also its prefix's
   * into keyPrefixBucket/keyPrefixPrint, the bucket hashed once (the
   * address's is the one beside it, see `key`).
   * The words stay in their array: a word passed as an argument to a call
   * that V8 did not inline is boxed into a heap number (31-bit small
   * integers), 16 bytes a word, a packet, a scavenge every ~100,000 packets.
   */
  keyWords(family: 4 | 6, w: Int32Array): void {
    const w0 = w[0];
    if (family === 4) {
      this.keyBucket = mix32(w0 ^ this.#seedBucket) >>> this.#shift;
      const fp = mix32(w0 ^ this.#seedPrint);
      this.keyPrint = fp === 0 ? 1 : fp;
      return;
    }
    const w1 = w[1], w2 = w[2], w3 = w[3];
    const p = this.#p6, seed = this.#seedPrint;
    let fp = mix32(w0 ^ seed ^ Math.imul(128, 0x9e3779b1));
    fp = mix32(mix32(mix32(fp + w1) + w2) + w3);
    this.keyPrint = fp === 0 ? 1 : fp;
    const m0 = w0 & this.#m0, m1 = w1 & this.#m1, m2 = w2 & this.#m2, m3 = w3 & this.#m3;
    this.keyPrefixBucket = this.#bucket6(m0, m1, m2, m3);
    this.keyBucket = this.keyPrefixBucket ^ 1;
    let pp = mix32(m0 ^ seed ^ Math.imul(p, 0x9e3779b1));
    pp = mix32(mix32(mix32(pp + m1) + m2) + m3);
    this.keyPrefixPrint = pp === 0 ? 1 : pp;
  }

  /** The bucket of an IPv6 prefix (given as its masked address); its addresses are in the next one (^ 1). */
  #bucket6(w0: number, w1: number, w2: number, w3: number): number {
    let h = mix32(w0 ^ this.#seedBucket ^ 6);
    h = mix32(mix32(mix32(h ^ w1) ^ w2) ^ w3);
    return h >>> this.#shift;
  }

  /**
   * Reads the three lines and the cursor of `count` buckets (keyBucket of
   * `key`) and returns a fold (XOR) of them that the caller keeps. Called for a
   * chunk of packets before their `see` calls, in a loop that does nothing
   * else, so that the chunk's cache misses overlap instead of being paid one
   * after another (see Pipeline.processBatch). Every line `see` may write is
   * read too: a store to a missing line holds up the stores behind it.
   */
  touch(buckets: Int32Array, count: number): number {
    const t = this.#t, cursor = this.#cursor;
    let sum = 0;
    for (let i = 0; i < count; i++) {
      const bucket = buckets[i], base = bucket * BUCKET;
      // XOR: an int32 sum would overflow, and the optimised code bail out on it.
      sum ^= t[base] ^ t[base + WAYS] ^ t[base + 2 * WAYS] ^ cursor[bucket];
    }
    return sum;
  }

  /**
   * Takes back a target held for a source (same arguments as `see`, without
   * the time): this host accepted that connection. Returns Admit.Admitted
   * when the source is in the rules' tables (the caller forgives it there),
   * Admit.First otherwise.
   */
  forgive(
    tag: number,
    n: number,
    w0: number,
    w1: number,
    w2: number,
    w3: number,
    target: number,
  ): Admit {
    this.key(tag, n, w0, w1, w2, w3);
    const fp = this.keyPrint, t = this.#t, base = this.keyBucket * BUCKET;
    for (let i = base; i < base + WAYS; i++) {
      if (t[i] !== fp) continue;
      const time = t[i + 2 * WAYS];
      if (time < 0) return Admit.Admitted;
      if (t[i + WAYS] === target) {
        t[i] = 0;
        t[i + 2 * WAYS] = 0;
      }
      return Admit.First;
    }
    return Admit.First;
  }

  /**
   * Looks up a source, given as up to four 32-bit words (IPv4: w0 only, n =
   * 1; an IPv6 address or prefix: n = 4) and a tag that keeps keys of
   * different kinds apart, with a target at `ms` (epoch ms). First: the
   * target is now held; Repeat: it was held already; Promote: the source had
   * another target (in `prevTarget`/`prevMs`) and is admitted; Admitted: it
   * was admitted before.
   */
  see(
    tag: number,
    n: number,
    w0: number,
    w1: number,
    w2: number,
    w3: number,
    target: number,
    ms: number,
  ): Admit {
    this.key(tag, n, w0, w1, w2, w3);
    return this.seeKey(this.keyBucket, this.keyPrint, target, ms);
  }

  /** `see` for a source whose bucket and fingerprint `key` gave. */
  seeKey(bucket: number, fp: number, target: number, ms: number): Admit {
    if (this.#base < 0) this.#base = Math.floor(ms / 100) - 1;
    let now = Math.floor(ms / 100) - this.#base;
    if (now < 1) now = 1; // a packet older than the first one
    const t = this.#t;
    const base = bucket * BUCKET;
    for (let i = base; i < base + WAYS; i++) {
      if (t[i] !== fp) continue;
      const ti = i + 2 * WAYS;
      const time = t[ti];
      if (time < 0) {
        this.#refresh(bucket, i, -now);
        return Admit.Admitted;
      }
      if (time === 0 || now - time > this.#horizonDs) {
        // Held too long ago to count: this target starts again.
        t[i + WAYS] = target;
        this.#refresh(bucket, i, now);
        return Admit.First;
      }
      const held = t[i + WAYS];
      if (held === target) return Admit.Repeat;
      this.prevTarget = held;
      this.prevMs = (time + this.#base) * 100;
      this.#refresh(bucket, i, -now);
      return Admit.Promote;
    }
    this.#put(bucket, fp, target, now);
    return Admit.First;
  }

  /**
   * Stamps entry `i` with `time` and, unless it is among the bucket's four
   * newest, moves it to the newest place: a FIFO alone would forget an
   * admitted source 16 arrivals after its FIRST probe, however recent its
   * last one (measured: half the markers lost between two probes 10 s apart
   * under a 100,000 pps IPv6 flood).
   */
  #refresh(bucket: number, i: number, time: number): void {
    const t = this.#t, base = bucket * BUCKET;
    const rank = (i - base - this.#cursor[bucket]) & (WAYS - 1); // 15 = newest
    if (rank >= WAYS - 4) {
      t[i + 2 * WAYS] = time;
      return;
    }
    const fp = t[i], target = t[i + WAYS];
    t[i] = 0;
    t[i + 2 * WAYS] = 0;
    this.#put(bucket, fp, target, time);
  }

  /** Takes the bucket's oldest entry (its FIFO cursor) for a newcomer. */
  #put(bucket: number, fp: number, target: number, time: number): void {
    const t = this.#t, base = bucket * BUCKET;
    const c = this.#cursor[bucket];
    this.#cursor[bucket] = (c + 1) & (WAYS - 1);
    const victim = base + 2 * WAYS + c;
    const old = t[victim];
    if (old !== 0) {
      const now = time < 0 ? -time : time;
      const age = now - (old < 0 ? -old : old);
      this.#lastAgeDs = age;
      if (old > 0 && age <= this.#pressureDs) this.notAdmitted++;
    }
    t[victim - 2 * WAYS] = fp;
    t[victim - WAYS] = target;
    t[victim] = time;
  }
}
