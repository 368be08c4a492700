/**
 * Offline mode from standard input (`-r -`, libpcap reads "-" as stdin) through
 * real pipes, and the progress line: shown on a terminal (a real pty from
 * script(1)) for a file over PROGRESS_MIN_BYTES, never when stderr is not a
 * terminal, never for a small file.
 */
import assert from "node:assert/strict";
import { runMain } from "./daemon.ts";
import { run } from "./netns.ts";
import { writeSynPcap } from "./pcap_files.ts";
import { PROGRESS_MIN_BYTES } from "../src/report/progress.ts";

const root = new URL("..", import.meta.url).pathname;
const fixture = (name: string) => new URL(`./fixtures/${name}`, import.meta.url).pathname;
const program = `${Deno.execPath()} run -P --quiet ${root}main.ts`;
const sh = (script: string) => run(["sh", "-c", script]);

Deno.test("-r - reads the capture from a pipe: same output as the file", async () => {
  const file = await runMain(["-r", fixture("eth.pcap"), "--log-rate", "0"]);
  assert.equal(file.code, 0, file.stderr);
  const piped = await sh(`cat ${fixture("eth.pcap")} | ${program} -r - --log-rate 0`);
  assert.equal(piped.code, 0, piped.stderr);
  assert.equal(piped.stdout, file.stdout);
  assert.match(piped.stdout, /Summary: 222 packets, 216 connection attempts, 2 scans/);
});

Deno.test("-r - after tcpdump -w -: the pipeline an operator types", async () => {
  const r = await sh(
    `tcpdump -n -r ${fixture("any-sll2.pcap")} -w - 2>/dev/null | ${program} -r -`,
  );
  assert.equal(r.code, 0, r.stderr);
  const file = await runMain(["-r", fixture("any-sll2.pcap")]);
  assert.equal(r.stdout, file.stdout);
  assert.match(r.stdout, /Port scan detected/);
});

Deno.test("-r - with nothing on stdin: one line, exit 2", async () => {
  const r = await sh(`${program} -r - </dev/null`);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^scanblocker: cannot read a capture from standard input: .*\n$/);
});

Deno.test("progress: percent and packets/s on a terminal for a big file; never in a pipe", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sb-progress-" });
  try {
    const big = `${dir}/big.pcap`;
    writeSynPcap(big, 130_000);
    assert.ok(Deno.statSync(big).size > PROGRESS_MIN_BYTES);
    const args = `-r ${big} --log-rate 1 --log-format json`;
    // script(1) runs the program on a pseudo-terminal and copies what it printed.
    const tty = await run(["script", "-qfec", `${program} ${args}`, "/dev/null"]);
    assert.equal(tty.code, 0, tty.stdout + tty.stderr);
    assert.match(tty.stdout, /\d+\.\d% {2}[\d,]+ packets {2}[\d,]+ packets\/s/);
    assert.match(tty.stdout, /"event":"summary","packets":130000/);
    // The same run with stderr a pipe: no progress at all.
    const pipe = await sh(`${program} ${args} </dev/null`);
    assert.equal(pipe.code, 0, pipe.stderr);
    assert.equal(pipe.stderr, "");
    // A small file on a terminal: nothing either.
    const small = await run([
      "script",
      "-qfec",
      `${program} -r ${fixture("eth.pcap")}`,
      "/dev/null",
    ]);
    assert.ok(!/packets\/s/.test(small.stdout), small.stdout);
    // Standard input on a terminal: size unknown, no progress.
    const stdin = await run([
      "script",
      "-qfec",
      `sh -c 'cat ${big} | ${program} -r - --log-rate 1'`,
      "/dev/null",
    ]);
    assert.ok(!/packets\/s/.test(stdin.stdout), stdin.stdout.slice(0, 500));
    assert.match(stdin.stdout, /Summary: 130000 packets/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
