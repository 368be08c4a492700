/**
 * The forward hook end to end, for both backends: scanner → router → server
 * in three namespaces, the firewall running on the router. A ban with hooks
 * ["input"] leaves the scanner's traffic to the server alone (only the
 * router itself is shielded); with ["input", "forward"] the routed probes
 * are dropped too; flush opens the path again.
 *
 *   [scanner] s0 ── t0 [router, ip_forward=1] r1 ── v0 [server]
 */
import assert from "node:assert/strict";
import { type Daemon, startDaemon } from "./daemon.ts";
import { canUseNetns, createLab, type Lab, must, nmap, portStates, run } from "./netns.ts";
import { createFirewall, type FirewallHook } from "../src/firewall/firewall.ts";
import type { Firewall, FirewallKind } from "../src/types.ts";

const enabled = await canUseNetns();

/** The third namespace behind the lab's target (the router). */
interface Server {
  ns: string;
  addr: string;
  destroy(): Promise<void>;
}

async function addServer(lab: Lab): Promise<Server> {
  const id = `${Deno.pid % 10000}${Math.floor(Math.random() * 36 ** 4).toString(36)}`;
  const ns = `sb-fwd-v-${id}`;
  const vr = `sbr${id}`.slice(0, 15), vv = `sbv${id}`.slice(0, 15);
  const a = 16 + Math.floor(Math.random() * 16), b = Math.floor(Math.random() * 250);
  const router = `172.${a}.${b}.1`, addr = `172.${a}.${b}.2`;
  const server: Server = {
    ns,
    addr,
    destroy: async () => void (await run(["ip", "netns", "del", ns])),
  };
  try {
    await must(["ip", "netns", "add", ns]);
    await must(["ip", "link", "add", vr, "type", "veth", "peer", "name", vv]);
    await must(["ip", "link", "set", vr, "netns", lab.target]);
    await must(["ip", "link", "set", vv, "netns", ns]);
    const r = (cmd: string[]) => must([...lab.prefix(lab.target), ...cmd]);
    const v = (cmd: string[]) => must(["ip", "netns", "exec", ns, ...cmd]);
    await r(["ip", "link", "set", vr, "name", "r1"]);
    await r(["ip", "addr", "add", `${router}/24`, "dev", "r1"]);
    await r(["ip", "link", "set", "r1", "up"]);
    await r(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    await v(["ip", "link", "set", "lo", "up"]);
    await v(["ip", "link", "set", vv, "name", "v0"]);
    await v(["ip", "addr", "add", `${addr}/24`, "dev", "v0"]);
    await v(["ip", "link", "set", "v0", "up"]);
    await v(["ip", "route", "add", "default", "via", router]);
    await must([
      ...lab.prefix(lab.scanner),
      "ip",
      "route",
      "add",
      `${addr}/32`,
      "via",
      lab.target4,
    ]);
  } catch (e) {
    await server.destroy();
    throw e;
  }
  return server;
}

/** nmap's state words for ports 22 and 80 of `addr`, scanned from the scanner namespace. */
const portStates2280 = (lab: Lab, addr: string) => portStates(lab, addr, [22, 80]);

function make(kind: FirewallKind, lab: Lab, errors: string[], hooks: FirewallHook[]): Firewall {
  return createFirewall(kind, {
    isProtected: (a) => a === lab.target4,
    onError: (m) => errors.push(m),
    maxBans: 100,
    commandPrefix: lab.prefix(lab.target),
    hooks,
  });
}

for (const kind of ["iptables", "iptables-rules", "nftables"] as const) {
  Deno.test({
    name: `${kind} --hook forward: a ban drops a scan routed through this host`,
    ignore: !enabled,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      const lab = await createLab("fwd");
      let server: Server | null = null;
      const errors: string[] = [];
      let fw: Firewall | null = null;
      try {
        server = await addServer(lab);
        assert.equal(await portStates2280(lab, server.addr), "closed,closed", "path open before");

        fw = make(kind, lab, errors, ["input"]);
        await fw.init();
        assert.equal(await fw.ban(lab.scanner4, 600), "banned");
        assert.equal(
          await portStates2280(lab, lab.target4),
          "filtered,filtered",
          "router shielded",
        );
        assert.equal(await portStates2280(lab, server.addr), "closed,closed", "input only: routed");
        await fw.close();

        fw = make(kind, lab, errors, ["input", "forward"]);
        await fw.init();
        assert.equal(await fw.ban(lab.scanner4, 600), "already");
        assert.equal(
          await portStates2280(lab, server.addr),
          "filtered,filtered",
          "forward: dropped",
        );
        assert.equal(await portStates2280(lab, lab.target4), "filtered,filtered");

        await fw.flush();
        assert.equal(await portStates2280(lab, server.addr), "closed,closed", "open after flush");
        assert.deepEqual(errors, []);
      } finally {
        await fw?.close();
        await server?.destroy();
        await lab.destroy();
      }
    },
  });
}

Deno.test({
  name:
    "daemon on a router with --hook input,forward detects a scan of a host behind it and drops it",
  ignore: !enabled,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const lab = await createLab("fwdd");
    let server: Server | null = null;
    let d: Daemon | null = null;
    try {
      server = await addServer(lab);
      d = startDaemon(lab.target, [
        "-i",
        lab.targetIf,
        "--firewall",
        "nftables",
        "--hook",
        "input,forward",
        "--metrics-addr",
        "off",
        "--lockout-guard",
        "off",
      ]);
      await d.waitFor(/Listening on: /, 20000);
      const r = await nmap(lab, ["-sS", "-p", "21-32", server.addr]);
      assert.equal(r.code, 0, r.stderr);
      await d.waitFor(new RegExp(`Port scan detected: ${lab.scanner4} -> ${server.addr}`));
      await d.waitFor(new RegExp(`IP ${lab.scanner4} banned\\.`));
      assert.equal(
        await portStates2280(lab, server.addr),
        "filtered,filtered",
        "routed scan dropped",
      );
    } finally {
      if (d) await d.stop();
      await run([...lab.prefix(lab.target), "nft", "delete", "table", "inet", "scanblocker"]);
      await server?.destroy();
      await lab.destroy();
    }
  },
});
