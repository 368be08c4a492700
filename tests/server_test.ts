/**
 * The metrics/health HTTP server: address parsing, each route's status and
 * headers, and the clear message when the address is taken.
 */

import assert from "node:assert/strict";
import { type Health, parseListenAddress, startMetricsServer } from "../src/report/server.ts";
import { createMetrics } from "../src/report/metrics.ts";

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
