/**
 * Which Linux capabilities the program holds, and what to tell an operator
 * who runs it without one it needs. Live capture needs CAP_NET_RAW (a packet
 * socket); banning needs CAP_NET_ADMIN (iptables/nft change the firewall).
 * The effective set is read from /proc/self/status, through libc because Deno
 * asks for --allow-all before it lets a script read /proc.
 */
import { raiseEffective, readSystemFile, setAmbient } from "../ffi/libc.ts";

/** One capability the program uses, with its bit number and what it is for. */
export interface CapabilityInfo {
  /** Kernel name, e.g. "CAP_NET_RAW". */
  name: string;
  /** Bit number in the capability sets of /proc/PID/status. */
  bit: number;
  /** What fails without it. */
  why: string;
}

/** The capabilities scanblocker uses (see capabilities(7)). */
export const CAPABILITIES: readonly CapabilityInfo[] = [
  {
    name: "CAP_NET_RAW",
    bit: 13,
    why: "live capture fails: libpcap cannot open a packet socket on the interface",
  },
  {
    name: "CAP_NET_ADMIN",
    bit: 12,
    why: "bans fail: iptables/nft cannot change the firewall",
  },
];

/** A capability the process lacks and what fails without it. */
export interface MissingCapability {
  name: string;
  why: string;
}

/**
 * The effective capability set from the text of /proc/PID/status, or null
 * when the text has no well-formed CapEff line.
 */
export function parseEffectiveCapabilities(status: string): bigint | null {
  const m = /^CapEff:\s*([0-9a-fA-F]{1,16})\s*$/m.exec(status);
  return m ? BigInt(`0x${m[1]}`) : null;
}

/**
 * The capabilities scanblocker uses that are missing from the given
 * /proc/PID/status text; empty when none is missing or the text cannot be
 * understood (then nothing is claimed).
 */
export function missingFromStatus(status: string): MissingCapability[] {
  const eff = parseEffectiveCapabilities(status);
  if (eff === null) return [];
  return CAPABILITIES.filter((c) => (eff & (1n << BigInt(c.bit))) === 0n)
    .map((c) => ({ name: c.name, why: c.why }));
}

/**
 * The start-up check: the capabilities scanblocker uses that this process
 * does not hold in its effective set (empty when all are held or
 * /proc/self/status is unreadable). CAP_NET_ADMIN, when held, is first made
 * the one ambient capability (raiseAmbientCapabilities), so that after
 * `setcap …+ep` the iptables/nft commands started later keep it; call it on
 * the main thread before the firewall starts; `helperRaw` as for
 * raiseAmbientCapabilities.
 */
export function missingCapabilities(helperRaw = false): MissingCapability[] {
  raiseAmbientCapabilities(helperRaw);
  const status = readSystemFile("/proc/self/status");
  return status === null ? [] : missingFromStatus(status);
}

/** CAP_SYS_NICE: SCHED_FIFO for the capture thread (--realtime), when granted. */
const CAP_SYS_NICE = 23;

/** CAP_NET_ADMIN: the one capability the helpers (iptables, nft) need. */
const HELPER_CAPABILITY = 12;
/**
 * CAP_NET_RAW: what iptables also needs for a rule matching an ipset set.
 * xtables' set match (libxt_set) asks the kernel for the set's index, and
 * for its name when it lists the rule, through getsockopt(SO_IP_SET) on a
 * raw socket; without CAP_NET_RAW `iptables-restore` and `iptables -S` fail
 * with "Can't open socket to ipset", and the default backend would always
 * fall back to one rule per ban under the systemd unit.
 */
const HELPER_RAW_CAPABILITY = 13;

/** True when the backend's helpers need CAP_NET_RAW too (its ipset form; see HELPER_RAW_CAPABILITY). */
export function helpersNeedRaw(firewall: string): boolean {
  return firewall === "iptables" || firewall === "ipset";
}

/**
 * Makes CAP_NET_ADMIN (with `helperRaw` also CAP_NET_RAW: the backends that
 * use ipset, see helpersNeedRaw), when this thread holds it, the capabilities
 * the programs it starts inherit (ambient and inheritable), and takes every
 * other out of those sets; capabilities only permitted (`setcap …+p`) are made
 * effective first. After `setcap …+ep` the iptables/nft commands need it
 * (file capabilities are not passed on through execve otherwise); under the
 * systemd unit, whose ambient set also holds CAP_NET_RAW and CAP_SYS_NICE
 * for the daemon itself, helpers must not get those. The daemon keeps all of
 * its own (permitted, effective). Call it on the main thread (capabilities
 * are per thread; Deno.Command forks from it) before any command starts.
 * Returns the names now ambient; never throws.
 */
export function raiseAmbientCapabilities(helperRaw = false): string[] {
  // Permitted but not effective after `setcap …+p`: make them usable first.
  raiseEffective([...CAPABILITIES.map((c) => c.bit), CAP_SYS_NICE]);
  const raised = setAmbient(
    helperRaw ? [HELPER_CAPABILITY, HELPER_RAW_CAPABILITY] : [HELPER_CAPABILITY],
  );
  return CAPABILITIES.filter((c) => raised.includes(c.bit)).map((c) => c.name);
}

const GRANT =
  "grant it with `sudo setcap cap_net_raw,cap_net_admin,cap_sys_nice+ep ./scanblocker`, " +
  "run as root, or run the systemd unit deploy/scanblocker.service " +
  "(AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN); in a container add " +
  "`--cap-add NET_RAW --cap-add NET_ADMIN`";

/**
 * One line per missing capability that this run actually needs (CAP_NET_RAW
 * only for live capture, CAP_NET_ADMIN only with a firewall backend), each
 * naming the capability, what fails without it and how to grant it.
 */
export function capabilityAdvice(
  missing: readonly MissingCapability[],
  opts: { firewall: string; live: boolean },
): string[] {
  const lines: string[] = [];
  for (const m of missing) {
    if (m.name === "CAP_NET_RAW" && !opts.live) continue;
    if (m.name === "CAP_NET_ADMIN" && opts.firewall === "none") continue;
    const why = m.name === "CAP_NET_ADMIN"
      ? `bans fail: ${opts.firewall} cannot change the firewall`
      : m.why;
    lines.push(`missing capability ${m.name}: ${why}; ${GRANT}`);
  }
  return lines;
}
