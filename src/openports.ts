/**
 * "Open ports are not probes": the TCP ports where this host has a listening
 * socket, read from /proc/net/tcp and /proc/net/tcp6 and kept current by a
 * timer, so that a SYN to a real service does not count toward a scan.
 *
 * Kept per port, whatever the bound address: a socket bound to one address
 * (say 192.0.2.1:25 or [::1]:8080) still makes that port "a listening socket on
 * this host", so a SYN to that port on any address is not counted. That errs
 * on the side of never banning a real client, at the cost of missing a probe
 * of that port on another address (the other ports of a scan still count).
 *
 * The kernel is asked over netlink (sock_diag, ffi/sockdiag.ts) for the
 * listening sockets of the reader's network namespace, the one the capture
 * runs in: it walks only its listening hash, some 20 µs. /proc/net/tcp and
 * tcp6 are the fallback (a kernel without inet_diag): reading them walks
 * the whole socket hash table, about 5 ms of system time per file on the
 * development VM even with a handful of sockets, which was the largest share
 * of an idle daemon's CPU at one refresh every 2 s. Deno demands --allow-all
 * for any /proc read, so the files are read through libc (ffi/libc.ts).
 */
import { readSystemFile } from "../ffi/libc.ts";
import { markListeningPorts } from "../ffi/sockdiag.ts";

const SPACE = 0x20, COLON = 0x3a;

function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

/**
 * Marks in `out` (65536 entries) the local ports of the sockets in LISTEN state
 * (st 0A) of a /proc/net/tcp or /proc/net/tcp6 text; returns how many lines
 * were listening sockets. Lines that do not parse are skipped.
 */
export function markListening(text: string, out: Uint8Array): number {
  let found = 0;
  const len = text.length;
  for (let at = 0; at < len;) {
    let end = text.indexOf("\n", at);
    if (end < 0) end = len;
    // "  sl  local_address rem_address   st ..." / "   0: 0100007F:0016 00000000:0000 0A ..."
    let i = text.indexOf(":", at);
    if (i >= 0 && i < end) {
      i++;
      while (i < end && text.charCodeAt(i) === SPACE) i++;
      // Local address token; the port is the hex after its last colon.
      let port = -1;
      while (i < end && text.charCodeAt(i) !== SPACE) {
        const c = text.charCodeAt(i++);
        if (c === COLON) port = 0;
        else if (port >= 0) {
          const d = hexDigit(c);
          port = d < 0 ? -0x10000000 : port * 16 + d;
        }
      }
      while (i < end && text.charCodeAt(i) === SPACE) i++;
      while (i < end && text.charCodeAt(i) !== SPACE) i++; // remote address
      while (i < end && text.charCodeAt(i) === SPACE) i++;
      if (
        port >= 0 && port <= 0xffff && i + 2 <= end &&
        hexDigit(text.charCodeAt(i)) === 0 && hexDigit(text.charCodeAt(i + 1)) === 10 &&
        (i + 2 === end || text.charCodeAt(i + 2) === SPACE)
      ) {
        out[port] = 1;
        found++;
      }
    }
    at = end + 1;
  }
  return found;
}

/** The sorted, distinct local ports of the listening sockets in a /proc/net/tcp{,6} text. */
export function parseListening(procNetTcp: string): number[] {
  const marks = new Uint8Array(65536);
  markListening(procNetTcp, marks);
  const ports: number[] = [];
  for (let p = 0; p < 65536; p++) if (marks[p]) ports.push(p);
  return ports;
}

/** The listening TCP ports of this host (IPv4 and IPv6), refreshed by a timer. */
export class OpenPorts {
  readonly #refreshMs: number;
  #open = new Uint8Array(65536);
  #spare = new Uint8Array(65536);
  #timer: ReturnType<typeof setInterval> | undefined;
  /** Refreshes done (for metrics and tests). */
  refreshes = 0;
  /** Where the last refresh read the sockets: netlink, or /proc once netlink failed. */
  source: "netlink" | "proc" = "netlink";
  /** The last refresh error, if the last refresh failed (state kept from before). */
  lastError: Error | null = null;

  /** `refreshMs`: how often start() re-reads the socket tables (default 2 s). */
  constructor(refreshMs = 2000) {
    this.#refreshMs = Math.max(100, refreshMs);
  }

  /** True when this host listens on TCP `port` (as of the last refresh). O(1). */
  has(port: number): boolean {
    return this.#open[port] === 1;
  }

  /** The listening ports, sorted (for the start-up log). */
  list(): number[] {
    const ports: number[] = [];
    for (let p = 0; p < 65536; p++) if (this.#open[p]) ports.push(p);
    return ports;
  }

  /**
   * Re-reads the listening sockets now: over netlink, or from /proc/net/tcp
   * and /proc/net/tcp6 once netlink has failed. A missing tcp6 (IPv6
   * disabled) counts as empty; when neither can be read the previous state is
   * kept and `lastError` is set. Throws only when libc cannot be loaded.
   */
  refresh(): void {
    if (this.source === "netlink") {
      const next = this.#spare;
      next.fill(0);
      if (typeof markListeningPorts(next) === "number") {
        this.#swap(next);
        return;
      }
      this.source = "proc";
    }
    const v4 = readSystemFile("/proc/net/tcp");
    const v6 = readSystemFile("/proc/net/tcp6");
    if (v4 === null && v6 === null) {
      this.lastError = new Error("cannot read /proc/net/tcp nor /proc/net/tcp6");
      return;
    }
    const next = this.#spare;
    next.fill(0);
    if (v4 !== null) markListening(v4, next);
    if (v6 !== null) markListening(v6, next);
    this.#swap(next);
  }

  /** Swaps whole tables, so has() never sees a half-built one. */
  #swap(next: Uint8Array<ArrayBuffer>): void {
    this.#spare = this.#open;
    this.#open = next;
    this.lastError = null;
    this.refreshes++;
  }

  /** Refreshes now and then every `refreshMs` (the timer does not keep the process alive). */
  start(): void {
    if (this.#timer !== undefined) return;
    this.refresh();
    const timer = setInterval(() => {
      try {
        this.refresh();
      } catch (e) {
        this.lastError = e instanceof Error ? e : new Error(String(e));
      }
    }, this.#refreshMs);
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  /** Stops the timer; the last state stays readable. */
  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
