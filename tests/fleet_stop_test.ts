/**
 * Stopping the fleet never waits on a LAPI that accepts connections but does
 * not answer (SIGTERM must end the daemon well within systemd's 15 s), and
 * prints nothing about the requests it cuts short.
 */
import assert from "node:assert/strict";
import { Fleet } from "../src/fleet/fleet.ts";

Deno.test({
  name: "fleet: stop() ends requests to a silent LAPI within its grace time",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    // Accepts and reads, never answers.
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const conns: Deno.Conn[] = [];
    (async () => {
      for await (const c of listener) conns.push(c);
    })();
    const lines: string[] = [];
    const f = new Fleet({
      url: `http://127.0.0.1:${listener.addr.port}`,
      machine: "m",
      password: "p",
      apiKey: "k",
      version: "0.1.0",
      pollMs: 100,
      origins: null,
      warn: (l) => lines.push(l),
    }, { apply: () => Promise.resolve(), isProtected: () => false });
    try {
      f.start();
      f.push({ target: "203.0.113.1", seconds: 60, ports: 4, windowSeconds: 60, at: Date.now() });
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(conns.length >= 1, "the fleet connected");
      const t0 = performance.now();
      await f.stop(500);
      const ms = performance.now() - t0;
      assert.ok(ms < 2000, `stop took ${ms} ms`);
      assert.equal(lines.length, 1, lines.join("\n")); // the start-up line only
    } finally {
      listener.close();
      for (const c of conns) c.close();
    }
  },
});
