/**
 * The one owner of every ban. Local detections, the bans restored at start,
 * the bans the capture thread made itself and (later) other hosts' decisions
 * all go through here: the book of what is banned, until when, from where
 * and why; the expiry rule; the room left under the cap; what a failure
 * does (the source is forgotten by the detector, so it is tried again); and
 * reconciliation with the kernel, which is the truth: every
 * RECONCILE_MS the backend re-reads its chain or set, puts back a hook or
 * chain removed from outside, and the book takes the kernel's list, so a ban
 * removed with `scanblocker unban`, `nft flush set` or `iptables -F` is
 * forgotten and the next scan from that source is banned again.
 */
import type { ScanReport } from "../detect/pipeline.ts";
import { banExpiry } from "../firewall/expiry.ts";
import type { FastResult } from "../firewall/fastpath.ts";
import type { BanResult, FastBan, Firewall } from "../types.ts";
import { BanBook, type BookEntry } from "./book.ts";
import { LineLimiter } from "../report/ratelimit.ts";
import type { BanTiming } from "../report/log.ts";

/**
 * How often the kernel is re-read: 5 s. A ban removed from outside, or a
 * hook removed, is then repaired within 5 s (a scan from the unbanned source
 * learns at most what it can in that time), while a read costs one `nft -j`
 * or two `iptables -S` child processes (~5-10 ms with a few bans). With many
 * bans a read costs more (65,536 bans: a few hundred ms): the period then
 * grows so that reading takes at most 2 % of the time (RECONCILE_SHARE).
 * With nftables and iptables-nft a read first asks nf_tables' generation
 * (one netlink round trip) and lists the kernel only when something was
 * committed since the last list, or a minute has passed
 * (firewall/generation.ts): an idle daemon spawns one child a minute.
 */
export const RECONCILE_MS = 5000;
const RECONCILE_SHARE = 0.02;

/** The log lines the owner writes (the event log). */
export interface BanLog {
  banned(ms: number, address: string, timing?: BanTiming): void;
  alreadyBanned(ms: number, address: string, limited: boolean): void;
  flush(endMs?: number): void;
}

/** The counters the owner moves (a subset of the Prometheus metrics). */
export interface BanMetrics {
  scansDetected: { inc(): void };
  detectionToBan: { observe(seconds: number): void };
  bans: { inc(labels: { backend: string; result: string }): void };
  activeBans: { set(n: number): void };
  firewallErrors: { inc(): void };
  firewallRepairs: { inc(n?: number): void };
  bansLost: { inc(n?: number): void };
  bansEvicted: { inc(n?: number): void };
}

/** The capture side as the owner sees it: the detector's memory, the thread's copy of the book. */
export interface BanCapture {
  /** A ban failed: the source's next probes count again. */
  forget(address: string): void;
  /** Bans made or found (replace: the whole list), and how many the thread may still add. */
  bans(change: { add?: string[]; replace?: string[]; room?: number }): void;
}

/** What the capture thread did about a scan before the owner heard of it. */
export interface ScanPre {
  /** When the engine reported it (CLOCK_REALTIME, epoch ms). */
  detectedAt: number;
  /** null: not banned there; else the fast path's outcome. */
  ban: FastResult;
}

/** Settings and collaborators of the owner. */
export interface BansOptions {
  fw: Firewall;
  /** Ban time in seconds, 0 = until removed. */
  banTime: number;
  maxBans: number;
  /** Live capture (wall-clock log times) or a replayed file (packet times). */
  live: boolean;
  log: BanLog;
  metrics: BanMetrics;
  /** One line on stderr. */
  warn: (line: string) => void;
  /** Wall-clock epoch ms with sub-millisecond resolution. */
  now: () => number;
  /**
   * Bans are made and claimed ("banned", "already"): by default only with a
   * firewall; with `none` nothing is banned, and no line claims it was.
   */
  claims?: boolean;
}

/** The owner of every ban; see the module comment. */
export class Bans {
  readonly #o: BansOptions;
  #book = new BanBook();
  #capture: BanCapture | null = null;
  /** The detector's memory, for a failed ban in an offline run (no capture thread). */
  #forget: (address: string) => void = () => {};
  readonly #pending = new Set<Promise<void>>();
  #state = "starting";
  #reconcileAt = 0;
  #reconciling = false;
  /** Bans to tell the capture thread about, sent together (a fleet batch is thousands). */
  #toCapture: string[] = [];
  /** Scanners banned before the scan that found them: only they are "already" banned. */
  readonly #wasBanned = new Set<string>();
  #replacing = false;
  /** Called for every ban this host made itself (the fleet pushes them). */
  onLocalBan: (scan: ScanReport) => void = () => {};

  /** Failed-ban and firewall-error lines: a few per 10 s of each, then a count (ban cap, dead firewall). */
  readonly #lines: LineLimiter;

  constructor(o: BansOptions) {
    this.#o = o;
    this.#lines = new LineLimiter({ burst: 5, intervalMs: 10_000, write: o.warn, now: o.now });
  }

  /** The firewall's state now, for /healthz: "ok", or "error: …" until the next success. */
  get state(): string {
    return this.#state;
  }

  /** Bans held. */
  get size(): number {
    return this.#book.size;
  }

  /** The book's entries, for `status` and the like. */
  entries(): BookEntry[] {
    return this.#book.entries();
  }

  /** Sets up the firewall and takes what it already holds; returns how many bans were restored. */
  async start(): Promise<number> {
    const existing = await this.#o.fw.init();
    this.#book = new BanBook(existing, "restored");
    if (this.#state === "starting") this.#state = "ok";
    this.#o.metrics.activeBans.set(this.#book.size);
    return existing.length;
  }

  /** Connects the capture thread; returns what it needs to start: the bans held and its fast path. */
  attachCapture(c: BanCapture): { banned: string[]; fast: FastBan | null } {
    this.#capture = c;
    return {
      banned: this.#book.entries().map((e) => e.address),
      fast: this.#o.fw.fastPath(this.#o.banTime, this.room()),
    };
  }

  /** Where an offline run's detector forgets a source whose ban failed. */
  set forgetSource(f: (address: string) => void) {
    this.#forget = f;
  }

  /**
   * Bans the capture thread may still add itself. With a fast path of its own
   * limit (iptables rules: the chain is rebuilt per change) the cap and that
   * limit; with sets never 0, since the firewall makes room at the cap by
   * evicting the oldest ban, so a full table bans as fast as an empty one.
   */
  room(): number {
    const o = this.#o;
    if (o.fw.fastLimit === Infinity) return Math.max(256, o.maxBans - this.#book.size);
    return Math.max(0, Math.min(o.maxBans, o.fw.fastLimit) - this.#book.size);
  }

  /** A firewall failure (from the backend's onError): one line, a count, and the state. */
  failure(message: string): void {
    this.#state = `error: ${message}`;
    this.#o.metrics.firewallErrors.inc();
    this.#lines.line("firewall", message, "firewall error");
  }

  /**
   * A scan this host detected: ban its source (unless it is banned already),
   * or take the capture thread's ban of it.
   */
  onScan(scan: ScanReport, pre?: ScanPre): void {
    const o = this.#o;
    o.metrics.scansDetected.inc();
    if (!(o.claims ?? o.fw.kind !== "none")) return;
    if (this.#book.has(scan.src, o.now())) {
      this.#wasBanned.add(scan.src);
      o.log.alreadyBanned(scan.ms, scan.src, false);
      o.metrics.bans.inc({ backend: o.fw.kind, result: "already" });
      return;
    }
    const detectedAt = pre?.detectedAt ?? o.now();
    const reason = `port scan: ${scan.ports.length} ports${scan.slow ? " (slow rule)" : ""}`;
    const fast = pre?.ban ?? null;
    this.#book.add(
      scan.src,
      fast?.ok ? fast.expiresAt : banExpiry(o.banTime, detectedAt),
      "local",
      reason,
    );
    const settle = (result: BanResult, at = o.now(), logged = false) =>
      this.#settle(scan, result, at, detectedAt, logged);
    if (fast?.ok) {
      // The capture thread put it into the kernel already.
      o.fw.adopt(scan.src, o.banTime, fast.expiresAt);
      settle("banned", fast.at, true); // the capture thread wrote the line
      return;
    }
    if (fast) {
      this.failure(
        `${o.fw.kind}: ban ${scan.src}: ${fast.error}; trying again from the main thread`,
      );
    }
    // The synchronous path (nftables over netlink) bans before the rest of
    // the batch is even looked at; the others confirm later.
    const now = o.fw.banNow(scan.src, o.banTime);
    if (now !== null) return settle(now);
    const p = o.fw.ban(scan.src, o.banTime).then((result) => {
      settle(result);
      o.log.flush();
    });
    this.#pending.add(p);
    p.finally(() => this.#pending.delete(p));
  }

  /**
   * A full table never stops a new ban (a spoofed flood would otherwise fill
   * it and let every later scanner through for the ban time): the firewall
   * removes its oldest ban to make room (src/firewall/base.ts) and tells the
   * owner here, which forgets it, counts it, and prints the episode's one line.
   */
  evicted(address: string, notice: string | null): void {
    this.#book.delete(address);
    this.#o.metrics.bansEvicted.inc();
    this.#o.metrics.activeBans.set(this.#book.size);
    if (notice !== null) this.#o.warn(notice);
  }

  #settle(
    scan: ScanReport,
    result: BanResult,
    at: number,
    detectedAt: number,
    logged = false,
  ): void {
    const o = this.#o;
    const when = o.live ? Date.now() : scan.ms;
    if (result === "banned") {
      if (this.#state.startsWith("error")) this.#state = "ok";
      // Packet time of the threshold probe to the firewall's confirmation.
      const latencyMs = Math.max(0, at - scan.ms);
      o.metrics.detectionToBan.observe(latencyMs / 1000);
      if (!logged) {
        o.log.banned(
          when,
          scan.src,
          o.live ? { latencyMs, detectMs: detectedAt - scan.ms } : undefined,
        );
      }
      this.#tellCapture(scan.src);
      this.onLocalBan(scan);
    } else if (result === "already") {
      o.log.alreadyBanned(when, scan.src, false);
    } else {
      this.#book.delete(scan.src);
      if (this.#capture) this.#capture.forget(scan.src);
      else this.#forget(scan.src);
      this.#lines.line(
        "ban-failed",
        `IP ${scan.src} could not be banned (${result}, firewall ${o.fw.kind})`,
        "failed-ban",
      );
    }
    o.metrics.bans.inc({ backend: o.fw.kind, result: result === "refused" ? "failed" : result });
    o.metrics.activeBans.set(this.#book.size);
  }

  /** True when `target` is banned now. */
  has(target: string): boolean {
    return this.#book.has(target, this.#o.now());
  }

  /**
   * A ban decided elsewhere (another host, through the fleet): through the
   * same guard, cap and firewall as a local one, booked with its origin.
   */
  async banFrom(origin: "fleet", target: string, seconds: number, reason = ""): Promise<BanResult> {
    const o = this.#o;
    const result = await o.fw.ban(target, seconds);
    if (result === "banned") {
      this.#book.add(target, banExpiry(seconds, Date.now()), origin, reason);
      this.#tellCapture(target);
      o.metrics.activeBans.set(this.#book.size);
    }
    o.metrics.bans.inc({ backend: o.fw.kind, result: result === "refused" ? "failed" : result });
    return result;
  }

  /** Lifts a ban (a fleet deletion); true when it existed and is gone. */
  async unban(target: string): Promise<boolean> {
    const ok = await this.#o.fw.unban(target);
    if (ok) {
      this.#book.delete(target);
      this.#o.metrics.activeBans.set(this.#book.size);
      if (this.#capture && !this.#replacing) {
        // One whole list for every unban of this turn.
        this.#replacing = true;
        queueMicrotask(() => {
          this.#replacing = false;
          const replace = this.#book.entries().map((e) => e.address);
          this.#capture?.bans({ replace, room: this.room() });
        });
      }
    }
    return ok;
  }

  /** Tells the capture thread of new bans, all those of this turn in one message. */
  #tellCapture(address: string): void {
    if (!this.#capture) return;
    if (this.#toCapture.length === 0) {
      queueMicrotask(() => {
        const add = this.#toCapture;
        this.#toCapture = [];
        this.#capture?.bans({ add, room: this.room() });
      });
    }
    this.#toCapture.push(address);
  }

  /** A source seen again after its scan (offline summary): "already" if it is banned. */
  repeat(ms: number, src: string): void {
    if (this.#wasBanned.has(src) && this.#book.has(src, this.#o.now())) {
      this.#o.log.alreadyBanned(ms, src, true);
    }
  }

  /**
   * Once a second: drops ended bans, and every RECONCILE_MS (longer when a
   * read is slow) re-reads the kernel; see the module comment.
   */
  tick(now = Date.now()): void {
    this.#lines.flush();
    this.#book.prune(now);
    this.#o.metrics.activeBans.set(this.#book.size);
    if (this.#o.fw.kind !== "none" && !this.#reconciling && now >= this.#reconcileAt) {
      this.reconcileLater();
    }
  }

  /**
   * reconcile() for callers that do not await it (the tick, a reload): a
   * throw (none is known: the backends report their own failures) is a
   * firewall failure, not an unhandled rejection that would end the daemon.
   */
  reconcileLater(): void {
    this.reconcile().catch((e) =>
      this.failure(`reading the firewall back failed: ${e instanceof Error ? e.message : e}`)
    );
  }

  /** Re-reads the kernel now; resolves once the book has taken its list. */
  async reconcile(): Promise<void> {
    if (this.#reconciling) return;
    this.#reconciling = true;
    const o = this.#o;
    const readAt = performance.now();
    try {
      const k = await o.fw.reconcile();
      const took = performance.now() - readAt;
      this.#reconcileAt = Date.now() + Math.max(RECONCILE_MS, took / RECONCILE_SHARE);
      if (k === null) return; // the backend reported why (failure())
      // Nothing was committed since the last read, which the book already
      // took: with 10,000 bans, taking the list again and sending it to the
      // capture thread every 5 s was most of an idle daemon's CPU.
      if (k.unchanged) {
        this.#state = "ok";
        return;
      }
      if (k.repaired.length > 0) {
        o.metrics.firewallRepairs.inc(k.repaired.length);
        o.warn(`${o.fw.kind}: removed from outside and put back: ${k.repaired.join(", ")}`);
      }
      const now = Date.now();
      // Bans that ended by themselves are not "removed from outside".
      const lost = this.#book.replace(k.bans, readAt)
        .filter((e) => e.expiresAt === null || e.expiresAt > now + 2000);
      if (lost.length > 0) o.metrics.bansLost.inc(lost.length);
      // The detector forgets them too: their next scan is detected and banned again.
      for (const e of lost) this.#capture?.forget(e.address);
      this.#state = "ok";
      o.metrics.activeBans.set(this.#book.size);
      this.#capture?.bans({
        replace: this.#book.entries().map((e) => e.address),
        room: this.room(),
      });
    } finally {
      this.#reconciling = false;
    }
  }

  /** Waits for every ban under way. */
  async settled(): Promise<void> {
    await Promise.all([...this.#pending]);
  }

  /** Stops the firewall's helpers (bans stay in place). */
  async close(): Promise<void> {
    await this.settled();
    this.#lines.flush(true);
    await this.#o.fw.close();
  }
}
