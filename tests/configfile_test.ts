/**
 * The config file (TOML, keys = long option names): precedence options >
 * SB_* > file > defaults, one-line errors naming the file and the key, and
 * `scanblocker config` printing each value's source. The last tests run the
 * real program (`deno run -P main.ts`) with a real file.
 */
import assert from "node:assert/strict";
import { ConfigError, OPTIONS, parseConfig } from "../src/config.ts";
import { runMain } from "./daemon.ts";

const fixture = (name: string) => new URL(`./fixtures/${name}`, import.meta.url).pathname;

/** Writes `text` to a fresh temporary .toml file and returns its path. */
function tomlFile(text: string): string {
  const path = Deno.makeTempFileSync({ prefix: "sb-config-", suffix: ".toml" });
  Deno.writeTextFileSync(path, text);
  return path;
}

const bad = (argv: string[], env: Record<string, string> = {}): string => {
  try {
    parseConfig(argv, env);
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${e}`);
    assert.ok(!e.message.includes("\n"), "one line");
    return e.message;
  }
  throw new Error(`accepted ${argv.join(" ")}`);
};

Deno.test("config file: precedence is option > SB_* > file > default", () => {
  const f = tomlFile('ports = 5\nwindow = 30\nban-time = 600\nallow = ["10.0.0.0/8"]\n');
  try {
    const c = parseConfig(["--config", f, "--ports", "9"], { SB_WINDOW: "45" });
    assert.equal(c.ports, 9);
    assert.equal(c.windowSeconds, 45);
    assert.equal(c.banTime, 600);
    assert.equal(c.allow.length, 1);
    assert.equal(c.maxBans, 65536);
    assert.equal(c.configFile, f);
    const src = Object.fromEntries(c.settings.map((s) => [s.key, s.source]));
    assert.equal(src.ports, "--ports");
    assert.equal(src.window, "SB_WINDOW");
    assert.equal(src["ban-time"], f);
    assert.equal(src.allow, f);
    assert.equal(src["max-bans"], "default");
    // SB_CONFIG names the file when --config does not.
    assert.equal(parseConfig([], { SB_CONFIG: f }).banTime, 600);
  } finally {
    Deno.removeSync(f);
  }
});

Deno.test("config file: every option but help/version/config/json is a key", () => {
  const keys = OPTIONS.filter((o) => o.fileKey !== false).map((o) => o.long);
  assert.ok(keys.includes("ban-time") && keys.includes("metrics-addr"));
  for (const k of ["help", "version", "config", "json"]) assert.ok(!keys.includes(k));
  // Values of each TOML type reach the same validator as flags.
  const f = tomlFile(
    'interface = "eth9"\nhook = ["input", "forward"]\ncount-open-ports = true\n' +
      'lockout-guard = false\nwindow = 2.5\nmetrics-addr = "off"\n',
  );
  try {
    const c = parseConfig(["--config", f], {});
    assert.equal(c.device, "eth9");
    assert.deepEqual(c.hooks, ["input", "forward"]);
    assert.equal(c.countOpenPorts, true);
    assert.equal(c.lockoutGuard, false);
    assert.equal(c.windowSeconds, 2.5);
    assert.equal(c.metricsAddr, "off");
  } finally {
    Deno.removeSync(f);
  }
});

Deno.test("config file: unknown keys and bad values are one line naming file and key", () => {
  const cases: [string, RegExp][] = [
    ["portz = 3\n", /: unknown key "portz": not an option/],
    ["help = true\n", /: unknown key "help": it cannot be set in a file/],
    [
      'ports = "many"\n',
      /: key "ports": invalid value "many": expected an integer from 1 to 65535/,
    ],
    ["allow = 3\n", /: key "allow": expected a string or an array of strings, got number 3/],
    ["[daemon]\nports = 3\n", /: unknown key "daemon"/],
    ["ports = \n", /: line 1, column \d+: /],
    ['firewall = "ufw"\n', /: key "firewall": invalid value "ufw": expected one of iptables/],
    ["count-open-ports = 1\n", /: key "count-open-ports": expected true or false, got number 1/],
  ];
  for (const [text, re] of cases) {
    const f = tomlFile(text);
    try {
      const m = bad(["--config", f]);
      assert.ok(m.startsWith(`config file ${f}: `), m);
      assert.match(m, re);
    } finally {
      Deno.removeSync(f);
    }
  }
  // A flag with a bad value is still reported as the flag, even with a file.
  const f = tomlFile("ports = 5\n");
  try {
    assert.match(bad(["--config", f, "--ports", "0"]), /^invalid --ports "0"/);
  } finally {
    Deno.removeSync(f);
  }
});

Deno.test("config file: a missing explicit file is an error, a missing default is not", () => {
  assert.match(
    bad(["--config", "/nonexistent/sb.toml"]),
    /config file \/nonexistent\/sb.toml: no such file/,
  );
  assert.match(bad([], { SB_CONFIG: "/nonexistent/sb.toml" }), /no such file/);
  assert.equal(parseConfig([], {}).configFile, null); // /etc/scanblocker/scanblocker.toml absent here
  // --help and --version never read the file.
  assert.equal(parseConfig(["--help", "--config", "/nonexistent/sb.toml"], {}).command, "help");
});

Deno.test("program: `scanblocker config` prints each value and where it came from", async () => {
  const f = tomlFile("# operator's file\nports = 5\nwindow = 30\nban-time = 600\n");
  try {
    const r = await runMain(["config", "--config", f, "--ports", "9"], { SB_WINDOW: "45" });
    assert.equal(r.code, 0, r.stderr);
    const line = (k: string) => r.stdout.split("\n").find((l) => l.startsWith(`${k} = `)) ?? "";
    assert.match(line("ports"), /^ports = 9\s+# --ports$/);
    assert.match(line("window"), /^window = 45\s+# SB_WINDOW$/);
    assert.match(line("ban-time"), new RegExp(`^ban-time = 600\\s+# ${f}$`));
    assert.match(line("max-bans"), /^max-bans = 65536\s+# default$/);
    assert.match(r.stdout, new RegExp(`# config file: ${f} \\(from --config\\)`));
  } finally {
    Deno.removeSync(f);
  }
});

Deno.test("program: the file changes the verdict on a capture; SB_* and options beat it", async () => {
  const f = tomlFile("ports = 60000\nslow-ports = 0\n");
  try {
    const strict = await runMain(["-r", fixture("eth.pcap"), "--config", f]);
    assert.equal(strict.code, 0, strict.stderr);
    assert.match(strict.stdout, /, 0 scans/);
    const env = await runMain(["-r", fixture("eth.pcap"), "--config", f], { SB_PORTS: "3" });
    assert.match(env.stdout, /, [1-9]\d* scans/);
    const flag = await runMain(["-r", fixture("eth.pcap"), "--config", f, "--ports", "3"]);
    assert.match(flag.stdout, /, [1-9]\d* scans/);
    const bad = await runMain(["-r", fixture("eth.pcap"), "--config", "/nonexistent/sb.toml"]);
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr, "scanblocker: config file /nonexistent/sb.toml: no such file\n");
  } finally {
    Deno.removeSync(f);
  }
});
