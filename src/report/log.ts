/**
 * The event lines on stdout: the original tool's text format (local time,
 * `YYYY-MM-DD HH:MM:SS: `) or JSON lines carrying the same events. "New
 * connection" lines are rate-limited per second of packet time with one line
 * saying how many were suppressed; detections and bans are never suppressed.
 * Lines are buffered and written once per batch, not once per packet.
 *
 * Under systemd, when stdout is the journal (JOURNAL_STREAM names its
 * device:inode), a text line carries no timestamp of its own (journald stamps
 * every line) and starts with a syslog severity, `<4>` for scans and bans,
 * `<6>` for connections, so `journalctl -p warning` shows the bans. JSON
 * lines always carry `level`. The live capture worker and the main thread
 * format through this one class.
 */
import { descriptorIdentity } from "../../ffi/libc.ts";
import { formatAddress, formatEndpoint } from "../address.ts";
import type { Family } from "../types.ts";

/** Output format of the event lines. */
export type LogFormat = "text" | "json";

/** Syslog severities the program writes (RFC 5424 numbers, as journald reads `<N>`). */
export const Severity = {
  Error: 3,
  Warning: 4,
  Notice: 5,
  Info: 6,
} as const;
/** One of the syslog severities in Severity. */
export type Severity = typeof Severity[keyof typeof Severity];

/** The `level` word of a JSON line, per severity. */
const LEVEL: Record<Severity, string> = { 3: "error", 4: "warning", 5: "notice", 6: "info" };

/**
 * Whether stdout and stderr are connected to the journal: systemd sets
 * JOURNAL_STREAM to "DEVICE:INODE" of the stream it connected, and a program
 * must compare it with its own descriptors (the variable is inherited by
 * children whose output goes elsewhere); fstat(2) gives the descriptors' own.
 */
export function journalStreams(
  env: string | undefined = readJournalEnv(),
): { stdout: boolean; stderr: boolean } {
  const want = env?.trim();
  const is = (fd: number) => {
    if (!want || !/^\d+:\d+$/.test(want)) return false;
    try {
      return descriptorIdentity(fd) === want;
    } catch {
      return false; // no libc: no journal prefixes
    }
  };
  return { stdout: is(1), stderr: is(2) };
}

function readJournalEnv(): string | undefined {
  try {
    return Deno.env.get("JOURNAL_STREAM");
  } catch {
    return undefined;
  }
}

/**
 * A line for stderr: `scanblocker: TEXT`, with the syslog prefix when stderr
 * is the journal (errors `<3>`, start-up notices `<6>`).
 */
export function stderrLine(text: string, severity: Severity, journal: boolean): string {
  return `${journal ? `<${severity}>` : ""}scanblocker: ${text}\n`;
}

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

/**
 * Times of a ban, from the capture timestamp of the threshold packet (ms):
 * to the capture thread's read of the batch holding it (when known), to the
 * detection, to the rule in place (the kernel's confirmation).
 */
export interface BanTiming {
  readMs?: number;
  detectMs: number;
  latencyMs: number;
}

/** A "New connection" line waiting to be formatted (addresses copied). */
interface Connection {
  ms: number;
  family: Family;
  src: Uint8Array;
  sport: number;
  dst: Uint8Array;
  dport: number;
}

/** Event logger with a per-second limit on "New connection" lines. */
export class EventLog {
  #format: LogFormat;
  #rate: number;
  readonly #out: (text: string) => void;
  readonly #journal: boolean;
  #lines: (string | Connection)[] = [];
  #second = -1;
  #stamp = "";
  #inSecond = 0;
  #suppressed = 0;
  /** Lines suppressed so far (for the metric). */
  suppressedTotal = 0;

  /** `journal`: stdout is the journal (see journalStreams): severity prefixes, no timestamps. */
  constructor(
    format: LogFormat,
    ratePerSecond: number,
    out: (text: string) => void,
    opts: { journal?: boolean } = {},
  ) {
    this.#format = format;
    this.#rate = ratePerSecond;
    this.#out = out;
    this.#journal = opts.journal === true;
  }

  /** A text line: the original's `TIME: TEXT`, or `<N>TEXT` for the journal. */
  #text(ms: number, severity: Severity, text: string): void {
    this.#lines.push(this.#textLine(ms, severity, text));
  }

  #textLine(ms: number, severity: Severity, text: string): string {
    return this.#journal ? `<${severity}>${text}` : `${this.#time(ms)}: ${text}`;
  }

  /** New format and rate limit from the next line on (a reload); pending lines stay as written. */
  configure(format: LogFormat, ratePerSecond: number): void {
    this.#formatPending();
    this.#format = format;
    this.#rate = ratePerSecond;
  }

  #time(ms: number): string {
    const sec = Math.floor(ms / 1000);
    if (sec !== this.#second) {
      this.#second = sec;
      this.#stamp = localTimestamp(ms);
    }
    return this.#stamp;
  }

  #json(ms: number, severity: Severity, event: string, fields: Record<string, unknown>): void {
    this.#lines.push(this.#jsonLine(ms, severity, event, fields));
  }

  #jsonLine(ms: number, severity: Severity, event: string, fields: Record<string, unknown>) {
    const line = JSON.stringify({
      time: new Date(ms).toISOString(),
      level: LEVEL[severity],
      event,
      ...fields,
    });
    return this.#journal ? `<${severity}>${line}` : line;
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
      this.#json(ms, Severity.Notice, "suppressed", { lines: n, limit: this.#rate });
    } else {
      this.#text(
        ms,
        Severity.Notice,
        `${n} New connection lines suppressed (limit ${this.#rate}/s).`,
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
    // Formatted at flush, not here: on the capture thread this runs between
    // a scanner's probes, before the one that gets it banned (cold, a line
    // cost 10-25 µs; see README, Ban latency). Later lines keep their order.
    this.#lines.push({ ms, family, src: src.slice(), sport, dst: dst.slice(), dport });
  }

  /** Formats the connection lines newConnection kept, in place. */
  #formatPending(): void {
    const lines = this.#lines;
    for (let i = 0; i < lines.length; i++) {
      const l = lines[i];
      if (typeof l !== "string") lines[i] = this.#connectionLine(l);
    }
  }

  /** The text of a connection line kept by newConnection. */
  #connectionLine(c: Connection): string {
    const { ms, family, src, sport, dst, dport } = c;
    if (this.#format === "json") {
      return this.#jsonLine(ms, Severity.Info, "new_connection", {
        family: family === 4 ? "ipv4" : "ipv6",
        src: formatAddress(family, src),
        sport,
        dst: formatAddress(family, dst),
        dport,
      });
    }
    return this.#textLine(
      ms,
      Severity.Info,
      `New connection: ${formatEndpoint(family, src, sport)} -> ${
        formatEndpoint(family, dst, dport)
      }`,
    );
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
      /** The source as text when the caller has it (a CIDR for an IPv6 prefix): not formatted again. */
      source?: string;
    } = {},
  ): void {
    const s = extra.source ?? formatAddress(family, src), d = formatAddress(family, dst);
    if (this.#format === "json") {
      this.#json(
        ms,
        Severity.Warning,
        extra.outbound ? "outbound_scan_detected" : "scan_detected",
        {
          family: family === 4 ? "ipv4" : "ipv6",
          src: s,
          dst: d,
          ...(extra.ports ? { ports: extra.ports } : {}),
          ...(extra.scanType ? { scan_type: extra.scanType } : {}),
          ...(extra.rule ? { rule: extra.rule } : {}),
        },
      );
    } else {
      const what = extra.outbound ? "Outbound port scan detected" : "Port scan detected";
      this.#text(ms, Severity.Warning, `${what}: ${s} -> ${d}`);
    }
  }

  /** A ban is in place (never suppressed); JSON carries the detection-to-ban latency. */
  banned(ms: number, address: string, timing?: BanTiming): void {
    if (this.#format === "json") {
      // Where the time went: packet → read by the capture thread (waiting for
      // a CPU), → detector, and → rule in place.
      const extra = timing === undefined ? {} : {
        ...(timing.readMs === undefined ? {} : { capture_to_read_ms: timing.readMs }),
        capture_to_detection_ms: timing.detectMs,
        detection_to_ban_ms: timing.latencyMs,
      };
      this.#json(ms, Severity.Warning, "banned", { address, ...extra });
    } else this.#text(ms, Severity.Warning, `IP ${address} banned.`);
  }

  /**
   * The address is banned already. `limited` lines (repeats from a known
   * scanner) share the "New connection" rate limit; the first one after a
   * detection does not.
   */
  alreadyBanned(ms: number, address: string, limited: boolean): void {
    if (limited && !this.#admit(ms)) return;
    if (this.#format === "json") this.#json(ms, Severity.Notice, "already_banned", { address });
    else this.#text(ms, Severity.Notice, `IP to ban: ${address} is already in disallowed list.`);
  }

  /** Any other event for JSON consumers and a free-form text line. */
  note(
    ms: number,
    event: string,
    text: string,
    fields: Record<string, unknown> = {},
    severity: Severity = Severity.Info,
  ): void {
    if (this.#format === "json") this.#json(ms, severity, event, fields);
    else this.#text(ms, severity, text);
  }

  /** Writes the buffered lines; `endMs` reports pending suppression at the end of a run. */
  flush(endMs?: number): void {
    if (endMs !== undefined) this.#reportSuppressed(endMs);
    if (this.#lines.length === 0) return;
    this.#formatPending();
    const text = this.#lines.join("\n") + "\n";
    this.#lines = [];
    this.#out(text);
  }
}
