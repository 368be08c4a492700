/**
 * Accepted is not a probe (issue 17), live in namespaces: ports 8080-8083
 * of the protected host are redirected to a web server on port 80 (no
 * socket listens on 8080-8083, so /proc/net/tcp does not know them); a
 * client fetching all four, twenty times each, is never banned, while nmap
 * against the same host still is.
 */
import assert from "node:assert/strict";
import { startDaemon } from "./daemon.ts";
import { canUseNetns, createLab, curlCodes, must, nmap, webServerIn } from "./netns.ts";

const root = await canUseNetns();

Deno.test({
  name:
    "redirected ports 8080-8083 → :80: a client using all of them 20 times is never banned; nmap still is",
  ignore: !root,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const lab = await createLab("acc");
    let d = null;
    const server = webServerIn(lab.target);
    try {
      const nft = (rule: string) =>
        must(["ip", "netns", "exec", lab.target, "nft", ...rule.split(" ")]);
      await nft("add table ip sbnat");
      await nft("add chain ip sbnat pre { type nat hook prerouting priority -100 ; }");
      await nft("add rule ip sbnat pre tcp dport 8080-8083 redirect to :80");
      d = startDaemon(lab.target, [
        "-i",
        "t0",
        "--firewall",
        "nftables",
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
      // The client: curl from the scanner namespace, each port in turn, twenty rounds.
      const urls: string[] = [];
      for (let i = 0; i < 20; i++) {
        for (let p = 8080; p <= 8083; p++) urls.push(`http://${lab.target4}:${p}/`);
      }
      // A new connection (a new SYN) for every request.
      const { codes, out } = await curlCodes(lab, urls);
      assert.equal(codes.length, 80, out);
      assert.ok(codes.every((c) => c === "200"), out);
      await new Promise((res) => setTimeout(res, 500));
      assert.equal(
        d.stdout().split("\n").filter((l) => l.includes('"scan_detected"')).length,
        0,
        d.stdout().slice(-2000),
      );
      assert.ok(d.stdout().split("\n").filter((l) => l.includes('"new_connection"')).length >= 80);
      // nmap against the same host is still a scan, and banned.
      const n = await nmap(lab, ["-sS", "-p", "1-20", lab.target4]);
      assert.equal(n.code, 0, n.stderr);
      await d.waitFor(
        new RegExp(`"event":"banned","address":"${lab.scanner4.replaceAll(".", "\\.")}"`),
        5000,
      );
    } finally {
      if (d) await d.stop();
      try {
        server.kill("SIGKILL");
      } catch { /* ended */ }
      await server.status;
      await lab.destroy();
    }
  },
});

Deno.test({
  name:
    "a published port DNAT'd to a service in a third namespace (as a container runtime does): a client using it 20 times, and 3 closed ports, is never banned",
  ignore: !root,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const lab = await createLab("pub");
    const svc = `${lab.target}-c`;
    const vh = `sbc${lab.target.slice(-6)}`.slice(0, 15),
      vc = `sbk${lab.target.slice(-6)}`.slice(0, 15);
    let d = null;
    let server: Deno.ChildProcess | null = null;
    try {
      // The "container": a third namespace behind the protected host, 172.31.9.2:80.
      await must(["ip", "netns", "add", svc]);
      await must(["ip", "link", "add", vh, "type", "veth", "peer", "name", vc]);
      await must(["ip", "link", "set", vh, "netns", lab.target]);
      await must(["ip", "link", "set", vc, "netns", svc]);
      const inT = (cmd: string) => must(["ip", "netns", "exec", lab.target, ...cmd.split(" ")]);
      const inC = (cmd: string) => must(["ip", "netns", "exec", svc, ...cmd.split(" ")]);
      await inT(`ip addr add 172.31.9.1/24 dev ${vh}`);
      await inT(`ip link set ${vh} up`);
      await inT("sysctl -q -w net.ipv4.ip_forward=1");
      await inC(`ip addr add 172.31.9.2/24 dev ${vc}`);
      await inC(`ip link set ${vc} up`);
      await inC("ip link set lo up");
      await inC("ip route add default via 172.31.9.1");
      await inT("nft add table ip sbpub");
      await inT("nft add chain ip sbpub pre { type nat hook prerouting priority -100 ; }");
      await inT("nft add rule ip sbpub pre tcp dport 9090 dnat to 172.31.9.2:80");
      server = webServerIn(svc);
      d = startDaemon(lab.target, [
        "-i",
        "t0",
        "--firewall",
        "nftables",
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
      await new Promise((res) => setTimeout(res, 500));
      const url = `http://${lab.target4}:9090/`;
      const { codes, out } = await curlCodes(lab, Array.from({ length: 20 }, () => url));
      assert.equal(codes.filter((c) => c === "200").length, 20, out);
      // Three closed ports besides: below the threshold only if the published port did not count.
      for (const p of [7001, 7002, 7003]) {
        await lab.exec(lab.scanner, [
          "curl",
          "-s",
          "--max-time",
          "2",
          `http://${lab.target4}:${p}/`,
        ]);
      }
      await new Promise((res) => setTimeout(res, 500));
      assert.equal(
        d.stdout().split("\n").filter((l) => l.includes('"scan_detected"')).length,
        0,
        d.stdout().slice(-2000),
      );
    } finally {
      if (d) await d.stop();
      try {
        server?.kill("SIGKILL");
      } catch { /* ended */ }
      await server?.status;
      await lab.destroy();
      await must(["ip", "netns", "del", svc]).catch(() => {});
    }
  },
});
