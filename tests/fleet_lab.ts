/**
 * A small network of namespaces for fleet tests and benches: a hub namespace
 * holding a bridge (and the LAPI on the bridge's address, which is also every
 * host's default gateway), and one namespace per host, each joined to the
 * bridge by a veth pair. Names start with `sb-` and are unique to this run;
 * destroy() deletes everything it created.
 *
 *   [hub: br0 10.X.Y.254, fdXX:Y::fe, LAPI]
 *      ├─ veth ─ [host "s"] 10.X.Y.1   (scanner)
 *      ├─ veth ─ [host "a"] 10.X.Y.11
 *      └─ …
 */
import { must, run, type RunResult } from "./netns.ts";

/** One host of the star. */
export interface StarHost {
  ns: string;
  /** Interface name inside the namespace. */
  ifname: string;
  v4: string;
  v6: string;
}

/** The star: hub, hosts by name, helpers. */
export interface Star {
  hub: string;
  gw4: string;
  gw6: string;
  hosts: Record<string, StarHost>;
  exec(ns: string, cmd: string[]): Promise<RunResult>;
  /** Adds another IPv4 address (/24 prefix) to a host's interface. */
  addAddress(host: string, v4: string): Promise<void>;
  destroy(): Promise<void>;
}

let counter = 0;

/** Creates the hub and one namespace per entry of `hosts` (name → last IPv4 byte). */
export async function createStar(tag: string, hosts: Record<string, number>): Promise<Star> {
  const id = `${Deno.pid % 10000}${(counter++).toString(36)}${
    Math.floor(Math.random() * 36 ** 2).toString(36)
  }`;
  const x = 100 + (Deno.pid % 100), y = Math.floor(Math.random() * 250);
  const p6 = `fd${(x % 256).toString(16).padStart(2, "0")}:${y.toString(16)}::`;
  const hub = `sb-${tag}-hub-${id}`;
  const created: string[] = [];
  const star: Star = {
    hub,
    gw4: `10.${x}.${y}.254`,
    gw6: `${p6}fe`,
    hosts: {},
    exec: (ns, cmd) => run(["ip", "netns", "exec", ns, ...cmd]),
    addAddress: async (host, v4) => {
      const h = star.hosts[host];
      await must(["ip", "netns", "exec", h.ns, "ip", "addr", "add", `${v4}/24`, "dev", h.ifname]);
    },
    destroy: async () => {
      for (const ns of created.reverse()) await run(["ip", "netns", "del", ns]);
    },
  };
  try {
    await must(["ip", "netns", "add", hub]);
    created.push(hub);
    const e = (ns: string, cmd: string[]) => must(["ip", "netns", "exec", ns, ...cmd]);
    await e(hub, ["ip", "link", "set", "lo", "up"]);
    await e(hub, ["ip", "link", "add", "br0", "type", "bridge"]);
    await e(hub, ["ip", "addr", "add", `${star.gw4}/24`, "dev", "br0"]);
    await e(hub, ["ip", "-6", "addr", "add", `${star.gw6}/64`, "dev", "br0", "nodad"]);
    await e(hub, ["ip", "link", "set", "br0", "up"]);
    for (const [name, last] of Object.entries(hosts)) {
      const ns = `sb-${tag}-${name}-${id}`;
      await must(["ip", "netns", "add", ns]);
      created.push(ns);
      const outer = `sbf${id}${name}`.slice(0, 15), inner = `sbi${id}${name}`.slice(0, 15);
      await must(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner]);
      await must(["ip", "link", "set", outer, "netns", hub]);
      await must(["ip", "link", "set", inner, "netns", ns]);
      await e(hub, ["ip", "link", "set", outer, "master", "br0"]);
      await e(hub, ["ip", "link", "set", outer, "up"]);
      const h: StarHost = {
        ns,
        ifname: "e0",
        v4: `10.${x}.${y}.${last}`,
        v6: `${p6}${last.toString(16)}`,
      };
      await e(ns, ["ip", "link", "set", inner, "name", "e0"]);
      await e(ns, ["ip", "link", "set", "lo", "up"]);
      await e(ns, ["ip", "addr", "add", `${h.v4}/24`, "dev", "e0"]);
      await e(ns, ["ip", "-6", "addr", "add", `${h.v6}/64`, "dev", "e0", "nodad"]);
      await e(ns, ["ip", "link", "set", "e0", "up"]);
      await e(ns, ["ip", "route", "add", "default", "via", star.gw4]);
      star.hosts[name] = h;
    }
  } catch (err) {
    await star.destroy();
    throw err;
  }
  return star;
}
