/**
 * Plain data types shared by the modules of the packet path. Data moves one
 * way: capture → decode → ProbeEvent → allow-list/detector → ScanDetected →
 * firewall, log and metrics.
 */

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

/** Name of a firewall backend. */
export type FirewallKind = "iptables" | "ipset" | "nftables" | "none";

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
  /** Lists the bans currently in place. */
  list(): Promise<Ban[]>;
  /** Removes everything this program installed (chains, jumps, table). */
  flush(): Promise<void>;
  /** Stops long-lived helper processes; bans stay in place. */
  close(): Promise<void>;
}
