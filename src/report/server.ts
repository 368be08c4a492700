/**
 * The HTTP side of the daemon: `GET /metrics` for Prometheus and `GET /healthz`
 * for whatever supervises the process. It never logs per request, so a busy
 * scraper cannot flood the log.
 *
 * A small HTTP/1.1 server over Deno.listen, not Deno.serve: Deno.serve has
 * no idle or header timeout and no connection cap, kept idle connections
 * open for ever, and when descriptors ran out its accept loop threw an
 * uncaught EMFILE that ended the whole daemon (capture and bans with it).
 * Two GET routes need none of what a full server offers, so this one keeps
 * strict limits instead: one request per connection (`connection: close`,
 * which Prometheus and curl handle), its head within HEADER_TIMEOUT_MS and
 * MAX_HEAD_BYTES, the answer written within WRITE_TIMEOUT_MS, at most
 * MAX_CONNECTIONS at once (more are closed as soon as accepted), and a
 * failed accept is counted, reported once per episode and retried after a
 * pause, never thrown.
 */

import type { Metrics } from "./metrics.ts";

/** Limits of the metrics server (see the module comment); tests lower them. */
export interface ServerLimits {
  /** Connections served at once; more are closed as soon as they are accepted. */
  maxConnections: number;
  /** Milliseconds for a connection's request head to arrive (also the idle timeout). */
  headerTimeoutMs: number;
  /** Milliseconds to write the answer. */
  writeTimeoutMs: number;
  /** Bytes of request head at most. */
  maxHeadBytes: number;
}

/** The defaults: a scraper or health check needs one connection and a few hundred bytes. */
export const DEFAULT_SERVER_LIMITS: ServerLimits = {
  maxConnections: 32,
  headerTimeoutMs: 5000,
  writeTimeoutMs: 10_000,
  maxHeadBytes: 8192,
};

/** What /healthz reports; main.ts builds it from the capture and firewall state. */
export interface Health {
  captureRunning: boolean;
  /** The capture runs but processes nothing while the interface receives packets. */
  stalled?: boolean;
  packetsSeen: number;
  /** Backend and state, e.g. "iptables ok". */
  firewall: string;
  /** Epoch milliseconds of the last captured packet, null before the first. */
  lastPacketTime: number | null;
  /** The CrowdSec LAPI link (src/fleet), when the host joined one. */
  fleet?: unknown;
}

/** Where the metrics server listens, or "off" for no server at all. */
export type ListenAddress = { hostname: string; port: number } | "off";

/**
 * The wildcard that ":port" means. "::" on Linux is dual-stack (Deno leaves
 * IPV6_V6ONLY off), so IPv4 and IPv6 scrapers both reach it, as Go's ":8080"
 * does; when the kernel has no IPv6 the server falls back to 0.0.0.0.
 */
const ANY_HOST = "::";
const ANY_HOST_V4 = "0.0.0.0";

/**
 * Parses `--metrics-addr`: "host:port", ":port" (all interfaces), "[v6]:port"
 * or "off". Returns null when the text is not one of these or the port is not
 * an integer 0..65535 (0 picks a free port).
 */
export function parseListenAddress(text: string): ListenAddress | null {
  const t = text.trim();
  if (t.toLowerCase() === "off") return "off";
  let host: string, portText: string;
  const v6 = /^\[([0-9A-Fa-f:.]+(?:%[\w.-]+)?)\]:([^:]*)$/.exec(t);
  if (v6) {
    [host, portText] = [v6[1], v6[2]];
    if (!host.includes(":")) return null;
  } else {
    const colon = t.lastIndexOf(":");
    if (colon < 0) return null;
    host = t.slice(0, colon);
    portText = t.slice(colon + 1);
    // A bare IPv6 address needs brackets; a hostname has no spaces or slashes.
    if (host.includes(":") || /[\s/\[\]@]/.test(host)) return null;
    if (host === "") host = ANY_HOST;
  }
  if (!/^\d{1,5}$/.test(portText)) return null;
  const port = Number(portText);
  if (port > 65535) return null;
  return { hostname: host, port };
}

/** A running metrics server. */
export interface MetricsServer {
  /** The port actually bound (useful with port 0). */
  port: number;
  /** The address actually bound, as HOST:PORT or [IPv6]:PORT (the chosen port with port 0). */
  address: string;
  /** Stops listening, closes open connections and waits for the accept loop to end. */
  close(): Promise<void>;
}

const ALLOW = "GET, HEAD";
const TEXT = "text/plain; charset=utf-8";
const REASONS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

/** Formats an address for messages: IPv6 in brackets. */
function showAddress(hostname: string, port: number): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}

/** An answer before it is written. */
interface Answer {
  status: number;
  type: string;
  body: string;
  headers?: Record<string, string>;
}

/** Options beyond the routes: limits, and where problems are reported (one line per episode). */
export interface ServerOptions {
  limits?: Partial<ServerLimits>;
  /** Default: one "scanblocker: …" line on stderr, as the daemon's other notices. */
  onProblem?: (message: string) => void;
}

function toStderr(message: string): void {
  try {
    Deno.stderr.writeSync(enc.encode(`scanblocker: ${message}\n`));
  } catch {
    // stderr gone: nothing else to tell
  }
}

/**
 * Listens on `addr` and serves GET /metrics (text exposition, its content
 * type), GET /healthz (200 JSON; 503 when capture has stopped), 404 for
 * other paths and 405 (with Allow) for other methods, within the limits of
 * the module comment. Throws an Error naming the address and how to choose
 * another when it cannot listen (e.g. address in use). `beforeScrape` runs
 * before each /metrics answer (the caller copies the capture worker's
 * counters into the registry then).
 */
export function startMetricsServer(
  addr: { hostname: string; port: number },
  metrics: Metrics,
  health: () => Health,
  beforeScrape: () => void = () => {},
  options: ServerOptions = {},
): MetricsServer {
  const limits = { ...DEFAULT_SERVER_LIMITS, ...options.limits };
  const route = async (method: string, path: string): Promise<Answer> => {
    if (path !== "/metrics" && path !== "/healthz") {
      return { status: 404, type: TEXT, body: "not found\n" };
    }
    if (method !== "GET" && method !== "HEAD") {
      return { status: 405, type: TEXT, body: "method not allowed\n", headers: { allow: ALLOW } };
    }
    if (path === "/metrics") {
      beforeScrape();
      return {
        status: 200,
        type: metrics.registry.contentType,
        body: await metrics.registry.metrics(),
      };
    }
    const h = health();
    const body = {
      status: !h.captureRunning ? "capture stopped" : h.stalled ? "capture stalled" : "ok",
      captureRunning: h.captureRunning,
      packetsSeen: h.packetsSeen,
      firewall: h.firewall,
      lastPacketTime: h.lastPacketTime === null ? null : new Date(h.lastPacketTime).toISOString(),
      ...(h.fleet !== undefined ? { fleet: h.fleet } : {}),
    };
    return {
      status: h.captureRunning && !h.stalled ? 200 : 503,
      type: "application/json",
      body: JSON.stringify(body),
      headers: { "cache-control": "no-store" },
    };
  };
  const listener = listen(addr);
  const server = new TinyServer(listener, limits, route, metrics, options.onProblem ?? toStderr);
  return {
    port: listener.addr.port,
    address: showAddress(listener.addr.hostname, listener.addr.port),
    close: () => server.close(),
  };
}

/** Deno.listen on `addr`, falling back from "::" to 0.0.0.0; a clear Error when it cannot. */
function listen(addr: { hostname: string; port: number }): Deno.TcpListener {
  try {
    try {
      return Deno.listen({ hostname: addr.hostname, port: addr.port });
    } catch (e) {
      // The dual-stack wildcard needs IPv6; without it, all IPv4 interfaces will do.
      if (addr.hostname !== ANY_HOST || e instanceof Deno.errors.AddrInUse) throw e;
      return Deno.listen({ hostname: ANY_HOST_V4, port: addr.port });
    }
  } catch (e) {
    const where = showAddress(addr.hostname, addr.port);
    const how =
      "pick another with --metrics-addr HOST:PORT (or SB_METRICS_ADDR), or disable the server with --metrics-addr off";
    const why = e instanceof Deno.errors.AddrInUse
      ? "is already in use"
      : e instanceof Deno.errors.AddrNotAvailable
      ? "is not an address of this host"
      : `cannot be listened on (${e instanceof Error ? e.message : String(e)})`;
    throw new Error(`metrics address ${where} ${why}; ${how}`, { cause: e });
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * Accepts until `closed()` (the metrics server's loop, and the control
 * socket's): a failed accept (EMFILE, ENFILE, ENOMEM) is counted
 * (`failed`), said once ("WHAT: cannot accept connections (why);
 * retrying" and `also`), waited out with a back-off up to 1 s and retried,
 * and said again once it accepts. (A `for await` over a listener ends for
 * good on the first failure, silently.)
 */
export async function acceptLoop<C extends Deno.Conn>(
  listener: { accept(): Promise<C> },
  serve: (conn: C) => void,
  o: {
    what: string;
    also?: string;
    report: (line: string) => void;
    closed: () => boolean;
    failed?: () => void;
  },
): Promise<void> {
  let pause = 50, failing = false;
  while (!o.closed()) {
    let conn: C;
    try {
      conn = await listener.accept();
    } catch (e) {
      if (o.closed()) return;
      o.failed?.();
      if (!failing) {
        failing = true;
        o.report(
          `${o.what}: cannot accept connections (${
            e instanceof Error ? e.message : String(e)
          }); retrying${o.also ?? ""}`,
        );
      }
      await new Promise((r) => setTimeout(r, pause));
      pause = Math.min(pause * 2, 1000);
      continue;
    }
    if (failing) {
      failing = false;
      o.report(`${o.what}: accepting connections again`);
    }
    pause = 50;
    serve(conn);
  }
}

/** The accept loop and the per-connection exchange of startMetricsServer. */
class TinyServer {
  readonly #open = new Set<Deno.Conn>();
  #closed = false;
  readonly #loop: Promise<void>;

  constructor(
    readonly listener: Deno.TcpListener,
    readonly limits: ServerLimits,
    readonly route: (method: string, path: string) => Promise<Answer>,
    readonly metrics: Metrics,
    readonly report: (message: string) => void,
  ) {
    this.#loop = acceptLoop(listener, (conn) => this.#take(conn), {
      what: "metrics server",
      also: ", capture and bans go on",
      report,
      closed: () => this.#closed,
      failed: () => metrics.serverProblems.labels("accept_error").inc(),
    });
  }

  /** An accepted connection: served, or closed at once over the cap. */
  #take(conn: Deno.Conn): void {
    if (this.#open.size >= this.limits.maxConnections) {
      this.metrics.serverProblems.labels("over_capacity").inc();
      close(conn);
      return;
    }
    this.#open.add(conn);
    this.#serve(conn).finally(() => {
      this.#open.delete(conn);
      close(conn);
    });
  }

  /** One exchange: read the head (bounded in time and size), answer, close. */
  async #serve(conn: Deno.Conn): Promise<void> {
    let timedOut = false;
    const deadline = (ms: number) =>
      setTimeout(() => {
        timedOut = true;
        close(conn);
      }, ms);
    let timer = deadline(this.limits.headerTimeoutMs);
    try {
      const head = await readHead(conn, this.limits.maxHeadBytes);
      clearTimeout(timer);
      if (head === null) {
        this.metrics.serverProblems.labels(timedOut ? "timeout" : "bad_request").inc();
        return;
      }
      const m = /^([A-Z]+) (\S+) HTTP\/1\.[01]$/.exec(head.slice(0, head.indexOf("\r\n")));
      let answer: Answer;
      if (!m) {
        this.metrics.serverProblems.labels("bad_request").inc();
        answer = { status: 400, type: TEXT, body: "bad request\n" };
      } else {
        answer = await this.route(m[1], pathOf(m[2])).catch(() => ({
          status: 500,
          type: TEXT,
          body: "internal error\n",
        }));
      }
      timer = deadline(this.limits.writeTimeoutMs);
      await writeAll(conn, encodeAnswer(answer, m?.[1] === "HEAD"));
    } catch {
      if (timedOut) this.metrics.serverProblems.labels("timeout").inc();
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    try {
      this.listener.close();
    } catch {
      // already closed
    }
    for (const c of this.#open) close(c);
    await this.#loop;
  }
}

/** The path of a request target ("/metrics?x=1" → "/metrics"; absolute form too). */
function pathOf(target: string): string {
  if (/^https?:\/\//i.test(target)) {
    try {
      return new URL(target).pathname;
    } catch {
      return target;
    }
  }
  const q = target.search(/[?#]/);
  return q < 0 ? target : target.slice(0, q);
}

/** Reads up to the blank line ending the request head: its text, or null (EOF, too long, closed). */
async function readHead(conn: Deno.Conn, max: number): Promise<string | null> {
  const buf = new Uint8Array(max);
  let n = 0;
  while (n < max) {
    const got = await conn.read(buf.subarray(n));
    if (got === null) return null;
    const from = Math.max(0, n - 3);
    n += got;
    for (let i = from; i + 3 < n; i++) {
      if (buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) {
        return dec.decode(buf.subarray(0, i + 2));
      }
    }
  }
  return null;
}

/** The bytes of an answer: status line, headers (always `connection: close`), body unless HEAD. */
function encodeAnswer(a: Answer, head: boolean): Uint8Array {
  const body = enc.encode(a.body);
  let text = `HTTP/1.1 ${a.status} ${REASONS[a.status] ?? "Status"}\r\n` +
    `content-type: ${a.type}\r\ncontent-length: ${body.length}\r\nconnection: close\r\n`;
  for (const [k, v] of Object.entries(a.headers ?? {})) text += `${k}: ${v}\r\n`;
  const start = enc.encode(text + "\r\n");
  if (head) return start;
  const out = new Uint8Array(start.length + body.length);
  out.set(start);
  out.set(body, start.length);
  return out;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

function close(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}
