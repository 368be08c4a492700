/**
 * The lockout guard's sources beyond gateways and resolv.conf (issue 20
 * item 6): systemd-resolved's upstream resolvers behind the 127.0.0.53 stub,
 * DHCP servers from dhclient / systemd-networkd leases, NTP servers (ntp.conf,
 * chrony, timesyncd), the metadata service; and GuardWatch re-reading them
 * while the program runs. Files live under a temporary root.
 */
import assert from "node:assert/strict";
import {
  dhclientLeaseServers,
  guardAddresses,
  lockoutGuard,
  networkdLeaseServers,
  ntpServers,
  timesyncdServers,
} from "../src/lockout.ts";
import { GuardWatch } from "../src/bans/guard.ts";
import { AllowList } from "../src/allowlist.ts";
import type { Cidr } from "../src/address.ts";
import { type Daemon, startDaemon } from "./daemon.ts";
import { canUseNetns, createLab, esc, nmap } from "./netns.ts";

const DHCLIENT_LEASE = `lease {
  interface "eth0";
  fixed-address 192.0.2.77;
  option subnet-mask 255.255.255.0;
  option routers 192.0.2.1;
  option dhcp-lease-time 86400;
  option dhcp-message-type 5;
  option domain-name-servers 192.0.2.53,192.0.2.54;
  option dhcp-server-identifier 192.0.2.2;
  option ntp-servers 192.0.2.123;
  option domain-name "example.org";
  renew 3 2026/12/02 12:00:00;
}
lease {
  interface "eth0";
  fixed-address 192.0.2.78;
  option dhcp-server-identifier 192.0.2.3;
  option domain-name-servers 192.0.2.53;
}
`;

const NETWORKD_LEASE = `# This is private data. Do not parse.
ADDRESS=198.51.100.20
NETMASK=255.255.255.0
ROUTER=198.51.100.1
SERVER_ADDRESS=198.51.100.2
NEXT_SERVER=0.0.0.0
T1=1800
T2=3150
LIFETIME=3600
DNS=198.51.100.53 198.51.100.54
NTP=198.51.100.123
CLIENTID=ff2d3a6b0c000200000ab11345e8fa0a38a3a9
`;

/** Writes `files` (path → text) under a new temporary root. */
async function makeRoot(files: Record<string, string>): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "sb-guard-" });
  await writeFiles(root, files);
  return root;
}

async function writeFiles(root: string, files: Record<string, string>): Promise<void> {
  for (const [path, text] of Object.entries(files)) {
    await Deno.mkdir(`${root}${path.slice(0, path.lastIndexOf("/"))}`, { recursive: true });
    await Deno.writeTextFile(`${root}${path}`, text);
  }
}

Deno.test("dhclientLeaseServers: the DHCP server and the DNS/NTP servers of every lease", () => {
  assert.deepEqual(dhclientLeaseServers(DHCLIENT_LEASE), [
    "192.0.2.53",
    "192.0.2.54",
    "192.0.2.2",
    "192.0.2.123",
    "192.0.2.3",
  ]);
  assert.deepEqual(dhclientLeaseServers("option dhcp-server-identifier not-an-ip;\n"), []);
});

Deno.test("networkdLeaseServers: SERVER_ADDRESS, DNS and NTP; not our own ADDRESS", () => {
  assert.deepEqual(networkdLeaseServers(NETWORKD_LEASE), [
    "198.51.100.2",
    "198.51.100.53",
    "198.51.100.54",
    "198.51.100.123",
  ]);
});

Deno.test("ntpServers / timesyncdServers: literal addresses only, names skipped", () => {
  assert.deepEqual(
    ntpServers(
      "# pool 192.0.2.9\npool 2.debian.pool.ntp.org iburst\nserver 203.0.113.123 iburst\n" +
        "peer fe80::1%eth0\nrestrict default kod\nserver\n",
    ),
    ["203.0.113.123", "fe80::1"],
  );
  assert.deepEqual(
    timesyncdServers(
      "[Time]\n#NTP=192.0.2.9\nNTP=203.0.113.126 time.example.org\nFallbackNTP=2001:DB8::123\n",
    ),
    ["203.0.113.126", "2001:db8::123"],
  );
});

Deno.test("lockoutGuard: every source under a root, resolved's upstream behind the stub", async () => {
  const root = await makeRoot({
    "/etc/resolv.conf": "# managed by resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\n",
    "/run/systemd/resolve/resolv.conf": "nameserver 192.0.2.153\nnameserver 2001:db8::53\n",
    "/var/lib/dhcp/dhclient.eth0.leases": DHCLIENT_LEASE,
    "/var/lib/dhcp/unrelated.txt": "option dhcp-server-identifier 192.0.2.250;\n",
    "/run/systemd/netif/leases/2": NETWORKD_LEASE,
    "/etc/chrony/chrony.conf": "pool 2.debian.pool.ntp.org iburst\nserver 203.0.113.123 iburst\n",
    "/etc/chrony/sources.d/site.sources": "server 203.0.113.124 iburst\n",
    "/etc/ntp.conf": "server 203.0.113.125 iburst\n",
    "/etc/systemd/timesyncd.conf": "[Time]\nNTP=203.0.113.126\n",
    "/etc/systemd/timesyncd.conf.d/10-site.conf": "[Time]\nFallbackNTP=2001:db8::123\n",
    "/proc/net/route":
      "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
      "eth0\t00000000\t0102000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n",
  });
  try {
    const g = lockoutGuard(root);
    assert.deepEqual(g.resolvers, ["127.0.0.53", "192.0.2.153", "2001:db8::53"]);
    assert.deepEqual(g.dhcp.toSorted(), [
      "192.0.2.123",
      "192.0.2.2",
      "192.0.2.3",
      "192.0.2.53",
      "192.0.2.54",
      "198.51.100.123",
      "198.51.100.2",
      "198.51.100.53",
      "198.51.100.54",
    ]);
    assert.deepEqual(g.ntp, [
      "203.0.113.125",
      "203.0.113.123",
      "203.0.113.124",
      "203.0.113.126",
      "2001:db8::123",
    ]);
    assert.deepEqual(g.metadata, ["169.254.169.254", "fd00:ec2::254"]);
    assert.equal(g.gateways.length, 1);
    const all = guardAddresses(g);
    assert.equal(new Set(all).size, all.length, "deduplicated");
    for (const a of ["192.0.2.153", "192.0.2.2", "203.0.113.126", "169.254.169.254"]) {
      assert.ok(all.includes(a), a);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("lockoutGuard: a resolv.conf with real resolvers does not pull in resolved's file", async () => {
  const root = await makeRoot({
    "/etc/resolv.conf": "nameserver 198.51.100.1\n",
    "/run/systemd/resolve/resolv.conf": "nameserver 192.0.2.153\n",
  });
  try {
    const g = lockoutGuard(root);
    assert.deepEqual(g.resolvers, ["198.51.100.1"]);
    assert.deepEqual([g.dhcp, g.ntp, g.gateways], [[], [], []]);
    assert.deepEqual(g.metadata, ["169.254.169.254", "fd00:ec2::254"], "always guarded");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("GuardWatch: a changed lease or resolver is protected on the next period and on reload()", async () => {
  const root = await makeRoot({
    "/etc/resolv.conf": "nameserver 127.0.0.53\n",
    "/run/systemd/resolve/resolv.conf": "nameserver 192.0.2.153\n",
  });
  try {
    const allow = new AllowList([]);
    const lines: string[] = [];
    const sent: Cidr[][] = [];
    const watch = new GuardWatch(allow, (l) => lines.push(l), { root, everySeconds: 3 });
    watch.attach({ setGuard: (g) => sent.push(g) });
    assert.equal(sent.length, 1, "sent once at attach");
    assert.ok(allow.isProtectedText("192.0.2.153"));
    assert.ok(allow.isProtectedText("169.254.169.254"));
    assert.ok(allow.isProtectedText("fd00:ec2::254"));
    assert.ok(!allow.isProtectedText("198.51.100.2"));

    // The DHCP client takes a new lease and resolved a new upstream.
    await writeFiles(root, {
      "/run/systemd/resolve/resolv.conf": "nameserver 192.0.2.154\n",
      "/run/systemd/netif/leases/3": "SERVER_ADDRESS=198.51.100.2\n",
    });
    watch.tick();
    watch.tick();
    assert.equal(lines.length, 0, "not before the period");
    watch.tick();
    assert.deepEqual(lines, ["lockout guard changed: +192.0.2.154 +198.51.100.2 -192.0.2.153"]);
    assert.ok(allow.isProtectedText("192.0.2.154"));
    assert.ok(allow.isProtectedText("198.51.100.2"));
    assert.ok(!allow.isProtectedText("192.0.2.153"), "the old upstream is no longer guarded");
    assert.equal(sent.length, 2);
    assert.ok(sent[1].some((c) => c.family === 4 && c.bytes.join(".") === "198.51.100.2"));

    // Nothing changed: no line, nothing sent.
    for (let i = 0; i < 3; i++) watch.tick();
    assert.equal(lines.length, 1);
    assert.equal(sent.length, 2);

    // SIGHUP's path: reload() reads at once.
    await writeFiles(root, { "/etc/ntp.conf": "server 203.0.113.125\n" });
    assert.deepEqual(watch.reload(), { added: ["203.0.113.125"], removed: [] });
    assert.ok(allow.isProtectedText("203.0.113.125"));
    assert.equal(sent.length, 3);
    assert.ok(watch.addresses.includes("203.0.113.125"));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

const netnsOk = await canUseNetns();

Deno.test({
  name:
    "daemon: a resolver that appears while it runs is guarded within the period (worker too); others are still banned",
  ignore: !netnsOk,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const lab = await createLab("grd");
    // `ip netns exec NS` bind-mounts /etc/netns/NS/resolv.conf over /etc/resolv.conf.
    const netnsDir = "/etc/netns", ownDir = `${netnsDir}/${lab.target}`;
    let createdNetnsDir = false;
    let d: Daemon | null = null;
    try {
      try {
        await Deno.stat(netnsDir);
      } catch {
        await Deno.mkdir(netnsDir);
        createdNetnsDir = true;
      }
      await Deno.mkdir(ownDir);
      await Deno.writeTextFile(`${ownDir}/resolv.conf`, "nameserver 192.0.2.250\n");
      const second = lab.scanner4.replace(/\.\d+$/, ".66");
      await lab.addScannerAddress(`${second}/24`);
      d = startDaemon(lab.target, [
        "-i",
        lab.targetIf,
        "--firewall",
        "nftables",
        "--metrics-addr",
        "off",
      ]);
      await d.waitFor(/lockout guard \(never banned.*192\.0\.2\.250/, 30000);
      assert.doesNotMatch(d.stderr(), new RegExp(`lockout guard .*${esc(second)}\\b`));
      // The host's resolver changes (in place: the bind mount keeps the inode).
      await Deno.writeTextFile(`${ownDir}/resolv.conf`, `nameserver ${second}\n`);
      await d.waitFor(
        new RegExp(`lockout guard changed: \\+${esc(second)} -192\\.0\\.2\\.250`),
        20000,
      );
      // A scan from the new resolver's address: never banned.
      const scanFrom = (src: string) =>
        nmap(lab, ["-sS", "-S", src, "-e", lab.scannerIf, "-Pn", "-p", "1-20", lab.target4]);
      await scanFrom(second);
      // A scan from another source: banned, so the daemon is detecting.
      await scanFrom(lab.scanner4);
      await d.waitFor(new RegExp(`IP ${esc(lab.scanner4)} banned\\.`), 15000);
      assert.doesNotMatch(d.stdout(), new RegExp(`(Port scan detected|IP) ${esc(second)}\\b`));
      // The ban set (the speed bump's exempt set lists the guarded resolver, as it should).
      const rules = await lab.exec(lab.target, [
        "nft",
        "list",
        "set",
        "inet",
        "scanblocker",
        "banned4",
      ]);
      assert.doesNotMatch(rules.stdout, new RegExp(`\\b${esc(second)}\\b`));
    } finally {
      if (d) await d.stop();
      await Deno.remove(ownDir, { recursive: true }).catch(() => {});
      if (createdNetnsDir) await Deno.remove(netnsDir).catch(() => {});
      await lab.destroy();
    }
  },
});
