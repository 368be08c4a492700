/**
 * The default backend (`--firewall iptables`, or no --firewall at all) holds
 * its bans in the ipset sets whenever ipset is usable, through the whole
 * daemon in a namespace: the start-up line says so, a scan lands in set
 * scanblocker4 (the chain holds only the rules matching the sets), a rule of
 * the per-rule form found at start is moved into the set, and `scanblocker
 * bans` (no --firewall) lists the set's bans as the iptables backend's.
 * With ipset not installed (hidden in a mount namespace of the daemon's
 * own) it falls back to one rule per ban, and its start-up line says why.
 */
import assert from "node:assert/strict";
import { type Daemon, spawnDaemon, startDaemon } from "./daemon.ts";
import { canUseNetns, createLab, esc, type Lab, nmap, run } from "./netns.ts";

const root = await canUseNetns();
const opts = { ignore: !root, sanitizeOps: false, sanitizeResources: false };
const main = new URL("../main.ts", import.meta.url).pathname;
const daemonArgs = (lab: Lab) => [
  "-i",
  lab.targetIf,
  "--metrics-addr",
  "off",
  "--lockout-guard",
  "off",
];

Deno.test({
  name: "default backend: iptables via ipset sets; a scan lands in the set, old rules move in",
  ...opts,
  fn: async () => {
    const lab = await createLab("ipdef");
    let d: Daemon | null = null;
    try {
      // A ban as the per-rule form writes it, from before the upgrade.
      const exp = Math.floor(Date.now() / 1000) + 3600;
      const w = await run(["ip", "netns", "exec", lab.target, "iptables-restore", "--noflush"], {
        stdin: `*filter\n:SCANBLOCKER - [0:0]\n-A SCANBLOCKER -s 10.66.0.1/32 -m comment ` +
          `--comment "scanblocker expires=${exp}" -j DROP\nCOMMIT\n`,
      });
      assert.equal(w.code, 0, w.stderr);
      d = startDaemon(lab.target, daemonArgs(lab));
      await d.waitFor(/Listening on: /, 20000);
      assert.match(
        d.stderr() + d.stdout(),
        /Listening on: .*firewall iptables via ipset sets \(netlink\), 1 bans restored/,
      );
      const scan = await nmap(lab, ["-sS", "-p", "1-20", lab.target4]);
      assert.equal(scan.code, 0, scan.stderr);
      await d.waitFor(new RegExp(`IP ${esc(lab.scanner4)} banned\\.`));
      const set = (await lab.exec(lab.target, ["ipset", "save", "scanblocker4"])).stdout;
      assert.match(set, new RegExp(`^add scanblocker4 ${esc(lab.scanner4)} timeout \\d+$`, "m"));
      assert.match(set, /^add scanblocker4 10\.66\.0\.1 timeout \d+$/m);
      const chain = (await lab.exec(lab.target, ["iptables", "-S", "SCANBLOCKER"])).stdout;
      assert.equal(
        chain.trim(),
        "-N SCANBLOCKER\n-A SCANBLOCKER -m set --match-set scanblocker4 src -j DROP\n" +
          "-A SCANBLOCKER -m set --match-set scanblocker4net src -j DROP",
      );
      const again = await nmap(lab, ["-sS", "-p", "22", "--host-timeout", "5s", lab.target4]);
      assert.doesNotMatch(again.stdout, /22\/tcp\s+closed/, again.stdout);
      const bans = await lab.exec(lab.target, [
        Deno.execPath(),
        "run",
        "-P",
        "--quiet",
        main,
        "bans",
      ]);
      assert.equal(bans.code, 0, bans.stderr);
      assert.match(bans.stdout, new RegExp(`^${esc(lab.scanner4)} .* iptables$`, "m"));
      assert.match(bans.stdout, /^10\.66\.0\.1 .* iptables$/m);
      // Listing the rule that matches a set needs CAP_NET_RAW (xtables asks for the set over a
      // raw socket): without it, `bans` says so rather than "no active bans".
      const noRaw = await lab.exec(lab.target, [
        ...["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw", "--"],
        ...[Deno.execPath(), "run", "-P", "--quiet", main, "bans"],
      ]);
      assert.equal(noRaw.code, 2, noRaw.stdout + noRaw.stderr);
      assert.match(noRaw.stderr, /socket to ipset.*CAP_NET_ADMIN and CAP_NET_RAW/);
      assert.doesNotMatch(noRaw.stdout, /no active bans/);
      assert.equal(await d.stop(), 0, d.stderr());
    } finally {
      if (d) await d.stop();
      await lab.destroy();
    }
  },
});

Deno.test({
  name: "default backend without ipset: one rule per ban, and the start-up line says why",
  ...opts,
  fn: async () => {
    const lab = await createLab("ipnone");
    let d: Daemon | null = null;
    try {
      // Helpers come from fixed directories: in a mount namespace of its own,
      // /usr/sbin (and /sbin, a link to it) becomes a root-owned tmpfs of
      // links to every program there but ipset.
      const hide = "mount --bind /usr/sbin /mnt && mount -t tmpfs -o mode=755 tmpfs /usr/sbin && " +
        'for f in /mnt/*; do ln -s "$f" /usr/sbin/; done && rm /usr/sbin/ipset && exec "$@"';
      d = spawnDaemon([
        ...lab.prefix(lab.target),
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        hide,
        "sh",
        Deno.execPath(),
        "run",
        "-P",
        "--quiet",
        main,
        ...daemonArgs(lab),
      ]);
      await d.waitFor(/Listening on: /, 20000);
      assert.match(
        d.stderr() + d.stdout(),
        /firewall iptables via netlink \(one rule per ban: ipset not installed\), 0 bans restored/,
      );
      const scan = await nmap(lab, ["-sS", "-p", "1-20", lab.target4]);
      assert.equal(scan.code, 0, scan.stderr);
      await d.waitFor(new RegExp(`IP ${esc(lab.scanner4)} banned\\.`));
      const chain = (await lab.exec(lab.target, ["iptables", "-S", "SCANBLOCKER"])).stdout;
      assert.match(
        chain,
        new RegExp(`^-A SCANBLOCKER -s ${esc(lab.scanner4)}/32 .* -j DROP$`, "m"),
      );
      assert.doesNotMatch(chain, /match-set/);
      assert.equal((await lab.exec(lab.target, ["ipset", "list", "-n"])).stdout.trim(), "");
      // The subcommand finds the rules (no --firewall) and names their form.
      const bans = await lab.exec(lab.target, [
        Deno.execPath(),
        "run",
        "-P",
        "--quiet",
        main,
        "bans",
      ]);
      assert.equal(bans.code, 0, bans.stderr);
      assert.match(bans.stdout, new RegExp(`^${esc(lab.scanner4)} .* iptables-rules$`, "m"));
      assert.equal(await d.stop(), 0, d.stderr());
    } finally {
      if (d) await d.stop();
      await lab.destroy();
    }
  },
});
