import assert from "node:assert/strict";
import { ConfigError, OPTIONS, parseConfig, usage } from "../src/config.ts";

const ok = (argv: string[], env: Record<string, string> = {}) => parseConfig(argv, env);
const bad = (argv: string[], env: Record<string, string> = {}): string => {
  try {
    parseConfig(argv, env);
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${e}`);
    assert.ok(!e.message.includes("\n"), "one line");
    return e.message;
  }
  throw new Error(`accepted ${argv.join(" ")} ${JSON.stringify(env)}`);
};

Deno.test("defaults follow the contract", () => {
  const c = ok([]);
  assert.equal(c.command, "run");
  assert.equal(c.ports, 3);
  assert.equal(c.windowSeconds, 60);
  assert.equal(c.firewall, "iptables");
  assert.equal(c.banTime, 3600);
  assert.equal(c.maxSources, 100000);
  assert.equal(c.maxBans, 65536);
  assert.equal(c.logRate, 100);
  assert.equal(c.metricsAddr, "127.0.0.1:8080");
  assert.equal(c.logFormat, "text");
  assert.equal(c.device, null);
  assert.equal(c.local, null);
});

Deno.test("-r defaults the firewall to none; a named firewall wins", () => {
  const f = Deno.makeTempFileSync();
  try {
    assert.equal(ok(["-r", f]).firewall, "none");
    assert.equal(ok(["-r", f, "--firewall", "nftables"]).firewall, "nftables");
  } finally {
    Deno.removeSync(f);
  }
});

Deno.test("a flag wins over its environment variable; lists read comma lists", () => {
  assert.equal(ok(["-i", "eth1"], { SB_DEVICE: "eth0" }).device, "eth1");
  assert.equal(ok([], { SB_DEVICE: "eth0" }).device, "eth0");
  assert.equal(ok(["--ports", "5"], { SB_PORTS: "7" }).ports, 5);
  assert.equal(ok([], { SB_PORTS: "7" }).ports, 7);
  const c = ok([], { SB_ALLOW: "10.0.0.0/8, fd00::/8", SB_LOCAL: "192.0.2.1,2001:db8::1" });
  assert.equal(c.allow.length, 2);
  assert.equal(c.allow[1].family, 6);
  assert.equal(c.local?.length, 2);
  assert.equal(ok(["--allow", "1.2.3.4", "--allow", "5.6.7.0/24"]).allow.length, 2);
  assert.equal(ok([], { SB_METRICS_ADDR: "off" }).metricsAddr, "off");
  assert.equal(ok(["--metrics-addr", "[::1]:9100"]).metricsAddr, "[::1]:9100");
});

Deno.test("bad values exit 2 with one line naming option, value and accepted form", () => {
  assert.match(bad(["--ports", "0"]), /--ports "0".*1 to 65535/);
  assert.match(bad(["--ports", "abc"]), /--ports "abc"/);
  assert.match(bad([], { SB_PORTS: "-1" }), /SB_PORTS "-1": negative/);
  assert.match(bad(["--window", "0"]), /--window "0".*greater than 0/);
  assert.match(bad(["--window", "-5"]), /--window/);
  assert.match(bad(["--allow", "10.0.0.0/33"]), /--allow "10.0.0.0\/33".*CIDR/);
  assert.match(bad(["--allow", "nonsense"]), /--allow "nonsense"/);
  assert.match(bad([], { SB_ALLOW: "1.2.3.4,fd00::/129" }), /SB_ALLOW "fd00::\/129"/);
  assert.match(bad(["--local", "300.1.1.1"]), /--local "300.1.1.1"/);
  assert.match(
    bad(["--firewall", "pf"]),
    /--firewall "pf".*iptables, iptables-rules, ipset, nftables, none/,
  );
  assert.match(bad([], { SB_FIREWALL: "ufw" }), /SB_FIREWALL "ufw"/);
  assert.match(bad(["--log-format", "xml"]), /--log-format "xml".*text, json/);
  assert.match(bad(["--metrics-addr", "8080"]), /--metrics-addr "8080"/);
  assert.match(bad(["--metrics-addr", ":99999"]), /--metrics-addr/);
  assert.match(bad(["--ban-time", "1h"]), /--ban-time "1h"/);
  assert.match(bad(["--bogus"]), /bogus/);
  assert.match(
    bad(["-r", "/nonexistent/file.pcap"]),
    /--read "\/nonexistent\/file.pcap": no such file/,
  );
  assert.match(bad(["-r", "/tmp"]), /not a regular file/);
  assert.match(bad(["frobnicate"]), /unknown command "frobnicate"/);
  assert.match(bad(["unban"]), /unban/);
  assert.match(bad(["unban", "1.2.3"]), /invalid address "1.2.3"/);
  assert.match(bad(["-i", "a/b"]), /--interface "a\/b"/);
});

Deno.test("a leading -- (from `deno task start -- …`) is ignored", () => {
  assert.equal(ok(["--", "-i", "eth3"]).device, "eth3");
});

Deno.test("subcommands", () => {
  assert.equal(ok(["bans"]).command, "bans");
  assert.equal(ok(["flush", "--firewall", "nftables"]).firewall, "nftables");
  const u = ok(["unban", "fd77::1"]);
  assert.equal(u.command, "unban");
  assert.equal(u.unbanAddress, "fd77::1");
  assert.equal(ok(["-h"]).command, "help");
  assert.equal(ok(["--version"]).command, "version");
});

Deno.test("--help lists every option with its environment variable", () => {
  const text = usage();
  for (const o of OPTIONS) {
    assert.ok(text.includes(`--${o.long}`), o.long);
    if (o.env) assert.ok(text.includes(o.env), o.env);
  }
});
