/**
 * The metrics/health HTTP server: address parsing, each route's status and
 * headers, and the clear message when the address is taken.
 */

import assert from "node:assert/strict";
import { type Health, parseListenAddress, startMetricsServer } from "../src/report/server.ts";
import { createMetrics } from "../src/report/metrics.ts";
import { underDescriptorLimit } from "./daemon.ts";

Deno.test("parseListenAddress: valid forms", () => {
  assert.deepEqual(parseListenAddress("127.0.0.1:9100"), { hostname: "127.0.0.1", port: 9100 });
  assert.deepEqual(parseListenAddress("localhost:8080"), { hostname: "localhost", port: 8080 });
  assert.deepEqual(parseListenAddress(":8080"), { hostname: "::", port: 8080 });
  assert.deepEqual(parseListenAddress("[::1]:9100"), { hostname: "::1", port: 9100 });
  assert.deepEqual(parseListenAddress("[::]:80"), { hostname: "::", port: 80 });
  assert.deepEqual(parseListenAddress("[fd00::2]:0"), { hostname: "fd00::2", port: 0 });
  assert.deepEqual(parseListenAddress("0.0.0.0:65535"), { hostname: "0.0.0.0", port: 65535 });
  assert.equal(parseListenAddress("off"), "off");
  assert.equal(parseListenAddress("OFF"), "off");
});

Deno.test("parseListenAddress: invalid forms are null", () => {
  for (
    const bad of [
      "",
      "8080",
      "127.0.0.1",
      "127.0.0.1:",
      ":",
      ":65536",
      ":99999",
      ":-1",
      ":80a",
      ":8 0",
      "::1:9100",
      "[::1]",
      "[::1]9100",
      "[127.0.0.1]:80",
      "[::1]:",
      "[::1]:70000",
      "host name:80",
      "http://x:80",
      "offf",
    ]
  ) {
    assert.equal(parseListenAddress(bad), null, `"${bad}" should be rejected`);
  }
});

/** A server on a free loopback port with adjustable health; stop() in finally. */
function serve(health: Health) {
  const metrics = createMetrics("1.2.3");
  let current = health;
  const server = startMetricsServer({ hostname: "127.0.0.1", port: 0 }, metrics, () => current);
  return {
    metrics,
    server,
    url: `http://127.0.0.1:${server.port}`,
    setHealth: (h: Health) => current = h,
  };
}

const healthy: Health = {
  captureRunning: true,
  packetsSeen: 1234,
  firewall: "iptables ok",
  lastPacketTime: Date.UTC(2026, 0, 2, 3, 4, 5),
};

Deno.test("server: GET /metrics serves the exposition with its content type", async () => {
  const s = serve(healthy);
  try {
    s.metrics.connectionAttempts.labels("ipv6").inc(7);
    const r = await fetch(`${s.url}/metrics`);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    const body = await r.text();
    assert.match(body, /^scanblocker_connection_attempts_total\{family="ipv6"\} 7$/m);
    assert.match(body, /^# TYPE process_resident_memory_bytes gauge$/m);
    // A query string does not change the route; HEAD works where GET does.
    const q = await fetch(`${s.url}/metrics?x=1`);
    assert.equal(q.status, 200);
    await q.body?.cancel();
    const head = await fetch(`${s.url}/metrics`, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), "");
  } finally {
    await s.server.close();
  }
});

Deno.test("server: /healthz is 200 with JSON, 503 when capture stopped", async () => {
  const s = serve(healthy);
  try {
    const r = await fetch(`${s.url}/healthz`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get("content-type") ?? "", /^application\/json/);
    assert.deepEqual(await r.json(), {
      status: "ok",
      captureRunning: true,
      packetsSeen: 1234,
      firewall: "iptables ok",
      lastPacketTime: "2026-01-02T03:04:05.000Z",
    });
    s.setHealth({ captureRunning: false, packetsSeen: 0, firewall: "none", lastPacketTime: null });
    const down = await fetch(`${s.url}/healthz`);
    assert.equal(down.status, 503);
    const body = await down.json();
    assert.equal(body.captureRunning, false);
    assert.equal(body.status, "capture stopped");
    assert.equal(body.lastPacketTime, null);
  } finally {
    await s.server.close();
  }
});

Deno.test("server: 404 for other paths, 405 with Allow for other methods", async () => {
  const s = serve(healthy);
  try {
    for (const path of ["/", "/metric", "/metrics/", "/healthz/x", "/favicon.ico"]) {
      const r = await fetch(`${s.url}${path}`);
      assert.equal(r.status, 404, path);
      await r.body?.cancel();
    }
    for (const method of ["POST", "PUT", "DELETE", "PATCH"]) {
      for (const path of ["/metrics", "/healthz"]) {
        const r = await fetch(`${s.url}${path}`, { method });
        assert.equal(r.status, 405, `${method} ${path}`);
        assert.equal(r.headers.get("allow"), "GET, HEAD");
        await r.body?.cancel();
      }
    }
  } finally {
    await s.server.close();
  }
});

Deno.test("server: a failing health callback is a quiet 500, the server lives on", async () => {
  const metrics = createMetrics("1");
  const server = startMetricsServer({ hostname: "127.0.0.1", port: 0 }, metrics, () => {
    throw new Error("boom");
  });
  try {
    const r = await fetch(`http://127.0.0.1:${server.port}/healthz`);
    assert.equal(r.status, 500);
    await r.body?.cancel();
    const m = await fetch(`http://127.0.0.1:${server.port}/metrics`);
    assert.equal(m.status, 200);
    await m.body?.cancel();
  } finally {
    await server.close();
  }
});

Deno.test("server: address in use gives a clear error naming it and the way out", async () => {
  const first = serve(healthy);
  try {
    assert.throws(
      () =>
        startMetricsServer(
          { hostname: "127.0.0.1", port: first.server.port },
          first.metrics,
          () => healthy,
        ),
      (e: unknown) => {
        assert.ok(e instanceof Error);
        const msg = e.message;
        assert.ok(msg.includes(`127.0.0.1:${first.server.port}`), msg);
        assert.match(msg, /already in use/);
        assert.match(msg, /--metrics-addr/);
        assert.match(msg, /SB_METRICS_ADDR/);
        assert.match(msg, /\boff\b/);
        return true;
      },
    );
    // The first server is unharmed.
    const r = await fetch(`${first.url}/healthz`);
    assert.equal(r.status, 200);
    await r.body?.cancel();
  } finally {
    await first.server.close();
  }
});

Deno.test("server: wildcard ':port' answers on IPv4 and IPv6 loopback", async () => {
  const addr = parseListenAddress(":0");
  assert.ok(addr !== null && addr !== "off");
  const server = startMetricsServer(addr, createMetrics("1"), () => healthy);
  try {
    for (const host of ["127.0.0.1", "[::1]"]) {
      const r = await fetch(`http://${host}:${server.port}/healthz`);
      assert.equal(r.status, 200, host);
      await r.body?.cancel();
    }
  } finally {
    await server.close();
  }
});

Deno.test("server: an address not on this host is a clear error", () => {
  // 192.0.2.0/24 is TEST-NET-1, never assigned to a host.
  assert.throws(
    () => startMetricsServer({ hostname: "192.0.2.1", port: 0 }, createMetrics("1"), () => healthy),
    /metrics address 192\.0\.2\.1:0 is not an address of this host; pick another with --metrics-addr/,
  );
});

Deno.test("server: nothing is logged per request", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sb-server-" });
  const root = new URL("../", import.meta.url).pathname;
  try {
    const file = `${dir}/quiet.ts`;
    await Deno.writeTextFile(
      file,
      `
      import { startMetricsServer } from "${root}src/report/server.ts";
      import { createMetrics } from "${root}src/report/metrics.ts";
      const s = startMetricsServer({ hostname: "127.0.0.1", port: 0 }, createMetrics("1"), () => ({
        captureRunning: true, packetsSeen: 0, firewall: "none", lastPacketTime: null }));
      for (const p of ["/metrics", "/healthz", "/nope"]) await (await fetch("http://127.0.0.1:" + s.port + p)).text();
      await (await fetch("http://127.0.0.1:" + s.port + "/metrics", { method: "POST" })).text();
      await s.close();
    `,
    );
    const out = await new Deno.Command("deno", {
      args: ["run", "-P", `--config=${root}deno.json`, file],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    const stderr = dec.decode(out.stderr).split("\n").filter((l) =>
      l !== "" && !l.includes("Permissions in the config file is an experimental feature")
    );
    assert.equal(out.code, 0, stderr.join("\n"));
    assert.equal(dec.decode(out.stdout), "");
    assert.deepEqual(stderr, []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server: running out of descriptors is reported once, counted, and survived", async () => {
  // With no connection cap, idle clients in the same process use up the
  // descriptors until accept fails (EMFILE).
  const r = await underDescriptorLimit(`
      import { startMetricsServer } from "ROOT/src/report/server.ts";
      import { createMetrics } from "ROOT/src/report/metrics.ts";
      // As the daemon does at start: Deno 2.9.6 panics when it first sets up
      // signal handling after the descriptors ran out.
      Deno.addSignalListener("SIGTERM", () => {});
      const problems = [];
      const metrics = createMetrics("1");
      const s = startMetricsServer({ hostname: "127.0.0.1", port: 0 }, metrics, () => ({
        captureRunning: true, packetsSeen: 0, firewall: "none", lastPacketTime: null }),
        () => {}, { limits: { maxConnections: 100000 }, onProblem: (m) => problems.push(m) });
      const clients = [];
      for (let i = 0; i < 400; i++) {
        try { clients.push(await Deno.connect({ hostname: "127.0.0.1", port: s.port })); }
        catch { break; }
      }
      await new Promise((r) => setTimeout(r, 1500));
      for (const c of clients) c.close();
      await new Promise((r) => setTimeout(r, 1500));
      const r = await fetch("http://127.0.0.1:" + s.port + "/healthz");
      const text = await metrics.registry.getSingleMetricAsString("scanblocker_metrics_server_problems_total");
      console.log(JSON.stringify({ status: r.status, body: await r.json(), problems, clients: clients.length,
        acceptErrors: Number(/kind="accept_error"} (\\d+)/.exec(text)?.[1] ?? 0) }));
      await s.close();
      Deno.exit(0);
    `) as { status: number; body: { status: string }; acceptErrors: number; problems: string[] };
  assert.equal(r.status, 200);
  assert.equal(r.body.status, "ok");
  assert.ok(r.acceptErrors > 0, JSON.stringify(r));
  assert.equal(r.problems.filter((p: string) => /cannot accept connections/.test(p)).length, 1);
  assert.match(r.problems.at(-1)!, /accepting connections again/);
});

Deno.test("server: idle connections time out, connections over the cap are closed", async () => {
  const metrics = createMetrics("1");
  const server = startMetricsServer(
    { hostname: "127.0.0.1", port: 0 },
    metrics,
    () => healthy,
    () => {},
    { limits: { maxConnections: 2, headerTimeoutMs: 300, maxHeadBytes: 256 } },
  );
  const conns: Deno.Conn[] = [];
  try {
    const eof = async (c: Deno.Conn, ms: number) => {
      const t0 = Date.now();
      const r = await Promise.race([
        c.read(new Uint8Array(16)).catch(() => null),
        new Promise((r) => setTimeout(() => r("open"), ms)),
      ]);
      return r === null ? Date.now() - t0 : -1;
    };
    for (let i = 0; i < 3; i++) {
      conns.push(await Deno.connect({ hostname: "127.0.0.1", port: server.port }));
      await new Promise((r) => setTimeout(r, 20));
    }
    // The third is over the cap: closed at once; the first two when their head is late.
    assert.ok((await eof(conns[2], 200)) >= 0, "over-cap connection left open");
    const waited = await eof(conns[0], 2000);
    assert.ok(waited >= 0, "idle connection left open");
    assert.ok((await eof(conns[1], 2000)) >= 0, "idle connection left open");
    // A head longer than the limit is closed too, and the server still answers.
    const big = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    conns.push(big);
    await big.write(new TextEncoder().encode(`GET /healthz HTTP/1.1\r\nx: ${"a".repeat(400)}`));
    assert.ok((await eof(big, 2000)) >= 0, "oversized head left open");
    const r = await fetch(`http://127.0.0.1:${server.port}/healthz`);
    assert.equal(r.status, 200);
    await r.body?.cancel();
    const text = await metrics.registry.getSingleMetricAsString(
      "scanblocker_metrics_server_problems_total",
    );
    assert.match(text, /kind="over_capacity"\} 1/);
    assert.match(text, /kind="timeout"\} 2/);
    assert.match(text, /kind="bad_request"\} 1/);
  } finally {
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await server.close();
  }
});
