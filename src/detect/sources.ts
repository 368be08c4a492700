/**
 * The bounded table of tracked sources shared by the detectors: address key
 * → slot number, with the slots in a doubly linked list in least-recently-seen
 * order. Touching a source, forgetting the least recently seen one at the cap
 * and dropping expired ones from the head are all O(1). A detector keeps its
 * own per-slot state in typed arrays it grows in `onGrow`, so memory is known
 * in advance (DESIGN principle 6). (A Map used as an LRU by delete and
 * re-insert leaves holes that make "oldest entry" lookups O(n) under a
 * spoofed-source flood; this table never iterates a Map.)
 *
 * IPv4 keys (32-bit integers, the common case and the one a spoofed flood
 * churns) live in an open-addressing hash index of typed arrays: a V8 Map
 * costs about 200 ns per insert+delete at 100,000 entries, this about a
 * fifth of that. IPv6 keys (8-character strings) use a Map.
 */

/** No slot. */
export const NIL = -1;

/** Key → slot with least-recently-seen order, capped at `max` slots. */
export class SourceTable {
  readonly #max: number;
  readonly #onGrow: (cap: number) => void;
  readonly #slotOf6 = new Map<string, number>();
  #keys6: string[] = [];
  /** IPv4 key of each slot. */
  #keys4: Int32Array<ArrayBuffer> = new Int32Array(0);
  /** Open-addressing index: slot + 1 of an IPv4 key, 0 = empty; linear probing. */
  #index4: Int32Array<ArrayBuffer> = new Int32Array(0);
  #mask = 0;
  #shift = 32;
  #size4 = 0;
  #prev: Int32Array<ArrayBuffer> = new Int32Array(0);
  #next: Int32Array<ArrayBuffer> = new Int32Array(0);
  #cap = 0;
  #used = 0;
  #free: number[] = [];
  /** Least recently seen slot, or NIL. */
  head = NIL;
  #tail = NIL;
  /** Sources forgotten because the cap was reached. */
  evicted = 0;

  /** `onGrow(cap)` must grow the owner's per-slot arrays to `cap` slots, keeping their contents. */
  constructor(max: number, onGrow: (cap: number) => void) {
    this.#max = Math.max(1, Math.floor(max));
    this.#onGrow = onGrow;
  }

  /** The cap on tracked sources. */
  get max(): number {
    return this.#max;
  }

  /** Number of sources tracked now. */
  get size(): number {
    return this.#size4 + this.#slotOf6.size;
  }

  /** The slot of `key`, or undefined; does not change the order. */
  find(key: number | string): number | undefined {
    if (typeof key === "string") return this.#slotOf6.get(key);
    const idx = this.#index4, keys = this.#keys4, mask = this.#mask;
    if (mask === 0) return undefined;
    for (let i = Math.imul(key, 0x9e3779b1) >>> this.#shift;; i = (i + 1) & mask) {
      const e = idx[i];
      if (e === 0) return undefined;
      if (keys[e - 1] === key) return e - 1;
    }
  }

  /** A slot for a new key, as the most recently seen; forgets the least recently seen at the cap. */
  add(key: number | string): number {
    let slot: number;
    if (this.#free.length > 0) slot = this.#free.pop()!;
    else if (this.#used < this.#cap) slot = this.#used++;
    else if (this.#cap < this.#max) {
      this.#grow();
      slot = this.#used++;
    } else {
      this.evicted++;
      this.release(this.head);
      slot = this.#free.pop()!;
    }
    if (typeof key === "string") {
      this.#keys6[slot] = key;
      this.#slotOf6.set(key, slot);
      this.#keys4[slot] = 0;
    } else {
      this.#keys6[slot] = "";
      this.#keys4[slot] = key;
      this.#insert4(key, slot);
    }
    this.#link(slot);
    return slot;
  }

  /** Marks a slot as the most recently seen. */
  touch(slot: number): void {
    if (this.#tail === slot) return;
    this.#unlink(slot);
    this.#link(slot);
  }

  /** Forgets a slot's source. */
  release(slot: number): void {
    this.#unlink(slot);
    const k6 = this.#keys6[slot];
    if (k6 !== "") {
      this.#slotOf6.delete(k6);
      this.#keys6[slot] = "";
    } else this.#remove4(slot);
    this.#free.push(slot);
  }

  /** Calls `fn` for every tracked source, least recently seen first (for status reports). */
  forEach(fn: (slot: number, key: number | string) => void): void {
    for (let slot = this.head; slot !== NIL; slot = this.#next[slot]) {
      const k6 = this.#keys6[slot];
      fn(slot, k6 !== "" ? k6 : this.#keys4[slot]);
    }
  }

  #insert4(key: number, slot: number): void {
    const idx = this.#index4, mask = this.#mask;
    let i = Math.imul(key, 0x9e3779b1) >>> this.#shift;
    while (idx[i] !== 0) i = (i + 1) & mask;
    idx[i] = slot + 1;
    this.#size4++;
  }

  /** Removes a slot's IPv4 key, shifting later entries back (no tombstones). */
  #remove4(slot: number): void {
    const idx = this.#index4, keys = this.#keys4, mask = this.#mask, shift = this.#shift;
    let i = Math.imul(keys[slot], 0x9e3779b1) >>> shift;
    while (idx[i] !== slot + 1) i = (i + 1) & mask;
    // Backward-shift deletion: move up every later entry of the run whose
    // home position does not lie cyclically in (i, j].
    for (let j = (i + 1) & mask;; j = (j + 1) & mask) {
      const e = idx[j];
      if (e === 0) break;
      const home = Math.imul(keys[e - 1], 0x9e3779b1) >>> shift;
      const stays = i <= j ? home > i && home <= j : home > i || home <= j;
      if (!stays) {
        idx[i] = e;
        i = j;
      }
    }
    idx[i] = 0;
    this.#size4--;
  }

  #grow(): void {
    const cap = Math.min(this.#max, Math.max(1024, this.#cap * 2));
    this.#prev = growInt32(this.#prev, cap);
    this.#next = growInt32(this.#next, cap);
    this.#keys4 = growInt32(this.#keys4, cap);
    this.#cap = cap;
    // Index at most half full: 2^bits >= 2 * cap.
    const bits = Math.max(4, Math.ceil(Math.log2(cap * 2)));
    this.#index4 = new Int32Array(1 << bits);
    this.#mask = (1 << bits) - 1;
    this.#shift = 32 - bits;
    this.#size4 = 0;
    // add() grows only when no slot is free, so every slot below #used is live.
    for (let slot = 0; slot < this.#used; slot++) {
      if (this.#keys6[slot] === "") this.#insert4(this.#keys4[slot], slot);
    }
    this.#onGrow(cap);
  }

  #link(slot: number): void {
    this.#prev[slot] = this.#tail;
    this.#next[slot] = NIL;
    if (this.#tail !== NIL) this.#next[this.#tail] = slot;
    else this.head = slot;
    this.#tail = slot;
  }

  #unlink(slot: number): void {
    const p = this.#prev[slot], n = this.#next[slot];
    if (p !== NIL) this.#next[p] = n;
    else this.head = n;
    if (n !== NIL) this.#prev[n] = p;
    else this.#tail = p;
  }
}

/** A copy of `a` with room for `len` elements. */
export function growInt32(a: Int32Array, len: number): Int32Array<ArrayBuffer> {
  const b = new Int32Array(len);
  b.set(a.subarray(0, Math.min(a.length, len)));
  return b;
}

/** A copy of `a` with room for `len` elements. */
export function growFloat64(a: Float64Array, len: number): Float64Array<ArrayBuffer> {
  const b = new Float64Array(len);
  b.set(a.subarray(0, Math.min(a.length, len)));
  return b;
}
