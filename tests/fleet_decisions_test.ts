/**
 * The fleet's pure parts: Go duration strings as the LAPI writes them, the
 * decision stream (1.4.6's nulls, scopes, bad entries), canonical targets,
 * the protected-range check and the alert body.
 */
import assert from "node:assert/strict";
import { formatGoSeconds, parseGoDuration } from "../src/fleet/duration.ts";
import { canonicalTarget, parseStream, rangeTouches } from "../src/fleet/decisions.ts";
import { alertFor, ORIGIN, SCENARIO } from "../src/fleet/alert.ts";
import { parseAddress, parseCidr } from "../src/address.ts";

Deno.test("Go durations: the forms the LAPI writes, to the millisecond", () => {
  const cases: [string, number][] = [
    ["3h59m47.7s", (3 * 3600 + 59 * 60 + 47.7) * 1000],
    ["1h59m59.347922852s", (3600 + 59 * 60 + 59.347922852) * 1000],
    ["29m59.212022097s", (29 * 60 + 59.212022097) * 1000],
    ["-64.75ms", -64.75],
    ["4h", 4 * 3600_000],
    ["1h0m0s", 3600_000],
    ["90m", 5400_000],
    ["1.5h", 5400_000],
    ["0", 0],
    ["0s", 0],
    ["+3s", 3000],
    ["300ms", 300],
    ["1500us", 1.5],
    ["1500\u00b5s", 1.5],
    ["1500\u03bcs", 1.5],
    ["2000000ns", 2],
    [".5s", 500],
    ["1.s", 1000],
    ["2h45m0.5s", (2 * 3600 + 45 * 60 + 0.5) * 1000],
  ];
  for (const [text, ms] of cases) {
    const got = parseGoDuration(text);
    assert.ok(got !== null && Math.abs(got - ms) < 1e-6, `${text}: ${got} ≠ ${ms}`);
  }
  // Go's time.ParseDuration refuses all of these.
  for (
    const bad of ["", "-", "s", "4", "4 hours", "1d", "1hm", "5mss", ".s", "1h 2m", "abc", "--1s"]
  ) {
    assert.equal(parseGoDuration(bad), null, JSON.stringify(bad));
  }
  assert.equal(parseGoDuration("3000000h"), null, "beyond Go's int64 nanoseconds");
  assert.equal(formatGoSeconds(3600), "3600s");
  assert.equal(parseGoDuration(formatGoSeconds(42)), 42_000);
});

Deno.test("canonical targets: Ip and Range, IPv4 and IPv6, host bits cleared", () => {
  assert.equal(canonicalTarget("Ip", "203.0.113.7"), "203.0.113.7");
  assert.equal(canonicalTarget("ip", "2001:DB8:0:0::7"), "2001:db8::7");
  assert.equal(canonicalTarget("Range", "203.0.113.9/24"), "203.0.113.0/24");
  assert.equal(canonicalTarget("Range", "2001:db8:1:2::5/48"), "2001:db8:1::/48");
  assert.equal(canonicalTarget("Range", "198.51.100.4/32"), "198.51.100.4");
  assert.equal(canonicalTarget("Range", "0.0.0.0/0"), "0.0.0.0/0");
  assert.equal(canonicalTarget("Ip", "10.0.0.0/8"), null, "an Ip decision is one address");
  assert.equal(canonicalTarget("Country", "FR"), null);
  assert.equal(canonicalTarget("Range", "10.0.0.0/33"), null);
  assert.equal(canonicalTarget("Ip", "not-an-ip"), null);
});

Deno.test("decision stream: 1.4.6 nulls, other types and scopes skipped, bad entries counted", () => {
  assert.deepEqual(parseStream({ new: null, deleted: null }), {
    added: [],
    deleted: [],
    skipped: 0,
  });
  assert.deepEqual(parseStream({}), { added: [], deleted: [], skipped: 0 });
  const s = parseStream({
    new: [
      {
        id: 1,
        origin: "cscli",
        type: "ban",
        scope: "Ip",
        value: "203.0.113.7",
        duration: "3h59m47.7s",
        scenario: "x",
      },
      {
        id: 2,
        origin: "CAPI",
        type: "ban",
        scope: "Range",
        value: "2001:db8::/32",
        duration: "1h",
        scenario: "y",
      },
      {
        id: 3,
        origin: "cscli",
        type: "captcha",
        scope: "Ip",
        value: "203.0.113.8",
        duration: "1h",
        scenario: "z",
      },
      {
        id: 4,
        origin: "cscli",
        type: "ban",
        scope: "Country",
        value: "FR",
        duration: "1h",
        scenario: "z",
      },
      {
        id: 5,
        origin: "cscli",
        type: "ban",
        scope: "Ip",
        value: "203.0.113.9",
        duration: "4 hours",
        scenario: "z",
      },
      "junk",
    ],
    deleted: [
      {
        id: 9,
        origin: "crowdsec",
        type: "ban",
        scope: "Ip",
        value: "198.51.100.1",
        duration: "-64.75ms",
        scenario: "w",
      },
    ],
  });
  assert.deepEqual(s.added.map((d) => [d.id, d.target, d.origin]), [
    [1, "203.0.113.7", "cscli"],
    [2, "2001:db8::/32", "CAPI"],
  ]);
  assert.ok(Math.abs(s.added[0].remainingMs - 14387_700) < 1e-6);
  assert.deepEqual(s.deleted.map((d) => [d.id, d.target, d.remainingMs]), [[
    9,
    "198.51.100.1",
    -64.75,
  ]]);
  assert.equal(s.skipped, 4);
  assert.throws(() => parseStream(null), /expected an object/);
  assert.throws(() => parseStream({ new: "x" }), /not a list/);
});

Deno.test("protected ranges: a range holding a local address, overlapping --allow, or loopback", () => {
  const local = [parseAddress("10.1.2.3")!, parseAddress("fd00::2")!];
  const allowed = [parseCidr("192.0.2.0/24")!, parseCidr("2001:db8:5::/48")!];
  assert.ok(rangeTouches("10.1.0.0/16", local, allowed));
  assert.ok(rangeTouches("10.1.2.3", local, allowed));
  assert.ok(rangeTouches("192.0.2.128/25", local, allowed), "inside an allowed block");
  assert.ok(rangeTouches("192.0.0.0/16", local, allowed), "holds an allowed block");
  assert.ok(rangeTouches("2001:db8::/32", local, allowed));
  assert.ok(rangeTouches("127.0.0.0/8", local, allowed));
  assert.ok(rangeTouches("0.0.0.0/0", local, allowed));
  assert.ok(rangeTouches("fd00::/64", local, allowed));
  assert.ok(!rangeTouches("203.0.113.0/24", local, allowed));
  assert.ok(!rangeTouches("10.1.3.0/24", local, allowed));
  assert.ok(!rangeTouches("2001:db8:6::/48", local, allowed));
});

Deno.test("alert body: explicit ban decision, origin scanblocker, ports and window in the message", () => {
  const at = Date.UTC(2026, 11, 2, 15, 49, 22);
  const a = alertFor(
    { target: "203.0.113.7", seconds: 3600, ports: 4, windowSeconds: 60, at },
    "host-a",
    "0.1.0",
  );
  assert.equal(a.scenario, SCENARIO);
  assert.equal(a.scenario_hash, "");
  assert.deepEqual(a.events, []);
  assert.equal(a.start_at, "2026-12-02T15:49:22.000Z");
  assert.match(String(a.message), /203\.0\.113\.7 scanned 4 distinct ports in 60s \(host-a\)/);
  assert.deepEqual(a.source, { scope: "Ip", value: "203.0.113.7", ip: "203.0.113.7" });
  assert.deepEqual(a.decisions, [
    {
      origin: ORIGIN,
      type: "ban",
      scope: "Ip",
      value: "203.0.113.7",
      duration: "3600s",
      scenario: SCENARIO,
    },
  ]);
  const r = alertFor(
    { target: "2001:db8::/48", seconds: 0, ports: 9, windowSeconds: 1.5, at },
    "h",
    "v",
  );
  assert.equal((r.source as { scope: string }).scope, "Range");
  assert.equal((r.decisions as { duration: string }[])[0].duration, `${10 * 365 * 86400}s`);
  assert.equal(r.leakspeed, "2s");
});
