/**
 * The event lines on stdout: the original tool's text format (local time,
 * `YYYY-MM-DD HH:MM:SS: `) or JSON lines carrying the same events. "New
 * connection" lines are rate-limited per second of packet time with one line
 * saying how many were suppressed; detections and bans are never suppressed.
 * Lines are buffered and written once per batch, not once per packet.
 */
import { formatAddress, formatEndpoint } from "../address.ts";
import type { Family } from "../types.ts";

/** Output format of the event lines. */
export type LogFormat = "text" | "json";

const pad2 = (n: number) => (n < 10 ? "0" : "") + n;

/** Formats epoch milliseconds as local `YYYY-MM-DD HH:MM:SS`. */
export function localTimestamp(ms: number): string {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${
    pad2(d.getMinutes())
  }:${pad2(d.getSeconds())}`;
}

/** Writes every byte of `data` to a synchronous writer (stdout may take it in parts). */
export function writeAll(w: { writeSync(p: Uint8Array): number }, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += w.writeSync(data.subarray(off));
}

/** Largest write the kernel keeps whole on a pipe (PIPE_BUF). */
const ATOMIC_WRITE = 4096;

/**
 * Writes text made of whole lines in writes of at most PIPE_BUF bytes that
 * end at a line end, so lines written by two threads never mix.
 */
export function writeLines(w: { writeSync(p: Uint8Array): number }, data: Uint8Array): void {
  let at = 0;
  while (at < data.length) {
    let end = Math.min(data.length, at + ATOMIC_WRITE);
    if (end < data.length) {
      const nl = data.lastIndexOf(10, end - 1);
      if (nl >= at) end = nl + 1;
    }
    writeAll(w, data.subarray(at, end));
    at = end;
  }
}

/** Event logger with a per-second limit on "New connection" lines. */
export class EventLog {
  readonly #format: LogFormat;
  readonly #rate: number;
  readonly #out: (text: string) => void;
  #lines: string[] = [];
  #second = -1;
  #stamp = "";
  #inSecond = 0;
  #suppressed = 0;
  /** Lines suppressed so far (for the metric). */
  suppressedTotal = 0;

  constructor(format: LogFormat, ratePerSecond: number, out: (text: string) => void) {
    this.#format = format;
    this.#rate = ratePerSecond;
    this.#out = out;
  }

  #time(ms: number): string {
    const sec = Math.floor(ms / 1000);
    if (sec !== this.#second) {
      this.#second = sec;
      this.#stamp = localTimestamp(ms);
    }
    return this.#stamp;
  }

  #json(ms: number, event: string, fields: Record<string, unknown>): void {
    this.#lines.push(JSON.stringify({ time: new Date(ms).toISOString(), event, ...fields }));
  }

  /** Rate limiter: true when one more limited line may go out in this packet-time second. */
  #admit(ms: number): boolean {
    if (this.#rate === 0) return true;
    const sec = Math.floor(ms / 1000);
    if (sec !== this.#limitSecond) {
      this.#reportSuppressed(ms);
      this.#limitSecond = sec;
      this.#inSecond = 0;
    }
    if (this.#inSecond < this.#rate) {
      this.#inSecond++;
      return true;
    }
    this.#suppressed++;
    this.suppressedTotal++;
    return false;
  }
  #limitSecond = -1;

  #reportSuppressed(ms: number): void {
    if (this.#suppressed === 0) return;
    const n = this.#suppressed;
    this.#suppressed = 0;
    if (this.#format === "json") {
      this.#json(ms, "suppressed", { lines: n, limit: this.#rate });
    } else {
      this.#lines.push(
        `${this.#time(ms)}: ${n} New connection lines suppressed (limit ${this.#rate}/s).`,
      );
    }
  }

  /** A connection attempt arriving at this host. */
  newConnection(
    ms: number,
    family: Family,
    src: Uint8Array,
    sport: number,
    dst: Uint8Array,
    dport: number,
  ): void {
    if (!this.#admit(ms)) return;
    if (this.#format === "json") {
      this.#json(ms, "new_connection", {
        family: family === 4 ? "ipv4" : "ipv6",
        src: formatAddress(family, src),
        sport,
        dst: formatAddress(family, dst),
        dport,
      });
    } else {
      this.#lines.push(
        `${this.#time(ms)}: New connection: ${formatEndpoint(family, src, sport)} -> ${
          formatEndpoint(family, dst, dport)
        }`,
      );
    }
  }

  /** A scan crossed the threshold (never suppressed). */
  scanDetected(
    ms: number,
    family: Family,
    src: Uint8Array,
    dst: Uint8Array,
    extra: {
      ports?: number[];
      scanType?: string;
      outbound?: boolean;
      rule?: string;
      /** The source as text when it is an IPv6 prefix (CIDR), not one address. */
      source?: string;
    } = {},
  ): void {
    const s = extra.source ?? formatAddress(family, src), d = formatAddress(family, dst);
    if (this.#format === "json") {
      this.#json(ms, extra.outbound ? "outbound_scan_detected" : "scan_detected", {
        family: family === 4 ? "ipv4" : "ipv6",
        src: s,
        dst: d,
        ...(extra.ports ? { ports: extra.ports } : {}),
        ...(extra.scanType ? { scan_type: extra.scanType } : {}),
        ...(extra.rule ? { rule: extra.rule } : {}),
      });
    } else {
      const what = extra.outbound ? "Outbound port scan detected" : "Port scan detected";
      this.#lines.push(`${this.#time(ms)}: ${what}: ${s} -> ${d}`);
    }
  }

  /** A ban is in place (never suppressed); JSON carries the detection-to-ban latency. */
  banned(ms: number, address: string, timing?: { latencyMs: number; detectMs: number }): void {
    if (this.#format === "json") {
      // Where the time went: packet → detector, and packet → rule in place.
      const extra = timing === undefined ? {} : {
        capture_to_detection_ms: timing.detectMs,
        detection_to_ban_ms: timing.latencyMs,
      };
      this.#json(ms, "banned", { address, ...extra });
    } else this.#lines.push(`${this.#time(ms)}: IP ${address} banned.`);
  }

  /**
   * The address is banned already. `limited` lines (repeats from a known
   * scanner) share the "New connection" rate limit; the first one after a
   * detection does not.
   */
  alreadyBanned(ms: number, address: string, limited: boolean): void {
    if (limited && !this.#admit(ms)) return;
    if (this.#format === "json") this.#json(ms, "already_banned", { address });
    else {this.#lines.push(
        `${this.#time(ms)}: IP to ban: ${address} is already in disallowed list.`,
      );}
  }

  /** Any other event for JSON consumers and a free-form text line. */
  note(ms: number, event: string, text: string, fields: Record<string, unknown> = {}): void {
    if (this.#format === "json") this.#json(ms, event, fields);
    else this.#lines.push(`${this.#time(ms)}: ${text}`);
  }

  /** Writes the buffered lines; `endMs` reports pending suppression at the end of a run. */
  flush(endMs?: number): void {
    if (endMs !== undefined) this.#reportSuppressed(endMs);
    if (this.#lines.length === 0) return;
    const text = this.#lines.join("\n") + "\n";
    this.#lines = [];
    this.#out(text);
  }
}
