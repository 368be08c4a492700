/**
 * Every option and every SB_* variable fed a table of bad values (negative,
 * zero, huge, 1e309, non-numeric, empty, shell metacharacters, bad CIDRs):
 * ConfigError with one line naming where the value came from, and, run as
 * the real program in a namespace, exit 2 with one stderr line, no stack
 * trace and no firewall change. (An empty variable is the same as an unset
 * one, as with systemd's EnvironmentFile=; an empty flag is an error.)
 */
import assert from "node:assert/strict";
import { ConfigError, loadConfig, OPTIONS } from "../src/config.ts";
import { canUseNetns, createLab, run } from "./netns.ts";

const BAD = [
  "-1",
  "0",
  "-0",
  "99999999999999999999",
  "1e309",
  "0x10",
  "1.5",
  "abc",
  "foo",
  "",
  " ",
  "$(reboot)",
  "; rm -rf /",
  "`id`",
  "a|b&c>d",
  "10.0.0.0/33",
  "::1/129",
  "1,2",
  "ö",
];

/** The categories the issue names, for the (slower) runs of the real program. */
const BAD_RUN = [
  "-1",
  "0",
  "99999999999999999999",
  "1e309",
  "abc",
  "",
  "$(reboot)",
  "10.0.0.0/33",
  "::1/129",
  "foo",
];

/** Values of the table an option accepts: they are not bad for it. */
const VALID: Record<string, string[]> = {
  window: ["1.5"],
  "slow-window": ["1.5"],
  "ban-time": ["0"],
  "log-rate": ["0"],
  "slow-ports": ["0"],
  realtime: ["0"],
  "count-open-ports": ["0"],
  // Names of a machine or of origins may be digits or words.
  "lapi-poll": ["1.5"],
  "lapi-machine": ["0", "99999999999999999999", "1e309", "0x10", "1.5", "abc", "foo"],
  "lapi-origins": ["0", "99999999999999999999", "1e309", "0x10", "1.5", "abc", "foo", "1,2"],
};
/**
 * Well-formed interface names: refused only when the interface is looked
 * up, so not by loadConfig (the real program exits 2 all the same).
 */
const NAME_ONLY = ["-1", "0", "-0", "1e309", "0x10", "1.5", "abc", "foo"];

/** Every (argv, env, what) case: each option as a flag and as its variable. */
function cases(
  values: readonly string[],
): { argv: string[]; env: Record<string, string>; long: string; value: string; what: string }[] {
  const out = [];
  for (const o of OPTIONS) {
    if (o.long === "help" || o.long === "version") continue;
    for (const value of values) {
      if ((VALID[o.long] ?? []).includes(value)) continue;
      const c = { env: {}, long: o.long, value };
      if (!o.boolean) {
        out.push({
          ...c,
          argv: [`--${o.long}`, value],
          what: `--${o.long} ${JSON.stringify(value)}`,
        });
      } else if (value !== "") {
        out.push({ ...c, argv: [`--${o.long}=${value}`], what: `--${o.long}=${value}` });
      }
      // An empty or blank variable is an unset one (tested below).
      if (o.env && value.trim() !== "") {
        out.push({
          ...c,
          argv: [],
          env: { [o.env]: value },
          what: `${o.env}=${JSON.stringify(value)}`,
        });
      }
    }
  }
  return out;
}

Deno.test("every option and variable with a bad value: one-line ConfigError naming it", () => {
  let n = 0;
  for (const c of cases(BAD)) {
    if (c.long === "interface" && NAME_ONLY.includes(c.value)) continue;
    let err: unknown = null;
    try {
      loadConfig(c.argv, c.env);
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof ConfigError, `${c.what}: ${err === null ? "accepted" : String(err)}`);
    const msg = (err as Error).message;
    assert.ok(!msg.includes("\n"), `${c.what}: more than one line: ${msg}`);
    const name = Object.keys(c.env)[0] ?? `--${c.long}`;
    assert.ok(msg.includes(name) || msg.includes(c.long), `${c.what}: ${msg}`);
    n++;
  }
  assert.ok(n > 600, `${n} cases`);
});

Deno.test("an empty or blank variable is the same as an unset one", () => {
  const plain = JSON.stringify(loadConfig([], {}));
  for (const o of OPTIONS) {
    if (!o.env) continue;
    for (const blank of ["", " ", "\t"]) {
      assert.equal(JSON.stringify(loadConfig([], { [o.env]: blank })), plain, o.env);
    }
  }
});

Deno.test({
  name:
    "the real program with each bad value: exit 2, one line, no stack trace, firewall untouched",
  ignore: !(await canUseNetns()),
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const lab = await createLab("fuzz");
    try {
      const ns = lab.target;
      const fwText = async () =>
        (await Promise.all([
          lab.exec(ns, ["nft", "list", "ruleset"]),
          lab.exec(ns, ["iptables-save"]),
          lab.exec(ns, ["ip6tables-save"]),
        ])).map((r) => r.stdout.replace(/^#.*$/gm, "")).join("\n");
      const before = await fwText();
      const base: Record<string, string> = {
        interface: lab.targetIf,
        firewall: "iptables",
        "lockout-guard": "off",
        "metrics-addr": "off",
      };
      const main = new URL("../main.ts", import.meta.url).pathname;
      const failures: string[] = [];
      const all = cases(BAD_RUN);
      let next = 0;
      const worker = async () => {
        while (next < all.length) {
          const c = all[next++];
          const envName = Object.keys(c.env)[0];
          const argv: string[] = [];
          for (const [k, v] of Object.entries(base)) {
            // The option under test is not also given as a flag (a flag wins over
            // its variable), and -r excludes -i.
            if (k === c.long || (c.long === "read" && k === "interface")) continue;
            argv.push(`--${k}`, v);
          }
          const vars = envName ? [`${envName}=${c.env[envName]}`] : [];
          const r = await run([
            ...["ip", "netns", "exec", ns, "env", ...vars, "timeout", "30"],
            ...[Deno.execPath(), "run", "-P", "--quiet", main, ...argv, ...c.argv],
          ]);
          const lines = r.stderr.trim().split("\n").filter(Boolean);
          if (r.code !== 2) failures.push(`${c.what}: exit ${r.code}: ${r.stderr.trim()}`);
          else if (lines.length !== 1) {
            failures.push(`${c.what}: ${lines.length} lines: ${r.stderr}`);
          } else if (/^\s+at |Stack backtrace|panicked|Uncaught/m.test(r.stderr)) {
            failures.push(`${c.what}: stack trace: ${r.stderr}`);
          }
        }
      };
      await Promise.all([worker(), worker(), worker(), worker()]);
      assert.deepEqual(failures, [], failures.slice(0, 20).join("\n"));
      assert.equal(await fwText(), before, "a run changed the firewall");
      console.log(`${all.length} runs`);
    } finally {
      await lab.destroy();
    }
  },
});
