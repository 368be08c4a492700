/**
 * The HTTP side of the daemon: `GET /metrics` for Prometheus and `GET /healthz`
 * for whatever supervises the process, served by Deno.serve. It never logs per
 * request, so a busy scraper cannot flood the log.
 */

import type { Metrics } from "./metrics.ts";

/** What /healthz reports; main.ts builds it from the capture and firewall state. */
export interface Health {
  captureRunning: boolean;
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
  /** Stops listening and waits for open requests to finish. */
  close(): Promise<void>;
}

const ALLOW = "GET, HEAD";
const textHeaders = { "content-type": "text/plain; charset=utf-8" };

/** Formats an address for messages: IPv6 in brackets. */
function showAddress(hostname: string, port: number): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}

/**
 * Starts Deno.serve with GET /metrics (text exposition, its content type),
 * GET /healthz (200 JSON; 503 when capture has stopped), 404 for other paths
 * and 405 (with Allow) for other methods. Throws an Error naming the address
 * and how to choose another when it cannot listen (e.g. address in use).
 * `beforeScrape` runs before each /metrics answer (the caller copies the
 * capture worker's counters into the registry then).
 */
export function startMetricsServer(
  addr: { hostname: string; port: number },
  metrics: Metrics,
  health: () => Health,
  beforeScrape: () => void = () => {},
): MetricsServer {
  const handler = async (req: Request): Promise<Response> => {
    const path = new URL(req.url).pathname;
    if (path !== "/metrics" && path !== "/healthz") {
      return new Response("not found\n", { status: 404, headers: textHeaders });
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("method not allowed\n", {
        status: 405,
        headers: { ...textHeaders, allow: ALLOW },
      });
    }
    if (path === "/metrics") {
      beforeScrape();
      const body = await metrics.registry.metrics();
      return new Response(body, { headers: { "content-type": metrics.registry.contentType } });
    }
    const h = health();
    const body = {
      status: h.captureRunning ? "ok" : "capture stopped",
      captureRunning: h.captureRunning,
      packetsSeen: h.packetsSeen,
      firewall: h.firewall,
      lastPacketTime: h.lastPacketTime === null ? null : new Date(h.lastPacketTime).toISOString(),
      ...(h.fleet !== undefined ? { fleet: h.fleet } : {}),
    };
    return Response.json(body, {
      status: h.captureRunning ? 200 : 503,
      headers: { "cache-control": "no-store" },
    });
  };
  const options = (hostname: string) => ({
    hostname,
    port: addr.port,
    // Quiet: no "Listening on" banner, no stack trace per failed request.
    onListen: () => {},
    onError: () => new Response("internal error\n", { status: 500, headers: textHeaders }),
  });
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    try {
      server = Deno.serve(options(addr.hostname), handler);
    } catch (e) {
      // The dual-stack wildcard needs IPv6; without it, all IPv4 interfaces will do.
      if (addr.hostname !== ANY_HOST || e instanceof Deno.errors.AddrInUse) throw e;
      server = Deno.serve(options(ANY_HOST_V4), handler);
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
  return {
    port: server.addr.port,
    close: () => server.shutdown(),
  };
}
