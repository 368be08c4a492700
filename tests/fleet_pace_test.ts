/**
 * How the fleet paces its pulls, against a stand-in LAPI (Deno.serve on
 * loopback) whose answers the test writes:
 *  - a decision the deltas never bring (CrowdSec's stream cursor skips a
 *    decision written while a pull runs; bench/lapi_cursor_race.ts) arrives
 *    with the next periodic full pull (startup=true), and one line says so;
 *  - at rest: one pull per period, a full one every fullPullMs, nothing more;
 *  - a delta that brings a decision (a campaign) shortens the period to a
 *    quarter for the hold time; then the grid comes back, with one full pull;
 *  - a ban this host makes also starts a campaign: the next pull moves up,
 *    but not while the LAPI fails (the retries keep their back-off).
 */
import assert from "node:assert/strict";
import { Fleet, type FleetAdd } from "../src/fleet/fleet.ts";
import { PullPace } from "../src/fleet/pace.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Pull {
  at: number;
  startup: boolean;
}

/** A stand-in LAPI; `answer` writes each stream answer (the JSON body, or a Response). */
function standIn(answer: (startup: boolean, at: number) => unknown) {
  const pulls: Pull[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const u = new URL(req.url);
    if (u.pathname === "/v1/decisions/stream") {
      const p = { at: performance.now(), startup: u.searchParams.get("startup") === "true" };
      pulls.push(p);
      const a = answer(p.startup, p.at);
      return a instanceof Response ? a : Response.json(a);
    }
    if (u.pathname === "/v1/watchers/login") {
      return Response.json({ token: "t", expire: new Date(Date.now() + 3_600_000).toISOString() });
    }
    if (u.pathname === "/v1/alerts") return Response.json(["1"]);
    return new Response("no", { status: 404 });
  });
  return { pulls, server, url: `http://127.0.0.1:${server.addr.port}` };
}

function decision(id: number, value: string) {
  return {
    id,
    origin: "cscli",
    type: "ban",
    scope: "Ip",
    value,
    duration: "3h59m59s",
    scenario: "manual",
  };
}

function fleet(url: string, pollMs: number, fullPullMs: number, lines: string[] = []) {
  const adds: { at: number; add: FleetAdd }[] = [];
  const f = new Fleet({
    url,
    machine: "m",
    password: null,
    apiKey: "k",
    version: "0.1.0",
    pollMs,
    fullPullMs,
    origins: null,
    warn: (l) => lines.push(l),
  }, {
    apply: (a) => {
      for (const add of a) adds.push({ at: performance.now(), add });
      return Promise.resolve();
    },
    isProtected: () => false,
  });
  return { f, adds };
}

const gaps = (ps: Pull[]) => ps.slice(1).map((p, i) => p.at - ps[i].at);
const fmt = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(" ");

Deno.test({
  name: "fleet: a decision no delta brings arrives with the next periodic full pull",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    let writtenAt = Infinity;
    // From writtenAt on the LAPI holds decision 7 (which no delta lists, as its
    // cursor skipped it) and decision 8 (which the next delta brings).
    let told8 = false;
    const s = standIn((startup, at) => {
      if (at < writtenAt) return { new: null, deleted: null };
      if (startup) return { new: [decision(7, "198.51.100.7"), decision(8, "198.51.100.8")] };
      if (told8) return { new: null, deleted: null };
      told8 = true;
      return { new: [decision(8, "198.51.100.8")], deleted: null };
    });
    const lines: string[] = [];
    const { f, adds } = fleet(s.url, 100, 1500, lines);
    try {
      f.start();
      while (s.pulls.length < 3) await sleep(5);
      writtenAt = performance.now();
      const has = (t: string) => adds.find((a) => a.add.target === t);
      const until = writtenAt + 5000;
      while (!has("198.51.100.7") && performance.now() < until) await sleep(10);
      assert.ok(has("198.51.100.8"), "the delta brought decision 8");
      const got7 = has("198.51.100.7");
      assert.ok(got7, `decision 7 never arrived (pulls: ${s.pulls.length})`);
      // With the first full pull after it was written, not a later one (pull records, not the
      // clock: a loaded CI machine once took 2.8 s where 1.8 s was allowed).
      const full = s.pulls.filter((p) => p.startup && p.at >= writtenAt);
      assert.ok(full.length >= 1, "it came with a full pull");
      assert.ok(got7.at >= full[0].at, "before any full pull");
      assert.ok(full.length < 2 || got7.at <= full[1].at, "not with the first full pull after it");
      assert.equal(adds.filter((a) => a.add.target === "198.51.100.8").length, 1, "8 once");
      assert.equal(
        lines.filter((l) => /a full pull brought 1 decision\(s\) no delta pull had/.test(l)).length,
        1,
        lines.join("\n"),
      );
    } finally {
      await f.stop(100);
      await s.server.shutdown();
    }
  },
});

Deno.test({
  name: "fleet: at rest one pull per period, a full one every fullPullMs, nothing more",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const s = standIn(() => ({ new: null, deleted: null }));
    const { f } = fleet(s.url, 100, 500);
    try {
      const t0 = performance.now();
      f.start();
      await sleep(2050);
      const ps = s.pulls.slice();
      // Bounded by the time that really passed (a loaded machine's sleep
      // runs long), and by the grid: a pull that ran late is followed by one
      // on time (a short gap), but never two pulls within one period.
      const slots = (performance.now() - t0) / 100;
      assert.ok(
        ps.length >= slots * 0.7 && ps.length <= Math.ceil(slots) + 1,
        `${ps.length} pulls in ${slots.toFixed(1)} periods: ${fmt(gaps(ps))}`,
      );
      const pairs = ps.slice(2).map((p, i) => p.at - ps[i].at);
      assert.ok(pairs.every((g) => g > 100), `two gaps in a row under a period: ${fmt(gaps(ps))}`);
      // The first (start), then one each 500 ms at most: the first pull at or
      // after its due time, later when a full pull was slow (its cost share:
      // 100 times its duration: a cold first request took 13 ms, so 1.3 s).
      const full = ps.filter((p) => p.startup);
      assert.ok(full[0] === ps[0] && full.length >= 2, `${full.length} full pulls`);
      const fullGaps = gaps(full);
      assert.ok(fullGaps.every((g) => g >= 490), `full pulls ${fmt(fullGaps)} ms apart`);
    } finally {
      await f.stop(100);
      await s.server.shutdown();
    }
  },
});

Deno.test({
  name: "fleet: news in a delta shortens the period for the hold time, then the grid is back",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    let newsAt = Infinity, told = false;
    const s = standIn((startup, at) => {
      if (startup || at < newsAt || told) return { new: null, deleted: null };
      told = true;
      return { new: [decision(3, "198.51.100.3")], deleted: null };
    });
    // poll 400 ms: campaign period 100 ms, hold max(10 s, 3 polls) = 10 s.
    const { f, adds } = fleet(s.url, 400, 600_000);
    try {
      f.start();
      while (s.pulls.length < 4) await sleep(5);
      const grid0 = s.pulls[1].at;
      newsAt = performance.now();
      while (adds.length === 0) await sleep(5);
      const newsPull = s.pulls[s.pulls.length - 1].at;
      await sleep(11_500);
      const later = s.pulls.filter((p) => p.at > newsPull);
      const end = later.findIndex((p) => p.startup);
      assert.ok(end > 0, "a full pull ends the campaign");
      const during = later.slice(0, end), after = later.slice(end);
      const dg = gaps(during);
      // About 99 pulls 100 ms apart (a loaded machine may drop a few).
      assert.ok(during.length >= 80 && during.length <= 100, `${during.length} during`);
      assert.ok(median(dg) > 90 && median(dg) < 110, `campaign gaps ${fmt(dg)}`);
      // It ends 10 s after the news, on the 400 ms grid of the start, and stays there.
      const endsAfter = after[0].at - newsPull;
      assert.ok(endsAfter > 9_900 && endsAfter < 10_500, `ended ${endsAfter.toFixed(0)} ms after`);
      assert.ok(
        after.length >= 3 && after.length <= 5,
        `${after.length} after: ${fmt(gaps(after))}`,
      );
      assert.ok(after.slice(1).every((p) => !p.startup));
      const off = after.map((p) => {
        const r = (p.at - grid0) % 400;
        return Math.min(r, 400 - r);
      });
      assert.ok(off.every((d) => d < 40), `off the grid by ${fmt(off)} ms`);
    } finally {
      await f.stop(100);
      await s.server.shutdown();
    }
  },
});

Deno.test({
  name: "fleet: a ban this host makes moves the next pull up (a campaign)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const s = standIn(() => ({ new: null, deleted: null }));
    const { f } = fleet(s.url, 2000, 600_000);
    try {
      f.start();
      while (s.pulls.length < 1) await sleep(5);
      await sleep(300);
      const at = performance.now();
      f.push({ target: "203.0.113.9", seconds: 60, ports: 4, windowSeconds: 60, at: Date.now() });
      while (s.pulls.length < 2) await sleep(5);
      // The grid would have pulled 2 s after the first; the campaign's is 500 ms.
      const wait = s.pulls[1].at - at;
      // (Bounded between the two, with room for a loaded machine.)
      assert.ok(wait < 1400, `next pull ${wait.toFixed(0)} ms after the ban`);
    } finally {
      await f.stop(100);
      await s.server.shutdown();
    }
  },
});

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1] ?? NaN;
}

Deno.test({
  name: "fleet: while pulls fail, local bans do not hasten the retries",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const s = standIn(() => new Response("busy", { status: 503 }));
    const { f } = fleet(s.url, 1000, 600_000);
    try {
      f.start();
      while (s.pulls.length < 1) await sleep(5);
      const at = performance.now();
      for (let i = 0; i < 6; i++) {
        f.push({
          target: `203.0.113.${i}`,
          seconds: 60,
          ports: 4,
          windowSeconds: 60,
          at: Date.now(),
        });
        await sleep(250);
      }
      // The back-off after a failure is one poll (1 s): at most one try a
      // second (and one more) in the time that really passed (~1.5 s).
      const took = performance.now() - at;
      const tries = s.pulls.filter((p) => p.at > at).length;
      assert.ok(
        tries <= Math.ceil(took / 1000) + 1,
        `${tries} pulls in ${took.toFixed(0)} ms while failing`,
      );
    } finally {
      await f.stop(100);
      await s.server.shutdown();
    }
  },
});

Deno.test("pace: the campaign period, hold and full-pull period for a few intervals", () => {
  const at = (pollMs: number) => new PullPace({ pollMs }, 0);
  assert.deepEqual(
    [100, 1000, 10_000].map((p) => [at(p).burstMs, at(p).holdMs, at(p).fullEveryMs]),
    [[50, 10_000, 60_000], [250, 10_000, 60_000], [2500, 30_000, 600_000]],
  );
  // A full pull that took long stretches the period: at most 1 % of the time.
  const p = at(1000);
  assert.ok(p.wantFull(0));
  p.fullDone(0, 2000);
  assert.ok(!p.wantFull(2000 + 199_000) && p.wantFull(2000 + 200_000));
  // The grid: on it at rest, a quarter of it in a campaign, back on it after.
  assert.equal(p.next(1500), 2000);
  p.campaign(1600);
  assert.deepEqual([p.next(1700), p.next(1850)], [1850, 2100]);
  assert.equal(p.next(11_500), 12_000);
  assert.ok(p.wantFull(12_000), "a full pull owed at the end of the campaign");
});
