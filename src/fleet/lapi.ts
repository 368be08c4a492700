/**
 * The three LAPI calls scanblocker makes, over plain fetch: watcher login
 * (`POST /v1/watchers/login`, JWT cached until shortly before it expires and
 * renewed on a 401: the LAPI draws a new JWT secret at every start), alert
 * push (`POST /v1/alerts`) and the bouncer's decision stream
 * (`GET /v1/decisions/stream`). Every failure is a LapiError whose kind says
 * what the caller should do: wait for the LAPI (down), fix credentials (auth)
 * or drop what was refused (rejected).
 */

/** Why a call failed. */
export type LapiErrorKind = "down" | "auth" | "rejected";

/** A failed LAPI call: kind, HTTP status (0 when there was no answer) and one-line text. */
export class LapiError extends Error {
  constructor(readonly kind: LapiErrorKind, readonly status: number, message: string) {
    super(message);
  }
}

/** How to reach the LAPI and who to be there. */
export interface LapiOptions {
  /** Base URL, http or https, e.g. http://10.0.0.1:8080 */
  url: string;
  /** Watcher machine name and password (push); null password = no push. */
  machine: string;
  password: string | null;
  /** Bouncer API key (pull); null = no pull. */
  apiKey: string | null;
  /** PEM text of the CA that signs the LAPI's certificate (https). */
  caPem?: string | null;
  /** PEM text of a client certificate and its key (mutual TLS), optional. */
  clientCertPem?: string | null;
  clientKeyPem?: string | null;
  /** User-Agent: exactly one "/" (1.4.6 refuses a login otherwise). */
  userAgent: string;
  /** Per-request time limit, ms. */
  timeoutMs?: number;
  /** The clock the JWT's end is compared with (tests move it); Date.now by default. */
  now?: () => number;
}

/** One alert as the LAPI's swagger wants it (fields this program sets). */
export type AlertBody = Record<string, unknown>;

/** A renewal margin: the JWT is renewed when less than this is left (it lasts 1 h). */
const RENEW_BEFORE_MS = 5 * 60_000;

/** A LAPI client; one per daemon. */
export class LapiClient {
  readonly #o: LapiOptions;
  readonly #base: string;
  readonly #client: Deno.HttpClient | null;
  /** Aborts every request in flight when the client is closed. */
  readonly #closing = new AbortController();
  #token: string | null = null;
  #tokenEnd = 0;
  /** Logins done (tests and metrics read it: a renewal shows as a second login). */
  logins = 0;

  constructor(o: LapiOptions) {
    this.#o = o;
    this.#base = o.url.replace(/\/+$/, "");
    const tls: Deno.CreateHttpClientOptions = {};
    if (o.caPem) tls.caCerts = [o.caPem];
    if (o.clientCertPem && o.clientKeyPem) {
      Object.assign(tls, { cert: o.clientCertPem, key: o.clientKeyPem });
    }
    this.#client = Object.keys(tls).length > 0 ? Deno.createHttpClient(tls) : null;
  }

  /** Forgets the JWT (the next push logs in again). */
  dropToken(): void {
    this.#token = null;
  }

  /** Logs in unless a JWT with more than the renewal margin left is held. */
  async ensureToken(): Promise<void> {
    const now = this.#o.now?.() ?? Date.now();
    if (this.#token === null || now > this.#tokenEnd - RENEW_BEFORE_MS) await this.login();
  }

  /** POST /v1/watchers/login; keeps the JWT and its end. */
  async login(): Promise<void> {
    if (this.#o.password === null) throw new LapiError("auth", 0, "no machine password given");
    const body = { machine_id: this.#o.machine, password: this.#o.password };
    const r = await this.#call("POST", "/v1/watchers/login", body, {});
    const j = r as { token?: unknown; expire?: unknown };
    if (typeof j?.token !== "string") {
      throw new LapiError("down", 200, "login answer without a token");
    }
    this.#token = j.token;
    const end = typeof j.expire === "string" ? Date.parse(j.expire) : NaN;
    this.#tokenEnd = Number.isFinite(end) ? end : Date.now() + 3_600_000;
    this.logins++;
  }

  /**
   * POST /v1/alerts with a JWT (logging in first when there is none or it is
   * about to end; once more after a 401). Returns the new alert ids.
   */
  async pushAlerts(alerts: AlertBody[]): Promise<string[]> {
    await this.ensureToken();
    try {
      return await this.#postAlerts(alerts);
    } catch (e) {
      if (!(e instanceof LapiError) || e.status !== 401) throw e;
      // A restarted LAPI has a new JWT secret: log in again, once.
      this.#token = null;
      await this.login();
      return await this.#postAlerts(alerts);
    }
  }

  async #postAlerts(alerts: AlertBody[]): Promise<string[]> {
    const r = await this.#call("POST", "/v1/alerts", alerts, {
      authorization: `Bearer ${this.#token}`,
    });
    return Array.isArray(r) ? r.map(String) : [];
  }

  /** GET /v1/decisions/stream (startup: the whole active set); the parsed JSON body. */
  stream(startup: boolean): Promise<unknown> {
    if (this.#o.apiKey === null) throw new LapiError("auth", 0, "no bouncer API key given");
    return this.#call(
      "GET",
      `/v1/decisions/stream?startup=${startup}&scopes=ip,range`,
      undefined,
      { "x-api-key": this.#o.apiKey },
    );
  }

  /** Ends every request in flight and closes the TLS client, if any. */
  close(): void {
    this.#closing.abort();
    this.#client?.close();
  }

  /**
   * One HTTP exchange, the answer's body included, within the timeout or
   * until close(). Its timer is cleared at the end: AbortSignal.timeout's
   * timer ran on after the answer and woke the process once more per
   * request (an idle daemon pulls every second).
   */
  async #exchange(
    url: string,
    init: RequestInit & { client?: Deno.HttpClient },
  ): Promise<{ res: Response; text: string }> {
    const ctl = new AbortController();
    const timer = setTimeout(
      () => ctl.abort(new DOMException("no answer", "TimeoutError")),
      this.#o.timeoutMs ?? 10_000,
    );
    const closing = this.#closing.signal;
    const onClose = () => ctl.abort(closing.reason);
    if (closing.aborted) onClose();
    else closing.addEventListener("abort", onClose, { once: true });
    try {
      let res: Response;
      try {
        res = await fetch(url, { ...init, signal: ctl.signal });
      } catch (e) {
        throw new LapiError("down", 0, unreachable(e));
      }
      return { res, text: await res.text().catch(() => "") };
    } finally {
      clearTimeout(timer);
      closing.removeEventListener("abort", onClose);
    }
  }

  /** One request; the parsed JSON answer (null for an empty body) or a LapiError. */
  async #call(
    method: string,
    path: string,
    body: unknown,
    headers: Record<string, string>,
  ): Promise<unknown> {
    const init = {
      method,
      headers: {
        "user-agent": this.#o.userAgent,
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
        ...headers,
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
      ...(this.#client ? { client: this.#client } : {}),
    };
    let { res, text } = await this.#exchange(this.#base + path, init);
    // 1.4.6 on SQLite answers 500 "database is locked" when another write (a
    // bouncer's last_pull, a push) holds the lock: it is up; try again soon
    // rather than report it down and wait a retry delay (each pull writes, so
    // faster pulls make it more common).
    for (let i = 0; res.status === 500 && /database is locked/i.test(text) && i < 3; i++) {
      await new Promise((r) => setTimeout(r, 20 << i));
      ({ res, text } = await this.#exchange(this.#base + path, init));
    }
    if (res.ok) {
      try {
        return text.trim() === "" ? null : JSON.parse(text);
      } catch {
        throw new LapiError("down", res.status, `${method} ${path}: answer is not JSON`);
      }
    }
    const msg = `${method} ${path.split("?")[0]}: HTTP ${res.status} ${serverMessage(text)}`;
    if (res.status === 401 || res.status === 403) throw new LapiError("auth", res.status, msg);
    // 1.4.6 answers 500 for validation errors ("… in body is required").
    if (
      (res.status >= 400 && res.status < 500) ||
      (res.status === 500 && /in body|validation|invalid|required/i.test(text))
    ) throw new LapiError("rejected", res.status, msg);
    throw new LapiError("down", res.status, msg);
  }
}

/** The "message" of a LAPI error body, or the start of the body. */
function serverMessage(text: string): string {
  try {
    const j = JSON.parse(text) as { message?: unknown };
    if (typeof j?.message === "string") return j.message;
  } catch { /* not JSON */ }
  return text.trim().slice(0, 120);
}

/** One line for a failed connection (refused, timed out, DNS, TLS), from the error and its causes. */
function unreachable(e: unknown): string {
  if (e instanceof DOMException && e.name === "TimeoutError") return "no answer (timed out)";
  const parts: string[] = [];
  for (let x: unknown = e; x instanceof Error && parts.length < 4; x = x.cause) {
    parts.push(x.message);
  }
  const m = parts.join(": ");
  if (/connection refused/i.test(m)) return "connection refused";
  if (/dns error|lookup address/i.test(m)) {
    return `cannot resolve the host (${m.split(": ").pop()})`;
  }
  if (/certificate|tls|handshake/i.test(m)) return `TLS: ${m.replace(/^fetch failed: /i, "")}`;
  return m.replace(/^fetch failed: /i, "").split("\n")[0];
}
