/**
 * The README's options table and `--help` list the same options, each with
 * its environment variable; the README names the subcommands and every
 * metric the program registers.
 */
import assert from "node:assert/strict";
import { run } from "./netns.ts";

const root = new URL("..", import.meta.url).pathname;
const readme = await Deno.readTextFile(`${root}README.md`);

/** One option as written somewhere: its long name and its variable, if any. */
interface OptionRow {
  long: string;
  env: string | null;
  /** The default as written (README cell without backticks; --help's "(default: …)"). */
  def?: string;
}

/** The `## Options` section of the README, up to the next `## `. */
function optionsSection(text: string): string {
  const start = text.indexOf("\n## Options");
  assert.ok(start >= 0, "README has no ## Options section");
  const end = text.indexOf("\n## ", start + 1);
  return text.slice(start, end < 0 ? undefined : end);
}

/** Rows of the first table whose header starts with `| option`. */
function readmeOptions(text: string): OptionRow[] {
  const lines = optionsSection(text).split("\n");
  const header = lines.findIndex((l) => /^\|\s*option\s*\|/.test(l));
  assert.ok(header >= 0, "no options table");
  const rows: OptionRow[] = [];
  for (const line of lines.slice(header + 2)) {
    if (!line.startsWith("|")) break;
    const cells = line.replace(/\\\|/g, "¦").split("|").map((c) => c.trim());
    const long = /--([a-z][a-z0-9-]*)/.exec(cells[1] ?? "");
    assert.ok(long, `table row without a --option: ${line}`);
    const env = /\b(SB_[A-Z0-9_]+)\b/.exec(cells[2] ?? "");
    rows.push({ long: long[1], env: env ? env[1] : null, def: (cells[3] ?? "").replace(/`/g, "") });
  }
  return rows;
}

/** Options printed by --help: lines such as `  -i, --interface NAME   … [SB_DEVICE] (default: …)`. */
function helpOptions(text: string): OptionRow[] {
  const rows: OptionRow[] = [];
  for (const line of text.split("\n")) {
    const m = /^\s+(?:-\w,\s+)?--([a-z][a-z0-9-]*)/.exec(line);
    if (!m) continue;
    const env = /\[(SB_[A-Z0-9_]+)\]/.exec(line);
    const def = /\(default: (.*)\)\s*$/.exec(line);
    rows.push({ long: m[1], env: env ? env[1] : null, ...(def ? { def: def[1] } : {}) });
  }
  return rows;
}

Deno.test("README: the table parser reads the table it is meant to read", () => {
  const sample = "x\n## Options\n\n| option | env | default | meaning |\n|---|---|---|---|\n" +
    "| `-i, --interface NAME` | `SB_DEVICE` | x | y |\n| `--firewall a\\|b` | `SB_FIREWALL` | | |\n" +
    "\n## Next\n| `--not-this` | | | |\n";
  assert.deepEqual(readmeOptions(sample), [
    { long: "interface", env: "SB_DEVICE", def: "x" },
    { long: "firewall", env: "SB_FIREWALL", def: "" },
  ]);
  assert.deepEqual(
    helpOptions(
      "Usage: x\n  -i, --interface NAME  dev [SB_DEVICE] (default: y)\n      --version  v\n",
    ),
    [{ long: "interface", env: "SB_DEVICE", def: "y" }, { long: "version", env: null }],
  );
});

Deno.test({
  name: "README: every option of --help is in the options table with its variable, and back",
  sanitizeResources: false,
  fn: async () => {
    const r = await run([
      "timeout",
      "60",
      Deno.execPath(),
      "run",
      "-P",
      "--quiet",
      `${root}main.ts`,
      "--help",
    ]);
    assert.equal(r.code, 0, `--help failed: ${r.stderr}`);
    const help = helpOptions(r.stdout);
    assert.ok(help.length >= 15, `--help lists only ${help.length} options:\n${r.stdout}`);
    const table = readmeOptions(readme);
    const byName = (rows: OptionRow[]) => new Map(rows.map((o) => [o.long, o.env]));
    const h = byName(help), t = byName(table);
    const missingInReadme = [...h.keys()].filter((k) => !t.has(k));
    const missingInHelp = [...t.keys()].filter((k) => !h.has(k));
    assert.deepEqual(missingInReadme, [], "options in --help but not in the README table");
    assert.deepEqual(missingInHelp, [], "options in the README table but not in --help");
    for (const [name, env] of h) {
      assert.equal(t.get(name), env, `--${name}: README says ${t.get(name)}, --help says ${env}`);
    }
    assert.equal(table.length, t.size, "an option appears twice in the README table");
    // Simple defaults (a number or one word) must match word for word.
    const readmeDefault = new Map(table.map((o) => [o.long, o.def ?? ""]));
    let compared = 0;
    for (const o of help) {
      if (!o.def || !/^[\w:.-]+$/.test(o.def)) continue;
      const cell = readmeDefault.get(o.long) ?? "";
      const words = cell.split(/[\s,;()]+/);
      assert.ok(
        words.includes(o.def),
        `--${o.long}: --help default ${o.def}, README says "${cell}"`,
      );
      compared++;
    }
    assert.ok(compared >= 10, `only ${compared} defaults compared`);
  },
});

Deno.test("README: subcommands, the two commands, metrics and the Performance section", async () => {
  for (const cmd of ["scanblocker bans", "scanblocker unban ADDRESS", "scanblocker flush"]) {
    assert.ok(readme.includes(`\`${cmd}\``), `README does not document ${cmd}`);
  }
  for (
    const text of [
      "sudo ./scanblocker",
      "deno task test",
      "bash .ci/run",
      "setcap cap_net_raw,cap_net_admin+ep ./scanblocker",
      "--cap-add NET_RAW --cap-add NET_ADMIN",
      "## Troubleshooting",
      "## Performance",
      "iptable_filter",
    ]
  ) {
    assert.ok(readme.includes(text), `README lacks ${text}`);
  }
  const metrics = await Deno.readTextFile(`${root}src/report/metrics.ts`);
  const names = [...metrics.matchAll(/name: "(scanblocker_[a-z_]+)"/g)].map((m) => m[1]);
  assert.ok(names.length >= 10);
  for (const n of names) assert.ok(readme.includes(`\`${n}`), `README does not list ${n}`);
});

Deno.test("README: the documented `deno task start -i eth0` form passes options to the program", async () => {
  assert.match(readme, /deno task start -i eth0/);
  const r = await run(
    ["timeout", "60", Deno.execPath(), "task", "--quiet", "start", "--version"],
    {},
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^scanblocker \S+ \(deno \d+\.\d+\.\d+/m);
});
