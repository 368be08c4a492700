/**
 * A full ban table is never a fail-open, end to end in a namespace lab: a
 * spoofed flood (tcpreplay: 4 SYNs from each of 2,600 on-link-spoofed
 * sources, more sources than --max-bans 2000) fills the table; the oldest
 * bans make room (one stderr line, scanblocker_bans_evicted_total), and a
 * real nmap scan afterwards is still banned, as fast as one on an empty
 * table. Before: every ban past the cap failed, so the real scanner passed.
 * Prints the detection-to-ban times (empty table, full table).
 */
import assert from "node:assert/strict";
import { type Daemon, startDaemon } from "./daemon.ts";
import { canUseNetns, createLab, type Lab, must, nmap } from "./netns.ts";
import { pcapBytes } from "./pcap_files.ts";
import { eth, ipv4, tcp } from "./fixtures/frames.ts";

const root = await canUseNetns();
// The full scale (65,536 bans, 262,400 SYNs): SB_TEST_MAX_BANS=65536 SB_TEST_SOURCES=65600.
const MAX_BANS = Number(Deno.env.get("SB_TEST_MAX_BANS") ?? 2000);
const SOURCES = Number(Deno.env.get("SB_TEST_SOURCES") ?? 2600);

async function mac(ns: string, dev: string): Promise<number[]> {
  const out = await must(["ip", "netns", "exec", ns, "cat", `/sys/class/net/${dev}/address`]);
  return out.trim().split(":").map((h) => parseInt(h, 16));
}

/** 4 SYNs (ports 1-4) from each of `n` spoofed sources in 10.250.0.0/16 to the target. */
async function flood(lab: Lab, n: number): Promise<Uint8Array> {
  const dstMac = await mac(lab.target, lab.targetIf);
  const srcMac = await mac(lab.scanner, lab.scannerIf);
  const dst = lab.target4.split(".").map(Number);
  const frames = [];
  for (let s = 0; s < n; s++) {
    const src = [10, 250 + (s >> 16), (s >> 8) & 255, s & 255];
    for (let p = 1; p <= 4; p++) {
      const e = eth(
        0x0800,
        ipv4({ src, dst }, tcp({ sport: 40000 + s % 20000, dport: p, flags: 2 })),
      );
      e.splice(0, 12, ...dstMac, ...srcMac);
      frames.push({ tsSec: 1700000000, tsUsec: s * 4 + p, data: new Uint8Array(e) });
    }
  }
  return pcapBytes(frames);
}

/** The detection_to_ban_ms of the JSON "banned" event for `address`, once it is there. */
async function banTime(d: Daemon, address: string, ms = 15000): Promise<number> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    for (const line of d.stdout().split("\n")) {
      if (!line.includes(`"${address}"`) || !line.includes('"banned"')) continue;
      const e = JSON.parse(line);
      if (e.event === "banned" && e.address === address) return e.detection_to_ban_ms ?? -1;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${address} not banned within ${ms} ms\n${d.stderr().slice(-2000)}`);
}

/** Runs nmap from `source` (an extra address of the scanner) against the target. */
function scanFrom(lab: Lab, source: string) {
  return nmap(lab, ["-sS", "-S", source, "-e", lab.scannerIf, "-p", "1-30", lab.target4]);
}

// "iptables" is the default: ipset sets here (ipset is installed); "iptables-rules" one rule per ban.
for (const firewall of ["nftables", "ipset", "iptables", "iptables-rules"]) {
  Deno.test({
    name: `${firewall}: a spoofed flood fills the ban table, a real scan is still banned`,
    ignore: !root,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const lab = await createLab("full");
      const pcap = await Deno.makeTempFile({ prefix: "sb-flood-", suffix: ".pcap" });
      let d: Daemon | null = null;
      const base = lab.scanner4.split(".").slice(0, 3).join(".");
      const [early, late] = [`${base}.11`, `${base}.12`];
      try {
        for (const a of [early, late]) await lab.addScannerAddress(`${a}/24`);
        await Deno.writeFile(pcap, await flood(lab, SOURCES));
        d = startDaemon(lab.target, [
          "-i",
          lab.targetIf,
          "--firewall",
          firewall,
          "--max-bans",
          String(MAX_BANS),
          "--log-format",
          "json",
          "--metrics-addr",
          "off",
          "--lockout-guard",
          "off",
        ]);
        await d.waitFor(/Listening on: /, 20000);
        if (firewall === "iptables") {
          await d.waitFor(/firewall iptables via ipset sets \(netlink\)/, 1);
        }
        // A scan on the empty table: the usual time.
        assert.equal((await scanFrom(lab, early)).code, 0);
        const empty = await banTime(d, early);
        const t0 = Date.now();
        await must([
          "ip",
          "netns",
          "exec",
          lab.scanner,
          "timeout",
          "120",
          "tcpreplay",
          "-q",
          "-i",
          lab.scannerIf,
          "--pps",
          "50000",
          pcap,
        ]);
        await d.waitFor(
          new RegExp(
            `ban table full \\(${MAX_BANS} bans, --max-bans\\): the oldest bans make room`,
          ),
          120000,
        );
        // Let the flood's bans settle: the log quiet for a second. (Not the last
        // source's ban line: under the flood a slow reader may miss lines, which
        // the daemon drops and counts rather than wait for.)
        for (let n = -1, quiet = 0, until = Date.now() + 120000; quiet < 4 && Date.now() < until;) {
          await new Promise((r) => setTimeout(r, 250));
          const len = d.stdout().length;
          quiet = len === n ? quiet + 1 : 0;
          n = len;
        }
        const floodMs = Date.now() - t0;
        assert.equal((await scanFrom(lab, late)).code, 0);
        const full = await banTime(d, late);
        console.log(
          `${firewall}: detection to ban ${empty.toFixed(2)} ms on the empty table, ` +
            `${full.toFixed(2)} ms with ${MAX_BANS} held after a flood of ${SOURCES} sources ` +
            `(banned within ${floodMs} ms; loaded machine)`,
        );
        // A bound that catches a ban waiting for the evictions (seconds to
        // 30 s), with room for a loaded machine (the figure is printed above).
        assert.ok(full >= 0 && full < 3000, `ban took ${full} ms with the table full`);
        // The firewall holds the late scanner, and no more than the cap once
        // the removals under way are through (iptables: a few seconds; up to 30 s
        // on a loaded machine, where the per-rule form once stood at cap + 1 after 10 s).
        const listing = () =>
          lab.exec(
            lab.target,
            firewall === "nftables"
              ? ["nft", "list", "set", "inet", "scanblocker", "banned4"]
              : firewall === "ipset" || firewall === "iptables"
              ? ["ipset", "save", "scanblocker4"]
              : ["iptables", "-S", "SCANBLOCKER"],
          ).then((r) => r.stdout);
        let held = "", count = Infinity;
        for (let i = 0; i < 120 && count > MAX_BANS; i++) {
          await new Promise((r) => setTimeout(r, 250));
          held = await listing();
          count = (held.match(/\b10\.\d+\.\d+\.\d+\b/g) ?? []).length;
        }
        assert.ok(held.includes(late), `${late} not in the firewall`);
        assert.ok(count <= MAX_BANS, `${count} bans held, cap ${MAX_BANS}`);
        assert.equal(d.stderr().match(/ban table full/g)?.length, 1, "one line per episode");
        assert.equal(await d.stop(), 0, d.stderr().slice(-2000));
      } finally {
        if (d) await d.stop();
        await Deno.remove(pcap).catch(() => {});
        await lab.destroy();
      }
    },
  });
}
