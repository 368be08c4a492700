/**
 * The whole program with a real firewall in a namespace: a scan is banned,
 * the ban survives a restart, and `bans`, `unban` and `flush` do what they say.
 */
import assert from "node:assert/strict";
import { type Daemon, spawnDaemon, startDaemon } from "./daemon.ts";
import { canUseNetns, createLab, esc, type Lab, nmap } from "./netns.ts";

const root = await canUseNetns();
const opts = { ignore: !root, sanitizeOps: false, sanitizeResources: false };

/** Runs `main.ts ARGS` to completion inside the lab's target namespace. */
async function cli(lab: Lab, args: string[]) {
  const r = await lab.exec(lab.target, [
    Deno.execPath(),
    "run",
    "-P",
    "--quiet",
    new URL("../main.ts", import.meta.url).pathname,
    ...args,
  ]);
  return r;
}

function daemon(lab: Lab, firewall: string): Daemon {
  return startDaemon(lab.target, [
    "-i",
    lab.targetIf,
    "--firewall",
    firewall,
    "--metrics-addr",
    "off",
    "--lockout-guard",
    "off",
  ]);
}

for (const firewall of ["nftables", "iptables", "iptables-rules"]) {
  Deno.test({
    name: `${firewall}: scan → ban → restart keeps it → bans / unban / flush`,
    ...opts,
    fn: async () => {
      const lab = await createLab("ban");
      let d: Daemon | null = null;
      try {
        d = daemon(lab, firewall);
        await d.waitFor(/Listening on: .*0 bans restored/, 20000);
        const scan = await nmap(lab, ["-sS", "-p", "1-20", lab.target4]);
        assert.equal(scan.code, 0, scan.stderr);
        await d.waitFor(new RegExp(`IP ${lab.scanner4.replaceAll(".", "\\.")} banned\\.`));
        assert.equal(await d.stop(), 0, d.stderr());

        // The rule stays after the daemon stopped, and a restart reads it back.
        d = daemon(lab, firewall);
        await d.waitFor(/Listening on: .*1 bans restored/, 20000);
        assert.equal(await d.stop(), 0);

        const bans = await cli(lab, ["bans", "--firewall", firewall]);
        assert.equal(bans.code, 0, bans.stderr);
        // Header, then address, time left, reason and origin ("-": no daemon to ask).
        assert.match(
          bans.stdout,
          new RegExp(
            `^ADDRESS +LEFT +REASON +ORIGIN +BACKEND\\n${
              esc(lab.scanner4)
            } +(?:59m \\d+s|1h) +- +- +${firewall}\\n`,
          ),
        );

        const un = await cli(lab, ["unban", lab.scanner4, "--firewall", firewall]);
        assert.equal(un.code, 0, un.stderr);
        assert.match(
          un.stdout,
          new RegExp(`IP ${lab.scanner4.replaceAll(".", "\\.")} unbanned \\(${firewall}\\)\\.`),
        );
        const again = await cli(lab, ["unban", lab.scanner4, "--firewall", firewall]);
        assert.equal(again.code, 1);
        assert.match(again.stderr, /is not banned/);

        const fl = await cli(lab, ["flush", "--firewall", firewall]);
        assert.equal(fl.code, 0, fl.stderr);
        const left = firewall === "nftables"
          ? (await lab.exec(lab.target, ["nft", "list", "tables"])).stdout
          : (await lab.exec(lab.target, ["iptables", "-S"])).stdout;
        assert.ok(!/scanblocker|SCANBLOCKER/.test(left), left);
      } finally {
        if (d) await d.stop();
        await lab.destroy();
      }
    },
  });
}

Deno.test({
  name:
    "iptables missing from the helper directories: the daemon says so, counts it, and keeps detecting",
  ...opts,
  fn: async () => {
    const lab = await createLab("nofw");
    let d: Daemon | null = null;
    try {
      // Helpers are looked up in fixed directories, never through PATH: hide
      // /usr/sbin (and /sbin, a link to it) in a mount namespace of its own.
      d = spawnDaemon([
        ...lab.prefix(lab.target),
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount -t tmpfs tmpfs /usr/sbin && exec "$@"',
        "sh",
        Deno.execPath(),
        "run",
        "-P",
        "--quiet",
        new URL("../main.ts", import.meta.url).pathname,
        "-i",
        lab.targetIf,
        "--firewall",
        "iptables",
        "--metrics-addr",
        "127.0.0.1:9464",
        "--lockout-guard",
        "off",
      ]);
      await d.waitFor(/Listening on: /, 20000);
      assert.match(d.stderr(), /iptables: not found in \/usr\/sbin, \/sbin, \/usr\/bin, \/bin/);
      const scanFrom = (src: string) =>
        nmap(lab, ["-sS", "-S", src, "-e", lab.scannerIf, "-p", "1-10", lab.target4]);
      await scanFrom(lab.scanner4);
      await d.waitFor(new RegExp(`IP ${lab.scanner4.replaceAll(".", "\\.")} could not be banned`));
      // Still running: a second scanner is still detected.
      const second = lab.scanner4.replace(/\.\d+$/, ".66");
      await lab.addScannerAddress(`${second}/24`);
      await scanFrom(second);
      await d.waitFor(new RegExp(`Port scan detected: ${second.replaceAll(".", "\\.")} -> `));
      const m = await lab.exec(lab.target, [
        Deno.execPath(),
        "eval",
        `console.log(await (await fetch("http://127.0.0.1:9464/metrics")).text())`,
      ]);
      const errors = /^scanblocker_firewall_errors_total (\d+)/m.exec(m.stdout);
      assert.ok(errors && Number(errors[1]) >= 1, m.stdout.slice(0, 2000) + m.stderr);
      assert.match(m.stdout, /scanblocker_bans_total\{backend="iptables",result="failed"\} [1-9]/);
    } finally {
      if (d) await d.stop();
      await lab.destroy();
    }
  },
});
