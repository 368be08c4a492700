/**
 * The fleet: this host's link to a CrowdSec Local API. It pushes every ban
 * this host makes (as a watcher) and pulls the fleet's ban decisions (as a
 * bouncer) into this host's firewall, through two small interfaces so it
 * never reaches into the rest of the daemon: FleetBans (what it needs from
 * the owner of the bans) and FleetSink (where its counts go).
 *
 * Faults never touch local protection: a push waits in a bounded queue
 * (oldest dropped and counted) and goes out in order once the LAPI answers;
 * a pull after a failure asks for the whole active set again (startup=true);
 * one stderr line per change of state (unreachable, back, credentials
 * refused), never one per retry. When and how it pulls (the fixed grid, the
 * shorter one during a campaign, the full pulls that catch what the LAPI's
 * stream cursor skips): src/fleet/pace.ts.
 */
import { alertFor, type FleetBan, ORIGIN } from "./alert.ts";
import { type Decision, parseStream } from "./decisions.ts";
import { LapiClient, LapiError, type LapiOptions } from "./lapi.ts";
import { PullPace } from "./pace.ts";

export type { FleetBan } from "./alert.ts";

/** One ban the fleet asks this host to apply. */
export interface FleetAdd {
  /** Canonical address or CIDR. */
  target: string;
  /** Remaining time, whole seconds (≥ 1). */
  seconds: number;
  /** The decision's origin (cscli, crowdsec, scanblocker, CAPI, …). */
  origin: string;
  scenario: string;
}

/** What the fleet needs from the owner of this host's bans. */
export interface FleetBans {
  /**
   * Applies one batch: removes first, then adds (a target can be in both when
   * a decision was replaced). An add for a target already banned with a
   * shorter end extends it. Resolves with the targets that could not be
   * applied (e.g. a CIDR on a backend without ranges), or nothing.
   */
  apply(adds: FleetAdd[], removes: string[]): Promise<string[] | void>;
  /** True for a target that must never be banned here: allow-list, this host, lockout guard. */
  isProtected(target: string): boolean;
}

/** Push results counted. */
export type PushResult = "sent" | "rejected" | "dropped" | "expired";
/** Decision actions counted. */
export type DecisionAction = "applied" | "removed" | "refused" | "failed" | "own";

/** Where the fleet's counts go (metrics). */
export interface FleetSink {
  pushed(result: PushResult, n: number): void;
  decision(action: DecisionAction, origin: string, n: number): void;
}

/** The fleet's settings beyond the LAPI connection. */
export interface FleetOptions extends Omit<LapiOptions, "userAgent"> {
  /** Program version (user agent and scenario version). */
  version: string;
  /** Pull interval, ms. */
  pollMs: number;
  /** A full (startup=true) pull this often, ms; max(60 s, 60 polls) by default (tests shorten it). */
  fullPullMs?: number;
  /** Origins whose decisions are applied; null = all. */
  origins: string[] | null;
  /** Alerts waiting at most; beyond it the oldest is dropped. */
  queueMax?: number;
  /** One line to stderr. */
  warn: (line: string) => void;
  sink?: FleetSink;
}

/** The state /healthz shows. */
export interface FleetStatus {
  /** "up", "down" or "starting" (no answer yet). */
  lapi: string;
  /** "ok", "off", "starting" or what is wrong ("credentials refused"). */
  push: string;
  pull: string;
  /** Seconds since the last successful pull; null before the first. */
  lastPullAgeSeconds: number | null;
  /** Alerts waiting to be pushed. */
  queued: number;
}

/** Alerts per POST. */
const BATCH = 100;
/** Retry delays after a failure, ms. */
const RETRY_MIN_MS = 250, RETRY_MAX_MS = 5000;
/** Own bans remembered before the expired ones are swept (a pull sweeps them too). */
const OWN_MAX = 100_000;
/** Targets remembered as refused (logged once each) at most. */
const REFUSED_LOG_MAX = 10_000;

/** A live link to one LAPI; start() once, stop() at the end. */
export class Fleet {
  readonly #o: FleetOptions;
  readonly #bans: FleetBans;
  readonly #lapi: LapiClient;
  readonly #queueMax: number;
  #queue: FleetBan[] = [];
  #sending = false;
  /** The machine's credentials were accepted once (a login at start checks them). */
  #verified = false;
  #pushTimer: ReturnType<typeof setTimeout> | undefined;
  #pushDelay = RETRY_MIN_MS;
  /** A send is queued for the end of the current task (push()). */
  #pushSoon = false;
  #pullTimer: ReturnType<typeof setTimeout> | undefined;
  /** When the timer's pull is due (performance.now()). */
  #pullDue = Infinity;
  #pullDelay = 0;
  #pace: PullPace | null = null;
  /** The highest decision id any pull brought (to tell a decision the deltas missed). */
  #maxId = -1;
  #pulling: Promise<void> | null = null;
  #needStartup = true;
  #lastPull: number | null = null;
  #stopped = false;
  /** null: no answer yet; then whether the last call reached the LAPI. */
  #up: boolean | null = null;
  #downSince = 0;
  #authBad = { push: false, pull: false };
  /** Bans this host pushed: target → end (epoch ms), so they are not applied twice. */
  #own = new Map<string, number>();
  /** Decisions applied: target → decision id → end (epoch ms). */
  #applied = new Map<string, Map<number, number>>();
  /** Origin of the latest decision applied per target (for the removed count). */
  #originOf = new Map<string, string>();
  /** Decision ids refused (protected targets) or recognised as this host's own. */
  #skipped = new Set<number>();
  #refusedLogged = new Set<string>();

  constructor(o: FleetOptions, bans: FleetBans) {
    this.#o = o;
    this.#bans = bans;
    this.#queueMax = o.queueMax ?? 10_000;
    this.#lapi = new LapiClient({ ...o, userAgent: `scanblocker/${o.version}` });
  }

  /** Logins made so far (a JWT renewal shows as one more). */
  get logins(): number {
    return this.#lapi.logins;
  }

  /** Begins pulling (at once, startup=true) and pushing what is queued. */
  start(): void {
    const parts = [
      this.#o.password !== null ? `machine "${this.#o.machine}" (push)` : null,
      this.#o.apiKey !== null
        ? `bouncer key (pull every ${this.#o.pollMs / 1000}s` +
          `, origins ${this.#o.origins?.join(",") ?? "all"})`
        : null,
    ].filter(Boolean);
    this.#o.warn(`fleet: LAPI ${this.#o.url} as ${parts.join(" and ")}`);
    if (this.#o.apiKey !== null) {
      const now = performance.now();
      this.#pace = new PullPace({ pollMs: this.#o.pollMs, fullEveryMs: this.#o.fullPullMs }, now);
      this.#schedulePull(now);
    }
    this.#kickPush(0);
  }

  /**
   * Queues one ban this host made; returns at once (never awaited on the ban
   * path). When the queue is full the oldest waiting alert is dropped.
   */
  push(ban: FleetBan): void {
    if (this.#stopped) return;
    this.#campaign(performance.now());
    if (this.#o.password === null) return;
    if (this.#own.size >= OWN_MAX) {
      const now = Date.now();
      for (const [t, end] of this.#own) if (end <= now) this.#own.delete(t);
    }
    if (ban.seconds > 0) this.#own.set(ban.target, ban.at + ban.seconds * 1000);
    else this.#own.set(ban.target, Infinity);
    if (this.#queue.length >= this.#queueMax) {
      this.#queue.shift();
      this.#count("dropped", 1);
    }
    this.#queue.push(ban);
    // Sent at the end of this task, with whatever else it queues (the scans of
    // one capture batch go together); a timer would add a millisecond or more
    // to the fleet's fan-out.
    if (!this.#sending && this.#pushTimer === undefined && !this.#pushSoon) {
      this.#pushSoon = true;
      queueMicrotask(() => {
        this.#pushSoon = false;
        if (this.#pushTimer === undefined) void this.#sendOnce();
      });
    }
  }

  /** What /healthz reports. */
  status(): FleetStatus {
    return {
      lapi: this.#up === null ? "starting" : this.#up ? "up" : "down",
      push: this.#o.password === null
        ? "off"
        : this.#authBad.push
        ? "credentials refused"
        : this.#up === null
        ? "starting"
        : "ok",
      pull: this.#o.apiKey === null
        ? "off"
        : this.#authBad.pull
        ? "key refused"
        : this.#lastPull === null
        ? "starting"
        : "ok",
      lastPullAgeSeconds: this.#lastPull === null ? null : (Date.now() - this.#lastPull) / 1000,
      queued: this.#queue.length,
    };
  }

  /** True when the last call reached the LAPI. */
  get up(): boolean {
    return this.#up === true;
  }

  /** Runs one pull now (tests, benches); resolves when its batch is applied. */
  pullNow(): Promise<void> {
    return this.#pull();
  }

  /** Stops the timers; gives queued alerts up to `graceMs` to go out. */
  async stop(graceMs = 2000): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#pullTimer);
    clearTimeout(this.#pushTimer);
    this.#pushTimer = undefined;
    const until = Date.now() + graceMs;
    while ((this.#sending || (this.#queue.length > 0 && this.#up)) && Date.now() < until) {
      if (!this.#sending) void this.#sendOnce();
      await new Promise((r) => setTimeout(r, 20));
    }
    // Whatever is still in flight ends now (a LAPI that does not answer must not hold the exit).
    this.#lapi.close();
    await this.#pulling;
  }

  #count(result: PushResult, n: number): void {
    this.#o.sink?.pushed(result, n);
  }

  /** Records that the LAPI answered or not; one line per change. */
  #reached(ok: boolean, why = ""): void {
    if (this.#stopped) return;
    if (ok) {
      if (this.#up === false) {
        const s = Math.round((Date.now() - this.#downSince) / 100) / 10;
        this.#o.warn(`fleet: LAPI ${this.#o.url} is back after ${s}s`);
        // Whatever waited goes out now, and the pull catches up.
        this.#kickPush(0);
      }
      this.#up = true;
      return;
    }
    if (this.#up !== false) {
      this.#downSince = Date.now();
      this.#o.warn(
        `fleet: LAPI ${this.#o.url} unreachable (${why}); local detection and bans go on, ` +
          `alerts wait in a queue (${this.#queue.length} now, at most ${this.#queueMax})`,
      );
    }
    this.#up = false;
  }

  /** Credentials refused or accepted again; one line per change. */
  #auth(channel: "push" | "pull", ok: boolean, why = ""): void {
    if (this.#stopped) return;
    if (ok === !this.#authBad[channel]) return;
    this.#authBad[channel] = !ok;
    const what = channel === "push"
      ? `machine "${this.#o.machine}" (--lapi-password-file)`
      : "the bouncer key (--lapi-key-file)";
    this.#o.warn(
      ok
        ? `fleet: LAPI ${this.#o.url} accepts ${what} again`
        : `fleet: LAPI ${this.#o.url} refused ${what}: ${why}; ` +
          (channel === "push" ? "bans are not shared" : "the fleet's decisions are not applied"),
    );
  }

  #kickPush(delayMs: number): void {
    if (this.#stopped || this.#o.password === null) return;
    clearTimeout(this.#pushTimer);
    this.#pushTimer = setTimeout(() => {
      this.#pushTimer = undefined;
      void this.#sendOnce();
    }, delayMs);
  }

  /** Sends the oldest batch; loops while alerts wait and the LAPI takes them. */
  async #sendOnce(): Promise<void> {
    if (this.#sending) return;
    this.#sending = true;
    try {
      // At start, log in with nothing to send: wrong credentials show at once.
      if (!this.#verified) {
        try {
          await this.#lapi.ensureToken();
          this.#verified = true;
          this.#reached(true);
          this.#auth("push", true);
        } catch (e) {
          if (!(e instanceof LapiError)) throw e;
          this.#pushFailed(e);
          return;
        }
      }
      while (this.#queue.length > 0) {
        const now = Date.now();
        // A ban that ended while it waited is not worth a decision.
        const live = this.#queue.filter((b) => b.seconds === 0 || b.at + b.seconds * 1000 > now);
        if (live.length < this.#queue.length) {
          this.#count("expired", this.#queue.length - live.length);
        }
        this.#queue = live;
        const batch = this.#queue.slice(0, BATCH);
        if (batch.length === 0) break;
        try {
          await this.#lapi.pushAlerts(
            batch.map((b) => alertFor(b, this.#o.machine, this.#o.version)),
          );
          this.#count("sent", batch.length);
          this.#reached(true);
          this.#auth("push", true);
          this.#pushDelay = RETRY_MIN_MS;
        } catch (e) {
          if (!(e instanceof LapiError)) throw e;
          if (e.kind === "rejected") {
            this.#reached(true);
            this.#count("rejected", batch.length);
            this.#o.warn(`fleet: LAPI refused ${batch.length} alert(s): ${e.message}`);
          } else {
            this.#pushFailed(e);
            return;
          }
        }
        // The batch is done (sent or refused): take it off the queue (push()
        // may have dropped some of it meanwhile; those were counted).
        this.#queue = this.#queue.filter((b) => !batch.includes(b));
      }
    } catch (e) {
      this.#o.warn(`fleet: push failed: ${e instanceof Error ? e.message : e}`);
      this.#kickPush(RETRY_MAX_MS);
    } finally {
      this.#sending = false;
    }
  }

  /** The LAPI is down or refused the machine: say so once, try again later. */
  #pushFailed(e: LapiError): void {
    if (e.kind === "down") this.#reached(false, e.message);
    else {
      this.#reached(true);
      this.#auth("push", false, e.message);
    }
    this.#kickPush(this.#pushDelay);
    this.#pushDelay = Math.min(RETRY_MAX_MS, this.#pushDelay * 2);
  }

  /**
   * The next pull at `due` (performance.now() time), where PullPace puts it:
   * on a steady grid of --lapi-poll from the first (a quarter of it during a
   * campaign), so neither a pull's own time nor a late timer (a few ms on a
   * busy host) shifts the later ones. A pull that ran past the next grid
   * point is followed by the first point after it (no catch-up burst);
   * after a failure the retry delay counts from the failure.
   */
  #schedulePull(due: number): void {
    if (this.#stopped) return;
    clearTimeout(this.#pullTimer);
    this.#pullDue = due;
    this.#pullTimer = setTimeout(async () => {
      this.#pullDue = Infinity;
      await this.#pull();
      const now = performance.now(), pace = this.#pace!;
      this.#schedulePull(this.#pullDelay ? pace.retry(now, this.#pullDelay) : pace.next(now));
    }, Math.max(0, due - performance.now()));
  }

  /**
   * A sign of a campaign (a delta brought news, or this host banned): pull on
   * the shorter grid for a while; the timer moves up when it was set later.
   */
  #campaign(at: number): void {
    const pace = this.#pace;
    if (!pace || this.#stopped) return;
    pace.campaign(at);
    // A pull is running (it schedules the next), or pulls are failing (their back-off stands).
    if (this.#pullDue === Infinity || this.#pullDelay) return;
    const due = pace.next(performance.now());
    if (due < this.#pullDue - 1) this.#schedulePull(due);
  }

  /** One pull and the batch it gives; failures only change state. */
  #pull(): Promise<void> {
    if (this.#pulling) return this.#pulling;
    const p = (async () => {
      const t0 = performance.now();
      const first = this.#needStartup;
      const startup = first || (this.#pace?.wantFull(t0) ?? false);
      try {
        const answer = parseStream(await this.#lapi.stream(startup));
        this.#needStartup = false;
        this.#lastPull = Date.now();
        this.#pullDelay = 0;
        if (startup) this.#pace?.fullDone(t0, performance.now());
        this.#reached(true);
        this.#auth("pull", true);
        const taken = await this.#applyAnswer(answer.added, answer.deleted, startup);
        if (!startup && taken.length > 0) this.#campaign(t0);
        // A periodic full pull bringing what an earlier delta should have: the cursor race.
        const missed = first ? 0 : taken.filter((d) => d.id < this.#maxId).length;
        for (const d of answer.added) if (d.id > this.#maxId) this.#maxId = d.id;
        if (startup && missed > 0) {
          this.#o.warn(
            `fleet: a full pull brought ${missed} decision(s) no delta pull had (the LAPI's ` +
              `stream cursor skips a decision written while a pull runs); applied now`,
          );
        }
      } catch (e) {
        // Whatever was missed meanwhile comes with the whole set next time.
        this.#needStartup = true;
        this.#pullDelay = Math.min(
          Math.max(this.#o.pollMs, RETRY_MAX_MS),
          Math.max(this.#o.pollMs, (this.#pullDelay || RETRY_MIN_MS) * 2),
        );
        if (e instanceof LapiError && e.kind === "auth") {
          this.#reached(true);
          this.#auth("pull", false, e.message);
        } else if (e instanceof LapiError && e.kind === "down") {
          this.#reached(false, e.message);
        } else {
          this.#reached(true);
          this.#o.warn(`fleet: pull failed: ${e instanceof Error ? e.message : e}`);
        }
      }
    })();
    this.#pulling = p;
    return p.finally(() => (this.#pulling = null));
  }

  /**
   * Turns one stream answer into one batch for FleetBans. With `startup` the
   * answer is the whole active set: what was applied and is not in it any
   * more is removed. Returns the decisions taken (applied in the kernel).
   */
  async #applyAnswer(
    added: Decision[],
    deleted: Decision[],
    startup: boolean,
  ): Promise<Decision[]> {
    const now = Date.now();
    for (const [t, end] of this.#own) if (end <= now) this.#own.delete(t);
    const adds = new Map<string, { add: FleetAdd; origin: string }>();
    const removes = new Map<string, string>();
    const counts = new Map<string, number>();
    const count = (action: DecisionAction, origin: string) => {
      const k = `${action}\u0000${origin}`;
      counts.set(k, (counts.get(k) ?? 0) + 1);
    };

    if (startup) {
      const live = new Set(added.map((d) => d.id));
      for (const id of this.#skipped) if (!live.has(id)) this.#skipped.delete(id);
      for (const [target, ids] of this.#applied) {
        for (const id of ids.keys()) if (!live.has(id)) ids.delete(id);
        if (ids.size === 0) {
          this.#applied.delete(target);
          removes.set(target, this.#originOf.get(target) ?? "unknown");
          this.#originOf.delete(target);
        }
      }
    }
    for (const d of deleted) {
      if (this.#skipped.delete(d.id)) continue;
      const ids = this.#applied.get(d.target);
      if (!ids || !ids.delete(d.id)) continue; // unknown or repeated: nothing to do
      for (const [id, end] of ids) if (end <= now) ids.delete(id);
      if (ids.size === 0) {
        this.#applied.delete(d.target);
        this.#originOf.delete(d.target);
        removes.set(d.target, d.origin);
        adds.delete(d.target);
      }
    }
    const accepted: Decision[] = [];
    for (const d of added) if (this.#take(d, now, adds, count)) accepted.push(d);
    for (const origin of removes.values()) if (origin) count("removed", origin);

    let failed = new Set<string>();
    if (adds.size > 0 || removes.size > 0) {
      try {
        const f = await this.#bans.apply([...adds.values()].map((a) => a.add), [...removes.keys()]);
        failed = new Set(f ?? []);
      } catch (e) {
        this.#o.warn(`fleet: applying decisions failed: ${e instanceof Error ? e.message : e}`);
        failed = new Set(adds.keys());
      }
    }
    const taken: Decision[] = [];
    for (const d of accepted) {
      if (!failed.has(d.target)) {
        count("applied", d.origin);
        taken.push(d);
      } else {
        // Not in the kernel: forget it, so a later startup pull tries again.
        this.#applied.delete(d.target);
        this.#originOf.delete(d.target);
        count("failed", d.origin);
      }
    }
    for (const [k, n] of counts) {
      const [action, origin] = k.split("\u0000");
      if (n > 0) this.#o.sink?.decision(action as DecisionAction, origin, n);
    }
    return taken;
  }

  /** Files one new decision: refused, this host's own, or taken (true; added to the batch when it bans longer). */
  #take(
    d: Decision,
    now: number,
    adds: Map<string, { add: FleetAdd; origin: string }>,
    count: (action: DecisionAction, origin: string) => void,
  ): boolean {
    if (d.remainingMs <= 0 || this.#skipped.has(d.id)) return false;
    if (this.#o.origins !== null && !this.#o.origins.includes(d.origin)) return false;
    const end = now + d.remainingMs;
    const ids = this.#applied.get(d.target);
    if (ids?.has(d.id)) return false; // seen before (a startup pull repeats everything)
    const ownEnd = this.#own.get(d.target);
    if (d.origin === ORIGIN && ownEnd !== undefined && ownEnd >= end - 2000) {
      // Our own ban coming back: the kernel has it already.
      this.#skipped.add(d.id);
      count("own", d.origin);
      return false;
    }
    let isProtected = true;
    try {
      isProtected = this.#bans.isProtected(d.target);
    } catch { /* protected when in doubt */ }
    if (isProtected) {
      this.#skipped.add(d.id);
      count("refused", d.origin);
      if (!this.#refusedLogged.has(d.target)) {
        if (this.#refusedLogged.size >= REFUSED_LOG_MAX) this.#refusedLogged.clear();
        this.#refusedLogged.add(d.target);
        this.#o.warn(
          `fleet: refusing LAPI decision ${d.id} (${d.origin}, ${d.scenario}): ${d.target} ` +
            `is protected here (this host, --allow or lockout guard)`,
        );
      }
      return false;
    }
    const before = ids ? Math.max(...ids.values()) : -Infinity;
    if (ids) ids.set(d.id, end);
    else this.#applied.set(d.target, new Map([[d.id, end]]));
    this.#originOf.set(d.target, d.origin);
    // A longer decision for a target already banned extends the ban.
    if (end > before + 1000) {
      adds.set(d.target, {
        add: {
          target: d.target,
          seconds: Math.max(1, Math.ceil(d.remainingMs / 1000)),
          origin: d.origin,
          scenario: d.scenario,
        },
        origin: d.origin,
      });
    }
    return true;
  }
}
