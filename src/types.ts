/**
 * Plain data types shared by the modules of the packet path. Data moves one
 * way: capture → decode → ProbeEvent → allow-list/detector → ScanDetected →
 * firewall, log and metrics.
 */
import type { RuleTemplate } from "../ffi/nfnetlink.ts";

/** Address family of an IP packet. */
export type Family = 4 | 6;

/**
 * One TCP segment that may be a connection attempt, as decoded from a captured
 * frame. The decoder fills one preallocated instance per packet (no allocation
 * on the per-packet path), so consumers must copy what they keep.
 */
export interface ProbeEvent {
  /** Capture timestamp, seconds part (pcap header). */
  tsSec: number;
  /** Capture timestamp, microseconds part (pcap header). */
  tsUsec: number;
  /** 4 or 6. */
  family: Family;
  /** Source address bytes: 4 used for IPv4, 16 for IPv6 (buffer is always 16 long). */
  src: Uint8Array;
  /** Destination address bytes, same layout as `src`. */
  dst: Uint8Array;
  /**
   * The same addresses as 32-bit words, most significant byte first (as
   * `(b[0] << 24) | ...`, signed): 1 used for IPv4, 4 for IPv6. The per-packet
   * tests compare and hash words, not bytes.
   */
  srcW: Int32Array;
  dstW: Int32Array;
  /** TCP source port. */
  sport: number;
  /** TCP destination port. */
  dport: number;
  /** TCP flags: the 8 bits of byte 13 (CWR ECE URG ACK PSH RST SYN FIN), plus NS as bit 8. */
  flags: number;
}

/** TCP flag bits as found in `ProbeEvent.flags`. */
export const TCP = {
  FIN: 0x01,
  SYN: 0x02,
  RST: 0x04,
  PSH: 0x08,
  ACK: 0x10,
  URG: 0x20,
  ECE: 0x40,
  CWR: 0x80,
  NS: 0x100,
} as const;

/** Allocates a ProbeEvent to be reused for every packet. */
export function newProbeEvent(): ProbeEvent {
  return {
    tsSec: 0,
    tsUsec: 0,
    family: 4,
    src: new Uint8Array(16),
    dst: new Uint8Array(16),
    srcW: new Int32Array(4),
    dstW: new Int32Array(4),
    sport: 0,
    dport: 0,
    flags: 0,
  };
}

/** Outcome of decoding one frame. */
export const enum DecodeStatus {
  /** A TCP segment was decoded into the event. */
  Ok = 0,
  /** Well-formed but not of interest (not IP, not TCP, a non-first fragment). */
  Skip = 1,
  /** Truncated or inconsistent headers; counted as a decode error. */
  Malformed = 2,
}

/** What a ban request came to. */
export type BanResult = "banned" | "already" | "failed" | "refused";

/** A ban as held by a firewall backend. */
export interface Ban {
  /** Canonical text form of the address (as `formatAddress` writes it). */
  address: string;
  family: Family;
  /** When the ban ends, epoch milliseconds; null = until removed. */
  expiresAt: number | null;
}

/**
 * Where the capture thread may ban by itself over netlink (a capability a
 * backend offers, see src/firewall/fastpath.ts): the nftables table's sets,
 * or (iptables-nft) a copy of iptables' own rule per family.
 */
export interface FastBan {
  /** nftables: the table within the inet family, e.g. "scanblocker". */
  table?: string;
  /** iptables: the rule a ban appends, per family; null: that family's bans go through the main thread. */
  rules?: Record<Family, RuleTemplate | null>;
  /** ipset: the set of each family (hash:ip with timeouts). */
  ipset?: Record<Family, string>;
  /** Ban time in milliseconds; 0 = until removed. */
  banTimeMs: number;
  /** Bans the thread may still add before the cap (the bans owner tops it up). */
  room: number;
}

/** What a backend found in the kernel when it re-read it (see Firewall.reconcile). */
export interface KernelState {
  /** The bans the kernel holds now, expired ones left out. */
  bans: Ban[];
  /** What had been removed from outside and was put back (e.g. "INPUT jump (IPv4)"); empty when all was in place. */
  repaired: string[];
  /**
   * True when the kernel was not listed again: nothing was committed since
   * the last list (see firewall/generation.ts); `bans` is then empty and the
   * last list stands.
   */
  unchanged?: boolean;
}

/**
 * What a backend's speed bump needs from the daemon's settings
 * (src/firewall/bump.ts); sent again whenever any of it changes.
 */
export interface BumpConfig {
  /** A scan is MORE than this many distinct closed ports … */
  ports: number;
  /** … within this many seconds. */
  windowSeconds: number;
  /** The captured interface (probes arriving elsewhere are not seen by the detector); null = all. */
  device: string | null;
  /** Sources never held back, as non-overlapping CIDR text (allow-list, this host, lockout guard, never-banned blocks). */
  exempt4: string[];
  exempt6: string[];
  /** Ports the daemon does not count (listening sockets); empty with --count-open-ports. */
  openPorts: number[];
}

/** A backend's speed bump: on (and what it does) or off (and why). */
export type BumpState = { on: true; what: string } | { on: false; why: string };

/**
 * Name of a firewall backend. "iptables" (the default) holds its bans in
 * ipset sets when ipset is usable and one rule per ban otherwise;
 * "iptables-rules" always one rule per ban; "ipset" always the sets.
 */
export type FirewallKind = "iptables" | "iptables-rules" | "ipset" | "nftables" | "none";

/**
 * The one interface every firewall backend implements. Every method resolves
 * (never rejects) for failures of the firewall itself; those are reported
 * through the backend's `onError` callback and the result value.
 */
export interface Firewall {
  readonly kind: FirewallKind;
  /** Creates the chain/table if missing and returns the bans already in place. */
  init(): Promise<Ban[]>;
  /** Bans an address for ttlSeconds (0 = until removed); resolves once the kernel has the rule. */
  ban(address: string, ttlSeconds: number): Promise<BanResult>;
  /**
   * The same, done before returning when the backend has a synchronous path
   * to the kernel (nftables sets or iptables-nft rules over netlink): the
   * result once the kernel has the rule, or null when there is none and
   * ban() must be used.
   */
  banNow(address: string, ttlSeconds: number): BanResult | null;
  /**
   * Records a ban that the capture worker put into the kernel itself;
   * `expiresAt` (epoch ms, null = never) is the expiry it wrote, computed
   * from the ttl when absent.
   */
  adopt(address: string, ttlSeconds: number, expiresAt?: number | null): void;
  /** Removes one ban; true when it existed and is gone. */
  unban(address: string): Promise<boolean>;
  /** Lists the bans this object holds (its own copy; reconcile() reads the kernel). */
  list(): Promise<Ban[]>;
  /**
   * Re-reads the kernel (not this object's copy): the bans it holds now, and
   * whether the chains, sets and hooks are as installed. What was removed
   * from outside is put back and named in `repaired`; this object's copy
   * becomes the kernel's list. Null when the kernel could not be read (the
   * reason went to onError).
   */
  reconcile(): Promise<KernelState | null>;
  /**
   * The synchronous path this backend offers the capture thread, for bans
   * of `banTimeSeconds` with `room` bans left; null when it has none.
   */
  fastPath(banTimeSeconds: number, room: number): FastBan | null;
  /** Bans held beyond which the fast path is not used (Infinity: no such limit). */
  readonly fastLimit: number;
  /** How bans reach the kernel, for the start-up line: "netlink", or the runner and why. */
  describePath(): string;
  /** Removes everything this program installed (chains, jumps, table). */
  flush(): Promise<void>;
  /** Stops long-lived helper processes; bans stay in place. */
  close(): Promise<void>;
  /** The hooks bans drop traffic on from the next init() (a reload runs init again). */
  setHooks?(hooks: readonly string[]): void;
  /**
   * Installs or updates the speed bump (src/firewall/bump.ts) after init(),
   * or (null) takes away one an earlier run left; absent on backends without
   * one. Never fails start-up: a kernel without the matches needed gives
   * "off" and why.
   */
  setBump?(c: BumpConfig | null): Promise<BumpState>;
  /**
   * The speed bump as it stands now: a repair (reconcile) puts it back with
   * the table or chain, and may fail to (null: not asked for).
   */
  bumpState?(): BumpState | null;
}
