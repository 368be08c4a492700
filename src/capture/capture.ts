/**
 * Capture defaults (snaplen, kernel buffer, kernel filter), the choice of the
 * default interface, and the capture loop that feeds batches of packets to
 * the pipeline without ever blocking the event loop.
 */
import type { Batch } from "../../ffi/pcap.ts";
import { listSystemDirectory, readSystemFile } from "../../ffi/libc.ts";

/**
 * Bytes kept per packet. Ethernet 14 + two VLAN tags 8 + IPv6 40 + the usual
 * extension headers (hop-by-hop 8, routing 24, destination options 8,
 * fragment 8) + a full TCP header 20 = 130; 160 leaves room for longer
 * options yet stays small. In immediate mode libpcap sizes the kernel ring's
 * slots from the snaplen, so a small snaplen means many slots: tcpdump's
 * default (262144) dropped 968 of 1,000 packets of one nmap burst here.
 */
export const DEFAULT_SNAPLEN = 160;

/** Kernel ring size: 16 MiB holds about 60,000 slots of DEFAULT_SNAPLEN. */
export const DEFAULT_BUFFER_BYTES = 16 << 20;

/**
 * The probe kinds as a BPF test of the TCP flags byte at `at`: SYN without
 * ACK, and the stealth probes NULL (no flag), FIN alone and Xmas (FIN, PSH,
 * URG) — the low six bits only, so ECN's ECE/CWR never hide a probe. No
 * legitimate segment has FIN without ACK, so the stealth kinds cost nothing
 * on normal traffic. SYN-ACKs pass too (one per connection): one sent by
 * this host means it accepted the SYN, which then is no probe.
 */
function probeFlags(at: string): string {
  return `${at} & 0x12 == 2 or ${at} & 0x3f == 0 or ${at} & 0x3f == 1 or ${at} & 0x3f == 0x29` +
    ` or ${at} & 0x16 == 0x12`;
}

/**
 * Kernel filter: TCP segments with SYN set and ACK clear, or a NULL, FIN or Xmas probe (any other bits,
 * ECN's ECE/CWR included, may be set), IPv4 and IPv6. `tcp[13]` reads IPv4
 * headers only, so IPv6 gets its own test of the flags byte when TCP follows
 * the fixed header directly (offset 40 + 13); IPv6 packets whose next header
 * is an extension header (hop-by-hop 0, routing 43, fragment 44, AH 51,
 * destination options 60) pass whole, and the decoder walks those headers
 * while the pipeline checks the flags. (`ip6 protochain 6` would do that in
 * the kernel but turns libpcap's optimizer off for the whole program.)
 * Compiles to 39 BPF instructions on Ethernet.
 */
export const DEFAULT_FILTER = `${probeFlags("tcp[13]")}` +
  ` or (ip6[6] == 6 and (${probeFlags("ip6[53]")}))` +
  " or (ip6 and (ip6[6] == 0 or ip6[6] == 43 or ip6[6] == 44 or ip6[6] == 51 or ip6[6] == 60))";

const RTF_UP = 0x1;
const RTF_REJECT = 0x200;
const IFF_UP = 0x1;
const IFF_LOOPBACK = 0x8;

/** Interface of the IPv4 default route with the lowest metric, from /proc/net/route. */
function defaultRoute4(): string | null {
  const text = readSystemFile("/proc/net/route");
  if (!text) return null;
  let best: string | null = null;
  let bestMetric = Infinity;
  for (const line of text.split("\n").slice(1)) {
    // Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const flags = parseInt(f[3], 16);
    if (f[1] !== "00000000" || f[7] !== "00000000" || !(flags & RTF_UP)) continue;
    const metric = parseInt(f[6], 10);
    if (metric < bestMetric) {
      best = f[0];
      bestMetric = metric;
    }
  }
  return best;
}

/** Interface of the IPv6 default route with the lowest metric, from /proc/net/ipv6_route. */
function defaultRoute6(): string | null {
  const text = readSystemFile("/proc/net/ipv6_route");
  if (!text) return null;
  let best: string | null = null;
  let bestMetric = Infinity;
  for (const line of text.split("\n")) {
    // dest plen src splen nexthop metric refcnt use flags iface
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const flags = parseInt(f[8], 16);
    if (!/^0+$/.test(f[0]) || f[1] !== "00" || f[9] === "lo") continue;
    if (!(flags & RTF_UP) || flags & RTF_REJECT) continue;
    const metric = parseInt(f[5], 16);
    if (metric < bestMetric) {
      best = f[9];
      bestMetric = metric;
    }
  }
  return best;
}

/** First interface that is up and not loopback, from /sys/class/net. */
function firstUpInterface(): string | null {
  const names = listSystemDirectory("/sys/class/net");
  if (!names) return null;
  for (const name of names.sort()) {
    const flags = parseInt(readSystemFile(`/sys/class/net/${name}/flags`) ?? "", 16);
    if (Number.isFinite(flags) && flags & IFF_UP && !(flags & IFF_LOOPBACK)) return name;
  }
  return null;
}

/**
 * The interface to capture on when none is given: the IPv4 default route's,
 * else the IPv6 default route's, else the first up non-loopback interface.
 */
export function defaultInterface(): string {
  const name = defaultRoute4() ?? defaultRoute6() ?? firstUpInterface();
  if (name) return name;
  throw new Error(
    "no interface to capture on: there is no default route and no interface is up besides loopback; " +
      "choose one with -i/--interface or SB_DEVICE",
  );
}

/**
 * Why the daemon cannot capture on `name`, as a configuration error (exit 2),
 * or null when it exists and is up. `any` is always fine; when
 * /sys/class/net cannot be read, null too (libpcap says what is wrong then).
 */
export function interfaceProblem(name: string): string | null {
  if (name === "any") return null;
  const names = listSystemDirectory("/sys/class/net");
  if (names === null) return null;
  const how = "choose one with -i/--interface or SB_DEVICE";
  if (!names.includes(name)) {
    return `interface "${name}" does not exist (this host has: ${names.sort().join(" ")}); ${how}`;
  }
  const flags = parseInt(readSystemFile(`/sys/class/net/${name}/flags`) ?? "", 16);
  if (Number.isFinite(flags) && !(flags & IFF_UP)) {
    return `interface "${name}" is down: bring it up (ip link set ${name} up) or ${how}`;
  }
  return null;
}

/**
 * A capture file is read for at most this long before the event loop gets a
 * turn. (Reading the next batch on a thread while decoding this one was
 * tried: libpcap ran slower off the main thread and the total did not drop.)
 */
const OFFLINE_SLICE_MS = 20;

/**
 * Lets timers, I/O and signal handlers run: a macrotask turn through one
 * MessageChannel (no timer clamping), opened once per capture loop rather
 * than once per batch — under a flood there are tens of thousands of batches
 * a second.
 */
function eventLoopTurns(): { turn(): Promise<void>; close(): void } {
  const ch = new MessageChannel();
  let wake: (() => void) | null = null;
  ch.port1.onmessage = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  return {
    turn: () =>
      new Promise<void>((resolve) => {
        wake = resolve;
        ch.port2.postMessage(0);
      }),
    close: () => {
      ch.port1.close();
      ch.port2.close();
    },
  };
}

/**
 * Reads a capture file to its end (or until `signal` aborts), calling
 * onBatch for every non-empty batch, and yields to the event loop every few
 * milliseconds. Live captures have one loop, the capture thread's
 * (src/capture/worker.ts via LiveCapture).
 * Rejects with the capture's Error (a damaged file after its good packets).
 */
export async function runCapture<B extends { count: number } = Batch>(
  pcap: { live: boolean; dispatch(): B | null; interrupt(): void },
  onBatch: (b: B) => void,
  signal: AbortSignal,
): Promise<void> {
  if (signal.aborted) return;
  const onAbort = () => pcap.interrupt();
  signal.addEventListener("abort", onAbort, { once: true });
  const turns = eventLoopTurns();
  try {
    if (pcap.live) {
      // Live captures run on the capture thread (src/capture/worker.ts): one live loop.
      throw new Error("runCapture reads capture files; a live capture runs in LiveCapture");
    }
    // One turn before the first batch: the process's first postMessage
    // changes a prototype chain that V8's compiled packet path depends on.
    // Taken 20 ms into the file, it threw that code away ("dependent
    // prototype chain changed", --trace-deopt) with an 11 ms Turbofan job,
    // and the whole -r run of 1,000,000 SYNs took ~4% longer.
    await turns.turn();
    let slice = performance.now();
    while (!signal.aborted) {
      const b = pcap.dispatch();
      if (!b) return;
      if (b.count > 0) onBatch(b);
      if (performance.now() - slice >= OFFLINE_SLICE_MS) {
        await turns.turn();
        slice = performance.now();
      }
    }
  } finally {
    turns.close();
    signal.removeEventListener("abort", onAbort);
  }
}
