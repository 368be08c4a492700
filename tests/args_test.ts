/**
 * The command-line parser (src/args.ts) against node:util's parseArgs
 * (strict, positionals allowed), which it replaces: on the program's own
 * options and thousands of generated command lines, the same values and
 * positionals, or an error with the same first line.
 */
import assert from "node:assert/strict";
import { parseArgs as nodeParseArgs } from "node:util";
import { type ArgOption, parseArgs } from "../src/args.ts";

const OPTIONS: Record<string, ArgOption> = {
  interface: { type: "string", short: "i" },
  read: { type: "string", short: "r" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
  allow: { type: "string", multiple: true },
  hook: { type: "string", multiple: true },
  "ban-time": { type: "string" },
  json: { type: "boolean" },
  quiet: { type: "boolean", short: "q" },
  verbose: { type: "boolean", short: "v", multiple: true },
};

type Outcome = { values: Record<string, unknown>; positionals: string[] } | { error: string };

function ours(args: string[]): Outcome {
  try {
    const r = parseArgs(args, OPTIONS);
    return { values: { ...r.values }, positionals: r.positionals };
  } catch (e) {
    return { error: (e as Error).message.split("\n")[0] };
  }
}

function node(args: string[]): Outcome {
  try {
    const r = nodeParseArgs({ args, options: OPTIONS, allowPositionals: true, strict: true });
    return { values: { ...r.values }, positionals: r.positionals };
  } catch (e) {
    return { error: (e as Error).message.split("\n")[0] };
  }
}

Deno.test("args: the same as parseArgs on hand-picked command lines", () => {
  const cases: string[][] = [
    [],
    ["-i", "eth0"],
    ["-ieth0"],
    ["--interface", "eth0", "--interface=eth1"],
    ["--interface"],
    ["-i"],
    ["-i", "-x"],
    ["--interface", "--read"],
    ["--interface=-x"],
    ["-i-x"],
    ["--allow", "10.0.0.1", "--allow=10.0.0.2", "--allow", "::1"],
    ["--help"],
    ["-h"],
    ["-hq"],
    ["-hqieth0"],
    ["-hqi", "eth0"],
    ["-hqi"],
    ["-hqx"],
    ["--help=1"],
    ["-h=1"],
    ["--bogus"],
    ["--bogus=3"],
    ["-x"],
    ["-5"],
    ["unban", "10.0.0.1"],
    ["bans", "--", "--help", "-i"],
    ["-", "x"],
    [""],
    ["--"],
    ["--=x"],
    ["-vv", "-v"],
    ["--ban-time", "1h", "--json", "status"],
    ["--version", "--version"],
    ["-r", "-"],
    ["-r", "file.pcap", "-i", "eth0"],
  ];
  for (const c of cases) assert.deepStrictEqual(ours(c), node(c), JSON.stringify(c));
});

Deno.test("args: the same as parseArgs on 5,000 generated command lines", () => {
  const words = [
    "-i",
    "-r",
    "-h",
    "-q",
    "-v",
    "-x",
    "-hq",
    "-qi",
    "-ivx",
    "-hi",
    "--interface",
    "--read",
    "--help",
    "--version",
    "--allow",
    "--hook",
    "--ban-time",
    "--json",
    "--quiet",
    "--bogus",
    "--allow=1",
    "--help=",
    "--interface=",
    "--",
    "-",
    "eth0",
    "10.0.0.1",
    "-1",
    "status",
    "",
    "--verbose",
    "-vq",
    "--ban-time=-3",
  ];
  let s = 12345;
  const next = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 8;
  for (let n = 0; n < 5000; n++) {
    const args = Array.from({ length: next() % 8 }, () => words[next() % words.length]);
    assert.deepStrictEqual(ours(args), node(args), JSON.stringify(args));
  }
});
