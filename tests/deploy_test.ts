/**
 * Shipping: the capability check (pure and under real reduced privileges),
 * the systemd unit (`systemd-analyze verify`), the Prometheus rules
 * (`promtool check rules` and `promtool test rules`) and the example
 * EnvironmentFile against the options the program reads.
 */
import assert from "node:assert/strict";
import {
  capabilityAdvice,
  missingFromStatus,
  parseEffectiveCapabilities,
} from "../src/capabilities.ts";
import { OPTIONS, parseConfig } from "../src/config.ts";
import { run } from "./netns.ts";

const root = new URL("..", import.meta.url).pathname;
const unitPath = `${root}deploy/scanblocker.service`;
const isRoot = Deno.uid() === 0;

async function have(cmd: string): Promise<boolean> {
  try {
    return (await run(["sh", "-c", `command -v ${cmd}`])).code === 0;
  } catch {
    return false;
  }
}

const status = (eff: string) => `Name:\tdeno\nCapInh:\t0000000000000000\nCapEff:\t${eff}\n`;

Deno.test("capabilities: CapEff bits 12 and 13 decide what is missing", () => {
  assert.equal(parseEffectiveCapabilities(status("000001ffffffffff")), 0x1ffffffffffn);
  assert.equal(parseEffectiveCapabilities("Name: x\n"), null);
  assert.deepEqual(missingFromStatus(status("000001ffffffffff")), []);
  assert.deepEqual(missingFromStatus(status("0000000000003000")), []);
  assert.deepEqual(
    missingFromStatus(status("0000000000000000")).map((m) => m.name),
    ["CAP_NET_RAW", "CAP_NET_ADMIN"],
  );
  // 0x2000 = bit 13 only: CAP_NET_ADMIN (bit 12) is missing.
  assert.deepEqual(missingFromStatus(status("0000000000002000")).map((m) => m.name), [
    "CAP_NET_ADMIN",
  ]);
  assert.deepEqual(missingFromStatus(status("0000000000001000")).map((m) => m.name), [
    "CAP_NET_RAW",
  ]);
  // Unreadable or unexpected text claims nothing.
  assert.deepEqual(missingFromStatus(""), []);
});

Deno.test("capabilities: advice names the capability, the failure and the fix, only when needed", () => {
  const both = missingFromStatus(status("0000000000000000"));
  const live = capabilityAdvice(both, { firewall: "iptables", live: true });
  assert.equal(live.length, 2);
  assert.match(live[0], /CAP_NET_RAW/);
  assert.match(live[0], /capture/);
  assert.match(live[1], /CAP_NET_ADMIN/);
  assert.match(live[1], /iptables/);
  for (const line of live) {
    assert.match(line, /setcap cap_net_raw,cap_net_admin,cap_sys_nice\+ep \.\/scanblocker/);
    assert.match(line, /root/);
    assert.match(line, /AmbientCapabilities/);
  }
  // No firewall: CAP_NET_ADMIN does not matter. Reading a file: CAP_NET_RAW does not.
  assert.deepEqual(
    capabilityAdvice(both, { firewall: "none", live: true }).map((l) => /CAP_\w+/.exec(l)?.[0]),
    ["CAP_NET_RAW"],
  );
  assert.deepEqual(
    capabilityAdvice(both, { firewall: "nftables", live: false }).map((l) =>
      /CAP_\w+/.exec(l)?.[0]
    ),
    ["CAP_NET_ADMIN"],
  );
  assert.match(capabilityAdvice(both, { firewall: "nftables", live: false })[0], /nftables/);
  assert.deepEqual(capabilityAdvice([], { firewall: "iptables", live: true }), []);
});

/** Runs a tiny script that prints what missingCapabilities() finds, under `prefix` (setpriv …). */
async function missingUnder(prefix: string[]): Promise<string[]> {
  const dir = await Deno.makeTempDir({ prefix: "sb-caps-" });
  try {
    await Deno.chmod(dir, 0o777);
    const script = `${dir}/probe.ts`;
    const mod = new URL("../src/capabilities.ts", import.meta.url).href;
    await Deno.writeTextFile(
      script,
      `import { missingCapabilities } from ${JSON.stringify(mod)};\n` +
        `console.log(JSON.stringify(missingCapabilities().map((m) => m.name)));\n`,
    );
    await Deno.chmod(script, 0o644);
    const r = await run([
      "timeout",
      "60",
      ...prefix,
      "env",
      `DENO_DIR=${dir}/deno-dir`,
      "DENO_NO_UPDATE_CHECK=1",
      Deno.execPath(),
      "run",
      "--no-lock",
      "--allow-ffi",
      "--allow-read",
      script,
    ]);
    assert.equal(r.code, 0, `probe failed: ${r.stderr}`);
    return JSON.parse(r.stdout.trim().split("\n").at(-1) ?? "null");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const canSetpriv = isRoot && await have("setpriv");
const nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];

Deno.test({
  name: "capabilities: a real process without CAP_NET_ADMIN / as nobody is told what it lacks",
  ignore: !canSetpriv,
  fn: async () => {
    // Root with CAP_NET_ADMIN removed from the bounding set.
    assert.deepEqual(
      await missingUnder(["setpriv", "--inh-caps=-all", "--bounding-set=-net_admin"]),
      ["CAP_NET_ADMIN"],
    );
    // An unprivileged user without capabilities lacks both.
    assert.deepEqual(await missingUnder([...nobody, "--inh-caps=-all"]), [
      "CAP_NET_RAW",
      "CAP_NET_ADMIN",
    ]);
    // The same user with both granted as ambient capabilities (as the systemd unit does).
    assert.deepEqual(
      await missingUnder([
        ...nobody,
        "--inh-caps=+net_raw,+net_admin",
        "--ambient-caps=+net_raw,+net_admin",
      ]),
      [],
    );
  },
});

const haveSetcap = canSetpriv && await have("setcap");

for (const flags of ["+ep", "+p"]) {
  Deno.test({
    name:
      `capabilities: after setcap …${flags}, an unprivileged daemon holds both and passes CAP_NET_ADMIN (only) to the commands it runs`,
    ignore: !haveSetcap,
    fn: async () => {
      // A copy of the Deno runtime with file capabilities stands in for `setcap … ./scanblocker`.
      const dir = await Deno.makeTempDir({ prefix: "sb-setcap-" });
      try {
        await Deno.chmod(dir, 0o755);
        const deno = `${dir}/deno`;
        await Deno.copyFile(Deno.execPath(), deno);
        await Deno.chmod(deno, 0o755);
        const sc = await run(["setcap", `cap_net_raw,cap_net_admin,cap_sys_nice${flags}`, deno]);
        if (sc.code !== 0) {
          console.log(`skipped: setcap failed here (${sc.stderr.trim()})`);
          return;
        }
        const mod = new URL("../src/capabilities.ts", import.meta.url).href;
        const libc = new URL("../ffi/libc.ts", import.meta.url).href;
        const script = `${dir}/probe.ts`;
        await Deno.writeTextFile(
          script,
          `import { missingCapabilities, raiseAmbientCapabilities } from ${
            JSON.stringify(mod)
          };\n` +
            `const child = async () => new TextDecoder().decode((await new Deno.Command("cat", ` +
            `{ args: ["/proc/self/status"] }).output()).stdout);\n` +
            `const before = await child();\n` +
            `const missing = missingCapabilities().map((m) => m.name);\n` +
            `import { setRealtimePriority } from ${JSON.stringify(libc)};\n` +
            `const raised = raiseAmbientCapabilities();\n` +
            `const fifo = setRealtimePriority(10);\n` +
            `console.log(JSON.stringify({ missing, before, raised, after: await child(), fifo }));\n`,
        );
        await Deno.chmod(script, 0o644);
        await Deno.mkdir(`${dir}/deno-dir`, { mode: 0o777 });
        await Deno.chmod(`${dir}/deno-dir`, 0o777);
        const r = await run([
          "timeout",
          "60",
          ...nobody,
          "--inh-caps=-all",
          "env",
          `DENO_DIR=${dir}/deno-dir`,
          "DENO_NO_UPDATE_CHECK=1",
          deno,
          "run",
          "--no-lock",
          "--allow-ffi",
          "--allow-read",
          "--allow-run=cat",
          script,
        ]);
        assert.equal(r.code, 0, r.stderr);
        const out = JSON.parse(r.stdout.trim().split("\n").at(-1) ?? "{}");
        const eff = (s: string) => parseEffectiveCapabilities(s) ?? -1n;
        assert.deepEqual(out.missing, []);
        // Without the ambient set, a command started by the daemon has nothing …
        assert.equal(eff(out.before) & 0x3000n, 0n);
        // … with it, iptables/nft get CAP_NET_ADMIN, and not CAP_NET_RAW (capture is the daemon's).
        assert.deepEqual(out.raised, ["CAP_NET_ADMIN"]);
        assert.equal(eff(out.after), 0x1000n);
        // The documented setcap grants what the ban-latency figures need: SCHED_FIFO.
        assert.equal(out.fifo, null, `SCHED_FIFO refused: ${out.fifo}`);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

Deno.test({
  name:
    "capabilities: with the unit's ambient NET_RAW+NET_ADMIN+SYS_NICE, children get only CAP_NET_ADMIN (+NET_RAW for ipset)",
  ignore: !canSetpriv,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "sb-ambient-" });
    try {
      await Deno.chmod(dir, 0o777);
      const mod = new URL("../src/capabilities.ts", import.meta.url).href;
      const libc = new URL("../ffi/libc.ts", import.meta.url).href;
      const script = `${dir}/probe.ts`;
      await Deno.writeTextFile(
        script,
        `import { missingCapabilities, raiseAmbientCapabilities } from ${JSON.stringify(mod)};\n` +
          `import { readSystemFile } from ${JSON.stringify(libc)};\n` +
          `const child = async () => new TextDecoder().decode((await new Deno.Command("cat", ` +
          `{ args: ["/proc/self/status"] }).output()).stdout);\n` +
          `const missing = missingCapabilities().map((m) => m.name);\n` +
          `const own = readSystemFile("/proc/self/status") ?? "";\n` +
          `const plain = await child();\n` +
          `const raised = raiseAmbientCapabilities(true);\n` +
          `console.log(JSON.stringify({ missing, own, child: plain, raised, raw: await child() }));\n`,
      );
      await Deno.chmod(script, 0o644);
      // What deploy/scanblocker.service grants: ambient, bounding set and no_new_privs.
      const r = await run([
        "timeout",
        "60",
        ...nobody,
        "--inh-caps=-all,+net_raw,+net_admin,+sys_nice",
        "--ambient-caps=+net_raw,+net_admin,+sys_nice",
        "--bounding-set=-all,+net_raw,+net_admin,+sys_nice",
        "--no-new-privs",
        "env",
        `DENO_DIR=${dir}/deno-dir`,
        "DENO_NO_UPDATE_CHECK=1",
        Deno.execPath(),
        "run",
        "--no-lock",
        "--allow-ffi",
        "--allow-read",
        "--allow-run=cat",
        script,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout.trim().split("\n").at(-1) ?? "{}");
      const set = (text: string, name: string) =>
        BigInt(`0x${new RegExp(`^${name}:\\s*([0-9a-f]+)`, "m").exec(text)?.[1] ?? "0"}`);
      assert.deepEqual(out.missing, []);
      // The daemon keeps all three for itself (capture, firewall, --realtime) …
      assert.equal(set(out.own, "CapEff"), 0x803000n);
      // … its helpers get CAP_NET_ADMIN only.
      assert.equal(set(out.child, "CapEff"), 0x1000n, out.child);
      assert.equal(set(out.child, "CapAmb"), 0x1000n, out.child);
      assert.equal(set(out.child, "CapPrm"), 0x1000n, out.child);
      // The ipset form of iptables: CAP_NET_RAW too (xtables' set match opens a raw socket), no more.
      assert.deepEqual(out.raised, ["CAP_NET_RAW", "CAP_NET_ADMIN"]);
      assert.equal(set(out.raw, "CapEff"), 0x3000n, out.raw);
      assert.equal(set(out.raw, "CapAmb"), 0x3000n, out.raw);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("systemd unit: the required directives are there", async () => {
  const text = await Deno.readTextFile(unitPath);
  const keys = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) keys.set(m[1], [...(keys.get(m[1]) ?? []), m[2]]);
  }
  const one = (k: string) => (keys.get(k) ?? []).join(" ");
  assert.equal(one("DynamicUser"), "yes");
  assert.equal(one("AmbientCapabilities"), "CAP_NET_RAW CAP_NET_ADMIN CAP_SYS_NICE");
  assert.equal(one("CapabilityBoundingSet"), "CAP_NET_RAW CAP_NET_ADMIN CAP_SYS_NICE");
  // SCHED_FIFO for the capture thread (--realtime) must stay possible.
  assert.notEqual(one("RestrictRealtime"), "yes");
  assert.equal(one("NoNewPrivileges"), "yes");
  // The service's own IP sockets (metrics) only over loopback; a fixed descriptor limit.
  assert.equal(one("IPAddressDeny"), "any");
  assert.equal(one("IPAddressAllow"), "localhost");
  assert.match(one("LimitNOFILE"), /^\d+$/);
  assert.ok(Number(one("LimitNOFILE")) <= 65536, one("LimitNOFILE"));
  assert.equal(one("PrivateMounts"), "yes");
  assert.equal(one("ProtectSystem"), "strict");
  assert.equal(one("ProtectHome"), "yes");
  assert.equal(one("PrivateTmp"), "yes");
  assert.deepEqual(
    one("RestrictAddressFamilies").split(/\s+/).sort(),
    ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET", "AF_UNIX"],
  );
  assert.equal(one("Restart"), "on-failure");
  assert.equal(one("EnvironmentFile"), "-/etc/default/scanblocker");
  assert.equal(one("ExecStart"), "/usr/local/bin/scanblocker");
  // Things that would break V8 or the host capture/firewall.
  assert.equal(keys.has("PrivateNetwork"), false);
  assert.equal(keys.has("MemoryDenyWriteExecute"), false);
  assert.equal(keys.has("PrivateUsers"), false);
});

const haveSystemd = await have("systemd-analyze");

Deno.test({
  name: "systemd unit: systemd-analyze verify passes without a warning; exposure stays low",
  ignore: !haveSystemd,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "sb-unit-" });
    try {
      // verify wants the ExecStart binary to exist: point it at /bin/true, keep the rest.
      const text = await Deno.readTextFile(unitPath);
      const patched = text.replace(/^ExecStart=.*$/m, "ExecStart=/bin/true");
      assert.notEqual(patched, text);
      const unit = `${dir}/scanblocker.service`;
      await Deno.writeTextFile(unit, patched);
      const r = await run(["timeout", "60", "systemd-analyze", "verify", unit]);
      assert.equal(r.code, 0, r.stderr);
      // verify exits 0 on unknown keys and unparsable values; it only warns. Allow none.
      assert.equal(`${r.stdout}${r.stderr}`.trim(), "");

      // A broken copy must be caught, or this test proves nothing.
      const broken = `${dir}/broken/scanblocker.service`;
      await Deno.mkdir(`${dir}/broken`);
      await Deno.writeTextFile(
        broken,
        patched.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"),
      );
      const b = await run(["timeout", "60", "systemd-analyze", "verify", broken]);
      assert.match(b.stderr, /Unknown key/);

      const s = await run([
        "timeout",
        "60",
        "systemd-analyze",
        "security",
        "--offline=true",
        "--no-pager",
        unit,
      ]);
      const m = /Overall exposure level for \S+: ([\d.]+)/.exec(s.stdout + s.stderr);
      assert.ok(m, s.stdout + s.stderr);
      // 2.1 with the IP allow-list, PrivateMounts and the rest (2.4 before): keep it there.
      assert.ok(Number(m[1]) <= 2.1, `exposure ${m[1]} (want <= 2.1)\n${s.stdout}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

const havePromtool = await have("promtool");

Deno.test({
  name: "prometheus rules: promtool check rules and promtool test rules pass",
  ignore: !havePromtool,
  fn: async () => {
    const c = await run([
      "timeout",
      "60",
      "promtool",
      "check",
      "rules",
      `${root}deploy/prometheus-rules.yml`,
    ]);
    assert.equal(c.code, 0, c.stdout + c.stderr);
    assert.match(c.stdout + c.stderr, /SUCCESS: 8 rules found/);
    const t = await run([
      "timeout",
      "60",
      "promtool",
      "test",
      "rules",
      `${root}deploy/prometheus-rules.test.yml`,
    ]);
    assert.equal(t.code, 0, t.stdout + t.stderr);
    assert.match(t.stdout + t.stderr, /SUCCESS/);
  },
});

Deno.test("prometheus rules: alerts use only metric names the program exports", async () => {
  const rules = await Deno.readTextFile(`${root}deploy/prometheus-rules.yml`);
  const metrics = await Deno.readTextFile(`${root}src/report/metrics.ts`);
  const used = new Set(rules.match(/scanblocker_[a-z_]+/g) ?? []);
  assert.ok(used.size >= 5);
  for (const name of used) {
    assert.ok(metrics.includes(`"${name}"`), `${name} is not registered in src/report/metrics.ts`);
  }
});

Deno.test("environment file: documents every SB_* variable the program reads, and no other", async () => {
  const text = await Deno.readTextFile(`${root}deploy/scanblocker.env`);
  const inFile = new Set(text.match(/^#?(SB_[A-Z0-9_]+)=/gm)?.map((l) => l.replace(/^#|=$/g, "")));
  const read = new Set(OPTIONS.flatMap((o) => (o.env ? [o.env] : [])));
  assert.deepEqual([...inFile].sort(), [...read].sort());
});

Deno.test("environment file: every value it shows is accepted and is the default", async () => {
  const text = await Deno.readTextFile(`${root}deploy/scanblocker.env`);
  const env: Record<string, string> = {};
  for (const m of text.matchAll(/^#?(SB_[A-Z0-9_]+)=(.*)$/gm)) env[m[1]] = m[2];
  // Naming a config file makes it required; the default one does not exist here.
  assert.equal(env.SB_CONFIG, "/etc/scanblocker/scanblocker.toml");
  delete env.SB_CONFIG;
  // Examples, not defaults.
  const examples = ["SB_DEVICE", "SB_ALLOW", "SB_READ", "SB_LOCAL", "SB_ENV_FILE"];
  // The fleet's settings apply only with a LAPI URL (alone they are an error).
  const fleetOnly = (k: string) => k.startsWith("SB_LAPI_") && k !== "SB_LAPI_URL";
  const defaults = Object.fromEntries(
    Object.entries(env).filter(([k]) => !examples.includes(k) && !fleetOnly(k)),
  );
  assert.ok(Object.keys(defaults).length >= 10);
  // `settings` records where each value came from (here: variables, not defaults).
  const drop = (c: Record<string, unknown>) =>
    Object.fromEntries(
      Object.entries(c).filter(([k]) =>
        !["device", "allow", "firewallGiven", "settings"].includes(k)
      ),
    );
  assert.deepEqual(drop({ ...parseConfig([], defaults) }), drop({ ...parseConfig([], {}) }));
  // The examples parse too (the fleet's need a LAPI and secrets: tests/fleet_config_test.ts).
  const ex = parseConfig(
    [],
    Object.fromEntries(Object.entries(env).filter(([k]) => !fleetOnly(k))),
  );
  assert.equal(ex.device, "eth0");
  assert.equal(ex.allow.length, 2);
});

/** The shell script of the Dockerfile's runtime-libs stage that fills /out. */
function runtimeLibsScript(dockerfile: string): string {
  const stage = dockerfile.slice(dockerfile.indexOf("AS runtime-libs"));
  const lines = stage.split("\n");
  const at = lines.findIndex((l) => l.startsWith("RUN set -eu;"));
  assert.ok(at >= 0, "no `RUN set -eu;` step in the runtime-libs stage");
  const block: string[] = [];
  for (let i = at; i < lines.length; i++) {
    block.push(lines[i]);
    if (!lines[i].trimEnd().endsWith("\\")) break;
  }
  return block.join("\n").replace(/^RUN /, "");
}

const isBookworm = await Deno.readTextFile("/etc/debian_version").then(
  (t) => t.startsWith("12"),
  () => false,
);

Deno.test({
  name:
    "Dockerfile: its runtime file set runs iptables, ipset, nft and libpcap with nothing but glibc",
  // The stage runs on debian:12-slim; here the same script runs on this host when it is Debian 12.
  ignore: !isRoot || !isBookworm,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "sb-docker-" });
    const ns = `sb-docker-${Deno.pid}-${Math.floor(Math.random() * 1e6)}`;
    try {
      const dockerfile = await Deno.readTextFile(`${root}Dockerfile`);
      const script = runtimeLibsScript(dockerfile).replace(/(["\s])\/out/g, `$1${dir}/out`);
      const s = await run(["timeout", "60", "sh", "-c", script]);
      assert.equal(s.code, 0, s.stderr);

      // A root holding only that file set plus what gcr.io/distroless/cc-debian12 brings:
      // glibc and libgcc_s (the libraries the Deno runtime itself links).
      const r = `${dir}/root`;
      await run(["cp", "-a", `${dir}/out/.`, `${r}/`]);
      const ldd = await run(["ldd", Deno.execPath()]);
      for (const m of ldd.stdout.matchAll(/(?:=>\s+)?(\/\S+)\s+\(0x/g)) {
        await run(["cp", "-L", "--parents", m[1], r]);
      }
      await Deno.mkdir(`${r}/tmp`, { recursive: true });
      await Deno.copyFile(Deno.execPath(), `${r}/deno`);
      await Deno.chmod(`${r}/deno`, 0o755);
      await Deno.writeTextFile(
        `${r}/pcap.ts`,
        `const l = Deno.dlopen("libpcap.so.0.8", { pcap_lib_version: { parameters: [], result: "pointer" } });\n` +
          `console.log(Deno.UnsafePointerView.getCString(l.symbols.pcap_lib_version()!));\n`,
      );

      assert.equal((await run(["ip", "netns", "add", ns])).code, 0);
      const inRoot = (cmd: string[], stdin?: string) =>
        run(["timeout", "30", "ip", "netns", "exec", ns, "chroot", r, ...cmd], { stdin });
      const restore = await inRoot(
        ["/usr/bin/stdbuf", "-oL", "/usr/sbin/iptables-restore", "--noflush"],
        "*filter\n:SBTEST - [0:0]\n-A SBTEST -s 192.0.2.9 -j DROP\nCOMMIT\n",
      );
      assert.equal(restore.code, 0, restore.stderr);
      const list = await inRoot(["/usr/sbin/iptables", "-S", "SBTEST"]);
      assert.match(list.stdout, /-A SBTEST -s 192\.0\.2\.9\/32 -j DROP/, list.stderr);
      const six = await inRoot(["/usr/sbin/ip6tables", "-S"]);
      assert.equal(six.code, 0, six.stderr);
      // The default backend's form: an ipset set matched by one rule (libxt_set).
      const set = await inRoot(["/usr/sbin/ipset", "create", "sbtest", "hash:ip", "timeout", "0"]);
      assert.equal(set.code, 0, set.stderr);
      const add = await inRoot(["/usr/sbin/ipset", "add", "sbtest", "192.0.2.10"]);
      assert.equal(add.code, 0, add.stderr);
      const match = await inRoot(
        ["/usr/sbin/iptables-restore", "--noflush"],
        "*filter\n-A SBTEST -m set --match-set sbtest src -j DROP\nCOMMIT\n",
      );
      assert.equal(match.code, 0, match.stderr);
      const saved = await inRoot(["/usr/sbin/ipset", "save", "sbtest"]);
      assert.match(saved.stdout, /^add sbtest 192\.0\.2\.10/m, saved.stderr);
      const nft = await inRoot(["/usr/sbin/nft", "list", "ruleset"]);
      assert.match(nft.stdout, /192\.0\.2\.9/, nft.stderr);
      const pcap = await run([
        "timeout",
        "60",
        "env",
        "DENO_DIR=/tmp/deno-dir",
        "chroot",
        r,
        "/deno",
        "run",
        "--allow-ffi",
        "/pcap.ts",
      ]);
      assert.match(pcap.stdout, /libpcap version 1\./, pcap.stderr);
    } finally {
      await run(["ip", "netns", "del", ns]);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("compile task: every worker module is --include'd (deno compile does not follow new Worker)", async () => {
  const root = new URL("../", import.meta.url);
  const task: string =
    JSON.parse(await Deno.readTextFile(new URL("deno.json", root))).tasks.compile;
  const workers: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for await (const e of Deno.readDir(new URL(`${dir}/`, root))) {
      if (e.isDirectory) await walk(`${dir}/${e.name}`);
      if (!e.name.endsWith(".ts")) continue;
      const text = await Deno.readTextFile(new URL(`${dir}/${e.name}`, root));
      for (const m of text.matchAll(/new Worker\(new URL\("\.\/([^"]+)", import\.meta\.url\)/g)) {
        workers.push(`${dir}/${m[1]}`);
      }
    }
  };
  for (const dir of ["src", "ffi"]) await walk(dir);
  assert.ok(workers.includes("src/capture/worker.ts"), workers.join(" "));
  for (const w of workers) assert.ok(task.includes(`--include ${w}`), `${w} missing in: ${task}`);
});

Deno.test("Dockerfile: every base image pinned by digest; the image runs as a non-root user", async () => {
  const dockerfile = await Deno.readTextFile(`${root}Dockerfile`);
  const froms = [...dockerfile.matchAll(/^FROM\s+(\S+)/gm)].map((m) => m[1]);
  assert.ok(froms.length >= 3, froms.join(" "));
  for (const f of froms) assert.match(f, /^[^@\s]+:[^@\s]+@sha256:[0-9a-f]{64}$/, f);
  const users = [...dockerfile.matchAll(/^USER\s+(\S+)/gm)].map((m) => m[1]);
  const last = users.at(-1) ?? "";
  assert.match(last, /^[1-9]\d*:[1-9]\d*$/, `final USER ${last || "(none: root)"}`);
  // The executable belongs to root and to that user's group, mode 0750, with the two capabilities.
  const gid = last.split(":")[1];
  assert.match(dockerfile, new RegExp(`chown 0:${gid} /out/usr/local/bin/scanblocker`));
  assert.match(dockerfile, /chmod 0750 \/out\/usr\/local\/bin\/scanblocker/);
  assert.match(
    dockerfile,
    /setcap cap_net_raw,cap_net_admin,cap_sys_nice\+p \/out\/usr\/local\/bin\/scanblocker/,
  );
});

/** The Dockerfile's RUN step that gives the executable its owner, mode and capabilities. */
function executableScript(dockerfile: string): string {
  const lines = dockerfile.split("\n");
  const at = lines.findIndex((l, i) =>
    l.startsWith("RUN set -eu;") && /\bchown\b/.test(lines[i + 1] ?? "")
  );
  assert.ok(at >= 0, "no `RUN set -eu;` step that chowns the executable");
  const block: string[] = [];
  for (let i = at; i < lines.length; i++) {
    block.push(lines[i]);
    if (!lines[i].trimEnd().endsWith("\\")) break;
  }
  return block.join("\n").replace(/^RUN /, "");
}

Deno.test({
  name:
    "Dockerfile: its executable, run as the image's user with --cap-add NET_RAW/NET_ADMIN/SYS_NICE, holds them; with one it still starts",
  ignore: !haveSetcap,
  fn: async () => {
    const dockerfile = await Deno.readTextFile(`${root}Dockerfile`);
    const [uid, gid] = ([...dockerfile.matchAll(/^USER\s+(\d+):(\d+)/gm)].at(-1) ?? []).slice(1);
    assert.ok(uid && gid, "numeric USER uid:gid");
    const dir = await Deno.makeTempDir({ prefix: "sb-image-" });
    try {
      await Deno.chmod(dir, 0o755);
      // The Deno runtime stands in for the compiled executable.
      const exe = `${dir}/out/usr/local/bin/scanblocker`;
      await Deno.mkdir(`${dir}/out/usr/local/bin`, { recursive: true });
      await run(["chmod", "-R", "0755", `${dir}/out`]);
      await Deno.copyFile(Deno.execPath(), exe);
      const script = executableScript(dockerfile).replaceAll(" /out/", ` ${dir}/out/`);
      const s = await run(["timeout", "60", "sh", "-c", script]);
      if (s.code !== 0 && /setcap/.test(s.stderr)) {
        console.log(`skipped: setcap failed here (${s.stderr.trim()})`);
        return;
      }
      assert.equal(s.code, 0, s.stderr);
      const st = await Deno.stat(exe);
      assert.equal(st.uid, 0);
      assert.equal(st.gid, Number(gid));
      assert.equal((st.mode ?? 0) & 0o7777, 0o750);

      const mod = new URL("../src/capabilities.ts", import.meta.url).href;
      const priv = new URL("../src/privilege.ts", import.meta.url).href;
      const libc = new URL("../ffi/libc.ts", import.meta.url).href;
      await Deno.writeTextFile(
        `${dir}/probe.ts`,
        `import { missingCapabilities } from ${JSON.stringify(mod)};\n` +
          `import { callerRefusal } from ${JSON.stringify(priv)};\n` +
          `import { setRealtimePriority } from ${JSON.stringify(libc)};\n` +
          `const missing = missingCapabilities().map((m) => m.name);\n` +
          `const child = new TextDecoder().decode((await new Deno.Command("cat", ` +
          `{ args: ["/proc/self/status"] }).output()).stdout);\n` +
          `const fifo = setRealtimePriority(10);\n` +
          `console.log(JSON.stringify({ missing, child, fifo, refusal: callerRefusal("scanblocker flush") }));\n`,
      );
      await Deno.chmod(`${dir}/probe.ts`, 0o644);
      await Deno.mkdir(`${dir}/deno-dir`, { mode: 0o777 });
      await Deno.chmod(`${dir}/deno-dir`, 0o777);
      // As Docker runs it: the image's user, no capabilities of its own, the bounding set from --cap-add.
      const probe = async (bounding: string) => {
        const r = await run([
          "timeout",
          "60",
          "setpriv",
          `--reuid=${uid}`,
          `--regid=${gid}`,
          "--clear-groups",
          "--inh-caps=-all",
          `--bounding-set=-all,${bounding}`,
          "env",
          `DENO_DIR=${dir}/deno-dir`,
          "DENO_NO_UPDATE_CHECK=1",
          exe,
          "run",
          "--no-lock",
          "--allow-ffi",
          "--allow-read",
          "--allow-env",
          "--allow-sys",
          "--allow-run=cat",
          `${dir}/probe.ts`,
        ]);
        assert.equal(r.code, 0, r.stderr);
        return JSON.parse(r.stdout.trim().split("\n").at(-1) ?? "{}");
      };
      const both = await probe("+net_raw,+net_admin,+sys_nice");
      assert.deepEqual(both.missing, []);
      assert.equal(
        parseEffectiveCapabilities(both.child),
        0x1000n,
        "helpers get CAP_NET_ADMIN only",
      );
      assert.equal(both.refusal, null, "the image's user may change the firewall");
      assert.equal(both.fifo, null, "--cap-add SYS_NICE: the capture thread may use SCHED_FIFO");
      // `docker run --cap-add NET_ADMIN … bans`: +p lets it start with one of the two.
      const one = await probe("+net_admin");
      assert.deepEqual(one.missing, ["CAP_NET_RAW"]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("every documented deployment grants CAP_SYS_NICE (the ban-latency figures need SCHED_FIFO)", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const setcaps = readme.split("\n").filter((l) => /^sudo setcap /.test(l));
  assert.ok(setcaps.length > 0, "README shows a setcap install");
  for (const l of setcaps) assert.match(l, /cap_sys_nice/, l);
  const daemons = readme.split(/\n(?=docker run)/).filter((b) => /^docker run -d /.test(b));
  assert.ok(daemons.length > 0, "README shows docker run for the daemon");
  for (const b of daemons) assert.match(b.split("\n\n")[0], /--cap-add SYS_NICE/);
  const unit = await Deno.readTextFile(new URL("../deploy/scanblocker.service", import.meta.url));
  assert.match(unit, /^AmbientCapabilities=.*CAP_SYS_NICE/m);
});
