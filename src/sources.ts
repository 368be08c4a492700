/**
 * The bounded table of tracked sources shared by the detectors: address key
 * → slot number, with the slots in a doubly linked list in least-recently-seen
 * order. Touching a source, forgetting the least recently seen one at the cap
 * and dropping expired ones from the head are all O(1). A detector keeps its
 * own per-slot state in typed arrays it grows in `onGrow`, so memory is known
 * in advance (DESIGN principle 6). (A Map used as an LRU by delete and
 * re-insert leaves holes that make "oldest entry" lookups O(n) under a
 * spoofed-source flood; this table never iterates its Map.)
 */

/** No slot. */
export const NIL = -1;

/** Key → slot with least-recently-seen order, capped at `max` slots. */
export class SourceTable {
  readonly #max: number;
  readonly #onGrow: (cap: number) => void;
  readonly #slotOf = new Map<number | string, number>();
  #keys: (number | string)[] = [];
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

  /** Number of sources tracked now. */
  get size(): number {
    return this.#slotOf.size;
  }

  /** The slot of `key`, or undefined; does not change the order. */
  find(key: number | string): number | undefined {
    return this.#slotOf.get(key);
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
    this.#keys[slot] = key;
    this.#slotOf.set(key, slot);
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
    this.#slotOf.delete(this.#keys[slot]);
    this.#keys[slot] = 0;
    this.#free.push(slot);
  }

  #grow(): void {
    const cap = Math.min(this.#max, Math.max(1024, this.#cap * 2));
    this.#prev = growInt32(this.#prev, cap);
    this.#next = growInt32(this.#next, cap);
    this.#cap = cap;
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
