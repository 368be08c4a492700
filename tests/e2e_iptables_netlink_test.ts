/**
 * The iptables backend's netlink path, through the whole daemon in a
 * namespace: the capture worker appends the DROP rules itself (a copy of the
 * rule iptables-restore wrote), and everything else still goes through
 * iptables: `iptables -S` shows the rule exactly as iptables writes it, the
 * second nmap sees every port filtered (IPv4 and IPv6), and a short
 * --ban-time is ended by the long-lived iptables-restore deleting that rule
 * by its spec (so the expiry the worker wrote matches the main thread's).
 */
import assert from "node:assert/strict";
import { type Daemon, startDaemon } from "./daemon.ts";
import { canUseNetns, createLab, esc, nmap, portStates } from "./netns.ts";

const root = await canUseNetns();
const opts = { ignore: !root, sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "iptables via netlink: the worker's rules are iptables' own, drop, and expire",
  ...opts,
  fn: async () => {
    const lab = await createLab("iptnl");
    let d: Daemon | null = null;
    try {
      d = startDaemon(lab.target, [
        "-i",
        lab.targetIf,
        "--firewall",
        "iptables-rules",
        "--ban-time",
        "4",
        "--metrics-addr",
        "off",
        "--lockout-guard",
        "off",
      ]);
      await d.waitFor(/Listening on: .*firewall iptables-rules via netlink,/, 20000);
      // The template and probe rules are gone again.
      const sync = await lab.exec(lab.target, ["iptables", "-S", "SCANBLOCKER-SYNC"]);
      assert.equal(sync.stdout.trim(), "-N SCANBLOCKER-SYNC");

      const ports = [21, 22, 23, 25, 80, 443];
      for (
        const [addr, target, tool, host] of [
          [lab.scanner4, lab.target4, "iptables", "/32"],
          [lab.scanner6, lab.target6, "ip6tables", "/128"],
        ]
      ) {
        const six = addr.includes(":") ? ["-6"] : [];
        const scan = await nmap(lab, [...six, "-sS", "-p", "1-20", target]);
        assert.equal(scan.code, 0, scan.stderr);
        await d.waitFor(new RegExp(`IP ${esc(addr)} banned\\.`));
        const rules = await lab.exec(lab.target, [tool, "-S", "SCANBLOCKER"]);
        const rule = new RegExp(
          `^-A SCANBLOCKER -s ${
            esc(addr)
          }${host} -m comment --comment "scanblocker expires=(\\d{10})" -j DROP$`,
          "m",
        ).exec(rules.stdout);
        assert.ok(rule, rules.stdout);
        const left = Number(rule[1]) - Date.now() / 1000;
        assert.ok(left > 0 && left <= 5, `expiry ${left} s away`);
        assert.equal(
          await portStates(lab, target, ports),
          ports.map(() => "filtered").join(","),
        );
      }
      // Both bans end on time: the main thread deletes the worker's rules by spec.
      const deadline = Date.now() + 10_000;
      let rules = "";
      while (Date.now() < deadline) {
        rules = (await lab.exec(lab.target, ["iptables", "-S", "SCANBLOCKER"])).stdout +
          (await lab.exec(lab.target, ["ip6tables", "-S", "SCANBLOCKER"])).stdout;
        if (!/-A SCANBLOCKER/.test(rules)) break;
        await new Promise((r) => setTimeout(r, 250));
      }
      assert.ok(!/-A SCANBLOCKER/.test(rules), rules);
      assert.equal(await portStates(lab, lab.target4, [22]), "closed");
      assert.doesNotMatch(d.stderr(), /could not be banned|failed/);
    } finally {
      if (d) await d.stop();
      await lab.destroy();
    }
  },
});
