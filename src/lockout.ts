/**
 * Self-lockout guard: the addresses this host cannot afford to ban, to be
 * allow-listed automatically — its default gateways (IPv4 and IPv6) and the
 * resolvers of /etc/resolv.conf. A probe burst with a spoofed gateway source
 * must not cut the host off its network.
 *
 * Gateways come from the main routing table as the kernel shows it
 * (/proc/net/route, /proc/net/ipv6_route) for the reader's network namespace;
 * policy-routing tables are not looked at. Addresses are returned in canonical
 * text form (src/address.ts), without zone ids, deduplicated, in file order.
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

/**
 * Reads this host's default gateways (/proc/net/route, /proc/net/ipv6_route,
 * through libc) and resolvers (/etc/resolv.conf); a file that cannot be read
 * contributes nothing.
 */
export function lockoutGuard(): { gateways: string[]; resolvers: string[] } {
  let conf = "";
  try {
    conf = Deno.readTextFileSync("/etc/resolv.conf");
  } catch {
    // No resolv.conf: no resolvers to protect.
  }
  return {
    gateways: defaultGateways(
      readSystemFile("/proc/net/route") ?? "",
      readSystemFile("/proc/net/ipv6_route") ?? "",
    ),
    resolvers: resolvers(conf),
  };
}
