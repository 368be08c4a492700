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
    assert.match(line, /setcap cap_net_raw,cap_net_admin\+ep \.\/scanblocker/);
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

Deno.test({
  name:
    "capabilities: after setcap …+ep, an unprivileged daemon passes both to the commands it runs",
  ignore: !haveSetcap,
  fn: async () => {
    // A copy of the Deno runtime with file capabilities stands in for `setcap … ./scanblocker`.
    const dir = await Deno.makeTempDir({ prefix: "sb-setcap-" });
    try {
      await Deno.chmod(dir, 0o755);
      const deno = `${dir}/deno`;
      await Deno.copyFile(Deno.execPath(), deno);
      await Deno.chmod(deno, 0o755);
      const sc = await run(["setcap", "cap_net_raw,cap_net_admin+ep", deno]);
      if (sc.code !== 0) {
        console.log(`skipped: setcap failed here (${sc.stderr.trim()})`);
        return;
      }
      const mod = new URL("../src/capabilities.ts", import.meta.url).href;
      const script = `${dir}/probe.ts`;
      await Deno.writeTextFile(
        script,
        `import { missingCapabilities, raiseAmbientCapabilities } from ${JSON.stringify(mod)};\n` +
          `const child = async () => new TextDecoder().decode((await new Deno.Command("cat", ` +
          `{ args: ["/proc/self/status"] }).output()).stdout);\n` +
          `const before = await child();\n` +
          `const missing = missingCapabilities().map((m) => m.name);\n` +
          `const raised = raiseAmbientCapabilities();\n` +
          `console.log(JSON.stringify({ missing, before, raised, after: await child() }));\n`,
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
      // … with it, iptables/nft get CAP_NET_RAW and CAP_NET_ADMIN.
      assert.deepEqual(out.raised, ["CAP_NET_RAW", "CAP_NET_ADMIN"]);
      assert.equal(eff(out.after) & 0x3000n, 0x3000n);
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
      assert.ok(Number(m[1]) <= 3.0, `exposure ${m[1]} (want <= 3.0)`);
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
    assert.match(c.stdout + c.stderr, /SUCCESS: 7 rules found/);
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
  // Examples, not defaults.
  const examples = ["SB_DEVICE", "SB_ALLOW", "SB_READ", "SB_LOCAL"];
  const defaults = Object.fromEntries(
    Object.entries(env).filter(([k]) => !examples.includes(k)),
  );
  assert.ok(Object.keys(defaults).length >= 10);
  const drop = (c: Record<string, unknown>) =>
    Object.fromEntries(Object.entries(c).filter(([k]) => !["device", "allow"].includes(k)));
  assert.deepEqual(drop({ ...parseConfig([], defaults) }), drop({ ...parseConfig([], {}) }));
  // The examples parse too.
  const ex = parseConfig([], env);
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
  name: "Dockerfile: its runtime file set runs iptables, nft and libpcap with nothing but glibc",
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
