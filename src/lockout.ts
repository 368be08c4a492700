/**
 * Self-lockout guard: the addresses this host cannot afford to ban, to be
 * allow-listed automatically — its default gateways (IPv4 and IPv6), its DNS
 * resolvers (behind systemd-resolved's stub 127.0.0.53 too: the upstream ones
 * of /run/systemd/resolve/resolv.conf), its DHCP servers (dhclient,
 * systemd-networkd and NetworkManager leases, with the DNS and NTP servers
 * they handed out), its NTP servers (ntp.conf, chrony, timesyncd) and the
 * cloud metadata service (169.254.169.254, fd00:ec2::254). A probe burst
 * with one of these as spoofed source must not cut the host off its network,
 * its names, its clock or its cloud credentials.
 *
 * Gateways come from the main routing table as the kernel shows it
 * (/proc/net/route, /proc/net/ipv6_route) for the reader's network namespace;
 * policy-routing tables are not looked at. Only literal addresses are taken:
 * a server given by name (`pool 2.debian.pool.ntp.org`) is not resolved (use
 * --allow). Addresses are returned in canonical text form (src/address.ts),
 * without zone ids, deduplicated, in file order.
 */
import { readSystemFile } from "../ffi/libc.ts";
import { canonicalAddress, formatAddress } from "./address.ts";

const RTF_UP = 0x1, RTF_GATEWAY = 0x2, RTF_REJECT = 0x200;

/** True on a little-endian host, where /proc/net/route prints addresses byte-reversed. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function hexBytes(hex: string, n: number): Uint8Array | null {
  if (hex.length !== n * 2 || !/^[0-9a-fA-F]+$/.test(hex)) return null;
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return b;
}

function isZero(b: Uint8Array): boolean {
  return b.every((x) => x === 0);
}

/**
 * The default gateways in a /proc/net/route text and a /proc/net/ipv6_route
 * text: routes to 0.0.0.0/0 and ::/0 that are up, go through a gateway and are
 * not reject routes. /proc/net/route prints each IPv4 address as a 32-bit
 * number in host byte order (so "0101A8C0" is 192.168.1.1 on x86);
 * /proc/net/ipv6_route prints the 16 bytes in network order.
 */
export function defaultGateways(route: string, ipv6Route: string): string[] {
  const out: string[] = [];
  const add = (a: string) => {
    if (!out.includes(a)) out.push(a);
  };
  // Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT
  for (const line of route.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || f[0] === "Iface") continue;
    const dest = hexBytes(f[1], 4), gw = hexBytes(f[2], 4), mask = hexBytes(f[7], 4);
    const flags = parseInt(f[3], 16);
    if (!dest || !gw || !mask || !Number.isFinite(flags)) continue;
    if (!isZero(dest) || !isZero(mask) || isZero(gw)) continue;
    if ((flags & (RTF_UP | RTF_GATEWAY)) !== (RTF_UP | RTF_GATEWAY) || flags & RTF_REJECT) continue;
    if (LITTLE_ENDIAN) gw.reverse();
    add(formatAddress(4, gw));
  }
  // dest dest_plen src src_plen next_hop metric refcnt use flags iface
  for (const line of ipv6Route.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 9) continue;
    const dest = hexBytes(f[0], 16), hop = hexBytes(f[4], 16);
    const plen = parseInt(f[1], 16), flags = parseInt(f[8], 16);
    if (!dest || !hop || plen !== 0 || !Number.isFinite(flags)) continue;
    if (!isZero(dest) || isZero(hop)) continue;
    if ((flags & RTF_UP) === 0 || flags & RTF_REJECT) continue;
    add(canonicalAddress(formatAddress(6, hop))!); // an IPv4-mapped hop becomes IPv4
  }
  return out;
}

/**
 * The resolvers of a resolv.conf text: the address of each `nameserver` line
 * (IPv4 or IPv6; a zone id such as `%eth0` is dropped), canonical, deduplicated.
 * Comments (`#`, `;`) and invalid addresses are ignored.
 */
export function resolvers(resolvConf: string): string[] {
  const out: string[] = [];
  for (const line of resolvConf.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f[0] !== "nameserver" || f.length < 2) continue;
    const at = f[1].indexOf("%");
    const a = canonicalAddress(at >= 0 ? f[1].slice(0, at) : f[1]);
    if (a !== null && !out.includes(a)) out.push(a);
  }
  return out;
}

/** Canonical form of a literal address (zone id dropped); null for names and junk. */
function literal(text: string): string | null {
  const at = text.indexOf("%");
  return canonicalAddress(at >= 0 ? text.slice(0, at) : text);
}

function addAll(out: string[], items: Iterable<string | null>): void {
  for (const a of items) if (a !== null && !out.includes(a)) out.push(a);
}

/** systemd-resolved's stub listeners: resolv.conf naming one means "ask resolved". */
const RESOLVED_STUBS = ["127.0.0.53", "127.0.0.54"];

/**
 * The servers a dhclient lease file names: the DHCP server
 * (dhcp-server-identifier), and the DNS and NTP servers it handed out
 * (domain-name-servers, ntp-servers, dhcp6.name-servers), every lease.
 */
export function dhclientLeaseServers(text: string): string[] {
  const out: string[] = [];
  const re =
    /^\s*option\s+(dhcp-server-identifier|domain-name-servers|ntp-servers|dhcp6\.name-servers)\s+([^;]+);/gm;
  for (const m of text.matchAll(re)) addAll(out, m[2].split(",").map((a) => literal(a.trim())));
  return out;
}

/**
 * The servers a systemd-networkd (or NetworkManager internal) DHCP lease
 * names: SERVER_ADDRESS, DNS and NTP (space-separated lists).
 */
export function networkdLeaseServers(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/^(SERVER_ADDRESS|DNS|NTP)=(.*)$/gm)) {
    addAll(out, m[2].trim().split(/\s+/).map(literal));
  }
  return out;
}

/** The literal addresses of `server`, `pool` and `peer` lines (ntp.conf and chrony alike). */
export function ntpServers(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if ((f[0] === "server" || f[0] === "pool" || f[0] === "peer") && f.length >= 2) {
      addAll(out, [literal(f[1])]);
    }
  }
  return out;
}

/** The literal addresses of timesyncd's `NTP=` and `FallbackNTP=` settings. */
export function timesyncdServers(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/^\s*(?:NTP|FallbackNTP)\s*=(.*)$/gm)) {
    addAll(out, m[1].trim().split(/\s+/).map(literal));
  }
  return out;
}

/** Cloud instance metadata services (AWS, GCP, Azure, OpenStack; AWS's IPv6 one). */
export const METADATA_ADDRESSES: readonly string[] = ["169.254.169.254", "fd00:ec2::254"];

/** Files the guard reads, relative to the root directory. */
const FILES = {
  resolvConf: "/etc/resolv.conf",
  resolvedUpstream: "/run/systemd/resolve/resolv.conf",
  /** Directories of lease files, each with its parser and a name filter. */
  leaseDirs: [
    { dir: "/var/lib/dhcp", re: /^dhclient.*\.leases?$/, parse: dhclientLeaseServers },
    { dir: "/var/lib/dhclient", re: /\.leases?$/, parse: dhclientLeaseServers },
    { dir: "/run/systemd/netif/leases", re: /^\d+$/, parse: networkdLeaseServers },
    { dir: "/var/lib/NetworkManager", re: /^internal-.*\.lease$/, parse: networkdLeaseServers },
    { dir: "/var/lib/NetworkManager", re: /^dhclient.*\.lease$/, parse: dhclientLeaseServers },
  ],
  ntpFiles: [
    "/etc/ntp.conf",
    "/etc/ntpsec/ntp.conf",
    "/etc/chrony/chrony.conf",
    "/etc/chrony.conf",
  ],
  ntpDirs: [
    { dir: "/etc/chrony/sources.d", re: /\.sources$/ },
    { dir: "/etc/chrony/conf.d", re: /\.conf$/ },
  ],
  timesyncd: "/etc/systemd/timesyncd.conf",
  timesyncdDir: "/etc/systemd/timesyncd.conf.d",
};

/** What the guard protects, by reason. */
export interface LockoutGuard {
  gateways: string[];
  resolvers: string[];
  /** DHCP servers and the DNS/NTP servers their leases name. */
  dhcp: string[];
  ntp: string[];
  metadata: string[];
}

/** A reader of the guard's files: "" = this machine (/proc through libc); else a test root. */
function reader(root: string) {
  const text = (path: string): string => {
    if (root === "" && path.startsWith("/proc/")) return readSystemFile(path) ?? "";
    try {
      return Deno.readTextFileSync(root + path);
    } catch {
      return ""; // missing or unreadable: contributes nothing
    }
  };
  const list = (dir: string, re: RegExp): string[] => {
    try {
      return [...Deno.readDirSync(root + dir)]
        .filter((e) => e.isFile && re.test(e.name))
        .map((e) => `${dir}/${e.name}`)
        .sort();
    } catch {
      return [];
    }
  };
  return { text, list };
}

/**
 * Reads what the guard protects on this host (or under `root`, for tests);
 * a file that cannot be read contributes nothing. Cheap enough to repeat
 * every few seconds (a handful of small files).
 */
export function lockoutGuard(root = ""): LockoutGuard {
  const { text, list } = reader(root);
  const res = resolvers(text(FILES.resolvConf));
  if (res.some((a) => RESOLVED_STUBS.includes(a))) {
    addAll(res, resolvers(text(FILES.resolvedUpstream)));
  }
  const dhcp: string[] = [];
  for (const d of FILES.leaseDirs) {
    for (const f of list(d.dir, d.re)) addAll(dhcp, d.parse(text(f)));
  }
  const ntp: string[] = [];
  for (const f of FILES.ntpFiles) addAll(ntp, ntpServers(text(f)));
  for (const d of FILES.ntpDirs) {
    for (const f of list(d.dir, d.re)) addAll(ntp, ntpServers(text(f)));
  }
  addAll(ntp, timesyncdServers(text(FILES.timesyncd)));
  for (const f of list(FILES.timesyncdDir, /\.conf$/)) addAll(ntp, timesyncdServers(text(f)));
  return {
    gateways: defaultGateways(text("/proc/net/route"), text("/proc/net/ipv6_route")),
    resolvers: res,
    dhcp,
    ntp,
    metadata: [...METADATA_ADDRESSES],
  };
}

/** Every address of a LockoutGuard, deduplicated, in reason order. */
export function guardAddresses(g: LockoutGuard): string[] {
  const out: string[] = [];
  addAll(out, [...g.gateways, ...g.resolvers, ...g.dhcp, ...g.ntp, ...g.metadata]);
  return out;
}
