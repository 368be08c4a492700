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
