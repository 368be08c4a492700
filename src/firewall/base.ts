/**
 * What every firewall backend shares: the safety guard (protected and invalid
 * addresses never reach a command), the in-memory mirror of the bans that
 * answers "already", the ban cap, and batching of the requests made in one
 * tick into one write to the backend.
 */
import { parseTarget } from "../address.ts";
import type { Ban, BanResult, Firewall, FirewallKind } from "../types.ts";
import { errorText } from "./runner.ts";

/** Options of every backend (see createFirewall). */
export interface FirewallOptions {
  /** True for addresses that must never be banned (local, loopback, allow-listed); checked before any command runs: such a ban resolves "refused". */
  isProtected: (address: string) => boolean;
  /** One clear line per failure, naming the command and its error (the caller prints to stderr and counts a metric). */
  onError: (message: string) => void;
  /** Cap on bans held at once (default 65536); a ban beyond it resolves "failed" with one onError line saying the cap was reached. */
  maxBans: number;
  /** Prefix for running commands inside a namespace in tests, e.g. ["ip","netns","exec","ns1"]; empty in production. */
  commandPrefix?: string[];
  /**
   * Packet paths the bans drop: "input" (traffic to this host) and/or
   * "forward" (routed traffic: containers, a router's clients). When given,
   * init() converges to exactly these (a hook left out is removed). When
   * absent: "input" is installed and a forward hook is left as found, so a
   * `bans`/`unban` subcommand does not undo a daemon's `--hook forward`.
   */
  hooks?: FirewallHook[];
}

/** A packet path a ban can drop: traffic to this host, or traffic routed through it. */
export type FirewallHook = "input" | "forward";

/** The hooks asked for, deduplicated and in fixed order; ["input"] when none are given. */
export function normalizeHooks(hooks: readonly string[] | undefined): FirewallHook[] {
  const out = (["input", "forward"] as const).filter((h) => hooks?.includes(h));
  return out.length > 0 ? out : ["input"];
}

/**
 * When a ban of `ttlSeconds` made now ends: epoch ms on a whole second (the
 * iptables comment holds seconds), null for 0 (until removed). The capture
 * worker uses it too, so the main thread's book matches the rule it wrote.
 */
export function banExpiry(ttlSeconds: number, now = Date.now()): number | null {
  const ttl = Math.ceil(ttlSeconds);
  return ttl > 0 ? (Math.floor(now / 1000) + ttl) * 1000 : null;
}

/** One queued change: add or remove a ban; `done` receives whether it is applied. */
export interface Op {
  add: boolean;
  ban: Ban;
  done: (ok: boolean) => void;
}

/** Base class of the backends: guard, bookkeeping and batching. */
export abstract class BaseFirewall implements Firewall {
  abstract readonly kind: FirewallKind;
  /** Bans in place, by canonical address. */
  protected readonly bans = new Map<string, Ban>();
  readonly #pending = new Map<string, Promise<BanResult>>();
  #queue: Op[] = [];
  #scheduled = false;
  #busy = false;
  protected readonly prefix: string[];
  protected readonly maxBans: number;
  /** The hooks whose traffic the bans drop (see FirewallOptions.hooks). */
  protected readonly hooks: FirewallHook[];
  /** The hooks whose jump/chain init() adds or removes; the others are left as found. */
  protected readonly managedHooks: FirewallHook[];

  constructor(protected readonly opts: FirewallOptions) {
    this.prefix = opts.commandPrefix ?? [];
    this.maxBans = opts.maxBans > 0 ? opts.maxBans : 65536;
    this.hooks = normalizeHooks(opts.hooks);
    this.managedHooks = opts.hooks === undefined ? ["input"] : ["input", "forward"];
  }

  /** Applies one batch; must call every op's `done` exactly once and never throw. */
  protected abstract apply(ops: Op[]): Promise<void>;

  abstract init(): Promise<Ban[]>;
  abstract flush(): Promise<void>;
  abstract close(): Promise<void>;

  /** Reports one failure line; a throwing callback is ignored. */
  protected report(message: string): void {
    try {
      this.opts.onError(message);
    } catch {
      // the caller's reporting must not break the firewall
    }
  }

  /** True when a ban's time is over. */
  protected expired(b: Ban, now = Date.now()): boolean {
    return b.expiresAt !== null && b.expiresAt <= now;
  }

  /**
   * The guard and bookkeeping before a ban: a result to give at once, the
   * pending ban's promise when one for this address is under way, or the Ban
   * to apply.
   */
  #prepare(address: string, ttlSeconds: number): BanResult | Promise<BanResult> | Ban {
    // One address, or a CIDR block (an IPv6 prefix that scanned as one source).
    const parsed = parseTarget(address);
    if (!parsed) {
      this.report(`${this.kind}: refusing to ban ${JSON.stringify(address)}: not an IP address`);
      return "failed";
    }
    const canonical = parsed.text;
    let protectedAddr = true;
    try {
      protectedAddr = this.opts.isProtected(canonical) || this.opts.isProtected(address);
    } catch (e) {
      this.report(`${this.kind}: allow-list check failed for ${canonical}: ${errorText(e)}`);
    }
    if (protectedAddr) return "refused";
    const pending = this.#pending.get(canonical);
    if (pending) return pending.then((r) => (r === "banned" ? "already" : "failed"));
    const have = this.bans.get(canonical);
    if (have && !this.expired(have)) return "already";
    if (have) this.bans.delete(canonical);
    if (!Number.isFinite(ttlSeconds) || ttlSeconds < 0) {
      this.report(`${this.kind}: refusing to ban ${canonical}: bad ban time ${ttlSeconds}`);
      return "failed";
    }
    if (this.bans.size + this.#pending.size >= this.maxBans) {
      this.report(
        `${this.kind}: cannot ban ${canonical}: ban cap reached (${this.maxBans} bans held)`,
      );
      return "failed";
    }
    return { address: canonical, family: parsed.family, expiresAt: banExpiry(ttlSeconds) };
  }

  async ban(address: string, ttlSeconds: number): Promise<BanResult> {
    try {
      const ban = this.#prepare(address, ttlSeconds);
      if (typeof ban === "string" || ban instanceof Promise) return await ban;
      const p = this.enqueue(true, ban).then((ok): BanResult => {
        this.#pending.delete(ban.address);
        if (!ok) return "failed";
        this.bans.set(ban.address, ban);
        this.added(ban);
        return "banned";
      });
      this.#pending.set(ban.address, p);
      return await p;
    } catch (e) {
      this.report(`${this.kind}: ban ${String(address)} failed: ${errorText(e)}`);
      return "failed";
    }
  }

  banNow(address: string, ttlSeconds: number): BanResult | null {
    if (this.#busy || this.#queue.length > 0) return null;
    try {
      const ban = this.#prepare(address, ttlSeconds);
      if (typeof ban === "string") return ban;
      if (ban instanceof Promise || !this.canApplyNow(ban)) return null;
      const applied = this.applyNow(ban);
      if (applied === null) return null;
      if (!applied) return "failed";
      this.bans.set(ban.address, ban);
      this.added(ban);
      return "banned";
    } catch (e) {
      this.report(`${this.kind}: ban ${String(address)} failed: ${errorText(e)}`);
      return "failed";
    }
  }

  adopt(address: string, ttlSeconds: number, expiresAt?: number | null): void {
    const parsed = parseTarget(address);
    if (!parsed) return;
    const canonical = parsed.text;
    const ban: Ban = {
      address: canonical,
      family: parsed.family,
      expiresAt: expiresAt !== undefined ? expiresAt : banExpiry(ttlSeconds),
    };
    this.bans.set(canonical, ban);
    this.added(ban);
  }

  /** True when applyNow() can add this ban on the calling thread. */
  protected canApplyNow(_ban: Ban): boolean {
    return false;
  }

  /**
   * Adds one ban synchronously (only called when canApplyNow()): true when
   * confirmed, false after reporting a failure, null to hand it to the
   * queued path instead.
   */
  protected applyNow(_ban: Ban): boolean | null {
    return false;
  }

  /** Hook called after a ban is confirmed (iptables schedules its expiry). */
  protected added(_ban: Ban): void {}

  async unban(address: string): Promise<boolean> {
    try {
      const parsed = parseTarget(address);
      if (!parsed) {
        this.report(`${this.kind}: cannot unban ${JSON.stringify(address)}: not an IP address`);
        return false;
      }
      const canonical = parsed.text;
      const pending = this.#pending.get(canonical);
      if (pending) await pending;
      const ban = this.bans.get(canonical);
      if (!ban) return false;
      const ok = await this.enqueue(false, ban);
      if (ok) this.bans.delete(canonical);
      return ok;
    } catch (e) {
      this.report(`${this.kind}: unban ${String(address)} failed: ${errorText(e)}`);
      return false;
    }
  }

  list(): Promise<Ban[]> {
    const now = Date.now();
    const out: Ban[] = [];
    for (const b of this.bans.values()) if (!this.expired(b, now)) out.push({ ...b });
    return Promise.resolve(out);
  }

  /** Queues a change; requests made in the same tick go out as one batch. */
  protected enqueue(add: boolean, ban: Ban): Promise<boolean> {
    return new Promise<boolean>((done) => {
      this.#queue.push({ add, ban, done });
      if (!this.#scheduled) {
        this.#scheduled = true;
        queueMicrotask(() => this.#pump());
      }
    });
  }

  async #pump(): Promise<void> {
    this.#scheduled = false;
    if (this.#busy) return;
    this.#busy = true;
    try {
      while (this.#queue.length > 0) {
        const ops = this.#queue;
        this.#queue = [];
        try {
          await this.apply(ops);
        } catch (e) {
          this.report(`${this.kind}: ${errorText(e)}`);
          for (const op of ops) op.done(false);
        }
      }
    } finally {
      this.#busy = false;
    }
  }

  /** Waits until every queued change has been applied. */
  protected async drain(): Promise<void> {
    while (this.#busy || this.#queue.length > 0 || this.#pending.size > 0) {
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}
