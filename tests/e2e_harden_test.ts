/**
 * Hardening of the running daemon (issue 18), end to end in namespaces: no
 * signal opens a listener or kills it, metrics stay on loopback by default,
 * one instance per firewall, a blocked stdout never stops capture or bans,
 * SIGHUP reloads.
 */
import assert from "node:assert/strict";
import { type Daemon, spawnDaemon, startDaemon } from "./daemon.ts";
import { canUseNetns, createLab, esc, type Lab, nmap, run } from "./netns.ts";
import { pcapBytes, synFrame4 } from "./pcap_files.ts";

const root = await canUseNetns();
const opts = { ignore: !root, sanitizeOps: false, sanitizeResources: false };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Listening TCP sockets of the namespace `pid` lives in, as "ADDRESS:PORT". */
export async function listeners(pid: number): Promise<string[]> {
  const out: string[] = [];
  for (const f of ["tcp", "tcp6"]) {
    const text = await Deno.readTextFile(`/proc/${pid}/net/${f}`);
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 4 || cols[3] !== "0A") continue;
      const [hex, port] = cols[1].split(":");
      const addr = hex.length === 8
        ? [6, 4, 2, 0].map((i) => parseInt(hex.slice(i, i + 2), 16)).join(".")
        : `[${hex}]`;
      out.push(`${addr}:${parseInt(port, 16)}`);
    }
  }
  return out.sort();
}

/** Runs `body` with a lab and a daemon on its target interface; cleans up both. */
async function withDaemon(
  args: string[],
  body: (lab: Lab, d: Daemon) => Promise<void>,
  env: Record<string, string> = {},
): Promise<void> {
  const lab = await createLab("hard");
  let d: Daemon | null = null;
  try {
    d = startDaemon(lab.target, ["-i", lab.targetIf, "--lockout-guard", "off", ...args], env);
    await d.waitFor(/Listening on: /, 30000);
    await body(lab, d);
  } finally {
    if (d) await d.stop();
    await lab.destroy();
  }
}

/** Scans 20 ports from the lab's scanner and waits for the daemon's ban line. */
async function scanAndBan(lab: Lab, d: Daemon, ports = "1-20"): Promise<void> {
  const scan = await nmap(lab, ["-sS", "-p", ports, lab.target4]);
  assert.equal(scan.code, 0, scan.stderr);
  await d.waitFor(new RegExp(`IP ${esc(lab.scanner4)} banned\\.`), 15000);
}

/**
 * Catchable signals the README's Signals section gives no meaning to (Linux
 * numbers, x86_64 and aarch64 alike), the real-time ones included.
 */
const MEANINGLESS = [
  10, // SIGUSR1: Deno ≥ 2.9.2 opens the V8 inspector on 127.0.0.1:9229
  12, // SIGUSR2
  13, // SIGPIPE
  14, // SIGALRM
  16, // SIGSTKFLT
  17, // SIGCHLD
  18, // SIGCONT
  20, // SIGTSTP
  21, // SIGTTIN
  22, // SIGTTOU
  23, // SIGURG
  26, // SIGVTALRM
  27, // SIGPROF
  28, // SIGWINCH
  29, // SIGIO
  30, // SIGPWR
  ...Array.from({ length: 31 }, (_, i) => 34 + i), // SIGRTMIN..SIGRTMAX
];

/** Sends SIGUSR1, then every meaningless signal: no listener appears, the daemon lives and bans. */
async function signalChecks(lab: Lab, d: Daemon): Promise<void> {
  // Past Deno's 500 ms grace period, after which `deno run` listens for SIGUSR1.
  await sleep(1000);
  const before = await listeners(d.pid);
  assert.deepEqual(before, ["127.0.0.1:9118"]);
  await run(["kill", "-USR1", String(d.pid)]);
  await sleep(700);
  assert.deepEqual(await listeners(d.pid), before, `after SIGUSR1\n${d.stderr()}`);
  for (const n of MEANINGLESS) await run(["kill", `-${n}`, String(d.pid)]);
  await sleep(1500);
  assert.equal(await d.exited(0), null, `daemon ended\n${d.stderr()}`);
  assert.deepEqual(await listeners(d.pid), before, d.stderr());
  assert.doesNotMatch(d.stderr(), /Debugger|inspect/i);
  await scanAndBan(lab, d);
}

const SIGNAL_ARGS = ["--firewall", "nftables", "--metrics-addr", "127.0.0.1:9118"];

Deno.test({
  name: "no signal opens a listener or ends the daemon; it still captures and bans (item 1)",
  ...opts,
  fn: () => withDaemon(SIGNAL_ARGS, signalChecks),
});

/** The compiled binary, when CI built one (.ci/run sets it after `deno task compile`). */
const binary = Deno.env.get("SB_TEST_BINARY") ?? "";

Deno.test({
  name: "compiled binary: no signal opens a listener or ends it (item 1)",
  ...opts,
  ignore: !root || binary === "",
  fn: async () => {
    const lab = await createLab("hard");
    const d = spawnDaemon([
      ...["ip", "netns", "exec", lab.target, binary],
      ...["-i", lab.targetIf, "--lockout-guard", "off", ...SIGNAL_ARGS],
    ]);
    try {
      await d.waitFor(/Listening on: /, 30000);
      await signalChecks(lab, d);
    } finally {
      await d.stop();
      await lab.destroy();
    }
  },
});

Deno.test({
  name: "an offline run (-r -) opens no debugger for SIGUSR1 either, and reads on (item 1)",
  ...opts,
  fn: async () => {
    // Its own namespace: whatever it might open is seen there, and goes with it.
    const ns = `sb-sig-${Deno.pid}-${Math.floor(Math.random() * 1e6)}`;
    await run(["ip", "netns", "add", ns]);
    const child = new Deno.Command("ip", {
      args: ["netns", "exec", ns, Deno.execPath(), "run", "-P", "--quiet", "main.ts", "-r", "-"],
      cwd: new URL("..", import.meta.url).pathname,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const frames = (from: number) =>
      Array.from({ length: 10 }, (_, i) => ({
        tsSec: 1700000000 + from + i,
        tsUsec: 0,
        data: synFrame4(from + i, 1000 + i),
      }));
    const w = child.stdin.getWriter();
    try {
      await w.write(pcapBytes(frames(0)));
      // Past Deno's 500 ms grace period, after which `deno run` listens for
      // SIGUSR1, and once the process catches or ignores it (/proc says so;
      // sent before, its default action would end the run).
      await sleep(1000);
      for (const end = Date.now() + 10_000;;) {
        const st = await Deno.readTextFile(`/proc/${child.pid}/status`);
        const mask = (k: string) =>
          BigInt("0x" + new RegExp(`^${k}:\\s*([0-9a-f]+)`, "m").exec(st)![1]);
        if (((mask("SigIgn") | mask("SigCgt")) >> 9n) & 1n) break;
        assert.ok(Date.now() < end, "SIGUSR1 never caught or ignored");
        await sleep(50);
      }
      await run(["kill", "-USR1", String(child.pid)]);
      await sleep(700);
      assert.deepEqual(await listeners(child.pid), [], "a listener after SIGUSR1");
      await w.write(pcapBytes(frames(10)).subarray(24)); // more records, after the signal
      await w.close();
      const out = await child.output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, text);
      assert.match(text, /Summary: 20 packets, 20 connection attempts/);
      assert.doesNotMatch(text, /Debugger|inspect/i);
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* ended */ }
      await run(["ip", "netns", "del", ns]);
    }
  },
});

Deno.test({
  name: "metrics listen on 127.0.0.1:8080 by default, and the start-up line says so (item 2)",
  ...opts,
  fn: () =>
    withDaemon(["--firewall", "none"], async (lab, d) => {
      assert.deepEqual(await listeners(d.pid), ["127.0.0.1:8080"]);
      assert.match(d.stderr(), /metrics: http:\/\/127\.0\.0\.1:8080\/metrics/);
      const r = await lab.exec(lab.scanner, [
        "curl",
        "-s",
        "-m",
        "2",
        `http://${lab.target4}:8080/metrics`,
      ]);
      assert.notEqual(r.code, 0, "the scanner reached /metrics");
    }),
});

/** Runs `main.ts ARGS` to completion inside namespace `ns`, optionally under a prefix (setpriv). */
async function runIn(
  ns: string,
  args: string[],
  prefix: string[] = [],
): Promise<{ code: number; stdout: string; stderr: string }> {
  return await run([
    "ip",
    "netns",
    "exec",
    ns,
    ...prefix,
    "timeout",
    "60",
    Deno.execPath(),
    "run",
    "-P",
    "--quiet",
    new URL("../main.ts", import.meta.url).pathname,
    ...args,
  ]);
}

/** The firewall state of a namespace, as both tools print it. */
async function firewallText(lab: Lab, ns = lab.target): Promise<string> {
  const nft = await lab.exec(ns, ["nft", "list", "ruleset"]);
  const ipt = await lab.exec(ns, ["iptables-save"]);
  const ip6 = await lab.exec(ns, ["ip6tables-save"]);
  // Comments carry the time of the dump.
  return [nft.stdout, ipt.stdout, ip6.stdout].join("\n").replace(/^#.*$/gm, "");
}

/** Asserts an exit 2 with exactly one stderr line (or `lines`) matching `re`, no stack trace. */
function assertConfigError(
  r: { code: number; stdout: string; stderr: string },
  re: RegExp,
  what: string,
  lines = 1,
): void {
  const err = r.stderr.trim().split("\n").filter(Boolean);
  assert.equal(r.code, 2, `${what}: exit ${r.code}\n${r.stderr}`);
  assert.equal(err.length, lines, `${what}: ${err.length} lines\n${r.stderr}`);
  assert.match(r.stderr, re, what);
  assert.doesNotMatch(
    r.stderr,
    /^\s+at |Stack backtrace|panicked|Uncaught|^error: /m,
    `${what}: stack trace`,
  );
}

Deno.test({
  name: "configuration errors exit 2 with one line, before the firewall is touched (item 8)",
  ...opts,
  fn: async () => {
    const lab = await createLab("hard");
    let holder: Deno.ChildProcess | null = null;
    try {
      const t = lab.target;
      const base = ["--lockout-guard", "off", "--firewall", "nftables"];
      const clean = await firewallText(lab);
      await lab.exec(t, ["ip", "link", "add", "down0", "type", "veth", "peer", "name", "down1"]);
      assertConfigError(
        await runIn(t, ["-i", "nosuch0", ...base]),
        /interface "nosuch0".*(no such|not found|does not exist)/i,
        "unknown interface",
      );
      assertConfigError(
        await runIn(t, ["-i", "down0", ...base]),
        /interface "down0" is down/,
        "down interface",
      );
      const m = ["-i", lab.targetIf, ...base, "--metrics-addr"];
      assertConfigError(
        await runIn(t, [...m, "192.0.2.77:9100"]),
        /192\.0\.2\.77:9100.*not an address of this host/,
        "non-local metrics address",
      );
      assertConfigError(
        await runIn(t, [...m, "no-such-host.invalid:9100"]),
        /no-such-host\.invalid:9100/,
        "unresolvable metrics address",
      );
      holder = new Deno.Command("ip", {
        args: [
          ...["netns", "exec", t, Deno.execPath(), "eval"],
          `Deno.listen({ hostname: "127.0.0.1", port: 9119 }); setTimeout(() => {}, 30000);`,
        ],
        stdout: "null",
        stderr: "null",
      }).spawn();
      // Listening when ss(8) lists it (a fixed wait could be short, and then
      // a daemon with a valid configuration would start here).
      for (const end = Date.now() + 15_000;;) {
        const ss = await run(["ip", "netns", "exec", t, "ss", "-Htln", "sport = :9119"]);
        if (ss.stdout.includes("127.0.0.1:9119")) break;
        assert.ok(Date.now() < end, "the port holder never listened");
        await sleep(50);
      }
      assertConfigError(
        await runIn(t, [...m, "127.0.0.1:9119"]),
        /127\.0\.0\.1:9119 is already in use/,
        "port in use",
      );
      // Root without CAP_NET_RAW and CAP_NET_ADMIN (dropped from the bounding set).
      if ((await run(["sh", "-c", "command -v setpriv"])).code === 0) {
        const r = await runIn(t, ["-i", lab.targetIf, ...base, "--metrics-addr", "off"], [
          "setpriv",
          "--bounding-set",
          "-net_raw,-net_admin",
          "--inh-caps",
          "-net_raw,-net_admin",
          "--",
        ]);
        assertConfigError(r, /missing capability CAP_NET_RAW/, "no capabilities", 2);
        assert.match(r.stderr, /missing capability CAP_NET_ADMIN/);
      }
      assert.equal(await firewallText(lab), clean, "the firewall changed");
    } finally {
      try {
        holder?.kill("SIGKILL");
        await holder?.status;
      } catch { /* gone */ }
      await lab.destroy();
    }
  },
});

Deno.test({
  name:
    "a second daemon on the same firewall exits 2 with one line; the lock dies with the first (item 3)",
  ...opts,
  fn: () =>
    withDaemon(["--firewall", "nftables", "--metrics-addr", "off"], async (lab, d) => {
      const before = await firewallText(lab);
      for (const fw of ["nftables", "iptables"]) {
        const r = await runIn(lab.target, [
          ...["-i", lab.targetIf, "--lockout-guard", "off", "--metrics-addr", "off"],
          ...["--firewall", fw],
        ]);
        assertConfigError(r, /another scanblocker .*already guards this firewall/, `second ${fw}`);
      }
      assert.equal(await firewallText(lab), before, "the second daemon changed the firewall");
      // The lock is the first one's file descriptor: gone with it, even after SIGKILL.
      await run(["kill", "-KILL", String(d.pid)]);
      await d.status;
      const next = startDaemon(lab.target, [
        ...["-i", lab.targetIf, "--lockout-guard", "off", "--metrics-addr", "off"],
        ...["--firewall", "nftables"],
      ]);
      try {
        await next.waitFor(/Listening on: /, 30000);
        await scanAndBan(lab, next);
      } finally {
        await next.stop();
      }
    }),
});

/**
 * A child that runs argv with stdout on a terminal (a pty) nobody reads:
 * the pty fills and stays full, like a paused terminal or a dead SSH session.
 * SIGTERM is passed on to the child.
 */
const STUCK_TERMINAL = `
import os, pty, signal, sys
m, s = pty.openpty()
pid = os.fork()
if pid == 0:
    os.setsid()
    os.dup2(s, 1)
    os.close(m)
    os.close(s)
    os.execvp(sys.argv[1], sys.argv[1:])
os.close(s)
signal.signal(signal.SIGTERM, lambda *a: os.kill(pid, signal.SIGTERM))
while True:
    try:
        os.waitpid(pid, 0)
        break
    except InterruptedError:
        pass
`;

for (const kind of ["pipe", "terminal"] as const) {
  Deno.test({
    name:
      `stdout a ${kind} nobody reads: lines dropped and counted, capture and bans go on (item 5)`,
    ...opts,
    fn: () => blockedOutput(kind),
  });
}

async function blockedOutput(kind: "pipe" | "terminal"): Promise<void> {
  {
    const lab = await createLab("hard");
    const fifo = await Deno.makeTempFile({ prefix: "sb-hard-fifo-" });
    const daemonOut = await Deno.makeTempFile({ prefix: "sb-hard-err-" });
    let reader: Deno.ChildProcess | null = null;
    let daemon: Deno.ChildProcess | null = null;
    try {
      await Deno.remove(fifo);
      await run(["mkfifo", fifo]);
      // A reader that never reads: holds the fifo open and sleeps.
      reader = new Deno.Command("sh", { args: ["-c", `exec sleep 120 < ${fifo}`] }).spawn();
      const cmd =
        `ip netns exec ${lab.target} ${Deno.execPath()} run -P --quiet ${
          new URL("../main.ts", import.meta.url).pathname
        } -i ${lab.targetIf} --firewall nftables --lockout-guard off --log-rate 0 ` +
        `--metrics-addr 127.0.0.1:9118`;
      daemon = new Deno.Command("sh", {
        args: [
          "-c",
          kind === "pipe"
            ? `exec ${cmd} > ${fifo} 2> ${daemonOut}`
            : `exec python3 -c '${STUCK_TERMINAL}' ${cmd} 2> ${daemonOut}`,
        ],
      }).spawn();
      const health = async () => {
        const r = await lab.exec(lab.target, ["curl", "-s", "-m", "3", "127.0.0.1:9118/healthz"]);
        return r.stdout;
      };
      const metric = async (name: string) => {
        const r = await lab.exec(lab.target, ["curl", "-s", "-m", "3", "127.0.0.1:9118/metrics"]);
        return Number(new RegExp(`^${name} (\\S+)$`, "m").exec(r.stdout)?.[1] ?? NaN);
      };
      for (let i = 0; i < 100 && !/"ok"/.test(await health()); i++) await sleep(200);
      // 20,000 SYNs from random sources: far more "New connection" lines than a pipe holds.
      const flood = await lab.exec(lab.scanner, [
        ...["timeout", "30", "hping3", "-q", "-S", "--rand-source", "-p", "++1"],
        ...["-i", "u100", "-c", "20000", lab.target4],
      ]);
      assert.ok(flood.code === 0 || flood.code === 1, flood.stderr);
      await sleep(1500);
      const packets = await metric("scanblocker_packets_captured_total");
      assert.ok(packets >= 15000, `capture stopped after ${packets} packets`);
      const dropped = await metric("scanblocker_log_lines_dropped_total");
      assert.ok(dropped > 0, `no line counted as dropped (${dropped})`);
      // A scanner after the flood is still banned.
      const scan = await nmap(lab, ["-sS", "-p", "1-100", lab.target4]);
      assert.equal(scan.code, 0, scan.stderr);
      const nft = await lab.exec(lab.target, [
        "nft",
        "list",
        "set",
        "inet",
        "scanblocker",
        "banned4",
      ]);
      assert.match(nft.stdout, new RegExp(esc(lab.scanner4)), "the scanner was not banned");
      const h = await health();
      assert.match(h, /"status":"ok"/, h);
      const err = await Deno.readTextFile(daemonOut);
      const episodes = err.split("\n").filter((l) => /stdout is not being read/.test(l));
      assert.equal(episodes.length, 1, err);
    } finally {
      try {
        daemon?.kill("SIGTERM");
      } catch { /* gone */ }
      const t = setTimeout(() => {
        try {
          daemon?.kill("SIGKILL");
        } catch { /* gone */ }
      }, 5000);
      await daemon?.status;
      clearTimeout(t);
      try {
        reader?.kill("SIGKILL");
      } catch { /* gone */ }
      await reader?.status;
      await Deno.remove(fifo).catch(() => {});
      await Deno.remove(daemonOut).catch(() => {});
      await lab.destroy();
    }
  }
}

Deno.test({
  name:
    "SIGHUP reloads thresholds and log settings from the env file, keeping state; a bad value keeps the old (item 7)",
  ...opts,
  fn: async () => {
    const envFile = await Deno.makeTempFile({ prefix: "sb-hard-env-" });
    try {
      // The slow rule (more than 7 ports in 2 h) would catch 10 ports by itself: off here.
      await Deno.writeTextFile(envFile, "SB_PORTS=30\nSB_SLOW_PORTS=0\nSB_LOG_FORMAT=text\n");
      await withDaemon(
        ["--firewall", "nftables", "--metrics-addr", "127.0.0.1:9467", "--env-file", envFile],
        async (lab, d) => {
          const hup = () => run(["kill", "-HUP", String(d.pid)]);
          // 10 ports: below 30, no ban; the detector remembers them.
          let scan = await nmap(lab, ["-sS", "-p", "1-10", lab.target4]);
          assert.equal(scan.code, 0, scan.stderr);
          await sleep(1000);
          assert.doesNotMatch(d.stdout(), /banned/);
          await Deno.writeTextFile(
            envFile,
            "# edited\nSB_PORTS=12\nSB_SLOW_PORTS=0\nexport SB_LOG_FORMAT='json'\nSB_SNAPLEN=200\n",
          );
          await hup();
          await d.waitFor(
            /SIGHUP: reloaded: ports 30→12, log-format text→json; snaplen changed but take effect at restart/,
          );
          // 3 more ports: 13 in all, more than 12 only if the first 10 were kept.
          scan = await nmap(lab, ["-sS", "-p", "11-13", lab.target4]);
          assert.equal(scan.code, 0, scan.stderr);
          await d.waitFor(new RegExp(`"event":"banned","address":"${esc(lab.scanner4)}"`));
          // The allow-list and the hooks.
          await Deno.writeTextFile(
            envFile,
            "SB_PORTS=12\nSB_SLOW_PORTS=0\nSB_LOG_FORMAT=json\nSB_ALLOW=10.250.0.0/16\nSB_HOOK=input,forward\n",
          );
          await hup();
          await d.waitFor(
            /SIGHUP: reloaded: allow none→10\.250\.0\.0\/16, hook input→input,forward/,
          );
          const fwd = await lab.exec(lab.target, [
            "nft",
            "list",
            "chain",
            "inet",
            "scanblocker",
            "forward",
          ]);
          assert.equal(fwd.code, 0, `no forward chain after the reload: ${fwd.stderr}`);
          // A bad value: one line, the old settings stay, the daemon goes on.
          await Deno.writeTextFile(envFile, "SB_PORTS=abc\n");
          await hup();
          await d.waitFor(/SIGHUP: invalid SB_PORTS \(in .*\) "abc".*the old settings stay/);
          const lines = d.stderr().split("\n").filter((l) => /SIGHUP/.test(l));
          assert.equal(lines.length, 3, d.stderr());
          assert.equal(await d.exited(500), null, "the daemon ended");
          // Counted: two applied, one refused.
          const m = await lab.exec(lab.target, [
            Deno.execPath(),
            "eval",
            `console.log(await (await fetch("http://127.0.0.1:9467/metrics")).text())`,
          ]);
          const reloads = (r: string) =>
            Number(
              new RegExp(`^scanblocker_reloads_total\\{result="${r}"\\} (\\d+)`, "m")
                .exec(m.stdout)?.[1],
            );
          assert.deepEqual([reloads("applied"), reloads("refused")], [2, 1], m.stdout);
          // Same capture (started once), the ban still in place.
          assert.equal(d.stderr().match(/Listening on: /g)?.length, 1);
          const set = await lab.exec(lab.target, [
            ...["nft", "list", "set", "inet", "scanblocker", "banned4"],
          ]);
          assert.match(set.stdout, new RegExp(esc(lab.scanner4)));
          assert.equal(await d.stop(), 0, d.stderr());
        },
      );
    } finally {
      await Deno.remove(envFile).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "`bans` only reads: creates nothing, says when it cannot read, marks expired rules that still drop (item 9)",
  ...opts,
  fn: async () => {
    const lab = await createLab("hard");
    try {
      const t = lab.target;
      const clean = await firewallText(lab);
      for (const fw of ["iptables", "nftables"]) {
        const r = await runIn(t, ["bans", "--firewall", fw]);
        assert.equal(r.code, 0, `${fw}: ${r.stderr}`);
        assert.match(r.stdout, /no active bans/, fw);
        // Without CAP_NET_ADMIN it cannot read: it says so, never "no active bans".
        const denied = await runIn(t, ["bans", "--firewall", fw], [
          ...["setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin", "--"],
        ]);
        assertConfigError(denied, /cannot read the .*(rules|table).*CAP_NET_ADMIN/, `${fw} denied`);
        assert.doesNotMatch(denied.stdout, /no active bans/);
      }
      assert.equal(await firewallText(lab), clean, "`bans` changed the firewall");

      // A ban whose time is over while no daemon runs: the rule still drops.
      const d = startDaemon(t, [
        ...["-i", lab.targetIf, "--lockout-guard", "off", "--metrics-addr", "off"],
        // One rule per ban: a rule outlives its time while no daemon runs (a set element does not).
        ...["--firewall", "iptables-rules", "--ban-time", "2"],
      ]);
      try {
        await d.waitFor(/Listening on: /, 30000);
        await scanAndBan(lab, d);
      } finally {
        await d.stop();
      }
      await sleep(3000);
      const r = await runIn(t, ["bans", "--firewall", "iptables-rules"]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(
        r.stdout,
        new RegExp(`${esc(lab.scanner4)}\\s+expired \\d+s ago, still dropping`),
        r.stdout,
      );
    } finally {
      await lab.destroy();
    }
  },
});

Deno.test({
  name:
    'live lines: ban line right after the detection, no "already" for this scan, stealth probes logged, real metrics URL (item 10)',
  ...opts,
  fn: async () => {
    const lab = await createLab("hard");
    const args = [
      ...["-i", lab.targetIf, "--lockout-guard", "off", "--firewall", "nftables"],
      ...["--log-rate", "0", "--metrics-addr", "127.0.0.1:0"],
    ];
    let d: Daemon | null = null;
    try {
      d = startDaemon(lab.target, args);
      await d.waitFor(/metrics: http/, 30000);
      const url = /metrics: http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(d.stderr());
      assert.ok(url && Number(url[1]) > 0, d.stderr());
      assert.deepEqual(await listeners(d.pid), [`127.0.0.1:${url[1]}`]);
      await scanAndBan(lab, d, "1-200");
      await sleep(1000);
      const s = esc(lab.scanner4);
      const lines = d.stdout().split("\n");
      const at = lines.findIndex((l) => new RegExp(`Port scan detected: ${s} `).test(l));
      assert.match(lines[at + 1] ?? "", new RegExp(`IP ${s} banned\\.$`), d.stdout());
      assert.doesNotMatch(d.stdout(), /already in disallowed list/);
      assert.equal(await d.stop(), 0);

      // Restarted with the ban restored: the same scanner, with FIN probes, is "already" banned.
      d = startDaemon(lab.target, args);
      await d.waitFor(/Listening on: .*1 bans restored/, 30000);
      const fin = await nmap(lab, ["-sF", "-p", "300-320", lab.target4]);
      assert.equal(fin.code, 0, fin.stderr);
      await d.waitFor(new RegExp(`IP to ban: ${s} is already in disallowed list\\.`));
      assert.match(
        d.stdout(),
        new RegExp(`New connection: ${s}:\\d+ -> ${esc(lab.target4)}:3[0-2]\\d`),
      );
      assert.doesNotMatch(d.stdout(), new RegExp(`IP ${s} banned\\.`));
    } finally {
      if (d) await d.stop();
      await lab.destroy();
    }
  },
});
