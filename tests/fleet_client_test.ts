/**
 * The LAPI client's own timing against a stand-in LAPI on loopback: a
 * request that gets no answer fails as "timed out" after the client's
 * timeout, and a request that was answered leaves no timer behind (each
 * pull used to leave a 10 s AbortSignal.timeout timer that woke the idle
 * daemon once more per pull). A 500 "database is locked" (1.4.6 on SQLite,
 * while another write holds the lock) is tried again at once, not reported
 * as a LAPI that is down.
 */
import assert from "node:assert/strict";
import { LapiClient, LapiError } from "../src/fleet/lapi.ts";

const client = (url: string, timeoutMs?: number) =>
  new LapiClient({
    url,
    machine: "m",
    password: "p",
    apiKey: "k",
    userAgent: "test",
    timeoutMs,
  });

Deno.test({
  name: "LAPI client: an answered request leaves no timer running",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      () => Response.json({ new: null, deleted: null }),
    );
    // Timers of a second or more started during the request and still pending.
    const pending = new Set<unknown>();
    const g = globalThis as unknown as Record<string, unknown>;
    const real = {
      set: globalThis.setTimeout,
      clear: globalThis.clearTimeout,
      timeout: AbortSignal.timeout,
    };
    g.setTimeout = (fn: () => void, ms?: number) => {
      const id = real.set(() => {
        pending.delete(id);
        fn();
      }, ms);
      if ((ms ?? 0) >= 1000) pending.add(id);
      return id;
    };
    g.clearTimeout = (id: unknown) => {
      pending.delete(id);
      real.clear(id as ReturnType<typeof setTimeout>);
    };
    AbortSignal.timeout = (ms: number) => {
      const s = real.timeout.call(AbortSignal, ms);
      pending.add(s);
      s.addEventListener("abort", () => pending.delete(s));
      return s;
    };
    const c = client(`http://127.0.0.1:${server.addr.port}`);
    try {
      assert.deepEqual(await c.stream(false), { new: null, deleted: null });
      assert.equal(pending.size, 0, "a timer outlives the request");
    } finally {
      g.setTimeout = real.set;
      g.clearTimeout = real.clear;
      AbortSignal.timeout = real.timeout;
      c.close();
      await server.shutdown();
    }
  },
});

Deno.test({
  name: "LAPI client: no answer within the timeout is 'timed out'",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const conns: Deno.Conn[] = [];
    (async () => {
      for await (const conn of listener) conns.push(conn);
    })();
    const c = client(`http://127.0.0.1:${listener.addr.port}`, 300);
    const t0 = performance.now();
    try {
      await assert.rejects(c.stream(false), (e) => {
        assert.ok(e instanceof LapiError && e.kind === "down", String(e));
        assert.match(e.message, /timed out/);
        return true;
      });
      const ms = performance.now() - t0;
      assert.ok(ms >= 250 && ms < 3000, `${ms} ms`);
    } finally {
      c.close();
      listener.close();
      for (const conn of conns) conn.close();
    }
  },
});

Deno.test({
  name: "LAPI client: 500 'database is locked' is tried again within 150 ms, not reported down",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    let calls = 0, locked = 2, other = false;
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => {
      calls++;
      if (other) return Response.json({ message: "unable to query" }, { status: 500 });
      if (locked-- > 0) {
        return Response.json({ message: "unable to update bouncer pull: database is locked" }, {
          status: 500,
        });
      }
      return Response.json({ new: null, deleted: null });
    });
    const c = client(`http://127.0.0.1:${server.addr.port}`);
    try {
      const t = performance.now();
      const answer = await c.stream(false);
      const ms = performance.now() - t;
      assert.deepEqual(answer, { new: null, deleted: null });
      assert.equal(calls, 3);
      // At once (60 ms of back-off in all), not after a poll period: room for a loaded machine.
      assert.ok(ms < 1000, `${ms.toFixed(0)} ms`);
      // Any other 500 is still an answer of a LAPI in trouble: down, not tried again here.
      calls = 0;
      other = true;
      const e = await c.stream(false).catch((x) => x);
      assert.ok(e instanceof LapiError && e.kind === "down" && e.status === 500, String(e));
      assert.equal(calls, 1);
    } finally {
      c.close();
      await server.shutdown();
    }
  },
});
