/**
 * The daemon's control socket: a unix socket (default
 * /run/scanblocker/control.sock, directory 0700, socket 0600, so only root
 * and the service's user reach it; no network port) where `scanblocker
 * status` and `scanblocker bans` ask what the daemon sees. One request line
 * (`{"request":"status"}`), one JSON answer line, then the daemon closes.
 * The daemon builds the answer from a snapshot callback, on request only.
 */
import type { BanStatus, ListedBan, StatusSnapshot } from "./status.ts";
import { acceptLoop } from "./server.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The program's run directory (systemd's RuntimeDirectory=scanblocker). */
export const RUN_DIRECTORY = "/run/scanblocker";

/** Longest request accepted, bytes. */
const MAX_REQUEST = 1024;
/** A client that sends nothing is dropped after this long. */
const REQUEST_TIMEOUT_MS = 2000;

/** The running control server. */
export interface ControlServer {
  readonly path: string;
  /** Stops listening and removes the socket file. */
  close(): Promise<void>;
}

/** Why the control socket could not be used. */
export class ControlError extends Error {
  /** "not-running": no socket or nobody listening; "denied": no permission; "failed": anything else. */
  constructor(readonly kind: "not-running" | "denied" | "failed", message: string) {
    super(message);
  }
}

/**
 * Listens on `path`: creates its directory (0700) when missing, replaces a
 * stale socket left by a daemon that died, refuses to take over one that
 * answers (another daemon). Throws an Error with one line saying why.
 */
export async function startControlServer(
  path: string,
  snapshot: () => Promise<StatusSnapshot>,
  warn: (line: string) => void = () => {},
): Promise<ControlServer> {
  const dir = path.slice(0, path.lastIndexOf("/")) || "/";
  try {
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new Error(`control socket: cannot create ${dir}: ${message(e)}`);
  }
  // The program's own run directory is 0700 whoever made it; a directory
  // named with --control-socket is left as it is (it may be /tmp).
  if (dir === RUN_DIRECTORY) {
    try {
      if ((Deno.statSync(dir).mode! & 0o777) !== 0o700) Deno.chmodSync(dir, 0o700);
    } catch { /* not ours to change: the socket's own mode 0600 still guards it */ }
  }
  try {
    Deno.lstatSync(path);
    // Something is there: a live daemon, or a socket left behind.
    try {
      const c = await Deno.connect({ transport: "unix", path });
      c.close();
      throw new Error(`control socket ${path} is in use: another scanblocker is running`);
    } catch (e) {
      if (e instanceof Error && e.message.includes("in use")) throw e;
      Deno.removeSync(path);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw e instanceof Error && e.message.startsWith("control socket") ? e : new Error(
        `control socket ${path}: ${message(e)}`,
      );
    }
  }
  let listener: Deno.UnixListener;
  try {
    listener = Deno.listen({ transport: "unix", path });
    Deno.chmodSync(path, 0o600);
  } catch (e) {
    throw new Error(`control socket ${path}: cannot listen: ${message(e)}`);
  }
  let closed = false;
  const serving = acceptLoop(listener, (conn) => {
    answer(conn, snapshot).catch(() => {});
  }, { what: "control socket", report: warn, closed: () => closed });
  return {
    path,
    close: async () => {
      closed = true;
      try {
        listener.close();
      } catch { /* closed */ }
      await serving;
      try {
        Deno.removeSync(path);
      } catch { /* gone */ }
    },
  };
}

/** Reads one request line and writes one answer line. */
async function answer(conn: Deno.Conn, snapshot: () => Promise<StatusSnapshot>): Promise<void> {
  const timer = setTimeout(() => conn.close(), REQUEST_TIMEOUT_MS);
  try {
    const buf = new Uint8Array(MAX_REQUEST);
    let n = 0;
    while (n < buf.length && !buf.subarray(0, n).includes(10)) {
      const r = await conn.read(buf.subarray(n));
      if (r === null) break;
      n += r;
    }
    let reply: unknown;
    try {
      const req = JSON.parse(dec.decode(buf.subarray(0, n)).split("\n")[0]) as {
        request?: unknown;
      };
      reply = req.request === "status"
        ? { ok: true, status: await snapshot() }
        : { ok: false, error: `unknown request ${JSON.stringify(req.request)}` };
    } catch (e) {
      reply = { ok: false, error: `bad request: ${message(e)}` };
    }
    const data = enc.encode(JSON.stringify(reply) + "\n");
    for (let at = 0; at < data.length;) at += await conn.write(data.subarray(at));
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer */ }
  }
}

/**
 * Asks the daemon listening on `path` for its status. Throws ControlError:
 * "not-running" when no daemon listens there, "denied" when this user may
 * not reach the socket, "failed" otherwise.
 */
export async function askStatus(path: string, timeoutMs = 5000): Promise<StatusSnapshot> {
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.ConnectionRefused) {
      throw new ControlError("not-running", `scanblocker is not running (no daemon at ${path})`);
    }
    if (e instanceof Deno.errors.PermissionDenied) {
      throw new ControlError(
        "denied",
        `permission denied on ${path}: run as root or as the service's user`,
      );
    }
    throw new ControlError("failed", `cannot reach the daemon at ${path}: ${message(e)}`);
  }
  const timer = setTimeout(() => conn.close(), timeoutMs);
  try {
    const req = enc.encode(JSON.stringify({ request: "status" }) + "\n");
    for (let at = 0; at < req.length;) at += await conn.write(req.subarray(at));
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(65536);
    for (let r; (r = await conn.read(buf)) !== null;) chunks.push(buf.slice(0, r));
    const text = dec.decode(concat(chunks)).trim();
    const reply = JSON.parse(text) as { ok: boolean; status?: StatusSnapshot; error?: string };
    if (!reply.ok || !reply.status) {
      throw new ControlError("failed", `the daemon at ${path} answered: ${reply.error}`);
    }
    return reply.status;
  } catch (e) {
    if (e instanceof ControlError) throw e;
    throw new ControlError("failed", `no answer from the daemon at ${path}: ${message(e)}`);
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer */ }
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * `scanblocker status [--json]`: the exit code and what to print (stdout,
 * or one line for stderr). 1 when no daemon answers or access is denied.
 */
export async function statusCommand(
  path: string,
  json: boolean,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const { formatStatus } = await import("./status.ts");
  try {
    const s = await askStatus(path);
    return { code: 0, stdout: json ? JSON.stringify(s) + "\n" : formatStatus(s), stderr: "" };
  } catch (e) {
    return { code: 1, stdout: "", stderr: e instanceof Error ? e.message : String(e) };
  }
}

/**
 * The firewall's bans with the reason and origin the daemon's book holds,
 * for `scanblocker bans`; `daemon` is false when no daemon answered (then
 * reason is null and origin "-").
 */
export async function bansWithReasons(
  bans: { address: string; expiresAt: number | null; backend: string }[],
  path: string,
): Promise<{ bans: ListedBan[]; daemon: boolean }> {
  let known: Map<string, BanStatus> | null = null;
  try {
    const s = await askStatus(path, 2000);
    known = new Map(s.bans.map((b) => [b.address, b]));
  } catch { /* no daemon: the firewall's list alone */ }
  return {
    daemon: known !== null,
    bans: bans.map((b) => {
      const k = known?.get(b.address);
      return {
        ...b,
        reason: k?.reason ?? null,
        // In the firewall but not in the daemon's book: put there from outside.
        origin: k?.origin ?? (known ? "restored" : "-"),
      };
    }),
  };
}
