/**
 * The local ports of this network namespace's listening TCP sockets, asked of
 * the kernel over NETLINK_SOCK_DIAG (inet_diag, as `ss -ltn` does) through
 * libc. Asking for the LISTEN state only makes the kernel walk its listening
 * hash and nothing else; /proc/net/tcp{,6} walk the whole established hash
 * table, which is shared by every namespace and sized by the host's memory:
 * about 5 ms of system time per file on the development VM with a handful of
 * sockets, the largest share of an idle daemon's CPU when read every 2 s
 * (measured with perf: established_get_first). No privilege is needed.
 *
 * Messages (include/uapi/linux/inet_diag.h, sock_diag.h): nlmsghdr (16
 * bytes) + struct inet_diag_req_v2 (56) out; nlmsghdr + struct inet_diag_msg
 * back, whose sockid starts with the local port (big-endian) at offset 4.
 */
import { errno, errnoText, loadLibc } from "./libc.ts";
import {
  AF_NETLINK,
  EAGAIN,
  MSG_DONTWAIT,
  SOCK_CLOEXEC,
  SOCK_RAW,
  waitReadable,
} from "./nfnetlink.ts";

const NETLINK_SOCK_DIAG = 4;
const SOCK_DIAG_BY_FAMILY = 20;
const NLM_F_REQUEST = 0x1;
const NLM_F_DUMP = 0x300;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const AF_INET = 2;
const AF_INET6 = 10;
const IPPROTO_TCP = 6;
const TCP_LISTEN = 10;

/**
 * Marks in `out` (65536 entries) the local ports of the TCP sockets in LISTEN
 * state, IPv4 and IPv6; returns how many listening sockets were seen, or the
 * error as text (`out` may then hold part of the answer). IPv6 refused by the
 * kernel (disabled) counts as none.
 */
export function markListeningPorts(out: Uint8Array): number | string {
  const c = loadLibc().symbols;
  if (!c.socket || !c.send || !c.recv) return "libc lacks socket/send/recv";
  const fd = c.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return `sock_diag socket: ${errnoText()}`;
  try {
    const v4 = dumpListening(fd, AF_INET, out);
    if (typeof v4 === "string") return v4;
    const v6 = dumpListening(fd, AF_INET6, out);
    return typeof v6 === "string" ? v4 : v4 + v6;
  } finally {
    c.close(fd);
  }
}

const reply = new Uint8Array(32 * 1024);
const replyView = new DataView(reply.buffer);

/** One dump of one family's listening sockets on `fd`. */
function dumpListening(fd: number, family: number, out: Uint8Array): number | string {
  const c = loadLibc().symbols;
  const req = new Uint8Array(16 + 56);
  const v = new DataView(req.buffer);
  v.setUint32(0, req.length, true);
  v.setUint16(4, SOCK_DIAG_BY_FAMILY, true);
  v.setUint16(6, NLM_F_REQUEST | NLM_F_DUMP, true);
  v.setUint32(8, family, true); // sequence number: the family, to tell the answers apart
  req[16] = family;
  req[17] = IPPROTO_TCP;
  v.setUint32(20, 1 << TCP_LISTEN, true); // idiag_states
  if (Number(c.send!(fd, req, BigInt(req.length), 0)) !== req.length) {
    return `sock_diag send: ${errnoText()}`;
  }
  let found = 0;
  for (let tries = 0; tries < 1000;) {
    const n = Number(c.recv!(fd, reply, BigInt(reply.length), MSG_DONTWAIT));
    if (n < 0) {
      if (errno() !== EAGAIN) return `sock_diag recv: ${errnoText()}`;
      waitReadable(fd, 10);
      tries++;
      continue;
    }
    for (let at = 0; at + 16 <= n;) {
      const len = replyView.getUint32(at, true);
      if (len < 16 || at + len > n) return "sock_diag: a malformed answer";
      const type = replyView.getUint16(at + 4, true);
      if (replyView.getUint32(at + 8, true) === family) {
        if (type === NLMSG_DONE) return found;
        if (type === NLMSG_ERROR) {
          return `sock_diag: ${errnoText(-replyView.getInt32(at + 16, true))}`;
        }
        if (type === SOCK_DIAG_BY_FAMILY && len >= 16 + 8 && reply[at + 17] === TCP_LISTEN) {
          out[replyView.getUint16(at + 20, false)] = 1;
          found++;
        }
      }
      at += (len + 3) & ~3;
    }
  }
  return "sock_diag: no answer from the kernel";
}
