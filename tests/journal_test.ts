/**
 * journald-friendly lines from the real program. systemd connects stdout and
 * stderr to a journal socket and sets JOURNAL_STREAM to its "DEVICE:INODE";
 * here a shell does the same for the pipe the test reads (stat(1) of the
 * shell's own fd 1, which the program inherits), so the program sees exactly
 * what it would see under systemd. Lines then carry a syslog severity prefix
 * and no timestamp; with a JOURNAL_STREAM that names another stream the
 * output is byte for byte the original.
 */
import assert from "node:assert/strict";
import { runMain, spawnDaemon } from "./daemon.ts";
import { canUseNetns, createLab, esc, nmap, run } from "./netns.ts";

const root = new URL("..", import.meta.url).pathname;
const fixture = (name: string) => new URL(`./fixtures/${name}`, import.meta.url).pathname;
const program = [Deno.execPath(), "run", "-P", "--quiet", `${root}main.ts`];

/** argv that runs `cmd` with stderr on stdout and JOURNAL_STREAM naming that stream. */
const asJournal = (cmd: string[]) => [
  "sh",
  "-c",
  'exec 2>&1; JOURNAL_STREAM=$(stat -L -c %d:%i /proc/$$/fd/1) exec "$@"',
  "sh",
  ...cmd,
];

Deno.test("journal: -r prints <N> severities and no timestamps when stdout is the journal", async () => {
  const r = await run(asJournal([...program, "-r", fixture("eth.pcap"), "--log-rate", "0"]));
  assert.equal(r.code, 0, r.stderr);
  const events = r.stdout.split("\n").filter((l) => l.startsWith("<"));
  assert.ok(events.some((l) => /^<6>New connection: \S+ -> \S+$/.test(l)), r.stdout);
  assert.ok(events.some((l) => /^<4>Port scan detected: \S+ -> \S+$/.test(l)), r.stdout);
  // (Offline with no firewall nothing is banned, so no ban line: the live test below has them.)
  assert.ok(
    !/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: /m.test(r.stdout),
    "no line starts with a timestamp",
  );
  // The same events as the plain run, only the prefix differs.
  const plain = await runMain(["-r", fixture("eth.pcap"), "--log-rate", "0"]);
  const strip = (t: string) =>
    t.split("\n").map((l) => l.replace(/^<\d>/, "").replace(/^\d{4}-\S+ \S+: /, ""));
  assert.deepEqual(strip(r.stdout), strip(plain.stdout));
});

Deno.test("journal: a JOURNAL_STREAM naming another stream leaves the output byte for byte", async () => {
  const plain = await runMain(["-r", fixture("any-sll2.pcap")]);
  const other = await runMain(["-r", fixture("any-sll2.pcap")], { JOURNAL_STREAM: "8:12345" });
  assert.equal(other.stdout, plain.stdout);
  assert.ok(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: Port scan detected: /m.test(plain.stdout));
});

Deno.test("journal: --log-format json lines carry level (and the prefix under the journal)", async () => {
  const r = await run(asJournal([...program, "-r", fixture("eth.pcap"), "--log-format", "json"]));
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n").filter((l) => l.startsWith("<"));
  const parsed = lines.map((l) => ({ sev: l.slice(1, 2), e: JSON.parse(l.slice(3)) }));
  const scan = parsed.find((p) => p.e.event === "scan_detected");
  assert.equal(scan?.sev, "4");
  assert.equal(scan?.e.level, "warning");
  const conn = parsed.find((p) => p.e.event === "new_connection");
  assert.equal(conn?.sev, "6");
  assert.equal(conn?.e.level, "info");
  assert.ok(parsed.every((p) => typeof p.e.level === "string"));
});

Deno.test({
  name: "journal: the live daemon (capture worker and main thread) bans with <4>, notices with <6>",
  ignore: !(await canUseNetns()),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const lab = await createLab("jrnl");
    const d = spawnDaemon([
      "ip",
      "netns",
      "exec",
      lab.target,
      ...asJournal([
        ...program,
        "-i",
        lab.targetIf,
        "--firewall",
        "nftables",
        "--metrics-addr",
        "off",
        "--lockout-guard",
        "off",
      ]),
    ]);
    try {
      await d.waitFor(/<6>scanblocker: Listening on: /, 20000);
      const scan = await nmap(lab, ["-sS", "-p", "1-20", lab.target4]);
      assert.equal(scan.code, 0, scan.stderr);
      await d.waitFor(new RegExp(`^<4>IP ${esc(lab.scanner4)} banned\\.$`, "m"));
      const out = d.stdout();
      // Written by the capture worker's log.
      assert.match(out, new RegExp(`^<4>Port scan detected: ${esc(lab.scanner4)} -> `, "m"));
      assert.match(out, new RegExp(`^<6>New connection: ${esc(lab.scanner4)}:\\d+ -> `, "m"));
      for (const l of out.split("\n").filter(Boolean)) assert.match(l, /^<[3-6]>/);
    } finally {
      assert.equal(await d.stop(), 0, d.stdout());
      await lab.destroy();
    }
  },
});
