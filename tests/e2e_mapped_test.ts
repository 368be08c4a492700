/**
 * IPv4-mapped sources end to end in a namespace lab, with the capture
 * worker's netlink fast path (nftables set elements, iptables-nft rules):
 * spoofed IPv6 SYNs from ::ffff:192.0.2.55, ::ffff:127.0.0.1 and
 * ::ffff:<the target's IPv4> (written with tcpreplay) are never banned in
 * any family, a ban of a mapped address left in the firewall (by an older
 * version) is removed at start, and a real IPv6 nmap scan is still banned.
 */
import assert from "node:assert/strict";
import { type Daemon, startDaemon } from "./daemon.ts";
import { canUseNetns, createLab, esc, type Lab, must, nmap } from "./netns.ts";
import { pcapBytes } from "./pcap_files.ts";
import { eth, ipv6, tcp } from "./fixtures/frames.ts";
import { parseAddress } from "../src/address.ts";
import { nftSetup } from "../src/firewall/nftables.ts";

const root = await canUseNetns();

async function mac(ns: string, dev: string): Promise<number[]> {
  const out = await must(["ip", "netns", "exec", ns, "cat", `/sys/class/net/${dev}/address`]);
  return out.trim().split(":").map((h) => parseInt(h, 16));
}

/** The 16 bytes of ::ffff:V4. */
const mapped = (
  v4: string,
) => [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, ...v4.split(".").map(Number)];

/** An Ethernet pcap of SYNs from each mapped source (IPv4 text) to the target's IPv6 address, ports 1..20. */
async function spoofedFrames(lab: Lab, sources: string[]): Promise<Uint8Array> {
  const dstMac = await mac(lab.target, lab.targetIf);
  const srcMac = await mac(lab.scanner, lab.scannerIf);
  const dst = [...parseAddress(lab.target6)!.bytes];
  const frames = sources.flatMap((s, k) =>
    Array.from({ length: 20 }, (_, i) => {
      const src = mapped(s);
      const e = eth(0x86dd, ipv6({ src, dst }, tcp({ sport: 41000 + k, dport: 1 + i, flags: 2 })));
      e.splice(0, 12, ...dstMac, ...srcMac);
      return { tsSec: 1700000000, tsUsec: k * 100_000 + i * 1000, data: new Uint8Array(e) };
    })
  );
  return pcapBytes(frames);
}

/**
 * Every ban the firewall of the target holds, as text: the ban sets and
 * chains (not the speed bump's exempt sets, which list these addresses as
 * never held back).
 */
async function firewallText(lab: Lab, firewall: string): Promise<string> {
  const sets = ["scanblocker4", "scanblocker4net", "scanblocker6", "scanblocker6net"];
  const cmds = firewall === "nftables"
    ? ["banned4", "banned6", "nets4", "nets6"].map((
      s,
    ) => ["nft", "list", "set", "inet", "scanblocker", s])
    : [
      ["iptables", "-S", "SCANBLOCKER"],
      ["ip6tables", "-S", "SCANBLOCKER"],
      ...sets.map((s) => ["ipset", "save", s]),
    ];
  let out = "";
  for (const c of cmds) out += (await lab.exec(lab.target, c)).stdout;
  return out;
}

// "iptables" is the default: its ipset sets here (the seeded rule is the per-rule form's, moved
// into the sets at start unless refused); "iptables-rules" one rule per ban.
for (const firewall of ["nftables", "iptables", "iptables-rules"]) {
  Deno.test({
    name: `${firewall}: mapped IPv6 sources are never banned, on any path`,
    ignore: !root,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const lab = await createLab("map");
      const pcap = await Deno.makeTempFile({ prefix: "sb-mapped-", suffix: ".pcap" });
      let d: Daemon | null = null;
      try {
        // A ban of a mapped loopback address, as the worker used to add it.
        if (firewall === "nftables") {
          const r = await new Deno.Command("ip", {
            args: ["netns", "exec", lab.target, "nft", "-f", "-"],
            stdin: "piped",
          }).spawn();
          const w = r.stdin.getWriter();
          await w.write(new TextEncoder().encode(
            nftSetup(["input"]) + "add element inet scanblocker banned6 { ::ffff:127.0.0.1 }\n",
          ));
          await w.close();
          assert.ok((await r.status).success);
        } else {
          await must(["ip", "netns", "exec", lab.target, "ip6tables", "-N", "SCANBLOCKER"]);
          await must([
            "ip",
            "netns",
            "exec",
            lab.target,
            "ip6tables",
            "-A",
            "SCANBLOCKER",
            "-s",
            "::ffff:127.0.0.1/128",
            "-m",
            "comment",
            "--comment",
            "scanblocker expires=never",
            "-j",
            "DROP",
          ]);
        }
        assert.match(await firewallText(lab, firewall), /::ffff:127\.0\.0\.1/);
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
        assert.match(d.stderr(), /removing the ban of ::ffff:127\.0\.0\.1 found in the firewall/);
        await Deno.writeFile(
          pcap,
          await spoofedFrames(lab, ["192.0.2.55", "127.0.0.1", lab.target4]),
        );
        await must([
          "ip",
          "netns",
          "exec",
          lab.scanner,
          "timeout",
          "20",
          "tcpreplay",
          "-q",
          "-i",
          lab.scannerIf,
          "--pps",
          "2000",
          pcap,
        ]);
        // The control: a real IPv6 scan, after the spoofed probes, is banned.
        const scan = await nmap(lab, ["-6", "-sS", "-p", "1-20", lab.target6]);
        assert.equal(scan.code, 0, scan.stderr);
        await d.waitFor(new RegExp(`IP ${esc(lab.scanner6)} banned\\.`), 10000);
        const out = d.stdout();
        assert.match(
          out,
          /New connection: \[::ffff:(192\.0\.2\.55|c000:237)\]:41000 ->/,
          "probes were seen",
        );
        const events = out.split("\n").filter((l) => /Port scan detected|banned\.|to ban/.test(l));
        for (const bad of ["ffff", "192.0.2.55", "127.0.0.1", lab.target4]) {
          assert.ok(!events.some((l) => l.includes(bad)), `${bad}:\n${events.join("\n")}`);
        }
        const held = await firewallText(lab, firewall);
        for (const bad of ["ffff", "192.0.2.55", "127.0.0.1", lab.target4]) {
          assert.ok(!held.includes(bad), `${bad} in the firewall:\n${held}`);
        }
        assert.ok(held.includes(lab.scanner6), held);
        assert.equal(await d.stop(), 0, d.stderr());
      } finally {
        if (d) await d.stop();
        await Deno.remove(pcap).catch(() => {});
        await lab.destroy();
      }
    },
  });
}
