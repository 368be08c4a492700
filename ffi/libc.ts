/**
 * The few libc functions the program needs. Deno asks for `--allow-all` before
 * it lets a script read anything under /proc or /sys, which would throw away
 * every other permission boundary; FFI is granted anyway (libpcap), so reading
 * those kernel files goes through libc instead.
 */

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
  /** void *dlopen(const char *filename, int flags); (in libc since glibc 2.34; optional) */
  dlopen: { parameters: ["buffer", "i32"], result: "pointer", optional: true },
  /** int madvise(void *addr, size_t length, int advice); */
  madvise: { parameters: ["pointer", "usize", "i32"], result: "i32", optional: true },
  /** void *dlsym(void *handle, const char *symbol); (in libc since glibc 2.34; optional) */
  dlsym: { parameters: ["pointer", "buffer"], result: "pointer", optional: true },
} as const satisfies Deno.ForeignLibraryInterface;

type Libc = Deno.DynamicLibrary<typeof libcSymbols>;
let libc: Libc | null = null;

/** Opens libc once; throws an Error listing every name tried. */
export function loadLibc(): Libc {
  if (libc) return libc;
  const tried: string[] = [];
  for (const name of LIBC_NAMES) {
    try {
      libc = Deno.dlopen(name, libcSymbols);
      return libc;
    } catch (e) {
      tried.push(`${name} (${e instanceof Error ? e.message : String(e)})`);
    }
  }
  throw new Error(`cannot load libc; tried: ${tried.join(", ")}`);
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

/**
 * Makes those of `bits` (capability numbers below 32) that this thread holds
 * in its permitted set inheritable and ambient, so that programs it starts
 * keep them (file capabilities from `setcap …+ep` are not passed on through
 * execve otherwise). Returns the bits now ambient; never throws.
 */
export function raiseAmbient(bits: readonly number[]): number[] {
  try {
    const c = loadLibc().symbols;
    const header = new Uint32Array([LINUX_CAPABILITY_VERSION_3, 0]);
    // Two struct __user_cap_data_struct { u32 effective, permitted, inheritable; }.
    const data = new Uint32Array(6);
    if (c.capget(header, data) !== 0) return [];
    const held = bits.filter((b) => (data[1] & (1 << b)) !== 0);
    if (held.length === 0) return [];
    for (const b of held) data[2] |= 1 << b;
    if (c.capset(header, data) !== 0) return [];
    return held.filter((b) =>
      c.prctl(PR_CAP_AMBIENT, BigInt(PR_CAP_AMBIENT_RAISE), BigInt(b), 0n, 0n) === 0
    );
  } catch {
    return [];
  }
}

/** Writes one byte to `fd` (a wake-up pipe); errors are ignored. */
export function wakeUp(fd: number): void {
  if (fd >= 0) loadLibc().symbols.write(fd, new Uint8Array(1), 1n);
}

const SCHED_FIFO = 1;

/**
 * Puts the calling thread under SCHED_FIFO at `priority` (1–99): it runs as
 * soon as it is woken, ahead of every normally scheduled thread. Returns null
 * on success, else the reason (EPERM without CAP_SYS_NICE or RLIMIT_RTPRIO).
 */
export function setRealtimePriority(priority: number): string | null {
  const c = loadLibc().symbols;
  if (!c.sched_setscheduler) return "libc has no sched_setscheduler";
  if (c.sched_setscheduler(0, SCHED_FIFO, new Int32Array([priority])) === 0) return null;
  const p = c.__errno_location();
  const code = p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
  const text = c.strerror?.(code);
  return text ? Deno.UnsafePointerView.getCString(text) : `errno ${code}`;
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
