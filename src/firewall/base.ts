/**
 * What every firewall backend shares: the safety guard (protected and invalid
 * addresses never reach a command), the in-memory mirror of the bans that
 * answers "already", the ban cap, and batching of the requests made in one
 * tick into one write to the backend.
 */
import { neverBanned, parseAddress, parseTarget } from "../address.ts";
import type { Ban, BanResult, FastBan, Firewall, FirewallKind, KernelState } from "../types.ts";
import { errorText } from "./runner.ts";
import { banExpiry } from "./expiry.ts";

export { banExpiry };

/** Default cap on bans held at once. */
export const DEFAULT_MAX_BANS = 65536;

/** The options with their defaults filled in (a cap of 0 or less: the default). */
export function withDefaults(opts: FirewallOptions): FirewallOptions {
  return { ...opts, maxBans: opts.maxBans > 0 ? opts.maxBans : DEFAULT_MAX_BANS };
}

/** Options of every backend (see createFirewall). */
export interface FirewallOptions {
  /** True for addresses that must never be banned (local, loopback, allow-listed); checked before any command runs: such a ban resolves "refused". */
  isProtected: (address: string) => boolean;
  /** One clear line per failure, naming the command and its error (the caller prints to stderr and counts a metric). */
  onError: (message: string) => void;
  /**
   * Cap on bans held at once (default 65536). A full table never stops a new
   * ban: the oldest ban held is removed to make room (see onEvict).
   */
  maxBans: number;
  /**
   * Called for each ban removed to make room; `notice` is a line to print
   * once per episode of evictions (null for the others of the episode).
   * Without it, the notice goes to onError.
   */
  onEvict?: (ban: Ban, notice: string | null) => void;
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

/** A quiet spell this long between evictions ends an episode (the next one prints its notice again). */
const EVICT_EPISODE_MS = 60_000;

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
  /** When each ban in `bans` was confirmed by this object (performance.now()), for reconcile. */
  readonly #confirmedAt = new Map<string, number>();
  #queue: Op[] = [];
  #scheduled = false;
  #busy = false;
  protected readonly prefix: string[];
  protected readonly maxBans: number;
  /** The hooks whose traffic the bans drop (see FirewallOptions.hooks). */
  protected hooks: FirewallHook[];
  /** The hooks whose jump/chain init() adds or removes; the others are left as found. */
  protected readonly managedHooks: FirewallHook[];

  constructor(protected readonly opts: FirewallOptions) {
    this.prefix = opts.commandPrefix ?? [];
    this.maxBans = opts.maxBans > 0 ? opts.maxBans : 65536;
    this.hooks = normalizeHooks(opts.hooks);
    this.managedHooks = opts.hooks === undefined ? ["input"] : ["input", "forward"];
  }

  /** The hooks bans drop traffic on from the next init() (a reload runs init again). */
  setHooks(hooks: readonly string[]): void {
    this.hooks = normalizeHooks(hooks);
    this.resetSetup();
  }

  /** Forgets that the set-up was done, so the next init() does it again. */
  protected resetSetup(): void {}

  /** Applies one batch; must call every op's `done` exactly once and never throw. */
  protected abstract apply(ops: Op[]): Promise<void>;

  abstract init(): Promise<Ban[]>;
  abstract reconcile(): Promise<KernelState | null>;
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

  /**
   * Why a ban found in the kernel at start must go rather than be kept, or
   * null: restore goes through the same guard as a new ban, so a protected
   * address (loopback, IPv4-mapped, local, allow-listed; a rule an older
   * version or a person added) is removed, with one line saying so.
   */
  protected refusedAtRestore(b: Ban): string | null {
    let refused = true;
    try {
      refused = this.opts.isProtected(b.address);
    } catch (e) {
      this.report(`${this.kind}: allow-list check failed for ${b.address}: ${errorText(e)}`);
      return null; // keep it: removing a ban on a failed check would open a gap
    }
    if (!refused) return null;
    const why = `${this.kind}: removing the ban of ${b.address} found in the firewall: ` +
      "that address is never banned (loopback, IPv4-mapped, multicast, this host or --allow)";
    this.report(why);
    return why;
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
    // Whatever the caller's guard says: loopback, multicast, IPv4-mapped … never.
    if (parsed.prefix === (parsed.family === 4 ? 32 : 128)) {
      const raw = parseAddress(address, true);
      if (raw && neverBanned(raw.family, raw.bytes) !== null) return "refused";
    }
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
    if (this.bans.size + this.#pending.size >= this.maxBans && !this.#evictOldest()) {
      this.report(
        `${this.kind}: cannot ban ${canonical}: ban cap reached (${this.maxBans} bans under way)`,
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
        this.#confirm(ban);
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
      this.#confirm(ban);
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
    this.#confirm(ban);
  }

  #confirm(ban: Ban): void {
    this.bans.set(ban.address, ban);
    this.#confirmedAt.set(ban.address, performance.now());
    this.added(ban);
    // Every path that records a ban holds the cap (the capture thread bans on
    // its own, up to a room that can lag behind; confirmations come out of order).
    this.#holdCap();
  }

  /**
   * Evicts until the bans held are within the cap: each path that records a
   * ban calls it, since bans confirmed out of order (the capture thread's,
   * queued ones) can pass the room made for them in #prepare.
   */
  #holdCap(): void {
    while (this.bans.size > this.maxBans && this.#evictOldest()) { /* one per turn */ }
  }

  /**
   * Makes the kernel's list (read from `readStartedAt`, performance.now())
   * this object's copy, keeping the bans confirmed after the read began (the
   * list may predate them). Returns the copy, expired bans left out.
   */
  protected takeKernelList(found: Ban[], readStartedAt: number): Ban[] {
    const next = new Map<string, Ban>();
    for (const b of found) next.set(b.address, b);
    for (const [a, at] of this.#confirmedAt) {
      const b = this.bans.get(a);
      if (at >= readStartedAt && b) next.set(a, b);
      else if (!next.has(a)) this.#confirmedAt.delete(a);
    }
    this.bans.clear();
    for (const [a, b] of next) this.bans.set(a, b);
    const now = Date.now();
    return [...next.values()].filter((b) => !this.expired(b, now)).map((b) => ({ ...b }));
  }

  fastPath(_banTimeSeconds: number, _room: number): FastBan | null {
    return null;
  }

  get fastLimit(): number {
    return Infinity;
  }

  describePath(): string {
    return "";
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

  #lastEvictAt = -Infinity;
  #episodeEvictions = 0;

  /**
   * Makes room for one ban by removing the oldest held (the first in
   * insertion order: O(1), and with one ban time the first to expire
   * anyway). A full table must never stop new bans: that would be a
   * fail-open, since a spoofed flood can fill it at will. False when every
   * slot is a ban still under way.
   */
  #evictOldest(): boolean {
    const first = this.bans.values().next();
    if (first.done) return false;
    const old = first.value;
    this.bans.delete(old.address);
    this.enqueue(false, old).then((ok) => {
      if (!ok) this.report(`${this.kind}: could not remove ${old.address} to make room`);
    });
    const now = Date.now();
    let notice: string | null = null;
    if (now - this.#lastEvictAt > EVICT_EPISODE_MS) {
      const before = this.#episodeEvictions > 0
        ? ` (${this.#episodeEvictions} evicted in the previous episode)`
        : "";
      notice = `${this.kind}: ban table full (${this.maxBans} bans, --max-bans): ` +
        `the oldest bans make room for new ones${before}`;
      this.#episodeEvictions = 0;
    }
    this.#lastEvictAt = now;
    this.#episodeEvictions++;
    if (this.opts.onEvict) {
      try {
        this.opts.onEvict(old, notice);
      } catch {
        // the caller's reporting must not break the firewall
      }
    } else if (notice) this.report(notice);
    return true;
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
      if (ok) {
        this.bans.delete(canonical);
        this.#confirmedAt.delete(canonical);
      }
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
