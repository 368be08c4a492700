/**
 * Hardening checks that need no namespace (issue 18): what a from-source
 * command prints, and the misleading messages of item 10.
 */
import assert from "node:assert/strict";
import { run } from "./netns.ts";

const root = new URL("..", import.meta.url).pathname;

Deno.test({
  name: "from source, `deno task start` prints nothing but the program's own output (item 11)",
  sanitizeResources: false,
  fn: async () => {
    const r = await run([
      "sh",
      "-c",
      `cd ${root} && NO_COLOR=1 timeout 60 deno task start --version`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^scanblocker \d/);
    assert.doesNotMatch(r.stderr, /experimental|Warning/i, r.stderr);
  },
});

import { LineOutput } from "../src/report/output.ts";
import { STALL_MS, StallWatch } from "../src/capture/stall.ts";
import { startMetricsServer } from "../src/report/server.ts";
import { createMetrics } from "../src/report/metrics.ts";

/** A writer that takes `room` bytes, then refuses like a full non-blocking pipe. */
function pipe(room: number) {
  const taken: number[] = [];
  return {
    taken,
    more: (n: number) => (room += n),
    writeSync(p: Uint8Array): number {
      if (room === 0) throw new Deno.errors.WouldBlock("Resource temporarily unavailable");
      const n = Math.min(room, p.length);
      room -= n;
      taken.push(...p.subarray(0, n));
      return n;
    },
  };
}
const text = (b: number[]) => new TextDecoder().decode(new Uint8Array(b));
const enc = new TextEncoder();

Deno.test("LineOutput: a full output drops and counts whole lines, never blocks, never mixes (item 5)", () => {
  const p = pipe(10);
  const out = new LineOutput(p);
  // "aaaa\n" fits, "bbbbbbbb\n" is cut after 5 bytes, "cc\n" is not begun.
  assert.equal(out.write(enc.encode("aaaa\nbbbbbbbb\ncc\n")), 1);
  assert.equal(out.dropped, 1);
  assert.ok(out.blocked);
  // Still full: every new line is dropped; the cut line waits.
  assert.equal(out.write(enc.encode("dd\nee\n")), 2);
  assert.equal(out.dropped, 3);
  p.more(100);
  // Drained: the cut line is finished first, then the new ones go out.
  assert.equal(out.write(enc.encode("ff\n")), 0);
  assert.equal(text(p.taken), "aaaa\nbbbbbbbb\nff\n");
  assert.ok(!out.blocked);
  // A reader that left (EPIPE) is a refused write too, not an exception.
  const gone = new LineOutput({
    writeSync: () => {
      throw new Deno.errors.BrokenPipe("Broken pipe");
    },
  });
  assert.equal(gone.write(enc.encode("x\ny\n")), 2);
});

Deno.test("StallWatch: a still heartbeat while the interface receives is a stall (item 5)", () => {
  const w = new StallWatch();
  assert.equal(w.update(0, 0, 10), false, "not started yet");
  assert.equal(w.update(10_000, 0, 500), false, "not started yet, however long");
  assert.equal(w.update(10_000, 1, 500), false);
  assert.equal(w.update(10_000 + STALL_MS, 1, 500), false, "idle interface: nothing to process");
  assert.equal(w.update(10_000 + STALL_MS, 1, 501), true, "packets arrive, nobody processes them");
  assert.equal(w.update(10_001 + STALL_MS, 2, 502), false, "the loop turned again");
  assert.equal(
    w.update(10_001 + 2 * STALL_MS, 2, null),
    true,
    "no counter: a still heartbeat alone",
  );
});

Deno.test({
  name: '/healthz answers 503 "capture stalled" while the capture is stalled (item 5)',
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    let stalled = false;
    const server = startMetricsServer(
      { hostname: "127.0.0.1", port: 0 },
      createMetrics("test"),
      () => ({
        captureRunning: true,
        stalled,
        packetsSeen: 1,
        firewall: "none ok",
        lastPacketTime: null,
      }),
    );
    try {
      const get = async () => {
        const r = await fetch(`http://127.0.0.1:${server.port}/healthz`);
        return { code: r.status, body: await r.json() };
      };
      assert.equal((await get()).code, 200);
      stalled = true;
      const h = await get();
      assert.equal(h.code, 503);
      assert.equal(h.body.status, "capture stalled");
    } finally {
      await server.close();
    }
  },
});
