/**
 * Does CrowdSec's decision stream lose decisions? (issue 16: one scanner of
 * 120 banned on A never reached B at --lapi-poll 0.1.) A real LAPI (Debian
 * crowdsec 1.4.6, LAPI only, on loopback) takes PUSHES one-decision alerts
 * as fast as it answers, from WRITERS watchers in parallel, while one
 * bouncer key pulls deltas (`startup=false`) every PULL_MS; at the end one
 * `startup=true` pull with the same key gives the whole active set, and
 * every active decision that no delta brought is a miss.
 *
 * Why one could be missed (read in crowdsec v1.4.6,
 * pkg/apiserver/controllers/v1/decisions.go StreamDecision and
 * pkg/database/alerts.go CreateAlertBulk): a delta returns decisions with
 * `created_at > last_pull` and then sets the key's `last_pull` to the time the
 * handler began (`streamStartTime`); a decision's `created_at` is set in Go
 * (ent default) just before its INSERT, which commits later (after the
 * SQLite write lock, which the bouncers' own `last_pull` updates also take).
 * A decision stamped before a pull began but committed after that pull's
 * query is in no delta, ever: only a `startup=true` pull brings it.
 *
 * Bounded: PUSHES decisions (default 1500), 120 s at most (plus 70 s with
 * SB_RACE_FLEET), loopback only. Prints the misses with their created_at
 * against the pulls around them.
 *
 * With SB_RACE_FLEET=1 the program's own puller (src/fleet/fleet.ts, at
 * --lapi-poll PULL_MS, full pulls every minute) pulls too, with a key of its
 * own: every active decision must reach it, the skipped ones with its next
 * full pull; prints when the last one did.
 *
 *   deno run -A bench/lapi_cursor_race.ts   (SB_RACE_PUSHES, SB_RACE_PULL_MS, SB_RACE_WRITERS, SB_RACE_FLEET)
 */
import { alertFor } from "../src/fleet/alert.ts";
import { Fleet } from "../src/fleet/fleet.ts";
import { LapiClient } from "../src/fleet/lapi.ts";
import { startLapi } from "../tests/lapi.ts";

const PUSHES = Math.min(5000, Number(Deno.env.get("SB_RACE_PUSHES") ?? 1500));
const PULL_MS = Math.max(0, Number(Deno.env.get("SB_RACE_PULL_MS") ?? 20));
const WRITERS = Math.max(1, Math.min(4, Number(Deno.env.get("SB_RACE_WRITERS") ?? 2)));
const LIMIT_MS = 120_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The decisions a stream answer lists under `key` (1.4.6 writes null for none). */
function ids(body: unknown, key: "new" | "deleted"): { id: number; value: string }[] {
  const list = (body as Record<string, unknown> | null)?.[key];
  return Array.isArray(list) ? list as { id: number; value: string }[] : [];
}

if (import.meta.main) {
  const lapi = await startLapi();
  try {
    const key = await lapi.addBouncer("race-b");
    const machines = [];
    for (let w = 0; w < WRITERS; w++) {
      const m = `race-a${w}`;
      machines.push(
        new LapiClient({
          url: lapi.url,
          machine: m,
          password: await lapi.addMachine(m),
          apiKey: null,
          userAgent: "race/1",
        }),
      );
    }
    const pull = async (startup: boolean) => {
      const t0 = Date.now();
      const r = await fetch(`${lapi.url}/v1/decisions/stream?startup=${startup}`, {
        headers: { "x-api-key": key, "user-agent": "race/1" },
      });
      const body = await r.json();
      return { t0, t1: Date.now(), body };
    };
    await pull(true); // the key's cursor starts now
    const held = new Map<string, number>(); // the program's puller: target → when applied
    const fleetLines: string[] = [];
    const fleet = Deno.env.get("SB_RACE_FLEET")
      ? new Fleet({
        url: lapi.url,
        machine: "race-fleet",
        password: null,
        apiKey: await lapi.addBouncer("race-fleet"),
        version: "0.1.0",
        pollMs: Math.max(50, PULL_MS),
        origins: null,
        warn: (l) => fleetLines.push(l),
      }, {
        apply: (adds) => {
          for (const a of adds) if (!held.has(a.target)) held.set(a.target, performance.now());
          return Promise.resolve();
        },
        isProtected: () => false,
      })
      : null;
    fleet?.start();
    const seen = new Set<number>();
    const pulls: { t0: number; t1: number; n: number }[] = [];
    let pushing = true;
    const deadline = Date.now() + LIMIT_MS;
    const puller = (async () => {
      while ((pushing || pulls.length < 3) && Date.now() < deadline) {
        const p = await pull(false);
        const got = ids(p.body, "new");
        for (const d of got) seen.add(d.id);
        pulls.push({ t0: p.t0, t1: p.t1, n: got.length });
        if (PULL_MS > 0) await sleep(PULL_MS);
      }
    })();
    const t0 = Date.now();
    let next = 0, failures = 0;
    await Promise.all(machines.map(async (c) => {
      while (Date.now() < deadline) {
        const i = next++;
        if (i >= PUSHES) break;
        const target = `198.18.${i >> 8}.${i & 255}`;
        const alert = alertFor(
          { target, seconds: 3600, ports: 4, windowSeconds: 60, at: Date.now() },
          "race",
          "1",
        );
        // 1.4.6 answers 500 "database is locked" to concurrent writers now and then: again.
        for (let a = 0; a < 20; a++) {
          try {
            await c.pushAlerts([alert]);
            break;
          } catch (e) {
            failures++;
            if (failures <= 3) console.log(`  (push failed, again: ${(e as Error).message})`);
            await sleep(10);
          }
        }
      }
    }));
    const pushMs = Date.now() - t0;
    await sleep(Math.max(200, 3 * PULL_MS));
    pushing = false;
    await puller;
    await sleep(50);
    const full = await pull(true);
    const active = ids(full.body, "new");
    const missed = active.filter((d) => !seen.has(d.id));
    if (fleet) {
      // Every active decision must reach the program's puller (full pulls every minute).
      const tEnd = performance.now();
      const want = () => active.filter((d) => !held.has(d.value)).length;
      while (want() > 0 && performance.now() - tEnd < 70_000) await sleep(100);
      await fleet.stop(100);
      const last = Math.max(...active.map((d) => held.get(d.value) ?? Infinity));
      console.log(
        `the program's puller (--lapi-poll ${Math.max(50, PULL_MS)} ms, own key): ` +
          `${active.length - want()} of ${active.length} active decisions held, the last ` +
          `${((last - tEnd) / 1000).toFixed(1)} s after the pushes ended; its lines: ` +
          fleetLines.slice(1).join(" | "),
      );
    }
    console.log(
      `${Math.min(next, PUSHES)} decisions pushed by ${WRITERS} watcher(s) in ${pushMs} ms ` +
        `while one key pulled deltas every ${PULL_MS} ms (${pulls.length} pulls, ` +
        `median ${
          pulls.map((p) => p.t1 - p.t0).sort((a, b) => a - b)[pulls.length >> 1]
        } ms each): ` +
        `${active.length} active at the end, ${seen.size} brought by deltas, ` +
        `${missed.length} MISSED by every delta (only startup=true has them); ${failures} pushes failed and were sent again`,
    );
    if (missed.length > 0) {
      // created_at of each miss (the LAPI's database) against the pulls around it.
      const db = `${lapi.dir}/data/crowdsec.db`;
      const q = await new Deno.Command("sqlite3", {
        args: [
          db,
          `select id, value, created_at from decisions where id in (${
            missed.slice(0, 20).map((d) => d.id).join(",")
          })`,
        ],
        stdout: "piped",
      }).output();
      // Each miss's created_at against the pull in flight then (client clock, same host).
      for (const row of new TextDecoder().decode(q.stdout).trim().split("\n")) {
        const [id, value, created] = row.split("|");
        const at = Date.parse(created.replace(" ", "T").replace(/(\.\d{3})\d*/, "$1"));
        const p = pulls.find((x) => x.t1 >= at);
        const rel = p
          ? `${at - p.t0} ms after the start of the pull ${p.t0}–${p.t1} (${p.n} new)`
          : "";
        console.log(`  missed id ${id} ${value}: created_at ${created}, ${rel}`);
      }
    }
  } finally {
    await lapi.destroy();
  }
}
