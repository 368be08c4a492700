/**
 * A spoofed-source SYN flood must not blind the daemon (issue 17), live in
 * namespaces: `tcpreplay --topspeed` floods the protected host with SYNs
 * from a new source each while real `nmap -sS --scan-delay 2s` scans it from
 * the scanner's own address → the scanner is banned, no flood source is
 * detected or banned, and pcap drops nothing.
 */
import assert from "node:assert/strict";
import { startDaemon } from "./daemon.ts";
import { canUseNetns, createLab, must, nmap } from "./netns.ts";
import { writeFloodPcap } from "./flood_files.ts";

const root = await canUseNetns();

/** An interface's MAC address inside a namespace, as 6 bytes. */
async function mac(ns: string, dev: string): Promise<number[]> {
  const out = await must(["ip", "netns", "exec", ns, "cat", `/sys/class/net/${dev}/address`]);
  return out.trim().split(":").map((h) => parseInt(h, 16));
}

Deno.test({
  name:
    "live: tcpreplay flood of spoofed SYNs + nmap --scan-delay 2s → the scanner is banned, no flood source, 0 pcap drops",
  ignore: !root,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const lab = await createLab("fll");
    const dir = await Deno.makeTempDir({ prefix: "sb-flood-live-" });
    let d = null;
    try {
      const file = `${dir}/flood.pcap`;
      const ethernet = new Uint8Array([
        ...(await mac(lab.target, "t0")),
        ...(await mac(lab.scanner, "s0")),
      ]);
      // 500,000 SYNs, each from a new source; replayed in a loop for the scan's first 12 s.
      writeFloodPcap(file, {
        rate: 100_000,
        seconds: 5,
        family: 4,
        gapS: 2,
        noScanner: true,
        dst4: lab.target4,
        ethernet,
      });
      d = startDaemon(lab.target, [
        "-i",
        "t0",
        "--firewall",
        "nftables",
        "--metrics-addr",
        "127.0.0.1:9465",
        "--lockout-guard",
        "off",
        "--log-format",
        "json",
        "--log-rate",
        "10",
      ]);
      await d.waitFor(/Listening on: /, 20000);
      const flood = lab.exec(lab.scanner, [
        "timeout",
        "12",
        "tcpreplay",
        "--topspeed",
        "--loop",
        "100",
        "-q",
        "-i",
        "s0",
        file,
      ]);
      const scan = nmap(lab, ["-sS", "--scan-delay", "2s", "-p", "1-8", lab.target4], {
        seconds: 60,
      });
      const banned = new RegExp(
        `"event":"banned","address":"${lab.scanner4.replaceAll(".", "\\.")}"`,
      );
      await d.waitFor(banned, 30000);
      await flood;
      await scan;
      const events = d.stdout().split("\n").filter((l) => l.startsWith("{")).map((l) =>
        JSON.parse(l)
      );
      const detected = events.filter((e) => e.event === "scan_detected").map((e) => e.src);
      assert.deepEqual(detected, [lab.scanner4]);
      assert.deepEqual(events.filter((e) => e.event === "banned").map((e) => e.address), [
        lab.scanner4,
      ]);
      const m = await lab.exec(lab.target, [
        Deno.execPath(),
        "eval",
        `console.log(await (await fetch("http://127.0.0.1:9465/metrics")).text())`,
      ]);
      const num = (name: string) => Number(new RegExp(`^${name} (\\S+)`, "m").exec(m.stdout)?.[1]);
      const attempts = Number(
        /^scanblocker_connection_attempts_total\{family="ipv4"\} (\S+)/m.exec(m.stdout)?.[1],
      );
      assert.ok(attempts > 100_000, `the flood was seen: ${attempts} attempts`);
      console.log(
        `flood attempts ${attempts}, pcap drops ${
          num("scanblocker_pcap_dropped_packets")
        }, not admitted ${num("scanblocker_sources_not_admitted_total")}, ` +
          `admitted ${num("scanblocker_sources_admitted_total")}, memory ${
            num("scanblocker_admission_memory_seconds")
          } s`,
      );
      assert.equal(num("scanblocker_pcap_dropped_packets"), 0, m.stdout.slice(0, 3000));
    } finally {
      if (d) await d.stop();
      await lab.destroy();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
