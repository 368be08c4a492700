/**
 * The fleet's timing against a stand-in LAPI (Deno.serve on loopback): pulls
 * stay on a steady grid of --lapi-poll even when a timer fires late (a late
 * timer used to shift every later pull, which lengthens the fan-out's wait),
 * and bans queued in one task go out together in one POST, at once.
 */
import assert from "node:assert/strict";
import { Fleet } from "../src/fleet/fleet.ts";

function standIn() {
  const pulls: number[] = [];
  const posts: { at: number; alerts: number }[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/v1/decisions/stream") {
      pulls.push(performance.now());
      return Response.json({ new: null, deleted: null });
    }
    if (path === "/v1/watchers/login") {
      return Response.json({ token: "t", expire: new Date(Date.now() + 3_600_000).toISOString() });
    }
    if (path === "/v1/alerts") {
      const body = await req.json() as unknown[];
      posts.push({ at: performance.now(), alerts: body.length });
      return Response.json(body.map((_, i) => String(i + 1)));
    }
    return new Response("no", { status: 404 });
  });
  return { pulls, posts, server, url: `http://127.0.0.1:${server.addr.port}` };
}

function fleet(url: string, pollMs: number) {
  return new Fleet({
    url,
    machine: "m",
    password: "p",
    apiKey: "k",
    version: "0.1.0",
    pollMs,
    origins: null,
    warn: () => {},
  }, { apply: () => Promise.resolve(), isProtected: () => false });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test({
  name: "fleet: pulls stay on the --lapi-poll grid after a late timer",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const s = standIn();
    const f = fleet(s.url, 100);
    try {
      f.start();
      while (s.pulls.length < 4) await sleep(5);
      // Hold the event loop past the next pull's time: its timer fires 150 ms late.
      const t = performance.now();
      while (performance.now() - t < 250) { /* busy */ }
      const after = s.pulls.length;
      while (s.pulls.length < after + 5) await sleep(5);
      const t0 = s.pulls[1];
      // Distance of each later pull from the grid t0 + k·100 ms.
      const off = s.pulls.slice(after + 1).map((p) => {
        const r = (p - t0) % 100;
        return Math.min(r, 100 - r);
      });
      assert.ok(
        off.every((d) => d < 25),
        `off the grid by ${off.map((d) => d.toFixed(1)).join(", ")} ms`,
      );
    } finally {
      await f.stop(100);
      await s.server.shutdown();
    }
  },
});

Deno.test({
  name: "fleet: bans queued in one task go out in one POST",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const s = standIn();
    const f = fleet(s.url, 60_000);
    try {
      f.start();
      while (f.status().push !== "ok") await sleep(5);
      const at = Date.now();
      for (let i = 1; i <= 3; i++) {
        f.push({ target: `203.0.113.${i}`, seconds: 60, ports: 4, windowSeconds: 60, at });
      }
      while (s.posts.length < 1) await sleep(5);
      await sleep(50);
      assert.deepEqual(s.posts.map((p) => p.alerts), [3]);
    } finally {
      await f.stop(100);
      await s.server.shutdown();
    }
  },
});
