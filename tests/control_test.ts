/**
 * The control socket on its own: a real unix socket, mode 0600; a stale
 * socket left by a dead daemon is replaced, a live one is not taken over;
 * unknown requests get an error answer; the text rendering of bans.
 */
import assert from "node:assert/strict";
import { askStatus, ControlError, startControlServer } from "../src/report/control.ts";
import { underDescriptorLimit } from "./daemon.ts";
import {
  banListJson,
  formatBanList,
  portRanges,
  StatusRecorder,
  type StatusSnapshot,
} from "../src/report/status.ts";

const sample: StatusSnapshot = {
  version: "0.0.0",
  pid: 1,
  startedAt: 0,
  now: 1000,
  interface: "eth0",
  firewall: { backend: "none", path: "", state: "ok" },
  packets: { seen: 1, droppedByKernel: 0 },
  sources: { tracked: 0, cap: 10 },
  scansDetected: 0,
  topSources: [],
  bans: [],
  recentScans: [],
};

Deno.test("control socket: answers status, 0600, replaces a stale socket, refuses a live one", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sb-control-" });
  const path = `${dir}/c.sock`;
  try {
    // A socket file nobody listens on (a daemon that was killed).
    const stale = Deno.listen({ transport: "unix", path });
    stale.close();
    const server = await startControlServer(path, () => Promise.resolve(sample));
    assert.equal(Deno.statSync(path).mode! & 0o777, 0o600);
    assert.deepEqual(await askStatus(path), sample);
    await assert.rejects(
      startControlServer(path, () => Promise.resolve(sample)),
      /in use: another scanblocker is running/,
    );
    // A request it does not know: an error answer, not a hang.
    const c = await Deno.connect({ transport: "unix", path });
    await c.write(new TextEncoder().encode('{"request":"reboot"}\n'));
    const buf = new Uint8Array(200);
    const n = await c.read(buf);
    c.close();
    assert.match(new TextDecoder().decode(buf.subarray(0, n!)), /"ok":false.*unknown request/);
    await server.close();
    assert.throws(() => Deno.statSync(path), Deno.errors.NotFound);
    await assert.rejects(
      askStatus(path),
      (e) => e instanceof ControlError && e.kind === "not-running",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("control socket: running out of descriptors is said once, survived, and status answers after", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sb-control-" });
  try {
    // Idle clients in the same process use up the descriptors until accept
    // fails (EMFILE); the server drops each after its request timeout (2 s).
    const r = await underDescriptorLimit(`
      import { askStatus, startControlServer } from "ROOT/src/report/control.ts";
      Deno.addSignalListener("SIGTERM", () => {});
      const lines = [];
      const sample = ${JSON.stringify(sample)};
      const path = "${dir}/c.sock";
      const s = await startControlServer(path, () => Promise.resolve(sample), (l) => lines.push(l));
      const clients = [];
      for (let i = 0; i < 400; i++) {
        try { clients.push(await Deno.connect({ transport: "unix", path })); }
        catch { break; }
      }
      await new Promise((r) => setTimeout(r, 500));
      for (const c of clients) c.close();
      await new Promise((r) => setTimeout(r, 2500));
      const status = await askStatus(path, 3000).then((x) => x.interface, (e) => String(e));
      console.log(JSON.stringify({ status, lines, clients: clients.length }));
      await s.close();
      Deno.exit(0);
    `) as { status: string; lines: string[] };
    assert.equal(r.status, "eth0", JSON.stringify(r));
    assert.equal(
      r.lines.filter((l) => /^control socket: cannot accept connections/.test(l)).length,
      1,
      JSON.stringify(r),
    );
    assert.equal(r.lines.at(-1), "control socket: accepting connections again");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bans text: header, reason, origin, backend, trailing newline; JSON; port ranges", () => {
  const now = Date.UTC(2026, 0, 1);
  const bans = [
    { address: "10.0.0.9", expiresAt: null, reason: null, origin: "restored", backend: "nftables" },
    {
      address: "10.0.0.10",
      expiresAt: now + 90_000,
      reason: "port scan: 4 ports",
      origin: "local",
      backend: "nftables",
    },
  ];
  assert.equal(
    formatBanList(bans, now, true),
    "ADDRESS    LEFT           REASON              ORIGIN    BACKEND\n" +
      "10.0.0.10  1m 30s         port scan: 4 ports  local     nftables\n" +
      "10.0.0.9   until removed  -                   restored  nftables\n",
  );
  assert.match(
    formatBanList(bans, now, false),
    /\n\(reason and origin unknown: no daemon answered/,
  );
  const j = JSON.parse(banListJson(bans, now));
  assert.deepEqual(j.bans[0], {
    address: "10.0.0.10",
    backend: "nftables",
    expires: new Date(now + 90_000).toISOString(),
    seconds_left: 90,
    expired: false,
    reason: "port scan: 4 ports",
    origin: "local",
  });
  assert.equal(j.bans[1].expires, null);
  // A rule past its expiry that is still in the kernel (no daemon removed it).
  const old = [{ ...bans[1], expiresAt: now - 5_000 }];
  assert.match(
    formatBanList(old, now, false),
    /^10\.0\.0\.10 +expired 5s ago, still dropping +port scan/m,
  );
  assert.equal(JSON.parse(banListJson(old, now)).bans[0].expired, true);
  assert.equal(portRanges([1, 2, 3, 5, 7, 8]), "1-3, 5, 7-8");
});

Deno.test("status recorder: keeps the last 10 scans, newest first, with whether each is banned now", () => {
  const r = new StatusRecorder();
  for (let i = 0; i < 12; i++) {
    r.scan({ at: i, src: `10.0.0.${i}`, dst: "10.0.1.1", rule: "window", ports: 4 });
  }
  const recent = r.recent((a) => a === "10.0.0.11");
  assert.equal(recent.length, 10);
  assert.equal(recent[0].src, "10.0.0.11");
  assert.equal(recent[0].outcome, "banned");
  assert.equal(recent[1].outcome, "not banned");
  assert.equal(r.scans, 12);
});
