/**
 * IPv6 prefixes as ban targets (issue 17), in namespaces: both backends ban
 * a /64 as a range (nftables interval set, ip6tables masked source), so a
 * fresh address of it gets no answer while another /64 is unaffected; a
 * block holding a protected address is refused; and the real daemon
 * detects a scanner that takes a new address of its /64 for every probe
 * and bans the /64.
 */
import assert from "node:assert/strict";
import { startDaemon } from "./daemon.ts";
import { canUseNetns, createLab, type Lab, must, nmap } from "./netns.ts";
import { createFirewall } from "../src/firewall/firewall.ts";
import { AllowList } from "../src/allowlist.ts";
import { parseAddress } from "../src/address.ts";

const root = await canUseNetns();
const opts = { ignore: !root, sanitizeOps: false, sanitizeResources: false };

/** A second /64 next to the lab's, routed on the veth: its prefix and an address maker. */
async function otherNet(lab: Lab): Promise<{ net: string; addr: (n: number) => Promise<string> }> {
  const base = lab.scanner6.replace(/::1$/, "");
  const prefix = `${base}:0:1::`;
  await must([
    "ip",
    "netns",
    "exec",
    lab.target,
    "ip",
    "-6",
    "route",
    "add",
    `${prefix}/64`,
    "dev",
    "t0",
  ]);
  return {
    net: `${prefix}/64`,
    addr: async (n: number) => {
      const a = `${prefix}${n.toString(16)}`;
      await must([
        "ip",
        "netns",
        "exec",
        lab.scanner,
        "ip",
        "-6",
        "addr",
        "add",
        `${a}/64`,
        "dev",
        "s0",
        "nodad",
      ]);
      return a;
    },
  };
}

/** nmap's state word for one port of the target, probed from `src` (one of the scanner's addresses). */
async function stateFrom(lab: Lab, src: string, port: number): Promise<string> {
  const r = await nmap(lab, [
    "-6",
    "-sS",
    "-S",
    src,
    "-e",
    "s0",
    "-p",
    String(port),
    "--host-timeout",
    "5s",
    lab.target6,
  ]);
  const m = new RegExp(`^${port}/tcp\\s+(\\S+)`, "m").exec(r.stdout);
  if (m) return m[1];
  if (/0 hosts up/.test(r.stdout)) return "filtered";
  return `unknown: ${r.stdout}${r.stderr}`;
}

for (const kind of ["nftables", "iptables", "iptables-rules"] as const) {
  Deno.test({
    name: `${kind} backend: a /64 is banned as a range, a block holding this host is refused`,
    ...opts,
    fn: async () => {
      const lab = await createLab(`p${kind.slice(0, 3)}`);
      const errors: string[] = [];
      const allow = new AllowList([], [parseAddress(lab.target4)!, parseAddress(lab.target6)!]);
      const fw = createFirewall(kind, {
        isProtected: (t) => allow.isProtectedText(t),
        onError: (m) => errors.push(m),
        maxBans: 100,
        commandPrefix: lab.prefix(lab.target),
      });
      try {
        await fw.init();
        const other = await otherNet(lab);
        const a = await other.addr(0xa), b = await other.addr(0xb);
        assert.equal(await stateFrom(lab, a, 22), "closed");
        // Host bits are cleared: the canonical block is the ban.
        assert.equal(await fw.ban(`${a}/64`, 3600), "banned");
        assert.equal(await fw.ban(other.net, 3600), "already");
        assert.deepEqual((await fw.list()).map((x) => x.address), [other.net]);
        // The default iptables backend holds the block in the ipset hash:net set.
        const sets = await lab.exec(lab.target, ["ipset", "save", "scanblocker6net"]);
        if (kind === "iptables") {
          assert.match(sets.stdout, new RegExp(`^add scanblocker6net ${other.net} timeout`, "m"));
        } else assert.doesNotMatch(sets.stdout, /^add /m);
        assert.equal(await stateFrom(lab, b, 22), "filtered");
        assert.equal(await stateFrom(lab, lab.scanner6, 22), "closed");
        // The lab's own /64 holds this host: never banned as a block.
        assert.equal(await fw.ban(`${lab.target6}/64`, 3600), "refused");
        assert.equal(await fw.ban(`${lab.target4}/24`, 3600), "refused");
        // A fresh instance reads the range back from the kernel.
        const again = createFirewall(kind, {
          isProtected: () => false,
          onError: (m) => errors.push(m),
          maxBans: 100,
          commandPrefix: lab.prefix(lab.target),
        });
        assert.deepEqual((await again.init()).map((x) => x.address), [other.net]);
        assert.equal(await again.unban(other.net), true);
        await again.close();
        assert.equal(await stateFrom(lab, b, 22), "closed");
        assert.deepEqual(errors, []);
      } finally {
        await fw.flush();
        await fw.close();
        await lab.destroy();
      }
    },
  });
}

// nftables, and the default iptables (its ipset hash:net set over netlink).
for (const firewall of ["nftables", "iptables"]) {
  Deno.test({
    name:
      `${firewall} daemon: a scanner taking a new address of one /64 for every probe → the /64 is banned; a fresh address of it gets no answer, another /64 does`,
    ...opts,
    fn: async () => {
      const lab = await createLab("p6d");
      let d = null;
      try {
        const other = await otherNet(lab);
        const addrs: string[] = [];
        for (let i = 1; i <= 6; i++) addrs.push(await other.addr(0x100 + i));
        d = startDaemon(lab.target, [
          "-i",
          "t0",
          "--firewall",
          firewall,
          "--metrics-addr",
          "off",
          "--lockout-guard",
          "off",
          "--log-format",
          "json",
          "--log-rate",
          "0",
        ]);
        await d.waitFor(/Listening on: /, 20000);
        // One closed port per address: no address alone is a scanner.
        for (let i = 0; i < 4; i++) await stateFrom(lab, addrs[i], 1000 + i);
        await d.waitFor(
          new RegExp(`"event":"banned","address":"${other.net.replaceAll(".", "\\.")}"`),
          5000,
        );
        const scans = d.stdout().split("\n").filter((l) => l.includes('"scan_detected"'));
        assert.equal(scans.length, 1, d.stdout());
        assert.match(scans[0], new RegExp(`"src":"${other.net}"`));
        if (firewall === "iptables") {
          const set = await lab.exec(lab.target, ["ipset", "save", "scanblocker6net"]);
          assert.match(set.stdout, new RegExp(`^add scanblocker6net ${other.net} timeout`, "m"));
        }
        // A fresh address of the banned /64 gets no answer; the lab's other /64 does.
        assert.equal(await stateFrom(lab, addrs[5], 22), "filtered");
        assert.equal(await stateFrom(lab, lab.scanner6, 22), "closed");
      } finally {
        if (d) await d.stop();
        await lab.destroy();
      }
    },
  });
}
