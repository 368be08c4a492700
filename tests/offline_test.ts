/**
 * The whole program in offline mode (`-r FILE`), run as a process with the
 * permission set the compiled binary gets: same lines as live, a summary,
 * deterministic output, and clean failures for bad files and flags.
 */
import assert from "node:assert/strict";
import { runMain } from "./daemon.ts";
import { writeSynPcap } from "./pcap_files.ts";

const fixture = (name: string) => new URL(`./fixtures/${name}`, import.meta.url).pathname;

Deno.test("-r reports the recorded nmap scans with the original's lines and a summary", async () => {
  const r = await runMain(["-r", fixture("eth.pcap"), "--log-rate", "0"]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!/\n\s+at /.test(r.stderr), "no stack trace");
  const lines = r.stdout.trim().split("\n");
  const line = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: /;
  assert.ok(lines.some((l) => line.test(l) && l.includes(": New connection: ")));
  const scans = lines.filter((l) => l.includes(": Port scan detected: "));
  assert.ok(scans.length >= 1, r.stdout);
  for (const s of scans) assert.match(s, line);
  // Default firewall with -r is none: nothing is banned, and no line claims it.
  assert.ok(!lines.some((l) => / IP \S+ banned\.$|already in disallowed list/.test(l)), r.stdout);
  const summary = lines.find((l) => l.startsWith("Summary: "));
  assert.match(summary ?? "", /^Summary: \d+ packets, \d+ connection attempts, [1-9]\d* scans/);
  assert.ok(lines.some((l) => /^Scan: \S+ -> \S+, \d+ distinct ports, first .*, last /.test(l)));
});

Deno.test("the same capture replayed twice gives identical output", async () => {
  const a = await runMain(["-r", fixture("any-sll2.pcap")]);
  const b = await runMain(["-r", fixture("any-sll2.pcap")]);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(a.stdout, b.stdout);
  assert.ok(a.stdout.includes("Port scan detected"), a.stdout);
});

Deno.test("--log-format json carries the same events and a JSON summary", async () => {
  const r = await runMain(["-r", fixture("eth.pcap"), "--log-format", "json"]);
  assert.equal(r.code, 0, r.stderr);
  const events = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
  assert.ok(events.some((e) => e.event === "new_connection" && typeof e.dport === "number"));
  const scan = events.find((e) => e.event === "scan_detected");
  assert.ok(scan && scan.src && scan.dst && scan.family && scan.scan_type === "syn");
  const sum = events.at(-1);
  assert.equal(sum.event, "summary");
  assert.ok(sum.scans.length >= 1);
});

Deno.test("--ports and --window change the verdict on the same capture", async () => {
  const strict = await runMain([
    "-r",
    fixture("eth.pcap"),
    "--ports",
    "60000",
    "--slow-ports",
    "0",
  ]);
  assert.equal(strict.code, 0, strict.stderr);
  assert.ok(!strict.stdout.includes("Port scan detected"));
  assert.match(strict.stdout, /, 0 scans/);
  // The slow rule alone still sees the 100-port scans.
  const slow = await runMain(["-r", fixture("eth.pcap"), "--ports", "60000"]);
  assert.match(slow.stdout, /Port scan detected/);
  // psd scoring: 100 ports within a fraction of a second is far over 21.
  const psd = await runMain(["-r", fixture("eth.pcap"), "--detector", "psd", "--slow-ports", "0"]);
  assert.equal(psd.code, 0, psd.stderr);
  assert.match(psd.stdout, /Port scan detected/);
});

Deno.test("bad capture files: a clear message and the right exit code, never a stack trace", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const garbage = `${dir}/garbage.pcap`;
    Deno.writeFileSync(
      garbage,
      new TextEncoder().encode("this is not a capture file\n".repeat(10)),
    );
    const empty = `${dir}/empty.pcap`;
    Deno.writeFileSync(empty, new Uint8Array(0));
    const whole = Deno.readFileSync(fixture("eth.pcap"));
    const truncated = `${dir}/truncated.pcap`;
    Deno.writeFileSync(truncated, whole.subarray(0, Math.floor(whole.length / 2) + 7));
    for (
      const [file, codes] of [[garbage, [2]], [empty, [2]], [`${dir}/missing.pcap`, [2]]] as const
    ) {
      const r = await runMain(["-r", file]);
      assert.ok(
        (codes as readonly number[]).includes(r.code),
        `${file}: exit ${r.code}: ${r.stderr}`,
      );
      assert.match(r.stderr, /scanblocker: /);
      assert.ok(r.stderr.trim().split("\n").length <= 2, r.stderr);
      assert.ok(!/\n\s+at /.test(r.stderr), r.stderr);
    }
    // A truncated capture: everything before the cut is analysed, then one line on stderr.
    const t = await runMain(["-r", truncated]);
    assert.ok(t.code === 0 || t.code === 1, t.stderr);
    assert.match(t.stdout, /^Summary: [1-9]\d* packets/m);
    assert.ok(!/\n\s+at /.test(t.stderr), t.stderr);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("bad flags and environment values exit 2 with one line", async () => {
  for (
    const [args, env, re] of [
      [["--ports", "0"], {}, /--ports "0"/],
      [["--bogus"], {}, /bogus/],
      [[], { SB_WINDOW: "-3" }, /SB_WINDOW "-3"/],
      [["--firewall", "pf", "-r", fixture("eth.pcap")], {}, /--firewall "pf"/],
    ] as const
  ) {
    const r = await runMain([...args], { ...env });
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
});

Deno.test("--help and --version", async () => {
  const h = await runMain(["--help"]);
  assert.equal(h.code, 0);
  assert.match(h.stdout, /--interface/);
  const v = await runMain(["--version"]);
  assert.equal(v.code, 0);
  assert.match(v.stdout, /^scanblocker \d+\.\d+\.\d+ \(deno \d+\.\d+\.\d+/);
});

Deno.test("a metrics address in use: one line naming it and how to change it, exit 2 (configuration)", async () => {
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = (busy.addr as Deno.NetAddr).port;
    const r = await runMain(["-r", fixture("eth.pcap"), "--metrics-addr", `127.0.0.1:${port}`]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`127\\.0\\.0\\.1:${port}`));
    assert.match(r.stderr, /--metrics-addr/);
    assert.ok(!/\n\s+at /.test(r.stderr), r.stderr);
  } finally {
    busy.close();
  }
});

Deno.test("-r: the compiled packet path is not thrown away when the event loop first turns", async () => {
  // The process's first postMessage (the offline loop's event-loop turn,
  // every 20 ms) changes a prototype chain V8's compiled packet path depends
  // on. Taken 20 ms into this file, it deoptimised processBatch, #probe,
  // the decoders and the sketch (8 functions) and aborted an 11 ms Turbofan
  // job; the loop now turns once before the first batch. Read from standard
  // input (one thread) and by path (a decoding thread: its start posts first).
  const dir = Deno.makeTempDirSync({ prefix: "sb-turn-" });
  try {
    const path = `${dir}/syn.pcap`;
    writeSynPcap(path, 300_000);
    const local = ["--local", "10.255.0.1", "--local", "fd00::ffff:1"];
    for (const stdin of [true, false]) {
      const r = await runMain(["-r", stdin ? "-" : path, ...local], {}, {
        v8Flags: "--trace-deopt",
        stdinFile: stdin ? path : undefined,
      });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /Summary: 300000 packets, 300000 connection attempts, 0 scans/);
      // The packet path's functions (the teardown after the summary may change prototypes freely).
      const hit = r.stdout.match(
        /SharedFunctionInfo (processBatch|#runChunk|runDecoded|#probe|#verdict|decode\w*|touch|seeKey|#put|newConnection|walkRecords)>\) \(opt id \d+\) for deoptimization, reason: dependent prototype chain changed/g,
      ) ?? [];
      assert.deepEqual(hit, [], `compiled code thrown away (${stdin ? "stdin" : "path"})`);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
