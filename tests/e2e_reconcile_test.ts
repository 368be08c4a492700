/**
 * The kernel is the truth for bans (issue: the bans owner). With the real
 * daemon in a namespace, for both backends: a ban removed from another
 * process (`scanblocker unban`, `nft flush set`, `iptables -F`) is forgotten
 * within the reconciliation period and the next scan from that source is
 * banned again; a hook removed from outside (`nft flush chain … input`,
 * `iptables -D INPUT -j SCANBLOCKER`) is put back, said once on stderr and
 * counted, and the bans drop again. `unban` without --firewall finds the
 * backend that holds the ban and says which.
 */
import assert from "node:assert/strict";
import { type Daemon, startDaemon } from "./daemon.ts";
import { canUseNetns, createLab, esc, type Lab, nmap, portStates } from "./netns.ts";

const root = await canUseNetns();
const opts = { ignore: !root, sanitizeOps: false, sanitizeResources: false };

/** Runs `main.ts ARGS` to completion inside the lab's target namespace. */
function cli(lab: Lab, args: string[]) {
  const main = new URL("../main.ts", import.meta.url).pathname;
  return lab.exec(lab.target, [Deno.execPath(), "run", "-P", "--quiet", main, ...args]);
}

/** How many times `re` occurs in `text`. */
const count = (text: string, re: RegExp) => text.match(new RegExp(re, "g"))?.length ?? 0;

/** Scans 20 ports and waits until the daemon has printed its `n`th ban line for the scanner. */
async function scanUntilBanned(lab: Lab, d: Daemon, n: number, first: number) {
  const banned = new RegExp(`IP ${esc(lab.scanner4)} banned\\.`);
  // Up to the reconciliation period (5 s) plus slack: a scan before the
  // daemon has re-read the kernel is answered "already"; scan again.
  const until = Date.now() + 15000;
  while (count(d.stdout(), banned) < n && Date.now() < until) {
    await nmap(lab, ["-sS", "-p", `${first}-${first + 19}`, lab.target4]);
    first += 20;
    if (count(d.stdout(), banned) < n) await new Promise((r) => setTimeout(r, 1000));
  }
  assert.equal(count(d.stdout(), banned), n, d.stdout() + d.stderr());
  return first;
}

// "iptables" is the default: its ipset sets here (ipset is installed); "iptables-rules" one rule per ban.
for (const firewall of ["nftables", "iptables", "iptables-rules"] as const) {
  Deno.test({
    name: `${firewall}: a ban removed from outside is banned again; a removed hook is put back`,
    ...opts,
    fn: async () => {
      const lab = await createLab("rec");
      let d: Daemon | null = null;
      try {
        d = startDaemon(lab.target, [
          "-i",
          lab.targetIf,
          "--firewall",
          firewall,
          "--metrics-addr",
          "off",
          "--lockout-guard",
          "off",
        ]);
        await d.waitFor(/Listening on: .*0 bans restored/, 20000);
        let port = await scanUntilBanned(lab, d, 1, 1);

        // 1. `scanblocker unban` from another process, without --firewall.
        const un = await cli(lab, ["unban", lab.scanner4]);
        assert.equal(un.code, 0, un.stderr);
        assert.match(
          un.stdout,
          new RegExp(`IP ${esc(lab.scanner4)} unbanned \\(${firewall}\\)\\.`),
        );
        port = await scanUntilBanned(lab, d, 2, port);

        // 2. The set or chain flushed by hand.
        const flush = firewall === "nftables"
          ? ["nft", "flush", "set", "inet", "scanblocker", "banned4"]
          : firewall === "iptables"
          ? ["ipset", "flush", "scanblocker4"]
          : ["iptables", "-w", "-F", "SCANBLOCKER"];
        assert.equal((await lab.exec(lab.target, flush)).code, 0);
        port = await scanUntilBanned(lab, d, 3, port);
        assert.equal(await portStates(lab, lab.target4, [port + 1]), "filtered");

        // 3. The hook removed: put back within the period, said once, and bans drop again.
        const unhook = firewall === "nftables"
          ? ["nft", "flush", "chain", "inet", "scanblocker", "input"]
          : ["iptables", "-w", "-D", "INPUT", "-j", "SCANBLOCKER"];
        assert.equal((await lab.exec(lab.target, unhook)).code, 0);
        await d.waitFor(/removed from outside and put back/, 12000);
        assert.equal(count(d.stderr(), /removed from outside and put back/), 1, d.stderr());
        assert.equal(await portStates(lab, lab.target4, [port + 2]), "filtered");
      } finally {
        if (d) await d.stop();
        await lab.destroy();
      }
    },
  });
}

Deno.test({
  name: "subcommands without --firewall look where the bans are and say so",
  ...opts,
  fn: async () => {
    const lab = await createLab("sub");
    try {
      // Nothing installed: nothing found, and nothing created by looking.
      const none = await cli(lab, ["bans"]);
      assert.equal(none.code, 0, none.stderr);
      assert.match(none.stdout, /no active bans \(no scanblocker rules in iptables or nftables\)/);
      assert.equal((await lab.exec(lab.target, ["nft", "list", "tables"])).stdout.trim(), "");
      const ipt = await lab.exec(lab.target, ["iptables", "-S"]);
      assert.ok(!/SCANBLOCKER/.test(ipt.stdout), ipt.stdout);

      // An nftables ban made by hand in scanblocker's own set.
      const d = startDaemon(lab.target, [
        "-i",
        lab.targetIf,
        "--firewall",
        "nftables",
        "--metrics-addr",
        "off",
      ]);
      await d.waitFor(/Listening on:/, 20000);
      assert.equal(await d.stop(), 0);
      const add = await lab.exec(lab.target, [
        "nft",
        "add element inet scanblocker banned4 { 192.0.2.9 timeout 1h }",
      ]);
      assert.equal(add.code, 0, add.stderr);
      const bans = await cli(lab, ["bans"]);
      // No daemon runs: reason and origin unknown; the backend says where the ban is.
      assert.match(bans.stdout, /^192\.0\.2\.9 +(?:59m \d+s|1h) +- +- +nftables$/m);
      const un = await cli(lab, ["unban", "192.0.2.9"]);
      assert.equal(un.code, 0, un.stderr);
      assert.match(un.stdout, /IP 192\.0\.2\.9 unbanned \(nftables\)\./);
      const again = await cli(lab, ["unban", "192.0.2.9"]);
      assert.equal(again.code, 1);
      assert.match(again.stderr, /192\.0\.2\.9 is not banned \(nftables\)/);
    } finally {
      await lab.destroy();
    }
  },
});
