/**
 * The fleet end to end, in namespaces: a real LAPI (Debian crowdsec 1.4.6) on
 * the hub, hosts A and B running the real daemon joined to it, host C running
 * only crowdsec-firewall-bouncer, and a scanner S. nmap scans A → A bans;
 * B and C drop S within a poll interval, so a second nmap against B and C
 * (which never saw a probe) finds every port filtered. Then: cscli delete
 * unbans on B, a decision for B's gateway is refused, the LAPI killed while
 * A bans two more scanners loses nothing, and wrong credentials cost one line
 * each while local protection goes on, as does an unreachable LAPI at start.
 */
import assert from "node:assert/strict";
import { type Daemon, startDaemon } from "./daemon.ts";
import { canUseNetns, esc, run } from "./netns.ts";
import { createStar, type Star, type StarHost } from "./fleet_lab.ts";
import {
  type FirewallBouncer,
  haveCrowdsec,
  haveFirewallBouncer,
  type Lapi,
  startFirewallBouncer,
  startLapi,
} from "./lapi.ts";

const enabled = (await canUseNetns()) && (await haveCrowdsec()) && (await haveFirewallBouncer());
const opts = { ignore: !enabled, sanitizeOps: false, sanitizeResources: false };
/** Poll interval of B (scanblocker) and C (CrowdSec's bouncer) in this test. */
const POLL_S = 0.5;
/** Slack for a loaded 2-core machine on top of one poll interval. */
const SLACK_MS = 1500;

/** Starts the daemon on a star host, joined to the LAPI with the given secrets. */
function joined(
  h: StarHost,
  o: {
    url: string;
    machine: string;
    pwFile?: string;
    keyFile?: string;
    port: number;
    firewall?: string;
  },
): Daemon {
  return startDaemon(h.ns, [
    "-i",
    h.ifname,
    "--firewall",
    o.firewall ?? "nftables",
    "--metrics-addr",
    `127.0.0.1:${o.port}`,
    "--realtime",
    "0",
    "--lapi-url",
    o.url,
    "--lapi-machine",
    o.machine,
    ...(o.pwFile ? ["--lapi-password-file", o.pwFile] : []),
    ...(o.keyFile ? ["--lapi-key-file", o.keyFile] : []),
    "--lapi-poll",
    String(POLL_S),
  ]);
}

/** True when namespace `ns` has `addr` in scanblocker's set. */
async function inScanblockerSet(star: Star, ns: string, addr: string): Promise<boolean> {
  const set = addr.includes(":") ? "banned6" : "banned4";
  const r = await star.exec(ns, ["nft", "list", "set", "inet", "scanblocker", set]);
  return new RegExp(`[{ ,]${esc(addr)}[ ,}]`).test(r.stdout);
}

/** True when namespace `ns` has `addr` in CrowdSec's firewall bouncer set. */
async function inCrowdsecSet(star: Star, ns: string, addr: string): Promise<boolean> {
  const r = await star.exec(ns, ["nft", "list", "set", "ip", "crowdsec", "crowdsec-blacklists"]);
  return new RegExp(`[{ ,]${esc(addr)}[ ,}]`).test(r.stdout);
}

async function waitUntil(what: string, ok: () => Promise<boolean>, ms: number): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    if (await ok()) return performance.now() - t0;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

/** nmap state of each port of `addr` from S (bounded: no retries, 5 s host timeout). */
async function states(star: Star, from: StarHost, addr: string, ports: number[], src?: string) {
  const r = await star.exec(from.ns, [
    "timeout",
    "20",
    "nmap",
    ...(addr.includes(":") ? ["-6"] : []),
    "-n",
    "-Pn",
    "--max-retries",
    "0",
    "-sS",
    ...(src ? ["-S", src, "-e", from.ifname] : []),
    "-p",
    ports.join(","),
    "--host-timeout",
    "5s",
    addr,
  ]);
  // A banned IPv6 source also loses neighbour discovery: nmap then finds no host.
  if (/0 hosts up/.test(r.stdout)) return ports.map(() => "filtered");
  // Ports nmap does not list are in the state it names on its "Not shown" line.
  const rest = /Not shown: \d+ (\w+) tcp ports/.exec(r.stdout)?.[1] ?? "?";
  return ports.map((p) => new RegExp(`^${p}/tcp\\s+(\\S+)`, "m").exec(r.stdout)?.[1] ?? rest);
}

/** One counter of a daemon's /metrics, read inside its namespace. */
async function metric(star: Star, ns: string, port: number, line: RegExp): Promise<number> {
  const r = await star.exec(ns, [
    "curl",
    "-s",
    "--max-time",
    "2",
    `http://127.0.0.1:${port}/metrics`,
  ]);
  const m = r.stdout.split("\n").find((l) => line.test(l));
  return m ? Number(m.split(" ").pop()) : NaN;
}

Deno.test({
  name: "fleet e2e: A bans a scanner; B (scanblocker) and C (CrowdSec bouncer) drop it; " +
    "delete, gateway refused, LAPI outage, wrong credentials",
  ...opts,
  fn: async () => {
    const star = await createStar("fl", { s: 1, a: 11, b: 12, c: 13, d: 14 });
    const { s, a, b, c, d } = star.hosts;
    let lapi: Lapi | null = null;
    const daemons: Daemon[] = [];
    let bouncer: FirewallBouncer | null = null;
    try {
      lapi = await startLapi({ ns: star.hub, host: star.gw4, port: 8080 });
      const dir = lapi.dir;
      const file = async (name: string, text: string) => {
        await Deno.writeTextFile(`${dir}/${name}`, text + "\n", { mode: 0o600 });
        return `${dir}/${name}`;
      };
      // One machine per pushing host, one bouncer key per host (1.4.6: shared keys miss decisions).
      const pwA = await file("pw-a", await lapi.addMachine("host-a"));
      const pwB = await file("pw-b", await lapi.addMachine("host-b"));
      const keyA = await file("key-a", await lapi.addBouncer("host-a"));
      const keyB = await file("key-b", await lapi.addBouncer("host-b"));
      const keyC = await lapi.addBouncer("host-c-firewall");
      const url = lapi.url;

      const A = joined(a, { url, machine: "host-a", pwFile: pwA, keyFile: keyA, port: 9101 });
      const B = joined(b, { url, machine: "host-b", pwFile: pwB, keyFile: keyB, port: 9102 });
      daemons.push(A, B);
      bouncer = await startFirewallBouncer(c.ns, {
        url,
        apiKey: keyC,
        frequency: `${POLL_S * 1000}ms`,
        dir,
      });
      await A.waitFor(/Listening on: e0/, 30_000);
      await B.waitFor(/Listening on: e0/, 30_000);
      await A.waitFor(/fleet: LAPI http:\/\/.* as machine "host-a" \(push\) and bouncer key/);
      // B is joined once its first pull has happened.
      await waitUntil("B's first pull", async () => {
        const h = await star.exec(b.ns, ["curl", "-s", "http://127.0.0.1:9102/healthz"]);
        return /"pull":"ok"/.test(h.stdout);
      }, 15_000);

      // Before: B answers S (closed ports, RST), so a drop later is the ban.
      assert.deepEqual(await states(star, s, b.v4, [22, 80, 443]), ["closed", "closed", "closed"]);

      // 1. nmap S → A: A bans S locally and pushes; B and C pull it.
      await states(star, s, a.v4, Array.from({ length: 30 }, (_, i) => 1000 + i));
      await A.waitFor(new RegExp(`IP ${esc(s.v4)} banned\\.`));
      const tA = performance.now();
      const onB = await waitUntil("S in B's set", () => inScanblockerSet(star, b.ns, s.v4), 10_000);
      const onC = await waitUntil("S in C's set", () => inCrowdsecSet(star, c.ns, s.v4), 10_000);
      console.log(
        `A's ban line → B's set ${onB.toFixed(0)} ms, → C's set ${
          (performance.now() - tA).toFixed(0)
        } ms (poll ${POLL_S} s)`,
      );
      assert.ok(onB < POLL_S * 1000 + SLACK_MS, `B took ${onB} ms`);
      assert.ok(onC < POLL_S * 1000 + SLACK_MS, `C took ${onC} ms`);
      // B and C never saw a probe, yet every port is filtered now.
      assert.deepEqual(await states(star, s, b.v4, [22, 80, 443, 8080]), Array(4).fill("filtered"));
      assert.deepEqual(await states(star, s, c.v4, [22, 80, 443, 8080]), Array(4).fill("filtered"));
      // A did not apply its own decision a second time; B counted one applied.
      assert.equal(
        await metric(
          star,
          b.ns,
          9102,
          /^scanblocker_fleet_decisions_total\{action="applied",origin="scanblocker"\}/,
        ),
        1,
      );
      assert.ok(!/refusing LAPI decision/.test(A.stderr()), A.stderr());

      // 2. cscli decisions delete → B unbans S (A keeps its own local ban).
      await lapi.cscliOk(["decisions", "delete", "--ip", s.v4]);
      await waitUntil(
        "S gone from B",
        async () => !(await inScanblockerSet(star, b.ns, s.v4)),
        10_000,
      );
      assert.ok(await inScanblockerSet(star, a.ns, s.v4), "A's own ban stays");
      assert.deepEqual(await states(star, s, b.v4, [22, 80]), ["closed", "closed"]);

      // 2b. IPv6: a cscli decision for S's IPv6 address → B drops S over IPv6.
      assert.deepEqual(await states(star, s, b.v6, [22, 80]), ["closed", "closed"]);
      await lapi.cscliOk(["decisions", "add", "--ip", s.v6, "--duration", "1h"]);
      await waitUntil(
        "S's IPv6 address in B's set",
        () => inScanblockerSet(star, b.ns, s.v6),
        10_000,
      );
      assert.deepEqual(await states(star, s, b.v6, [22, 80]), ["filtered", "filtered"]);

      // 3. A decision for B's gateway is refused on B, logged once, counted.
      await lapi.cscliOk(["decisions", "add", "--ip", star.gw4, "--duration", "1h"]);
      await B.waitFor(
        new RegExp(`refusing LAPI decision \\d+ \\(cscli, .*\\): ${esc(star.gw4)} is protected`),
      );
      assert.ok(!(await inScanblockerSet(star, b.ns, star.gw4)));
      assert.equal(
        await metric(
          star,
          b.ns,
          9102,
          /^scanblocker_fleet_decisions_total\{action="refused",origin="cscli"\}/,
        ),
        1,
      );

      // 4. A Range decision is a real CIDR match in B's kernel (an nftables
      // interval set): 203.0.113.9 is dropped, 203.0.114.1 is not.
      await lapi.cscliOk(["decisions", "add", "--range", "203.0.113.0/24", "--duration", "1h"]);
      const inSet = async (addr: string) =>
        (await star.exec(b.ns, [
          "nft",
          `get element inet scanblocker nets4 { ${addr} }`,
        ])).code === 0;
      const until = Date.now() + 10_000;
      while (!(await inSet("203.0.113.9")) && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.ok(await inSet("203.0.113.9"), "203.0.113.9 falls in the banned range on B");
      assert.ok(!(await inSet("203.0.114.1")), "203.0.114.1 is outside it");

      // 5. LAPI down while A bans two more scanners; back up → both reach B.
      const s2 = star.gw4.replace(/\.254$/, ".2"), s3 = star.gw4.replace(/\.254$/, ".3");
      await star.addAddress("s", s2);
      await star.addAddress("s", s3);
      await lapi.stop();
      await A.waitFor(/fleet: LAPI .* unreachable/, 10_000);
      for (const src of [s2, s3]) {
        await states(star, s, a.v4, Array.from({ length: 10 }, (_, i) => 2000 + i), src);
        await A.waitFor(new RegExp(`IP ${esc(src)} banned\\.`));
      }
      await lapi.start();
      await A.waitFor(/fleet: LAPI .* is back after/, 20_000);
      for (const src of [s2, s3]) {
        await waitUntil(
          `${src} on B after the outage`,
          () => inScanblockerSet(star, b.ns, src),
          15_000,
        );
      }
      // Metrics: three alerts sent by A; B reaches the LAPI and pulled a moment ago.
      assert.equal(
        await metric(star, a.ns, 9101, /^scanblocker_fleet_pushes_total\{result="sent"\}/),
        3,
      );
      assert.equal(await metric(star, b.ns, 9102, /^scanblocker_fleet_lapi_up /), 1);
      const age = await metric(star, b.ns, 9102, /^scanblocker_fleet_last_pull_age_seconds /);
      assert.ok(age >= 0 && age < 3, `last pull ${age} s ago`);
      for (const dm of [A, B]) {
        assert.equal(dm.stderr().match(/unreachable/g)?.length, 1, dm.stderr());
        assert.equal(dm.stderr().match(/is back after/g)?.length, 1, dm.stderr());
      }

      // 6. Wrong password and wrong key: one line each; D still bans locally.
      const D = joined(d, {
        url,
        machine: "host-a",
        pwFile: await file("pw-wrong", "not-the-password"),
        keyFile: await file("key-wrong", "0".repeat(32)),
        port: 9104,
      });
      daemons.push(D);
      await D.waitFor(/Listening on: e0/, 30_000);
      await D.waitFor(/refused machine "host-a"/, 15_000);
      await D.waitFor(/refused the bouncer key/, 15_000);
      // The scanner addresses S uses are banned fleet-wide by now; scan D from a fresh one.
      const s4 = star.gw4.replace(/\.254$/, ".4");
      await star.addAddress("s", s4);
      await states(star, s, d.v4, Array.from({ length: 10 }, (_, i) => 3000 + i), s4);
      await D.waitFor(new RegExp(`IP ${esc(s4)} banned\\.`));
      await new Promise((r) => setTimeout(r, 2000)); // more retries, no more lines
      assert.equal(D.stderr().match(/refused machine/g)?.length, 1, D.stderr());
      assert.equal(D.stderr().match(/refused the bouncer key/g)?.length, 1, D.stderr());
      const health = JSON.parse(
        (await star.exec(d.ns, ["curl", "-s", "http://127.0.0.1:9104/healthz"])).stdout,
      );
      assert.equal(health.status, "ok");
      assert.equal(health.fleet.push, "credentials refused");
      assert.equal(health.fleet.pull, "key refused");
      assert.equal(await D.stop(), 0, D.stderr());

      // 7. LAPI unreachable at start (nothing listens there): one line; D still bans locally.
      const D2 = joined(d, {
        url: `http://${star.gw4}:8081`,
        machine: "host-d",
        pwFile: pwB,
        keyFile: keyB,
        port: 9105,
      });
      daemons.push(D2);
      await D2.waitFor(/Listening on: e0/, 30_000);
      await D2.waitFor(
        /fleet: LAPI http:\/\/.*:8081 unreachable \(connection refused\); local detection and bans go on/,
        15_000,
      );
      const s5 = star.gw4.replace(/\.254$/, ".5");
      await star.addAddress("s", s5);
      await states(star, s, d.v4, Array.from({ length: 10 }, (_, i) => 4000 + i), s5);
      await D2.waitFor(new RegExp(`IP ${esc(s5)} banned\\.`));
      await new Promise((r) => setTimeout(r, 2000));
      assert.equal(D2.stderr().match(/unreachable/g)?.length, 1, D2.stderr());
      for (const dm of daemons) assert.equal(await dm.stop(), 0, dm.stderr());
    } finally {
      for (const dm of daemons) await dm.stop();
      await bouncer?.stop();
      await lapi?.destroy();
      await star.destroy();
      await run(["true"]);
    }
  },
});

Deno.test({
  name: "fleet e2e: a host on the iptables backend applies and removes LAPI decisions too",
  ...opts,
  fn: async () => {
    const star = await createStar("fi", { s: 1, b: 12 });
    const { s, b } = star.hosts;
    let lapi: Lapi | null = null;
    let B: Daemon | null = null;
    try {
      lapi = await startLapi({ ns: star.hub, host: star.gw4, port: 8080 });
      const keyFile = `${lapi.dir}/key-b`;
      await Deno.writeTextFile(keyFile, await lapi.addBouncer("host-b") + "\n", { mode: 0o600 });
      B = joined(b, {
        url: lapi.url,
        machine: "host-b",
        keyFile,
        port: 9106,
        firewall: "iptables",
      });
      await B.waitFor(/Listening on: e0/, 30_000);
      await B.waitFor(/fleet: LAPI .* as bouncer key/);
      assert.deepEqual(await states(star, s, b.v4, [22, 80]), ["closed", "closed"]);
      await lapi.cscliOk(["decisions", "add", "--ip", s.v4, "--duration", "1h"]);
      // The default iptables backend holds bans in its ipset set (one rule per ban without ipset).
      const held = async () =>
        (await star.exec(b.ns, ["iptables", "-S"])).stdout.includes(`-s ${s.v4}/32`) ||
        new RegExp(`^add scanblocker4 ${s.v4.replaceAll(".", "\\.")} `, "m").test(
          (await star.exec(b.ns, ["ipset", "save", "scanblocker4"])).stdout,
        );
      await waitUntil("S in B's chain or set", held, 10_000);
      assert.deepEqual(await states(star, s, b.v4, [22, 80]), ["filtered", "filtered"]);
      await lapi.cscliOk(["decisions", "delete", "--ip", s.v4]);
      await waitUntil("S gone from B's chain and set", async () => !(await held()), 10_000);
      assert.deepEqual(await states(star, s, b.v4, [22, 80]), ["closed", "closed"]);
      assert.equal(await B.stop(), 0, B.stderr());
    } finally {
      await B?.stop();
      await lapi?.destroy();
      await star.destroy();
    }
  },
});
