import assert from "node:assert/strict";
import { NIL, SourceTable } from "../src/detect/sources.ts";

Deno.test("source table: agrees with a Map under random adds, touches and releases (IPv4 and IPv6 keys)", () => {
  let seed = 12345;
  const rnd = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const t = new SourceTable(3000, () => {});
  const ref = new Map<number | string, number>();
  const order: (number | string)[] = []; // least recently seen first
  for (let step = 0; step < 200_000; step++) {
    // Small key spaces so that hits, misses and collisions all happen; 0 and
    // negative numbers are valid IPv4 keys.
    const key: number | string = rnd(4) === 0
      ? String.fromCharCode(0xfd00, rnd(3000))
      : (rnd(6000) - 3000) * 65537;
    const slot = t.find(key);
    assert.equal(slot, ref.get(key), `step ${step} key ${String(key)}`);
    const op = rnd(3);
    if (slot === undefined) {
      if (ref.size >= 3000) {
        const oldest = order.shift()!;
        ref.delete(oldest);
      }
      const s = t.add(key);
      ref.set(key, s);
      order.push(key);
    } else if (op === 0) {
      t.release(slot);
      ref.delete(key);
      order.splice(order.indexOf(key), 1);
    } else {
      t.touch(slot);
      order.splice(order.indexOf(key), 1);
      order.push(key);
    }
    assert.equal(t.size, ref.size);
  }
  // The head is the least recently seen key.
  assert.equal(t.head === NIL ? undefined : t.head, ref.get(order[0]));
  assert.ok(t.evicted > 0);
});
