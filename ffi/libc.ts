/**
 * The few libc functions the program needs. Deno asks for `--allow-all` before
 * it lets a script read anything under /proc or /sys, which would throw away
 * every other permission boundary; FFI is granted anyway (libpcap), so reading
 * those kernel files goes through libc instead.
 */
import { bindLazily, openLibrary } from "./loader.ts";

const LIBC_NAMES = ["libc.so.6", "libc.so"];

/** libc symbols, each with its C prototype. */
export const libcSymbols = {
  /** int open(const char *pathname, int flags); */
  open: { parameters: ["buffer", "i32"], result: "i32" },
  /** ssize_t read(int fd, void *buf, size_t count); */
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** int close(int fd); */
  close: { parameters: ["i32"], result: "i32" },
  /** int *__errno_location(void); */
  __errno_location: { parameters: [], result: "pointer" },
  /** int capget(cap_user_header_t hdrp, cap_user_data_t datap); */
  capget: { parameters: ["buffer", "buffer"], result: "i32" },
  /** int capset(cap_user_header_t hdrp, const cap_user_data_t datap); */
  capset: { parameters: ["buffer", "buffer"], result: "i32" },
  /** int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5); */
  prctl: { parameters: ["i32", "u64", "u64", "u64", "u64"], result: "i32" },
  /** int clock_gettime(clockid_t clockid, struct timespec *tp); */
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
  /** ssize_t getdents64(int fd, void *dirp, size_t count); (glibc >= 2.30; optional) */
  getdents64: { parameters: ["i32", "buffer", "usize"], result: "isize", optional: true },
  /** ssize_t write(int fd, const void *buf, size_t count); */
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** int pipe2(int pipefd[2], int flags); */
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  /** int poll(struct pollfd *fds, nfds_t nfds, int timeout); run off the main thread. */
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  /** int poll(struct pollfd *fds, nfds_t nfds, int timeout); on the calling thread (workers, short waits). */
  pollSync: { name: "poll", parameters: ["buffer", "u64", "i32"], result: "i32", optional: true },
  /** int socket(int domain, int type, int protocol); */
  socket: { parameters: ["i32", "i32", "i32"], result: "i32", optional: true },
  /** ssize_t send(int sockfd, const void *buf, size_t len, int flags); */
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize", optional: true },
  /** ssize_t recv(int sockfd, void *buf, size_t len, int flags); */
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize", optional: true },
  /** int bind(int sockfd, const struct sockaddr *addr, socklen_t addrlen); */
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32", optional: true },
  /** int getsockname(int sockfd, struct sockaddr *addr, socklen_t *addrlen); */
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32", optional: true },
  /** int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen); */
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32", optional: true },
  /** int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen); */
  getsockopt: {
    parameters: ["i32", "i32", "i32", "buffer", "buffer"],
    result: "i32",
    optional: true,
  },
  /** char *strerror(int errnum); */
  strerror: { parameters: ["i32"], result: "pointer", optional: true },
  /** int sched_setscheduler(pid_t pid, int policy, const struct sched_param *param); */
  sched_setscheduler: { parameters: ["i32", "i32", "buffer"], result: "i32", optional: true },
  /** FILE *fmemopen(void *buf, size_t size, const char *mode); */
  fmemopen: { parameters: ["pointer", "usize", "buffer"], result: "pointer" },
  /** int fflush(FILE *stream); */
  fflush: { parameters: ["pointer"], result: "i32" },
  /** long ftell(FILE *stream); */
  ftell: { parameters: ["pointer"], result: "i64" },
  /** int fseek(FILE *stream, long offset, int whence); */
  fseek: { parameters: ["pointer", "i64", "i32"], result: "i32" },
  /** int fclose(FILE *stream); */
  fclose: { parameters: ["pointer"], result: "i32" },
  /** int fcntl(int fd, int cmd, int arg); (F_GETFL, F_SETFL) */
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  /** ssize_t readlink(const char *pathname, char *buf, size_t bufsiz); */
  readlink: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  /** sighandler_t signal(int signum, sighandler_t handler); */
  signal: { parameters: ["i32", "pointer"], result: "pointer" },
  /** int fstat(int fd, struct stat *statbuf); (a symbol of its own since glibc 2.33; optional) */
  fstat: { parameters: ["i32", "buffer"], result: "i32", optional: true },
  /** void *dlopen(const char *filename, int flags); (in libc since glibc 2.34; optional) */
  dlopen: { parameters: ["buffer", "i32"], result: "pointer", optional: true },
  /** int madvise(void *addr, size_t length, int advice); */
  madvise: { parameters: ["pointer", "usize", "i32"], result: "i32", optional: true },
  /** void *dlsym(void *handle, const char *symbol); (in libc since glibc 2.34; optional) */
  dlsym: { parameters: ["pointer", "buffer"], result: "pointer", optional: true },
  /** unsigned long getauxval(unsigned long type); */
  getauxval: { parameters: ["u64"], result: "u64", optional: true },
  /** uid_t getuid(void); the real user id */
  getuid: { parameters: [], result: "u32" },
  /** gid_t getgid(void); the real group id */
  getgid: { parameters: [], result: "u32" },
  /** int getgroups(int size, gid_t list[]); */
  getgroups: { parameters: ["i32", "buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

type Libc = Deno.DynamicLibrary<typeof libcSymbols>;
let libc: Libc | null = null;

/**
 * Opens libc once (throws an Error listing every name tried); each function
 * is bound on its first use (see bindLazily): a run uses a few of them.
 */
export function loadLibc(): Libc {
  if (libc) return libc;
  const { name } = openLibrary({
    what: "libc",
    names: LIBC_NAMES,
    install: `the C library (glibc) is part of every Debian or Fedora system`,
  }, { getuid: libcSymbols.getuid });
  libc = bindLazily(name, libcSymbols);
  return libc;
}

/** errno of the calling thread, as the last failed libc call left it. */
export function errno(): number {
  const p = loadLibc().symbols.__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

/** The system's text for an errno value (the current errno by default), as strerror(3) gives it. */
export function errnoText(code = errno()): string {
  const c = loadLibc().symbols;
  const p = c.strerror ? c.strerror(code) : null;
  return p === null ? `errno ${code}` : Deno.UnsafePointerView.getCString(p);
}

const O_RDONLY = 0;
const O_CLOEXEC = 0o2000000;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Reads a whole file of /proc or /sys (or any small file) as text; null when
 * it cannot be opened. These files report size 0, so read until EOF.
 */
export function readSystemFile(path: string): string | null {
  const c = loadLibc().symbols;
  const fd = c.open(encoder.encode(path + "\0"), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return null;
  try {
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const buf = new Uint8Array(65536);
      const n = Number(c.read(fd, buf, BigInt(buf.length)));
      if (n < 0) return null;
      if (n === 0) break;
      chunks.push(buf.subarray(0, n));
      total += n;
    }
    const all = new Uint8Array(total);
    let at = 0;
    for (const ch of chunks) {
      all.set(ch, at);
      at += ch.length;
    }
    return decoder.decode(all);
  } finally {
    c.close(fd);
  }
}

/**
 * Lists the entry names of a /proc or /sys directory (without "." and ".."),
 * e.g. /proc/self/fd to count open descriptors; null when it cannot be read.
 */
export function listSystemDirectory(path: string): string[] | null {
  const c = loadLibc().symbols;
  if (!c.getdents64) return null;
  const fd = c.open(encoder.encode(path + "\0"), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return null;
  try {
    const names: string[] = [];
    const buf = new Uint8Array(32768);
    const view = new DataView(buf.buffer);
    for (;;) {
      const n = Number(c.getdents64(fd, buf, BigInt(buf.length)));
      if (n < 0) return null;
      if (n === 0) return names;
      // struct linux_dirent64 { u64 d_ino; s64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
      for (let at = 0; at + 19 < n;) {
        const reclen = view.getUint16(at + 16, true);
        if (reclen === 0) break;
        let end = at + 19;
        while (end < at + reclen && buf[end] !== 0) end++;
        const name = decoder.decode(buf.subarray(at + 19, end));
        if (name !== "." && name !== "..") names.push(name);
        at += reclen;
      }
    }
  } finally {
    c.close(fd);
  }
}

const timespec = new BigInt64Array(2);

/**
 * CLOCK_REALTIME in epoch milliseconds with nanosecond resolution: the clock
 * the kernel stamps captured packets with. (performance.timeOrigin is only
 * millisecond-exact, too coarse to measure sub-millisecond ban latency.)
 */
export function realtimeMs(): number {
  loadLibc().symbols.clock_gettime(0, timespec);
  return Number(timespec[0]) * 1000 + Number(timespec[1]) / 1e6;
}

const LINUX_CAPABILITY_VERSION_3 = 0x20080522;
const PR_CAP_AMBIENT = 47;
const PR_CAP_AMBIENT_RAISE = 2;

const PR_CAP_AMBIENT_CLEAR_ALL = 4;

/**
 * Adds those of `bits` (capability numbers below 32) that the calling thread
 * holds in its permitted set to its effective set: a file given `setcap …+p`
 * (no effective bit, so exec does not fail where a container's bounding set
 * lacks one of them) starts with them permitted only. Threads started later
 * (the capture worker) copy the result. Returns the bits now effective.
 */
export function raiseEffective(bits: readonly number[]): number[] {
  try {
    const c = loadLibc().symbols;
    const header = new Uint32Array([LINUX_CAPABILITY_VERSION_3, 0]);
    const data = new Uint32Array(6);
    if (c.capget(header, data) !== 0) return [];
    const held = bits.filter((b) => (data[1] & (1 << b)) !== 0);
    const want = (data[0] | held.reduce((m, b) => m | (1 << b), 0)) >>> 0;
    if (want !== data[0]) {
      data[0] = want;
      if (c.capset(header, data) !== 0) return [];
    }
    return held;
  } catch {
    return [];
  }
}

/**
 * Makes the inheritable and ambient sets of the calling thread exactly those
 * of `bits` (capability numbers below 32) that it holds in its permitted set,
 * so that programs it starts get those and nothing else: file capabilities
 * from `setcap …+ep` are not passed on through execve, while ambient ones
 * from systemd are passed on whole. The thread's own permitted and effective
 * sets are left alone. Returns the bits now ambient; never throws.
 */
export function setAmbient(bits: readonly number[]): number[] {
  try {
    const c = loadLibc().symbols;
    const header = new Uint32Array([LINUX_CAPABILITY_VERSION_3, 0]);
    // Two struct __user_cap_data_struct { u32 effective, permitted, inheritable; }.
    const data = new Uint32Array(6);
    if (c.capget(header, data) !== 0) return [];
    const held = bits.filter((b) => (data[1] & (1 << b)) !== 0);
    // Lowering an inheritable bit lowers the ambient one with it.
    data[2] = held.reduce((m, b) => m | (1 << b), 0) >>> 0;
    data[5] = 0;
    if (c.capset(header, data) !== 0) return [];
    c.prctl(PR_CAP_AMBIENT, BigInt(PR_CAP_AMBIENT_CLEAR_ALL), 0n, 0n, 0n);
    return held.filter((b) =>
      c.prctl(PR_CAP_AMBIENT, BigInt(PR_CAP_AMBIENT_RAISE), BigInt(b), 0n, 0n) === 0
    );
  } catch {
    return [];
  }
}

/** The process's credentials as the kernel gave them at exec. */
export interface Credentials {
  /** Real user id: who ran the program. */
  uid: number;
  /** Real group id and supplementary groups of the caller. */
  gids: number[];
  /**
   * getauxval(AT_SECURE): the exec raised privilege (file capabilities,
   * setuid/setgid), so the caller's environment must not be trusted; null
   * when libc has no getauxval.
   */
  secureExec: boolean | null;
  /** The effective capability set (bits as in capabilities(7)). */
  effective: bigint;
}

const AT_SECURE = 23n;

/** Reads the real ids, the supplementary groups, AT_SECURE and the effective capabilities. */
export function credentials(): Credentials {
  const c = loadLibc().symbols;
  const gids = [c.getgid()];
  const n = c.getgroups(0, null);
  if (n > 0) {
    const list = new Uint32Array(n);
    const got = c.getgroups(n, list);
    for (let i = 0; i < got; i++) if (!gids.includes(list[i])) gids.push(list[i]);
  }
  const header = new Uint32Array([LINUX_CAPABILITY_VERSION_3, 0]);
  const data = new Uint32Array(6);
  const effective = c.capget(header, data) === 0 ? BigInt(data[0]) | (BigInt(data[3]) << 32n) : 0n;
  return {
    uid: c.getuid(),
    gids,
    secureExec: c.getauxval ? c.getauxval(AT_SECURE) !== 0n : null,
    effective,
  };
}

/**
 * True when the program runs with privilege its caller's environment must not
 * steer: the exec raised it (AT_SECURE: file capabilities, setuid), or a
 * caller other than root holds capabilities (ambient ones handed down).
 * Then no library or other path is taken from the environment.
 */
export function isElevated(c: Credentials): boolean {
  return c.secureExec === true || (c.uid !== 0 && c.effective !== 0n);
}

let elevatedCache: boolean | null = null;

/** isElevated for this process (read once; true when the credentials cannot be read). */
export function elevated(): boolean {
  if (elevatedCache === null) {
    try {
      elevatedCache = isElevated(credentials());
    } catch {
      elevatedCache = true;
    }
  }
  return elevatedCache;
}

/**
 * Environment variables that name a library to load (SB_LIBPCAP,
 * SB_LIBNFTABLES): honoured only when the process is not elevated.
 */
export const PATH_VARIABLES: readonly string[] = ["SB_LIBPCAP", "SB_LIBNFTABLES"];

/**
 * The value of a PATH_VARIABLES entry, or undefined when it is unset, cannot
 * be read, or the process is elevated (a caller without root must not choose
 * a library that runs with the program's capabilities).
 */
export function trustedPathVariable(name: string): string | undefined {
  let v: string | undefined;
  try {
    v = Deno.env.get(name);
  } catch {
    return undefined;
  }
  if (!v || elevated()) return undefined;
  return v;
}

/** Writes one byte to `fd` (a wake-up pipe); errors are ignored. */
export function wakeUp(fd: number): void {
  if (fd >= 0) loadLibc().symbols.write(fd, new Uint8Array(1), 1n);
}

/**
 * "DEVICE:INODE" of an open descriptor, as systemd writes JOURNAL_STREAM
 * (decimal st_dev and st_ino); null when fstat fails or is missing. st_dev
 * and st_ino are the first two 64-bit fields of struct stat on x86_64 and
 * on aarch64 alike. (Deno wants --allow-all to stat /proc/self/fd/N.)
 */
export function descriptorIdentity(fd: number): string | null {
  const c = loadLibc();
  if (!c.symbols.fstat) return null;
  const buf = new BigUint64Array(32); // 256 bytes: more than either layout's 144/128
  if (c.symbols.fstat(fd, buf) !== 0) return null;
  return `${buf[0]}:${buf[1]}`;
}

const SCHED_FIFO = 1;
const SCHED_OTHER = 0;

/**
 * Puts the calling thread under SCHED_FIFO at `priority` (1–99): it runs as
 * soon as it is woken, ahead of every normally scheduled thread; 0 puts it
 * back under normal scheduling. Returns null on success, else the reason
 * (EPERM without CAP_SYS_NICE or RLIMIT_RTPRIO).
 */

export function setRealtimePriority(priority: number): string | null {
  const c = loadLibc().symbols;
  if (!c.sched_setscheduler) return "libc has no sched_setscheduler";
  const policy = priority > 0 ? SCHED_FIFO : SCHED_OTHER;
  if (c.sched_setscheduler(0, policy, new Int32Array([priority])) === 0) return null;
  return errnoText();
}

/** SIG_IGN, as a handler pointer (made on use: creating a pointer needs --allow-ffi). */
const sigIgn = () => Deno.UnsafePointer.create(1n);

/**
 * Sets signal `signum` to SIG_IGN for the whole process: the kernel then
 * drops it without waking any thread, and no handler installed earlier (such
 * as Deno's SIGUSR1 inspector trigger) runs. Returns false when libc refused.
 */
export function ignoreSignal(signum: number): boolean {
  const prev = loadLibc().symbols.signal(signum, sigIgn());
  // SIG_ERR is (void *)-1.
  return prev === null || Deno.UnsafePointer.value(prev) !== 0xffffffffffffffffn;
}

/** The target of a symbolic link such as /proc/self/ns/net; null when it cannot be read. */
export function readSystemLink(path: string): string | null {
  const buf = new Uint8Array(256);
  const n = Number(
    loadLibc().symbols.readlink(encoder.encode(path + "\0"), buf, BigInt(buf.length)),
  );
  return n < 0 ? null : decoder.decode(buf.subarray(0, n));
}

const F_GETFL = 3, F_SETFL = 4, O_NONBLOCK = 0o4000;

/**
 * Turns O_NONBLOCK on or off for descriptor `fd` (it belongs to the open
 * file, so every process sharing that pipe or socket sees it). Returns the
 * previous state, or null when fcntl failed.
 */
export function setNonBlocking(fd: number, on: boolean): boolean | null {
  const c = loadLibc().symbols;
  const flags = c.fcntl(fd, F_GETFL, 0);
  if (flags < 0) return null;
  const next = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
  if (next !== flags && c.fcntl(fd, F_SETFL, next) < 0) return null;
  return (flags & O_NONBLOCK) !== 0;
}

const POLLOUT = 4;

/** True when a write to `fd` would not block now (poll(2) with no wait); true also when poll fails. */
export function writable(fd: number): boolean {
  const c = loadLibc().symbols;
  if (!c.pollSync) return true;
  const pfd = new Int32Array(2);
  pfd[0] = fd;
  pfd[1] = POLLOUT; // short events, short revents (little-endian: events in the low half)
  const n = c.pollSync(pfd, 1n, 0);
  if (n < 0) return true;
  return n > 0 && ((pfd[1] >>> 16) & POLLOUT) !== 0;
}

const O_WRONLY = 1, O_NOCTTY = 0o400;

/**
 * Opens `path` (e.g. /proc/self/fd/1) again for writing, non-blocking: a new
 * open file description, so its O_NONBLOCK concerns nobody else sharing the
 * old one (a shell on the same terminal). Returns the descriptor, or null.
 */
export function openNonBlocking(path: string): number | null {
  const fd = loadLibc().symbols.open(
    encoder.encode(path + "\0"),
    O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC,
  );
  return fd < 0 ? null : fd;
}

/** A synchronous writer over a raw descriptor; a refused write (EAGAIN, EPIPE, …) throws. */
export function descriptorWriter(fd: number): { writeSync(p: Uint8Array): number } {
  const c = loadLibc().symbols;
  return {
    writeSync(p: Uint8Array): number {
      const n = Number(c.write(fd, p, BigInt(p.length)));
      if (n < 0) throw new Error(`write to descriptor ${fd} refused`);
      return n;
    },
  };
}

const MADV_HUGEPAGE = 14;

/**
 * Asks the kernel to back a large table with 2 MiB pages (transparent huge
 * pages in `madvise` mode, the Debian default): a table of tens of MiB read
 * at random costs a TLB miss per access with 4 KiB pages. Best effort: false
 * when the kernel or libc says no.
 */
export function adviseHugePages(a: Int32Array<ArrayBuffer>): boolean {
  try {
    const fn = loadLibc().symbols.madvise;
    if (!fn || a.byteLength < 4 << 20) return false;
    const start = Deno.UnsafePointer.value(Deno.UnsafePointer.of(a));
    const page = 4096n;
    const from = (BigInt(start) + page - 1n) / page * page;
    const to = (BigInt(start) + BigInt(a.byteLength)) / page * page;
    if (to <= from) return false;
    return fn(Deno.UnsafePointer.create(from), to - from, MADV_HUGEPAGE) === 0;
  } catch {
    return false;
  }
}
