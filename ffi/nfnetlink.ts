/**
 * The one nf_tables change on the ban path, spoken directly over netlink
 * (NETLINK_NETFILTER) through libc: one send(2) carrying a batch (begin, the
 * change, end) and one recv(2) of the kernel's acknowledgement. The change is
 * adding or deleting elements of a set (nftables backend) or appending a rule
 * cloned from one iptables-nft wrote itself (iptables backend, see
 * ruleTemplate). The kernel applies and commits the
 * batch inside send(), so the acknowledgement is the confirmation that the
 * elements are in place. libnftables does the same work but first refreshes
 * its cache of the ruleset from the kernel: about 0.5 ms per ban after a
 * pause, against some 20 µs here. Everything else (creating the table,
 * listing) stays with libnftables or `nft`.
 *
 * Message layout (include/uapi/linux/netfilter/nf_tables.h, nfnetlink.h):
 * nlmsghdr (16 bytes) + nfgenmsg (4) + attributes (nlattr: u16 length, u16
 * type, payload padded to 4 bytes).
 *
 * Limits that bulk changes must respect (a wrapped length is not refused:
 * the kernel then sees fewer elements and reports success): a nested
 * attribute is at most 65,535 bytes, so the elements of one change message
 * are bounded (MAX_LIST); a batch is one datagram, at most the socket's
 * send buffer, so a large change is several messages per batch and several
 * batches per call. Each batch is its own transaction; replies are matched
 * on sequence number and this socket's port id; NETLINK_CAP_ACK keeps error
 * acknowledgements from echoing the (up to 64 KiB) request, and the reply
 * buffer is large enough for one that does anyway.
 */

import { cstr } from "./cstring.ts";
import { errno, errnoText, loadLibc } from "./libc.ts";

export const AF_NETLINK = 16;
export const SOCK_RAW = 3;
export const SOCK_CLOEXEC = 0o2000000;
const NETLINK_NETFILTER = 12;
export const MSG_DONTWAIT = 0x40;
const MSG_TRUNC = 0x20;
export const EAGAIN = 11;
const SOL_SOCKET = 1;
const SO_SNDBUF = 7;
const SOL_NETLINK = 270;
const NETLINK_CAP_ACK = 10;

/** Bytes of element list (a nested attribute, u16 length) per change message. */
export const MAX_LIST = 65535 - 1024;
/** A change message at most: headers, table and set names (≤ 256 each), the list. */
const MAX_MESSAGE = 20 + 2 * 260 + 4 + MAX_LIST;
/** Bulk adds of more elements than this are checked against a dump of the set afterwards. */
const VERIFY_FROM = 1000;

const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const NLM_F_REQUEST = 0x1;
const NLM_F_MULTI = 0x2;
const NLM_F_ACK = 0x4;
const NLM_F_DUMP = 0x300;
const NLM_F_CREATE = 0x400;
const NLM_F_APPEND = 0x800;
const NLA_F_NESTED = 0x8000;

const NFNL_MSG_BATCH_BEGIN = 0x10;
const NFNL_MSG_BATCH_END = 0x11;
const NFNL_SUBSYS_NFTABLES = 10;
const NFT_MSG_NEWRULE = 6;
const NFT_MSG_GETRULE = 7;
const NFT_MSG_NEWSETELEM = 12;
const NFT_MSG_GETSETELEM = 13;
const NFT_MSG_DELSETELEM = 14;
const NFT_MSG_NEWGEN = 15;
const NFT_MSG_GETGEN = 16;
const NFTA_GEN_ID = 1;
const NFPROTO_INET = 1;

// ipset (include/uapi/linux/netfilter/ipset/ip_set.h): plain requests, not batches.
const NFNL_SUBSYS_IPSET = 6;
const IPSET_PROTOCOL = 6;
const IPSET_CMD_ADD = 9;
const IPSET_CMD_DEL = 10;
const IPSET_ATTR_PROTOCOL = 1;
const IPSET_ATTR_SETNAME = 2;
const IPSET_ATTR_DATA = 7;
const IPSET_ATTR_IP = 1;
const IPSET_ATTR_IPADDR_IPV4 = 1;
const IPSET_ATTR_IPADDR_IPV6 = 2;
const IPSET_ATTR_TIMEOUT = 6;
/** Prefix length of a hash:net element (u8, host byte order). */
const IPSET_ATTR_CIDR = 3;
const NLA_F_NET_BYTEORDER = 0x4000;
/** ipset's own error numbers (above 4096), as `ipset` words them. */
const IPSET_ERRORS: Record<number, string> = {
  4097: "ipset protocol error (an address of the other family?)",
  4106: "the set does not support timeouts",
  4108: "an IPv4 address is required",
  4109: "an IPv6 address is required",
  4352: "the set is full (maxelem)",
};
/** ipset requests per datagram: each is acknowledged, and the acknowledgements must fit the receive buffer. */
const IPSET_PER_SEND = 64;
/** The nf_tables families of iptables-nft (table ip filter) and ip6tables-nft (ip6 filter). */
export const NFPROTO_IPV4 = 2;
export const NFPROTO_IPV6 = 10;

const NFTA_RULE_TABLE = 1;
const NFTA_RULE_CHAIN = 2;
const NFTA_RULE_HANDLE = 3;
const NFTA_RULE_EXPRESSIONS = 4;
const NFTA_RULE_USERDATA = 7;

const NFTA_SET_ELEM_LIST_TABLE = 1;
const NFTA_SET_ELEM_LIST_SET = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS = 3;
const NFTA_LIST_ELEM = 1;
const NFTA_SET_ELEM_KEY = 1;
const NFTA_SET_ELEM_TIMEOUT = 4;
const NFTA_DATA_VALUE = 1;

/** One set element: the key's bytes (4 for ipv4_addr, 16 for ipv6_addr) and its timeout (0 = none). */
export interface SetElement {
  key: Uint8Array;
  timeoutMs: number;
  /** ipset hash:net only: the block's prefix length (absent: the whole address). */
  cidr?: number;
}

/** A rule as the kernel lists it: the raw payloads of its attributes. */
export interface KernelRule {
  handle: bigint;
  /** Payload of NFTA_RULE_EXPRESSIONS (the nested list of expressions). */
  expressions: Uint8Array;
  /** Payload of NFTA_RULE_USERDATA, when the rule has one. */
  userdata: Uint8Array | null;
}

/**
 * A rule to append again and again with another source address (and expiry
 * text): the expressions of a rule iptables-nft wrote itself, with the
 * offsets of the bytes that change. Plain data, so it can be posted to a
 * worker.
 */
export interface RuleTemplate {
  family: number;
  table: string;
  chain: string;
  expressions: Uint8Array;
  userdata: Uint8Array | null;
  /** Offset of the source address in `expressions`. */
  keyAt: number;
  keyLen: number;
  /** Offset and length of the variable text (the expiry digits) in `expressions`; -1 for none. */
  textAt: number;
  textLen: number;
}

/**
 * Makes a template of `rule`: `key` (the address iptables was given) and
 * `text` (the variable part of its comment, or null) must each occur
 * exactly once in its expressions. Returns the reason when they do not.
 */
export function ruleTemplate(
  rule: KernelRule,
  where: { family: number; table: string; chain: string },
  key: Uint8Array,
  text: string | null,
): RuleTemplate | string {
  const find = (what: Uint8Array, name: string): number | string => {
    const at = indexOf(rule.expressions, what, 0);
    if (at < 0) return `${name} not found in the rule`;
    if (indexOf(rule.expressions, what, at + 1) >= 0) return `${name} occurs twice in the rule`;
    return at;
  };
  const keyAt = find(key, "address");
  if (typeof keyAt === "string") return keyAt;
  const textBytes = text === null ? null : enc.encode(text);
  const textAt = textBytes ? find(textBytes, JSON.stringify(text)) : -1;
  if (typeof textAt === "string") return textAt;
  return {
    ...where,
    expressions: rule.expressions.slice(),
    userdata: rule.userdata?.slice() ?? null,
    keyAt,
    keyLen: key.length,
    textAt,
    textLen: textBytes?.length ?? 0,
  };
}

function indexOf(hay: Uint8Array, needle: Uint8Array, from: number): number {
  outer: for (let i = from; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** A prepared one-change batch and where its variable fields are. */
interface Template {
  buf: Uint8Array;
  view: DataView;
  keyAt: number;
  /** -1 without a timeout attribute. */
  timeoutAt: number;
  /** -1 without variable text. */
  textAt: number;
  /** Offsets of the three nlmsg_seq fields (begin, change, end). */
  seqAt: number[];
}

/** Appends netlink messages to one growing buffer. */
class Writer {
  buf = new Uint8Array(4096);
  view = new DataView(this.buf.buffer);
  at = 0;

  #room(n: number): void {
    if (this.at + n <= this.buf.length) return;
    const bigger = new Uint8Array(Math.max(this.buf.length * 2, this.at + n + 4096));
    bigger.set(this.buf.subarray(0, this.at));
    this.buf = bigger;
    this.view = new DataView(bigger.buffer);
  }

  /** Starts a message; returns its offset for end(). */
  begin(type: number, flags: number, seq: number, family: number, resId: number): number {
    this.#room(20);
    const start = this.at;
    this.view.setUint16(start + 4, type, true);
    this.view.setUint16(start + 6, flags, true);
    this.view.setUint32(start + 8, seq, true);
    this.view.setUint32(start + 12, 0, true);
    this.buf[start + 16] = family;
    this.buf[start + 17] = 0; // NFNETLINK_V0
    this.view.setUint16(start + 18, resId, false);
    this.at += 20;
    return start;
  }

  /** Writes the length of the message or nested attribute started at `start`. */
  end(start: number, width: 16 | 32 = 32): void {
    if (width === 32) this.view.setUint32(start, this.at - start, true);
    else this.view.setUint16(start, this.at - start, true);
  }

  /** Opens a nested attribute; close it with end(start, 16). */
  nest(type: number): number {
    this.#room(4);
    const start = this.at;
    this.view.setUint16(start + 2, type | NLA_F_NESTED, true);
    this.at += 4;
    return start;
  }

  /** Appends an attribute; returns the offset of its payload. */
  attr(type: number, payload: Uint8Array): number {
    const len = 4 + payload.length;
    const padded = (len + 3) & ~3;
    this.#room(padded);
    this.view.setUint16(this.at, len, true);
    this.view.setUint16(this.at + 2, type, true);
    this.buf.set(payload, this.at + 4);
    this.buf.fill(0, this.at + len, this.at + padded);
    const at = this.at + 4;
    this.at += padded;
    return at;
  }

  be64(type: number, value: number): number {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(Math.max(0, Math.floor(value))), false);
    return this.attr(type, b);
  }
}

const enc = new TextEncoder();

/**
 * A netlink socket to nf_tables for the changes on the ban path: elements of
 * one inet table's sets, and rules appended from a template. Works in the
 * network namespace of the calling process and needs CAP_NET_ADMIN, as `nft`
 * does. Methods never throw after construction; they return null on success
 * or the kernel's error text.
 */
export class NftSocket {
  #fd: number;
  #seq: number;
  /** This socket's netlink port id (replies carry it); 0 when unknown. */
  #port = 0;
  /** Bytes per batch (one datagram): below the socket's send buffer. */
  #maxBatch = 128 * 1024;
  /** Twice the largest message: an error acknowledgement echoing it still fits. */
  #reply = new Uint8Array(2 * MAX_MESSAGE);
  #replyView = new DataView(this.#reply.buffer);
  readonly #table: Uint8Array;

  /** Opens the socket; throws with the system's reason when it cannot. `table`: the inet table of the set methods. */
  constructor(readonly table = "scanblocker", readonly family = NFPROTO_INET) {
    const c = loadLibc().symbols;
    if (!c.socket || !c.send || !c.recv) throw new Error("libc lacks socket/send/recv");
    const fd = c.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
    if (fd < 0) throw new Error(`netlink socket: ${errnoText()}`);
    this.#fd = fd;
    this.#seq = (Date.now() / 1000) >>> 0;
    this.#table = cstr(table);
    this.#configure();
  }

  /**
   * Binds the socket to learn its port id, asks for acknowledgements
   * without the echoed request, and sizes batches to the send buffer. Each
   * step is optional: without it the defaults above still hold.
   */
  #configure(): void {
    const c = loadLibc().symbols;
    // struct sockaddr_nl { u16 family; u16 pad; u32 pid; u32 groups; }: pid 0 = kernel picks.
    const addr = new Uint8Array(12);
    const av = new DataView(addr.buffer);
    av.setUint16(0, AF_NETLINK, true);
    const len = new Uint32Array([12]);
    if (c.bind?.(this.#fd, addr, 12) === 0 && c.getsockname?.(this.#fd, addr, len) === 0) {
      this.#port = av.getUint32(4, true);
    }
    c.setsockopt?.(this.#fd, SOL_NETLINK, NETLINK_CAP_ACK, new Int32Array([1]), 4);
    const sndbuf = new Int32Array([512 * 1024]);
    c.setsockopt?.(this.#fd, SOL_SOCKET, SO_SNDBUF, sndbuf, 4); // capped by net.core.wmem_max
    const got = new Uint32Array([4]);
    if (c.getsockopt?.(this.#fd, SOL_SOCKET, SO_SNDBUF, sndbuf, got) === 0 && sndbuf[0] > 0) {
      // netlink refuses a datagram longer than the send buffer less 32 bytes.
      this.#maxBatch = Math.max(MAX_MESSAGE + 256, Math.min(sndbuf[0] - 1024, 256 * 1024));
    }
  }

  /**
   * Adds elements (with their timeouts) to `set`. Up to a batch's worth
   * (some 1,500 IPv6 or 2,300 IPv4 elements per message, several messages
   * per batch) is one transaction; a larger call is several, applied in
   * order, and stops at the first refused one. A call of more than
   * VERIFY_FROM elements is checked against a dump of the set afterwards,
   * so a partial application is never reported as success.
   */
  add(set: string, elements: readonly SetElement[]): string | null {
    if (elements.length === 1) return this.addOne(set, elements[0].key, elements[0].timeoutMs);
    const err = this.#change(NFT_MSG_NEWSETELEM, NLM_F_CREATE, set, elements);
    if (err !== null || elements.length <= VERIFY_FROM) return err;
    const keys = elements.map((e) => e.key);
    let missing = this.missing(set, keys);
    // A dump taken while the kernel's hash table still resizes after a large
    // add can skip elements (seen: 4,000-8,000 of 100,000, none 200 ms
    // later), so a shortfall is looked at again before it counts.
    for (let i = 0; i < 10 && missing !== 0; i++) {
      waitReadable(-1, 100);
      missing = this.missing(set, keys);
    }
    if (typeof missing === "string") return `added, but the check failed: ${missing}`;
    return missing === 0 ? null : `${missing} of ${elements.length} elements missing after the add`;
  }

  /**
   * How many of `keys` are not in `set`, from a dump of its elements
   * (NFT_MSG_GETSETELEM); a string is the error.
   */
  missing(set: string, keys: readonly Uint8Array[]): number | string {
    const held = this.elements(set);
    if (typeof held === "string") return held;
    const have = new Set(held.map(keyText));
    let n = 0;
    for (const k of keys) if (!have.has(keyText(k))) n++;
    return n;
  }

  /**
   * Adds (or with `del`, removes) elements of the ipset `set` (hash:ip,
   * created with `timeout 0` so that each element carries its own; a
   * timeout of 0 is "until removed"). Adding an element already there
   * renews its timeout and removing one that is not there is no error (the
   * request has no NLM_F_EXCL, as `ipset -exist`). Many messages go in one
   * datagram, each acknowledged; null when all were, else the first error.
   */
  ipset(set: string, elements: readonly SetElement[], del = false): string | null {
    if (this.#fd < 0) return "netlink socket closed";
    const name = cstr(set);
    for (let done = 0; done < elements.length;) {
      const w = new Writer();
      const base = this.#seq;
      let seq = base;
      while (done < elements.length && seq - base < IPSET_PER_SEND) {
        const e = elements[done++];
        const type = (NFNL_SUBSYS_IPSET << 8) | (del ? IPSET_CMD_DEL : IPSET_CMD_ADD);
        const m = w.begin(type, NLM_F_REQUEST | NLM_F_ACK, seq++, NFPROTO_IPV4, 0);
        w.attr(IPSET_ATTR_PROTOCOL, new Uint8Array([IPSET_PROTOCOL]));
        w.attr(IPSET_ATTR_SETNAME, name);
        const data = w.nest(IPSET_ATTR_DATA);
        const ip = w.nest(IPSET_ATTR_IP);
        const family = e.key.length === 4 ? IPSET_ATTR_IPADDR_IPV4 : IPSET_ATTR_IPADDR_IPV6;
        w.attr(family | NLA_F_NET_BYTEORDER, e.key);
        w.end(ip, 16);
        if (e.cidr !== undefined) w.attr(IPSET_ATTR_CIDR, new Uint8Array([e.cidr]));
        if (!del) {
          const t = new Uint8Array(4);
          // ipset takes seconds, at most 2^32/1000 of them; 0 = never expires.
          const secs = Math.min(4294967, Math.ceil(Math.max(0, e.timeoutMs) / 1000));
          new DataView(t.buffer).setUint32(0, secs, false);
          w.attr(IPSET_ATTR_TIMEOUT | NLA_F_NET_BYTEORDER, t);
        }
        w.end(data, 16);
        w.end(m);
      }
      this.#seq = seq >>> 0;
      const count = seq - base;
      let acked = 0;
      let first: string | null = null;
      const err = this.#sendBytes(w.buf, w.at) ??
        this.#replies<string | null>(base, count, (type, _flags, at, len) => {
          if (type !== NLMSG_ERROR || len < 20) return undefined;
          const code = -this.#replyView.getInt32(at + 16, true);
          if (code !== 0) first ??= IPSET_ERRORS[code] ?? errnoText(code);
          return ++acked === count ? first : undefined;
        });
      if (err !== null) return err;
    }
    return null;
  }

  /** The keys of every element of `set`, as the kernel lists them; a string is the error. */
  elements(set: string): Uint8Array[] | string {
    if (this.#fd < 0) return "netlink socket closed";
    const w = new Writer();
    const seq = this.#seq;
    this.#seq = (seq + 1) >>> 0;
    const m = w.begin(
      (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM,
      NLM_F_REQUEST | NLM_F_DUMP,
      seq,
      this.family,
      0,
    );
    w.attr(NFTA_SET_ELEM_LIST_TABLE, this.#table);
    w.attr(NFTA_SET_ELEM_LIST_SET, cstr(set));
    w.end(m);
    const sendErr = this.#sendBytes(w.buf, w.at);
    if (sendErr !== null) return sendErr;
    const out: Uint8Array[] = [];
    return this.#replies<Uint8Array[] | string>(seq, 1, (type, flags, at, len) => {
      if (type === NLMSG_DONE) return out;
      if (type === NLMSG_ERROR) {
        const err = len >= 20 ? this.#replyView.getInt32(at + 16, true) : 0;
        return err === 0 ? out : errnoText(-err);
      }
      if (type === ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM)) {
        parseElementKeys(this.#reply.subarray(at + 20, at + len), out);
      }
      return (flags & NLM_F_MULTI) === 0 ? out : undefined;
    });
  }

  /**
   * nf_tables' ruleset generation in this network namespace
   * (NFT_MSG_GETGEN): it moves with every committed transaction, whatever
   * the table or the tool (nft, iptables-nft, this socket), but not when an
   * element times out. A string is the error.
   */
  generation(): number | string {
    if (this.#fd < 0) return "netlink socket closed";
    const w = new Writer();
    const seq = this.#seq;
    this.#seq = (seq + 1) >>> 0;
    w.end(w.begin((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN, NLM_F_REQUEST, seq, 0, 0));
    const sendErr = this.#sendBytes(w.buf, w.at);
    if (sendErr !== null) return sendErr;
    return this.#replies<number | string>(seq, 1, (type, _flags, at, len) => {
      if (type === NLMSG_ERROR) {
        const err = len >= 20 ? this.#replyView.getInt32(at + 16, true) : 0;
        return err === 0 ? "no generation in the answer" : errnoText(-err);
      }
      if (type !== ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN)) return undefined;
      const id = nested(this.#reply.subarray(at + 20, at + len), NFTA_GEN_ID);
      return id && id.length >= 4
        ? new DataView(id.buffer, id.byteOffset, 4).getUint32(0, false)
        : "no generation in the answer";
    });
  }

  /**
   * Adds one element: the ban path. The batch is built once per set, key
   * length and timeout-or-not, and only the key, the timeout and the
   * sequence numbers are written per call (building it anew cost 70-190 µs
   * of cold JavaScript per ban, sending it 45).
   */
  addOne(set: string, key: Uint8Array, timeoutMs: number): string | null {
    if (this.#fd < 0) return "netlink socket closed";
    const t = this.#setTemplate(set, key.length, timeoutMs > 0);
    t.buf.set(key, t.keyAt);
    if (t.timeoutAt >= 0) {
      t.view.setBigUint64(t.timeoutAt, BigInt(Math.floor(timeoutMs)), false);
    }
    return this.#send(t);
  }

  /** Builds the one-element batches of both sets ahead of the first ban. */
  prepare(timeoutMs: number): void {
    for (const [set, len] of [["banned4", 4], ["banned6", 16]] as const) {
      const t = this.#setTemplate(set, len, timeoutMs > 0);
      // Run the per-ban writes once, so the first ban does not run them cold.
      t.buf.set(new Uint8Array(len), t.keyAt);
      if (t.timeoutAt >= 0) t.view.setBigUint64(t.timeoutAt, BigInt(timeoutMs), false);
    }
  }

  readonly #templates = new Map<string, Template>();

  #setTemplate(set: string, keyLen: number, timeout: boolean): Template {
    const name = `${set}/${keyLen}/${timeout}`;
    let t = this.#templates.get(name);
    if (!t) {
      const one = { key: new Uint8Array(keyLen), timeoutMs: timeout ? 1 : 0 };
      t = this.#elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, set, [one]);
      this.#templates.set(name, t);
    }
    return t;
  }

  /** Deletes elements of `set`, one transaction: one missing element fails it all (ENOENT). */
  delete(set: string, keys: readonly Uint8Array[]): string | null {
    return this.#change(
      NFT_MSG_DELSETELEM,
      0,
      set,
      keys.map((key) => ({ key, timeoutMs: 0 })),
    );
  }

  /**
   * Changes elements of `set` in as many batches as they need (see the
   * module comment); null when every batch was acknowledged without error.
   */
  #change(msg: number, flags: number, set: string, elements: readonly SetElement[]): string | null {
    if (this.#fd < 0) return "netlink socket closed";
    for (let done = 0; done < elements.length;) {
      const w = new Writer();
      const base = this.#seq;
      let seq = base;
      const control = (type: number) =>
        w.end(w.begin(type, NLM_F_REQUEST, seq++, 0, NFNL_SUBSYS_NFTABLES));
      control(NFNL_MSG_BATCH_BEGIN);
      const from = done;
      let changes = 0;
      while (done < elements.length && w.at + MAX_MESSAGE + 20 <= this.#maxBatch) {
        const type = (NFNL_SUBSYS_NFTABLES << 8) | msg;
        const m = w.begin(type, NLM_F_REQUEST | NLM_F_ACK | flags, seq++, this.family, 0);
        done = this.#elementList(w, set, elements, done);
        w.end(m);
        changes++;
      }
      control(NFNL_MSG_BATCH_END);
      this.#seq = seq >>> 0;
      const err = this.#sendBytes(w.buf, w.at) ?? this.#acks(base, seq - base, changes);
      if (err !== null) {
        return from === 0 ? err : `${err} (after ${from} of ${elements.length} elements applied)`;
      }
    }
    return null;
  }

  /**
   * Writes the table, set and element list of one change message, as many
   * elements from `from` as fit in MAX_LIST bytes; returns the next index.
   */
  #elementList(w: Writer, set: string, elements: readonly SetElement[], from: number): number {
    w.attr(NFTA_SET_ELEM_LIST_TABLE, this.#table);
    w.attr(NFTA_SET_ELEM_LIST_SET, cstr(set));
    const list = w.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
    let i = from;
    for (; i < elements.length; i++) {
      const e = elements[i];
      // LIST_ELEM + KEY nests (4 each), DATA_VALUE (4 + key, padded), TIMEOUT (12).
      const size = 8 + ((4 + e.key.length + 3) & ~3) + (e.timeoutMs > 0 ? 12 : 0);
      if (w.at + size - list > MAX_LIST) break;
      const el = w.nest(NFTA_LIST_ELEM);
      const key = w.nest(NFTA_SET_ELEM_KEY);
      w.attr(NFTA_DATA_VALUE, e.key);
      w.end(key, 16);
      if (e.timeoutMs > 0) w.be64(NFTA_SET_ELEM_TIMEOUT, e.timeoutMs);
      w.end(el, 16);
    }
    w.end(list, 16);
    return i;
  }

  /**
   * Reads the acknowledgements of a batch numbered from `base` (`count`
   * messages, `changes` of them acknowledged): null when all are clean, else
   * the first error. An error on the batch's begin message (no permission, a
   * failed commit) answers for the whole batch.
   */
  #acks(base: number, count: number, changes: number): string | null {
    let acked = 0;
    let first: string | null = null;
    const r = this.#replies<string | null>(base, count, (type, _flags, at, len) => {
      if (type !== NLMSG_ERROR || len < 20) return undefined;
      const err = this.#replyView.getInt32(at + 16, true);
      if (err !== 0) first ??= errnoText(-err);
      if (this.#replyView.getUint32(at + 8, true) === base) return first ?? "batch refused";
      return ++acked === changes ? first : undefined;
    });
    return r;
  }

  /** A one-message batch changing elements of `set`; the first element's key and timeout are the template's fields. */
  #elements(msg: number, flags: number, set: string, elements: readonly SetElement[]): Template {
    return this.#batch(msg, flags, this.family, (w) => {
      let keyAt = -1, timeoutAt = -1;
      w.attr(NFTA_SET_ELEM_LIST_TABLE, this.#table);
      w.attr(NFTA_SET_ELEM_LIST_SET, cstr(set));
      const list = w.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
      for (const e of elements) {
        const el = w.nest(NFTA_LIST_ELEM);
        const key = w.nest(NFTA_SET_ELEM_KEY);
        const at = w.attr(NFTA_DATA_VALUE, e.key);
        w.end(key, 16);
        const tat = e.timeoutMs > 0 ? w.be64(NFTA_SET_ELEM_TIMEOUT, e.timeoutMs) : -1;
        w.end(el, 16);
        if (keyAt < 0) [keyAt, timeoutAt] = [at, tat];
      }
      w.end(list, 16);
      return { keyAt, timeoutAt, textAt: -1 };
    });
  }

  readonly #rules = new WeakMap<RuleTemplate, Template>();

  /**
   * Appends the rule of `t` with source `key` and variable text `text` (of
   * the template's length): one transaction, confirmed by the kernel. As
   * for set elements, the batch is built once per template.
   */
  addRule(t: RuleTemplate, key: Uint8Array, text: string | null): string | null {
    if (this.#fd < 0) return "netlink socket closed";
    if (key.length !== t.keyLen) {
      return `address of ${key.length} bytes, the rule takes ${t.keyLen}`;
    }
    if ((text?.length ?? 0) !== t.textLen) {
      return `text ${JSON.stringify(text)} does not fit the rule`;
    }
    const b = this.#ruleBatch(t);
    b.buf.set(key, b.keyAt);
    if (text !== null && b.textAt >= 0) {
      for (let i = 0; i < text.length; i++) b.buf[b.textAt + i] = text.charCodeAt(i);
    }
    return this.#send(b);
  }

  /** Builds the batch of `t` ahead of the first ban. */
  prepareRule(t: RuleTemplate): void {
    const b = this.#ruleBatch(t);
    b.buf.set(b.buf.subarray(b.keyAt, b.keyAt + t.keyLen), b.keyAt);
  }

  #ruleBatch(t: RuleTemplate): Template {
    let b = this.#rules.get(t);
    if (!b) {
      b = this.#batch(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, t.family, (w) => {
        w.attr(NFTA_RULE_TABLE, cstr(t.table));
        w.attr(NFTA_RULE_CHAIN, cstr(t.chain));
        const at = w.attr(NFTA_RULE_EXPRESSIONS | NLA_F_NESTED, t.expressions);
        if (t.userdata) w.attr(NFTA_RULE_USERDATA, t.userdata);
        return { keyAt: at + t.keyAt, timeoutAt: -1, textAt: t.textAt < 0 ? -1 : at + t.textAt };
      });
      this.#rules.set(t, b);
    }
    return b;
  }

  /** The rules of one chain, as the kernel lists them; a string is the error. */
  rules(family: number, table: string, chain: string): KernelRule[] | string {
    if (this.#fd < 0) return "netlink socket closed";
    const w = new Writer();
    const seq = this.#seq;
    this.#seq = (seq + 1) >>> 0;
    const m = w.begin(
      (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE,
      NLM_F_REQUEST | NLM_F_DUMP,
      seq,
      family,
      0,
    );
    w.attr(NFTA_RULE_TABLE, cstr(table));
    w.attr(NFTA_RULE_CHAIN, cstr(chain));
    w.end(m);
    const sendErr = this.#sendBytes(w.buf, w.at);
    if (sendErr !== null) return sendErr;
    const out: KernelRule[] = [];
    return this.#replies<KernelRule[] | string>(seq, 1, (type, flags, at, len) => {
      if (type === NLMSG_DONE) return out;
      if (type === NLMSG_ERROR) {
        const err = len >= 20 ? this.#replyView.getInt32(at + 16, true) : 0;
        return err === 0 ? out : errnoText(-err);
      }
      if (type === ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE)) {
        out.push(parseRule(this.#reply.subarray(at + 20, at + len)));
      }
      return (flags & NLM_F_MULTI) === 0 ? out : undefined;
    });
  }

  /** Sends `len` bytes of `buf` as one datagram: null, or the error. */
  #sendBytes(buf: Uint8Array, len: number): string | null {
    const sent = Number(loadLibc().symbols.send!(this.#fd, buf, BigInt(len), 0));
    return sent === len ? null : `netlink send: ${sent < 0 ? errnoText() : "short write"}`;
  }

  /**
   * Reads the replies to the `count` requests numbered from `seq` and sent
   * from this socket (port id), message by message, until `visit` returns
   * something (or receiving fails: the error text). Replies to anything
   * else (a request that timed out earlier) are skipped.
   */
  #replies<T>(
    seq: number,
    count: number,
    visit: (type: number, flags: number, at: number, len: number) => T | undefined,
  ): T | string {
    for (;;) {
      const n = this.#receive();
      if (typeof n === "string") return n;
      const v = this.#replyView;
      for (let at = 0; at + 16 <= n;) {
        const len = v.getUint32(at, true);
        if (len < 16 || at + len > n) break;
        const ours = this.#port === 0 || v.getUint32(at + 12, true) === this.#port;
        if (ours && ((v.getUint32(at + 8, true) - seq) >>> 0) < count) {
          const r = visit(v.getUint16(at + 4, true), v.getUint16(at + 6, true), at, len);
          if (r !== undefined) return r;
        }
        at += (len + 3) & ~3;
      }
    }
  }

  /**
   * Receives one datagram into the reply buffer: its length, or the error.
   * A datagram longer than the buffer (MSG_TRUNC gives its real length) is
   * an error at once, and the buffer grows for the next one.
   */
  #receive(): number | string {
    const c = loadLibc().symbols;
    for (let tries = 0; tries < 1000; tries++) {
      const size = this.#reply.length;
      const n = Number(c.recv!(this.#fd, this.#reply, BigInt(size), MSG_DONTWAIT | MSG_TRUNC));
      if (n > size) {
        this.#reply = new Uint8Array(n);
        this.#replyView = new DataView(this.#reply.buffer);
        return `netlink: a reply of ${n} bytes was cut at ${size}`;
      }
      if (n >= 0) return n;
      if (errno() !== EAGAIN) return `netlink recv: ${errnoText()}`;
      waitReadable(this.#fd, 10);
    }
    return "netlink: no answer from the kernel";
  }

  /**
   * One batch (begin, the change, end) with sequence numbers left to #send;
   * `build` writes the change's attributes and says where its variable fields are.
   */
  #batch(
    msg: number,
    flags: number,
    family: number,
    build: (w: Writer) => Pick<Template, "keyAt" | "timeoutAt" | "textAt">,
  ): Template {
    const w = new Writer();
    const seqAt: number[] = [];
    const message = (type: number, fl: number, fam: number, body: () => void) => {
      // Batch begin/end name the subsystem in res_id; the change carries 0.
      const m = w.begin(type, fl, 0, fam, fam === 0 ? NFNL_SUBSYS_NFTABLES : 0);
      seqAt.push(m + 8);
      body();
      w.end(m);
    };
    let fields: Pick<Template, "keyAt" | "timeoutAt" | "textAt"> = {
      keyAt: -1,
      timeoutAt: -1,
      textAt: -1,
    };
    message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, () => {});
    message((NFNL_SUBSYS_NFTABLES << 8) | msg, NLM_F_REQUEST | NLM_F_ACK | flags, family, () => {
      fields = build(w);
    });
    message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, () => {});
    const buf = w.buf.slice(0, w.at);
    return { buf, view: new DataView(buf.buffer), ...fields, seqAt };
  }

  /** Numbers the batch's three messages, sends it and reads the acknowledgement of the change. */
  #send(t: Template): string | null {
    const base = this.#seq;
    this.#seq = (base + 3) >>> 0;
    for (let i = 0; i < 3; i++) t.view.setUint32(t.seqAt[i], (base + i) >>> 0, true);
    return this.#sendBytes(t.buf, t.buf.length) ?? this.#replies(base, 3, this.#ack);
  }

  /** The acknowledgement of a change: null, or the kernel's error (a bound visitor: no allocation per ban). */
  readonly #ack = (type: number, _flags: number, at: number, len: number) => {
    if (type !== NLMSG_ERROR || len < 20) return undefined;
    const err = this.#replyView.getInt32(at + 16, true);
    return err === 0 ? null : errnoText(-err);
  };

  /** Closes the socket; safe to call twice. */
  close(): void {
    if (this.#fd >= 0) loadLibc().symbols.close(this.#fd);
    this.#fd = -1;
  }
}

/** Appends the keys of the elements in one NEWSETELEM message (its attributes, after nfgenmsg) to `out`. */
function parseElementKeys(attrs: Uint8Array, out: Uint8Array[]): void {
  const list = nested(attrs, NFTA_SET_ELEM_LIST_ELEMENTS);
  if (!list) return;
  eachAttr(list, (type, elem) => {
    if (type !== NFTA_LIST_ELEM) return;
    const key = nested(elem, NFTA_SET_ELEM_KEY);
    const value = key && nested(key, NFTA_DATA_VALUE);
    if (value) out.push(value.slice());
  });
}

/** Calls `visit` with the type (flags masked) and payload of each attribute in `attrs`. */
function eachAttr(attrs: Uint8Array, visit: (type: number, payload: Uint8Array) => void): void {
  const v = new DataView(attrs.buffer, attrs.byteOffset, attrs.byteLength);
  for (let at = 0; at + 4 <= attrs.length;) {
    const len = v.getUint16(at, true);
    if (len < 4 || at + len > attrs.length) break;
    visit(v.getUint16(at + 2, true) & 0x3fff, attrs.subarray(at + 4, at + len));
    at += (len + 3) & ~3;
  }
}

/** The payload of the first attribute of type `type` in `attrs`, or null. */
function nested(attrs: Uint8Array, type: number): Uint8Array | null {
  let found: Uint8Array | null = null;
  eachAttr(attrs, (t, p) => {
    if (t === type && !found) found = p;
  });
  return found;
}

/** A set key as a Map/Set key. */
function keyText(key: Uint8Array): string {
  return String.fromCharCode(...key);
}

/** The attributes of one NEWRULE message (after its nfgenmsg). */
function parseRule(attrs: Uint8Array): KernelRule {
  const v = new DataView(attrs.buffer, attrs.byteOffset, attrs.byteLength);
  const rule: KernelRule = { handle: 0n, expressions: new Uint8Array(0), userdata: null };
  for (let at = 0; at + 4 <= attrs.length;) {
    const len = v.getUint16(at, true);
    if (len < 4 || at + len > attrs.length) break;
    const type = v.getUint16(at + 2, true) & 0x3fff;
    const payload = attrs.slice(at + 4, at + len);
    if (type === NFTA_RULE_HANDLE && len === 12) rule.handle = v.getBigUint64(at + 4, false);
    else if (type === NFTA_RULE_EXPRESSIONS) rule.expressions = payload;
    else if (type === NFTA_RULE_USERDATA) rule.userdata = payload;
    at += (len + 3) & ~3;
  }
  return rule;
}

const pfd = new Uint8Array(8);
const pfdView = new DataView(pfd.buffer);

/** Blocks this thread until `fd` is readable or `ms` passed (poll(2), synchronously). */
export function waitReadable(fd: number, ms: number): boolean {
  const c = loadLibc().symbols;
  pfdView.setInt32(0, fd, true);
  pfdView.setInt16(4, 1, true); // POLLIN
  pfdView.setInt16(6, 0, true);
  return c.pollSync!(pfd, 1n, ms) > 0;
}
