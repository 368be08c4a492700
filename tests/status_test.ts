/**
 * `scanblocker status` and `bans` against the real daemon (`deno run -P
 * main.ts`) that has just banned a real nmap scanner in a namespace lab:
 * text and JSON, top sources from the capture worker, reason and origin of
 * the ban, the last scans; one line and exit 1 when no daemon runs or the
 * user may not reach the socket (a real unprivileged user, via setpriv).
 *
 * With SB_STATUS_SAMPLE=FILE the text of `status` is written there (the
 * README's sample comes from such a run).
 */
import assert from "node:assert/strict";
import { type Daemon, startDaemon } from "./daemon.ts";
import { canUseNetns, createLab, esc, type Lab, must, nmap, run } from "./netns.ts";
import type { StatusSnapshot } from "../src/report/status.ts";

const root = new URL("..", import.meta.url).pathname;
const ok = await canUseNetns();
const opts = { ignore: !ok, sanitizeOps: false, sanitizeResources: false };

/** A socket path of this run: the program may write only under /run/scanblocker. */
const socketPath = () =>
  `/run/scanblocker/test-${Deno.pid}-${Math.floor(Math.random() * 36 ** 4).toString(36)}.sock`;

/** Runs `main.ts ARGS` to completion inside the lab's target namespace. */
function cli(lab: Lab, args: string[], prefix: string[] = []) {
  return lab.exec(lab.target, [
    ...prefix,
    Deno.execPath(),
    "run",
    "-P",
    "--quiet",
    `${root}main.ts`,
    ...args,
  ]);
}

Deno.test({
  name: "status: a daemon that just banned a scanner reports it (text and --json); bans too",
  ...opts,
  async fn() {
    const lab = await createLab("stat");
    const sock = socketPath();
    let d: Daemon | null = null;
    try {
      d = startDaemon(lab.target, [
        "-i",
        lab.targetIf,
        "--firewall",
        "nftables",
        "--metrics-addr",
        "off",
        "--lockout-guard",
        "off",
        "--control-socket",
        sock,
      ]);
      await d.waitFor(/Listening on: /, 20000);
      const st = Deno.statSync(sock);
      assert.equal(st.mode! & 0o777, 0o600, "socket mode 0600");
      assert.ok(st.isSocket);

      // A scanner (21 ports: banned) and a quieter IPv6 source (2 ports: tracked).
      const scan = await nmap(lab, ["-sS", "-p", "1-20,80", lab.target4]);
      assert.equal(scan.code, 0, scan.stderr);
      await d.waitFor(new RegExp(`IP ${esc(lab.scanner4)} banned\\.`));
      const quiet = await nmap(lab, ["-6", "-sS", "-p", "7,9", lab.target6]);
      assert.equal(quiet.code, 0, quiet.stderr);
      // Both of its probes processed (waited for, not assumed after 300 ms).
      for (const end = Date.now() + 10_000;;) {
        const seen = d.stdout().split("\n").filter((l) =>
          l.includes("New connection: ") && l.includes(lab.scanner6)
        ).length;
        if (seen >= 2) {
          break;
        }
        assert.ok(Date.now() < end, d.stdout());
        await new Promise((r) =>
          setTimeout(r, 50)
        );
      }

      const text = await cli(lab, ["status", "--control-socket", sock]);
      assert.equal(text.code, 0, text.stderr);
      const sample = Deno.env.get("SB_STATUS_SAMPLE");
      if (sample) await Deno.writeTextFile(sample, text.stdout);
      const out = text.stdout;
      assert.match(out, /^scanblocker \d+\.\d+\.\d+ \(pid \d+\), up \d+s/);
      assert.match(out, new RegExp(`^interface: +${lab.targetIf}$`, "m"));
      assert.match(out, /^firewall: +nftables via netlink \(ok\)$/m);
      assert.match(out, /^packets: +\d+ seen, \d+ dropped by the kernel$/m);
      assert.match(out, /^sources: +\d+ tracked \(cap 100000\)$/m);
      assert.match(out, /^scans: +1 detected$/m);
      assert.match(out, new RegExp(`^  ${esc(lab.scanner6)} +2 +7, 9$`, "m"));
      assert.match(
        out,
        new RegExp(
          `^Active bans \\(1\\):\\n  ADDRESS .*\\n  ${
            esc(lab.scanner4)
          } +(?:59m \\d+s|1h) +port scan: 4 ports +local$`,
          "m",
        ),
      );
      assert.match(
        out,
        new RegExp(
          `^  \\d{4}-\\d\\d-\\d\\d \\S+ +${esc(lab.scanner4)} +${
            esc(lab.target4)
          } +window +4 +banned$`,
          "m",
        ),
      );
      assert.ok(out.endsWith("\n"));

      const json = await cli(lab, ["status", "--json", "--control-socket", sock]);
      assert.equal(json.code, 0, json.stderr);
      const s = JSON.parse(json.stdout) as StatusSnapshot;
      assert.equal(s.interface, lab.targetIf);
      assert.deepEqual(s.firewall, { backend: "nftables", path: "netlink", state: "ok" });
      assert.ok(s.packets.seen >= 23, JSON.stringify(s.packets));
      assert.equal(s.scansDetected, 1);
      assert.equal(s.bans.length, 1);
      assert.equal(s.bans[0].address, lab.scanner4);
      assert.equal(s.bans[0].reason, "port scan: 4 ports");
      assert.equal(s.bans[0].origin, "local");
      assert.ok(s.bans[0].expiresAt! > Date.now() + 3500_000);
      assert.deepEqual(s.topSources.find((t) => t.address === lab.scanner6)?.ports, [7, 9]);
      assert.ok(s.topSources.some((t) => t.address === lab.scanner4 && t.detected));
      assert.equal(s.recentScans[0].src, lab.scanner4);
      assert.equal(s.recentScans[0].outcome, "banned");

      // `bans` asks the firewall, and the daemon for reason and origin.
      const bans = await cli(lab, ["bans", "--firewall", "nftables", "--control-socket", sock]);
      assert.equal(bans.code, 0, bans.stderr);
      assert.match(
        bans.stdout,
        new RegExp(
          `^ADDRESS +LEFT +REASON +ORIGIN +BACKEND\\n${
            esc(lab.scanner4)
          } +(?:59m \\d+s|1h) +port scan: 4 ports +local +nftables\\n$`,
        ),
      );
      const bj = await cli(lab, [
        "bans",
        "--json",
        "--firewall",
        "nftables",
        "--control-socket",
        sock,
      ]);
      const list = JSON.parse(bj.stdout).bans;
      assert.equal(list.length, 1);
      assert.equal(list[0].address, lab.scanner4);
      assert.equal(list[0].origin, "local");
      assert.equal(list[0].reason, "port scan: 4 ports");
      assert.equal(list[0].backend, "nftables");
      assert.ok(list[0].seconds_left > 3500 && list[0].seconds_left <= 3600);
      assert.ok(bj.stdout.endsWith("}\n"));

      assert.equal(await d.stop(), 0, d.stderr());
      d = null;
      assert.throws(() => Deno.statSync(sock), Deno.errors.NotFound, "socket removed at exit");

      // No daemon: one line, exit 1; `bans` still lists the firewall's ban.
      const none = await cli(lab, ["status", "--control-socket", sock]);
      assert.equal(none.code, 1);
      assert.equal(none.stdout, "");
      assert.equal(none.stderr, `scanblocker: scanblocker is not running (no daemon at ${sock})\n`);
      const alone = await cli(lab, ["bans", "--firewall", "nftables", "--control-socket", sock]);
      assert.match(
        alone.stdout,
        new RegExp(`^${esc(lab.scanner4)} +(?:59m \\d+s|1h) +- +- +nftables$`, "m"),
      );
      await cli(lab, ["flush", "--firewall", "nftables"]);
    } finally {
      if (d) await d.stop();
      await lab.destroy();
      try {
        Deno.removeSync(sock);
      } catch { /* removed by the daemon */ }
    }
  },
});

/** A Deno cache the unprivileged user can read (as tests/nonroot_test.ts prepares it). */
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

Deno.test({
  name: "status: a user without access to the socket gets one line saying so, exit 1",
  ...opts,
  ignore: !ok || (await run(["sh", "-c", "command -v setpriv"])).code !== 0,
  async fn() {
    const lab = await createLab("statu");
    const sock = socketPath();
    const dir = await Deno.makeTempDir({ prefix: "sb-status-" });
    let d: Daemon | null = null;
    try {
      const denoDir = await prepareDenoDir(dir);
      d = startDaemon(lab.target, [
        "-i",
        lab.targetIf,
        "--firewall",
        "none",
        "--metrics-addr",
        "off",
        "--control-socket",
        sock,
      ]);
      await d.waitFor(/Listening on: /, 20000);
      assert.equal(Deno.statSync("/run/scanblocker").mode! & 0o777, 0o700, "run directory 0700");
      const r = await run([
        "env",
        `DENO_DIR=${denoDir}`,
        "HOME=/nonexistent",
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        Deno.execPath(),
        "run",
        "-P",
        "--quiet",
        "--cached-only",
        "--no-lock",
        `${root}main.ts`,
        "status",
        "--control-socket",
        sock,
      ]);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.equal(r.stdout, "");
      assert.equal(
        r.stderr,
        `scanblocker: permission denied on ${sock}: run as root or as the service's user\n`,
      );
    } finally {
      if (d) await d.stop();
      await lab.destroy();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
