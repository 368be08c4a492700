/**
 * Without root: the real daemon (`deno run -P main.ts`) runs as the
 * unprivileged user nobody (uid 65534) inside a lab namespace, holding only
 * CAP_NET_RAW and CAP_NET_ADMIN as ambient capabilities (as the systemd unit
 * grants them). A real nmap scan from the scanner namespace must be captured,
 * detected and banned with a real iptables rule. Without the capabilities it
 * must say which ones are missing and what fails.
 */
import assert from "node:assert/strict";
import { type Daemon, spawnDaemon } from "./daemon.ts";
import { canUseNetns, createLab, esc, type Lab, must, nmap, run } from "./netns.ts";

const root = new URL("..", import.meta.url).pathname;
const haveTools = await (async () => {
  if (!(await canUseNetns())) return false;
  for (const t of ["setpriv", "nmap", "iptables"]) {
    if ((await run(["sh", "-c", `command -v ${t}`])).code !== 0) return false;
  }
  return true;
})();
const opts = { ignore: !haveTools, sanitizeOps: false, sanitizeResources: false };

const NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
/** What deploy/scanblocker.service grants: ambient, bounding set and no_new_privs alike. */
const WITH_CAPS = [
  "--inh-caps=-all,+net_raw,+net_admin",
  "--ambient-caps=+net_raw,+net_admin",
  "--bounding-set=-all,+net_raw,+net_admin",
  "--no-new-privs",
];
const NO_CAPS = ["--inh-caps=-all"];

/**
 * A Deno cache the unprivileged user can read and write: a copy of this
 * process's npm cache (prom-client), then `deno cache main.ts` into it.
 */
async function prepareDenoDir(dir: string): Promise<string> {
  const denoDir = `${dir}/deno-dir`;
  await Deno.mkdir(denoDir, { recursive: true });
  const info = await run([Deno.execPath(), "info", "--json"]);
  try {
    const npmCache = JSON.parse(info.stdout).npmCache;
    if (typeof npmCache === "string") await must(["cp", "-a", npmCache, `${denoDir}/npm`]);
  } catch { /* deno cache below fetches what is missing */ }
  await must(["env", `DENO_DIR=${denoDir}`, Deno.execPath(), "cache", "--quiet", `${root}main.ts`]);
  await must(["chmod", "-R", "a+rwX", dir]);
  return denoDir;
}

/** A daemon started under setpriv in the lab's target namespace. */
function startAsNobody(
  lab: Lab,
  caps: string[],
  denoDir: string,
  args: string[],
  deno = Deno.execPath(),
  env: Record<string, string> = {},
): Daemon {
  const argv = [
    ...lab.prefix(lab.target),
    "timeout",
    "-k",
    "5",
    "60",
    ...NOBODY,
    ...caps,
    deno,
    "run",
    "-P",
    "--quiet",
    "--cached-only",
    "--no-lock",
    `${root}main.ts`,
    ...args,
  ];
  return spawnDaemon(argv, {
    cwd: "/",
    env: {
      NO_COLOR: "1",
      DENO_DIR: denoDir,
      DENO_NO_UPDATE_CHECK: "1",
      HOME: "/nonexistent",
      ...env,
    },
  });
}

/** True when the daemon's output matches `re` within `ms`. */
const printed = (d: Daemon, re: RegExp, ms: number) =>
  d.waitFor(re, ms).then(() => true, () => false);

let shared: { tmp: string; denoDir: Promise<string> } | null = null;

/** One prepared DENO_DIR for every test of this file; removed by the unload handler. */
function sharedDenoDir(): Promise<string> {
  if (!shared) {
    const tmp = Deno.makeTempDirSync({ prefix: "sb-nonroot-" });
    shared = { tmp, denoDir: prepareDenoDir(tmp) };
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(tmp, { recursive: true });
      } catch { /* already gone */ }
    });
  }
  return shared.denoDir;
}

/**
 * Starts the daemon as nobody with the unit's capabilities on the lab's target,
 * scans it with nmap from the scanner, and checks the lines and the rule.
 */
async function scanAndBan(
  firewall: "iptables" | "nftables",
  how: { caps: string[]; deno?: string } = { caps: WITH_CAPS },
): Promise<void> {
  let lab: Lab | null = null;
  let d: Daemon | null = null;
  try {
    const denoDir = await sharedDenoDir();
    lab = await createLab("nr");
    d = startAsNobody(lab, how.caps, denoDir, [
      "-i",
      lab.targetIf,
      "--firewall",
      firewall,
      "--metrics-addr",
      "off",
      "--log-rate",
      "5",
    ], how.deno);
    const ready = await printed(d, /Listening on/, 30000);
    const show = () =>
      `\n--- stdout\n${d?.stdout().slice(-2000)}\n--- stderr\n${d?.stderr().slice(-2000)}`;
    assert.ok(ready, `daemon did not start${show()}`);
    // The process in the target namespace runs as uid 65534.
    const pids = (await must(["ip", "netns", "pids", lab.target])).trim().split(/\s+/);
    const ps = await run(["ps", "-o", "uid=,comm=", "-p", pids.join(",")]);
    assert.match(
      ps.stdout,
      /^\s*65534\s+deno/m,
      `no deno as uid 65534 in the namespace:\n${ps.stdout}`,
    );

    const scan = await nmap(lab, [
      "-sS",
      "-T4",
      "--host-timeout",
      "30s",
      "-p",
      "20-60",
      lab.target4,
    ], {
      seconds: 40,
    });
    assert.equal(scan.code, 0, scan.stderr);
    const s = esc(lab.scanner4), t = esc(lab.target4);
    assert.ok(await printed(d, new RegExp(`IP ${s} banned\\.`), 10000), `no ban line${show()}`);
    assert.match(d.stdout(), new RegExp(`Port scan detected: ${s} -> ${t}`));
    // It holds what it needs: no capability complaint, no firewall error.
    assert.doesNotMatch(d.stderr(), /missing capability|could not be banned/, show());

    if (firewall === "iptables") {
      // Helpers by absolute path from the fixed directories, said at start.
      assert.match(d.stderr(), /helpers: .*iptables=\/(usr\/)?s?bin\/iptables\b/, show());
      // The default backend's ipset form, set up and fed with CAP_NET_ADMIN alone.
      assert.match(d.stderr(), /helpers: .*ipset=\/(usr\/)?s?bin\/ipset\b/, show());
      assert.match(d.stderr(), /firewall iptables via ipset sets \(netlink\)/, show());
      const set = await lab.exec(lab.target, ["ipset", "save", "scanblocker4"]);
      assert.equal(set.code, 0, set.stderr);
      assert.match(
        set.stdout,
        new RegExp(`^add scanblocker4 ${s} timeout`, "m"),
        `no ban of ${lab.scanner4} in the set:\n${set.stdout}`,
      );
    } else {
      const rules = await lab.exec(lab.target, ["nft", "list", "ruleset"]);
      assert.equal(rules.code, 0, rules.stderr);
      // An element of its own with a timeout: a ban (the speed bump's sets
      // hold the scanner too, as "ADDR . PORT" and "ADDR limit …").
      assert.match(
        rules.stdout,
        new RegExp(`\\b${s} timeout`),
        `no ban for ${lab.scanner4}:\n${rules.stdout}`,
      );
      assert.match(rules.stdout, /\bdrop\b/);
    }
  } finally {
    if (d) await d.stop();
    if (lab) await lab.destroy();
  }
}

Deno.test({
  name: "as nobody with CAP_NET_RAW+CAP_NET_ADMIN: captures an nmap scan and bans it in iptables",
  ...opts,
  fn: () => scanAndBan("iptables"),
});

Deno.test({
  name: "as nobody, capabilities from `setcap cap_net_raw,cap_net_admin+ep` only: still bans",
  ...opts,
  fn: async () => {
    // A copy of the Deno runtime with file capabilities stands in for the compiled binary;
    // its group (nogroup) is the operator's choice of who may run it with a firewall.
    const deno = await setcapDeno("deno-setcap", NOGROUP);
    if (!deno) return;
    try {
      await scanAndBan("iptables", { caps: NO_CAPS, deno });
    } finally {
      await Deno.remove(deno);
    }
  },
});

Deno.test({
  name: "as nobody with CAP_NET_RAW+CAP_NET_ADMIN: the same with nftables",
  ...opts,
  fn: () => scanAndBan("nftables"),
});

Deno.test({
  name:
    "as nobody without capabilities: names CAP_NET_RAW and CAP_NET_ADMIN, what fails, and how to grant",
  ...opts,
  fn: async () => {
    let lab: Lab | null = null;
    let d: Daemon | null = null;
    try {
      const denoDir = await sharedDenoDir();
      lab = await createLab("nr");
      d = startAsNobody(lab, NO_CAPS, denoDir, [
        "-i",
        lab.targetIf,
        "--firewall",
        "iptables",
        "--metrics-addr",
        "off",
      ]);
      // Without CAP_NET_RAW it cannot capture at all: it must end by itself.
      const code = await d.exited(30000);
      const err = d.stderr();
      assert.match(
        err,
        /missing capability CAP_NET_RAW: .*capture.*setcap cap_net_raw,cap_net_admin,cap_sys_nice\+ep/,
      );
      assert.match(
        err,
        /missing capability CAP_NET_ADMIN: .*iptables.*setcap cap_net_raw,cap_net_admin,cap_sys_nice\+ep/,
      );
      assert.equal(code, 2, `exit ${code}\n${err}`);
    } finally {
      if (d) await d.stop();
      if (lab) await lab.destroy();
    }
  },
});

// ---------------------------------------------------------------------------
// The documented `setcap` install, attacked by a local user (issue 20 item 1).
// A copy of the Deno runtime with `cap_net_raw,cap_net_admin+ep` stands in for
// the compiled binary; uid 65534 runs it with no capabilities of its own.

/**
 * A setcap'd copy of the runtime in the shared temporary directory, owned by
 * root and by `group` (chgrp before setcap: chown clears file capabilities);
 * null when setcap does not work here.
 */
async function setcapDeno(name: string, group: number): Promise<string | null> {
  await sharedDenoDir();
  const deno = `${shared?.tmp}/${name}`;
  await Deno.copyFile(Deno.execPath(), deno);
  await Deno.chown(deno, 0, group);
  await Deno.chmod(deno, 0o755);
  const sc = await run(["setcap", "cap_net_raw,cap_net_admin+ep", deno]);
  if (sc.code !== 0) {
    console.log(`skipped: setcap failed here (${sc.stderr.trim()})`);
    await Deno.remove(deno);
    return null;
  }
  return deno;
}

/** Runs `main.ts ARGS` to completion as uid 65534 with `deno`, in the lab's target namespace. */
async function runAsNobody(
  lab: Lab,
  deno: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const denoDir = await sharedDenoDir();
  const vars = {
    NO_COLOR: "1",
    DENO_DIR: denoDir,
    DENO_NO_UPDATE_CHECK: "1",
    HOME: "/nonexistent",
    PATH: "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
    ...env,
  };
  return await run([
    ...lab.prefix(lab.target),
    "timeout",
    "-k",
    "5",
    "60",
    ...NOBODY,
    ...NO_CAPS,
    "env",
    "-i",
    ...Object.entries(vars).map(([k, v]) => `${k}=${v}`),
    deno,
    "run",
    "-P",
    "--quiet",
    "--cached-only",
    "--no-lock",
    `${root}main.ts`,
    ...args,
  ]);
}

const NOGROUP = 65534;
/** A ban as the daemon writes it (iptables.ts banRuleSpec). */
const BAN_RULE = [
  "-s",
  "192.0.2.9/32",
  "-m",
  "comment",
  "--comment",
  "scanblocker expires=never",
  "-j",
  "DROP",
];

Deno.test({
  name: "setcap install: PATH=/tmp/evil:$PATH as uid 65534 does not run the caller's iptables",
  ...opts,
  fn: async () => {
    const deno = await setcapDeno("deno-setcap-path", 0);
    if (!deno) return;
    let lab: Lab | null = null;
    const evil = `${shared?.tmp}/evil-bin`;
    const mark = `${shared?.tmp}/evil-ran`;
    try {
      lab = await createLab("nrp");
      await Deno.mkdir(evil, { recursive: true });
      for (
        const tool of ["iptables", "iptables-restore", "ip6tables", "ip6tables-restore", "stdbuf"]
      ) {
        await Deno.writeTextFile(
          `${evil}/${tool}`,
          `#!/bin/sh\ngrep -E '^Cap(Eff|Amb)' /proc/self/status > ${mark}\nexit 0\n`,
        );
        await Deno.chmod(`${evil}/${tool}`, 0o755);
      }
      await must(["chmod", "a+rwx", shared!.tmp]);
      await lab.exec(lab.target, ["iptables", "-N", "SCANBLOCKER"]);
      await lab.exec(lab.target, [
        "iptables",
        "-A",
        "SCANBLOCKER",
        ...BAN_RULE,
      ]);
      const r = await runAsNobody(lab, deno, ["bans", "--firewall", "iptables"], {
        PATH: `${evil}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin`,
      });
      let ran = "";
      try {
        ran = await Deno.readTextFile(mark);
      } catch { /* not run: good */ }
      assert.equal(ran, "", `the caller's helper ran with: ${ran}\n${r.stderr}`);
      // The real iptables ran instead, with the capabilities: the ban is listed.
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /192\.0\.2\.9/, r.stdout + r.stderr);
    } finally {
      if (lab) await lab.destroy();
      await Deno.remove(deno);
      await Deno.remove(evil, { recursive: true }).catch(() => {});
      await Deno.remove(mark).catch(() => {});
    }
  },
});

Deno.test({
  name: "setcap install: SB_LIBPCAP / SB_LIBNFTABLES from uid 65534 are not loaded",
  ...opts,
  fn: async () => {
    // Group nogroup may run the daemon (it changes the firewall): the operator's chgrp.
    const deno = await setcapDeno("deno-setcap-lib", NOGROUP);
    if (!deno) return;
    let lab: Lab | null = null;
    let d: Daemon | null = null;
    const dir = `${shared?.tmp}/evil-lib`;
    try {
      const denoDir = await sharedDenoDir();
      // Copies of the real libraries: they load and work, so only their
      // mapping into the process shows that the caller's path was used.
      await Deno.mkdir(dir, { recursive: true });
      const libs = await must([
        "sh",
        "-c",
        "ldconfig -p | grep -E 'libpcap.so.0.8|libnftables.so.1 '",
      ]);
      const pcap = /=>\s*(\S*libpcap\.so\.0\.8)/.exec(libs)?.[1];
      const nft = /=>\s*(\S*libnftables\.so\.1)/.exec(libs)?.[1];
      assert.ok(pcap && nft, libs);
      await Deno.copyFile(pcap, `${dir}/libevilpcap.so`);
      await Deno.copyFile(nft, `${dir}/libevilnft.so`);
      await must(["chmod", "-R", "a+rX", dir]);
      lab = await createLab("nrl");
      d = startAsNobody(
        lab,
        NO_CAPS,
        denoDir,
        [
          "-i",
          lab.targetIf,
          "--firewall",
          "nftables",
          "--metrics-addr",
          "off",
        ],
        deno,
        { SB_LIBPCAP: `${dir}/libevilpcap.so`, SB_LIBNFTABLES: `${dir}/libevilnft.so` },
      );
      const show = () => `\n--- stderr\n${d?.stderr().slice(-2000)}`;
      assert.ok(await printed(d, /Listening on/, 30000), `daemon did not start${show()}`);
      const pids = (await must(["ip", "netns", "pids", lab.target])).trim().split(/\s+/);
      let maps = "";
      for (const pid of pids) maps += await Deno.readTextFile(`/proc/${pid}/maps`).catch(() => "");
      assert.doesNotMatch(maps, /libevil/, `the caller's library is mapped${show()}`);
      assert.match(maps, /libpcap/, "the real libpcap is loaded");
      assert.match(d.stderr(), /SB_LIBPCAP ignored/);
      assert.match(d.stderr(), /SB_LIBNFTABLES ignored/);
    } finally {
      if (d) await d.stop();
      if (lab) await lab.destroy();
      await Deno.remove(deno);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "setcap install: `flush` by uid 65534 is refused and the rules stay; the file's group may",
  ...opts,
  fn: async () => {
    const open = await setcapDeno("deno-setcap-open", 0);
    const grouped = await setcapDeno("deno-setcap-group", NOGROUP);
    if (!open || !grouped) return;
    let lab: Lab | null = null;
    try {
      lab = await createLab("nrf");
      await must([...lab.prefix(lab.target), "iptables", "-N", "SCANBLOCKER"]);
      await must([
        ...lab.prefix(lab.target),
        "iptables",
        "-A",
        "SCANBLOCKER",
        ...BAN_RULE,
      ]);
      await must([...lab.prefix(lab.target), "iptables", "-I", "INPUT", "-j", "SCANBLOCKER"]);
      const rules = () => lab!.exec(lab!.target, ["iptables", "-S"]).then((r) => r.stdout);
      const before = await rules();
      assert.match(before, /-A SCANBLOCKER -s 192\.0\.2\.9\/32 .*-j DROP/);

      for (const args of [["flush"], ["unban", "192.0.2.9"]]) {
        const r = await runAsNobody(lab, open, [...args, "--firewall", "iptables"]);
        assert.equal(r.code, 2, `${args[0]}: exit ${r.code}\n${r.stdout}${r.stderr}`);
        assert.match(r.stderr, /refused: `scanblocker (flush|unban)` changes the firewall/);
        assert.equal(await rules(), before, `${args[0]} changed the rules`);
      }
      // The operator's chgrp lets that group flush: the capabilities do work.
      const ok = await runAsNobody(lab, grouped, ["flush", "--firewall", "iptables"]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.doesNotMatch(await rules(), /SCANBLOCKER/);
    } finally {
      if (lab) await lab.destroy();
      await Deno.remove(open);
      await Deno.remove(grouped);
    }
  },
});
