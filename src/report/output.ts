/**
 * Log output that never holds up capture or bans. The daemon switches stdout
 * and stderr to O_NONBLOCK (when they are pipes or sockets, not terminals);
 * a write the kernel cannot take at once is then refused instead of waiting
 * for a reader that may never read, and LineOutput drops the lines it could
 * not write and counts them. A line cut by a partial write is finished
 * first when the output drains again, so lines never mix.
 */
import {
  descriptorWriter,
  openNonBlocking,
  readSystemLink,
  setNonBlocking,
} from "../../ffi/libc.ts";

/** Largest write the kernel keeps whole on a pipe (PIPE_BUF). */
const ATOMIC_WRITE = 4096;

/** Writes whole lines; drops (and counts) what the output cannot take now. */
export class LineOutput {
  readonly #w: { writeSync(p: Uint8Array): number };
  /** The unwritten end of a line cut by a partial write. */
  #carry: Uint8Array | null = null;
  /** Lines dropped so far. */
  dropped = 0;

  constructor(w: { writeSync(p: Uint8Array): number }) {
    this.#w = w;
  }

  /** True while the last write could not be finished. */
  get blocked(): boolean {
    return this.#carry !== null;
  }

  /** Writes `n` bytes of `data` at most; the count written, or -1 when the output refused. */
  #put(data: Uint8Array): number {
    let off = 0;
    try {
      while (off < data.length) off += this.#w.writeSync(data.subarray(off));
    } catch {
      // WouldBlock (nobody reads), BrokenPipe (the reader left), anything else:
      // the log is not worth stopping for.
    }
    return off;
  }

  /**
   * Writes text made of whole lines, in writes of at most PIPE_BUF bytes that
   * end at a line end (so two threads' lines never mix); returns the number
   * of lines dropped by this call.
   */
  write(data: Uint8Array): number {
    const before = this.dropped;
    if (this.#carry) {
      const n = this.#put(this.#carry);
      this.#carry = n < this.#carry.length ? this.#carry.subarray(n) : null;
      if (this.#carry) {
        this.dropped += countLines(data);
        return this.dropped - before;
      }
    }
    let at = 0;
    while (at < data.length) {
      let end = Math.min(data.length, at + ATOMIC_WRITE);
      if (end < data.length) {
        const nl = data.lastIndexOf(10, end - 1);
        if (nl >= at) end = nl + 1;
      }
      const chunk = data.subarray(at, end);
      const n = this.#put(chunk);
      if (n < chunk.length) {
        // Keep the end of a line already begun; drop every line not begun.
        if (n > 0) {
          const nl = chunk.indexOf(10, n - 1);
          const lineEnd = nl < 0 ? chunk.length : nl + 1;
          if (lineEnd > n) this.#carry = chunk.slice(n, lineEnd);
          this.dropped += countLines(chunk.subarray(lineEnd));
        } else this.dropped += countLines(chunk);
        this.dropped += countLines(data.subarray(end));
        break;
      }
      at = end;
    }
    return this.dropped - before;
  }
}

function countLines(data: Uint8Array): number {
  let n = 0;
  for (let i = data.indexOf(10); i >= 0; i = data.indexOf(10, i + 1)) n++;
  return n;
}

/**
 * Makes stdout and stderr non-blocking when they are sockets (journald's
 * stream): those cannot be opened again (see stdioOutput), and the socket
 * is the daemon's alone. Returns a function that puts back what was there.
 */
export function nonBlockingStdio(): () => void {
  const changed: number[] = [];
  for (const fd of [1, 2]) {
    try {
      if (!readSystemLink(`/proc/self/fd/${fd}`)?.startsWith("socket:")) continue;
      if (setNonBlocking(fd, true) === false) changed.push(fd);
    } catch { /* no libc: writes stay blocking */ }
  }
  return () => {
    for (const fd of changed) setNonBlocking(fd, false);
  };
}

/**
 * Episodes of dropped log lines: the first drop after a quiet period starts
 * one (one stderr line), and it ends once nothing more was dropped and the
 * output takes lines again (one log line saying how many were lost).
 */
export class DropWatch {
  readonly #total: () => number;
  #seen = 0;
  #episodeFrom = -1;

  /** `total`: lines dropped so far by every output (both threads). */
  constructor(total: () => number) {
    this.#total = total;
  }

  /** Call once a second; `writable`: the output would take a line now. */
  check(
    writable: boolean,
    on: { counted(n: number): void; started(): void; ended(n: number): void },
  ): void {
    const total = this.#total();
    if (total > this.#seen) {
      on.counted(total - this.#seen);
      if (this.#episodeFrom < 0) {
        this.#episodeFrom = this.#seen;
        on.started();
      }
      this.#seen = total;
    } else if (this.#episodeFrom >= 0 && writable) {
      const n = this.#seen - this.#episodeFrom;
      this.#episodeFrom = -1;
      on.ended(n);
    }
  }
}

/** True for a named pipe (`> fifo`); false when it cannot be told. */
function isFifo(path: string): boolean {
  try {
    return Deno.statSync(path).isFifo === true;
  } catch {
    return false;
  }
}

/**
 * A LineOutput for descriptor 1 or 2 that never blocks the calling thread.
 * A pipe or a terminal is opened again through /proc/self/fd, non-blocking:
 * its own open file description, so the shell sharing a terminal is not
 * touched. A socket is made non-blocking by nonBlockingStdio; a regular
 * file or /dev/null never blocks (and must keep its shared offset).
 */
export function stdioOutput(fd: 1 | 2): LineOutput {
  try {
    const target = readSystemLink(`/proc/self/fd/${fd}`) ?? "";
    if (
      target.startsWith("pipe:") || target.startsWith("/dev/pts/") || /^\/dev\/tty/.test(target) ||
      (target.startsWith("/") && isFifo(target))
    ) {
      const own = openNonBlocking(`/proc/self/fd/${fd}`);
      if (own !== null) return new LineOutput(descriptorWriter(own));
    }
  } catch { /* no libc: the plain descriptor */ }
  return new LineOutput(fd === 1 ? Deno.stdout : Deno.stderr);
}
