import assert from "node:assert/strict";
import { parseAddress } from "../src/address.ts";
import { EventLog, journalStreams, localTimestamp, stderrLine } from "../src/report/log.ts";

const b = (t: string) => parseAddress(t)!.bytes;
const capture = (format: "text" | "json", rate: number, journal = false) => {
  const out: string[] = [];
  const log = new EventLog(format, rate, (t) => out.push(t), { journal });
  return { log, lines: () => out.join("").split("\n").filter(Boolean) };
};
const T = new Date(2022, 2, 23, 23, 56, 6).getTime(); // local time, as the original prints

Deno.test("text lines are exactly the original tool's", () => {
  const { log, lines } = capture("text", 100);
  log.newConnection(T, 4, b("10.128.0.2"), 40772, b("10.128.0.3"), 28214);
  log.scanDetected(T, 4, b("10.128.0.2"), b("10.128.0.3"));
  log.banned(T, "10.128.0.2");
  log.alreadyBanned(T + 1000, "10.128.0.2", false);
  log.flush();
  assert.deepEqual(lines(), [
    "2022-03-23 23:56:06: New connection: 10.128.0.2:40772 -> 10.128.0.3:28214",
    "2022-03-23 23:56:06: Port scan detected: 10.128.0.2 -> 10.128.0.3",
    "2022-03-23 23:56:06: IP 10.128.0.2 banned.",
    "2022-03-23 23:56:07: IP to ban: 10.128.0.2 is already in disallowed list.",
  ]);
});

Deno.test("IPv6 endpoints are bracketed and compressed", () => {
  const { log, lines } = capture("text", 100);
  log.newConnection(T, 6, b("fd77::1"), 40772, b("fd77:0:0:0:0:0:0:2"), 22);
  log.scanDetected(T, 6, b("fd77::1"), b("fd77::2"));
  log.flush();
  assert.deepEqual(lines(), [
    "2022-03-23 23:56:06: New connection: [fd77::1]:40772 -> [fd77::2]:22",
    "2022-03-23 23:56:06: Port scan detected: fd77::1 -> fd77::2",
  ]);
});

Deno.test("New connection lines are limited per second; detections and bans never", () => {
  const { log, lines } = capture("text", 3);
  for (let i = 0; i < 10; i++) {
    log.newConnection(T + i, 4, b("10.0.0.1"), 1000 + i, b("10.0.0.2"), 80);
  }
  log.scanDetected(T + 20, 4, b("10.0.0.1"), b("10.0.0.2"));
  log.banned(T + 21, "10.0.0.1");
  for (let i = 0; i < 5; i++) {
    log.newConnection(T + 1000 + i, 4, b("10.0.0.1"), 2000 + i, b("10.0.0.2"), 80);
  }
  log.flush(T + 2000);
  const l = lines();
  assert.equal(l.filter((x) => x.includes("New connection:")).length, 6);
  assert.equal(l.filter((x) => x.includes("Port scan detected")).length, 1);
  assert.equal(l.filter((x) => x.includes("banned.")).length, 1);
  const sup = l.filter((x) => x.includes("suppressed"));
  assert.equal(sup.length, 2);
  assert.match(sup[0], /: 7 New connection lines suppressed \(limit 3\/s\)\./);
  assert.match(sup[1], /: 2 New connection lines suppressed/);
  assert.equal(log.suppressedTotal, 9);
});

Deno.test("--log-rate 0 means no limit", () => {
  const { log, lines } = capture("text", 0);
  for (let i = 0; i < 500; i++) log.newConnection(T, 4, b("10.0.0.1"), i, b("10.0.0.2"), 80);
  log.flush(T);
  assert.equal(lines().length, 500);
});

Deno.test("JSON lines carry the same events", () => {
  const { log, lines } = capture("json", 100);
  log.newConnection(T, 6, b("fd77::1"), 40772, b("fd77::2"), 22);
  log.scanDetected(T, 4, b("10.0.0.1"), b("10.0.0.2"), { scanType: "syn" });
  log.banned(T, "10.0.0.1");
  log.alreadyBanned(T, "10.0.0.1", false);
  log.flush();
  const [a, s, x, y] = lines().map((l) => JSON.parse(l));
  assert.deepEqual(a, {
    time: new Date(T).toISOString(),
    level: "info",
    event: "new_connection",
    family: "ipv6",
    src: "fd77::1",
    sport: 40772,
    dst: "fd77::2",
    dport: 22,
  });
  assert.equal(s.event, "scan_detected");
  assert.equal(s.level, "warning");
  assert.equal(s.scan_type, "syn");
  assert.equal(x.event, "banned");
  assert.equal(x.level, "warning");
  assert.equal(y.event, "already_banned");
  assert.equal(y.level, "notice");
});

Deno.test("local timestamps are zero-padded", () => {
  assert.equal(localTimestamp(new Date(2024, 0, 2, 3, 4, 5).getTime()), "2024-01-02 03:04:05");
});

Deno.test("journal: severity prefixes and no timestamps; the text after them is the original's", () => {
  const { log, lines } = capture("text", 2, true);
  for (let i = 0; i < 3; i++) {
    log.newConnection(T, 4, b("10.128.0.2"), 40772 + i, b("10.128.0.3"), 28214);
  }
  log.scanDetected(T, 4, b("10.128.0.2"), b("10.128.0.3"));
  log.banned(T, "10.128.0.2");
  log.alreadyBanned(T + 1000, "10.128.0.2", false);
  log.flush(T + 2000);
  assert.deepEqual(lines(), [
    "<6>New connection: 10.128.0.2:40772 -> 10.128.0.3:28214",
    "<6>New connection: 10.128.0.2:40773 -> 10.128.0.3:28214",
    "<4>Port scan detected: 10.128.0.2 -> 10.128.0.3",
    "<4>IP 10.128.0.2 banned.",
    "<5>IP to ban: 10.128.0.2 is already in disallowed list.",
    "<5>1 New connection lines suppressed (limit 2/s).",
  ]);
  assert.equal(stderrLine("x failed", 3, true), "<3>scanblocker: x failed\n");
  assert.equal(stderrLine("x failed", 3, false), "scanblocker: x failed\n");
});

Deno.test("journal: JSON lines get the prefix too, and keep level", () => {
  const { log, lines } = capture("json", 100, true);
  log.banned(T, "10.0.0.1");
  log.flush();
  const [l] = lines();
  assert.ok(l.startsWith("<4>{"), l);
  assert.equal(JSON.parse(l.slice(3)).level, "warning");
});

Deno.test("journal: JOURNAL_STREAM counts only when it names this process's stdout/stderr", () => {
  const st = Deno.statSync("/proc/self/fd/1"); // the test runs with -A
  const own = `${st.dev}:${st.ino}`;
  assert.equal(journalStreams(own).stdout, true);
  assert.equal(journalStreams(`${st.dev}:${st.ino! + 1}`).stdout, false);
  const err = Deno.statSync("/proc/self/fd/2");
  assert.equal(journalStreams(`${err.dev}:${err.ino}`).stderr, true);
  assert.equal(journalStreams("nonsense").stdout, false);
  assert.deepEqual(journalStreams(undefined), { stdout: false, stderr: false });
});

Deno.test("connection lines are formatted at flush from a copy, in order, in the format they were taken in", () => {
  const { log, lines } = capture("text", 100);
  // The capture path reuses one buffer for every packet's addresses.
  const src = b("10.128.0.2"), dst = b("10.128.0.3");
  log.newConnection(T, 4, src, 40772, dst, 22);
  src.set(b("10.9.9.9"));
  dst.set(b("10.8.8.8"));
  log.scanDetected(T, 4, b("10.128.0.2"), b("10.128.0.3"));
  log.newConnection(T + 1000, 4, src, 1, dst, 2);
  // A reload to JSON: what was taken before it stays text.
  log.configure("json", 100);
  log.newConnection(T + 2000, 4, src, 3, dst, 4);
  log.flush();
  const got = lines();
  assert.deepEqual(got.slice(0, 3), [
    "2022-03-23 23:56:06: New connection: 10.128.0.2:40772 -> 10.128.0.3:22",
    "2022-03-23 23:56:06: Port scan detected: 10.128.0.2 -> 10.128.0.3",
    "2022-03-23 23:56:07: New connection: 10.9.9.9:1 -> 10.8.8.8:2",
  ]);
  const last = JSON.parse(got[3]);
  assert.equal(last.event, "new_connection");
  assert.equal(last.src, "10.9.9.9");
  assert.equal(last.dport, 4);
});
