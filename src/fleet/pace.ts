/**
 * When the fleet pulls, and which pulls ask the LAPI for the whole active set.
 *
 * **Pace.** The LAPI has no push to bouncers, so a ban made elsewhere waits
 * for this host's next pull: uniform on [0, poll) on a fixed grid, half a
 * period on average, and no schedule of blind polls at one rate does better.
 * Lowering that wait needs more pulls or knowing when to pull. Bans come in
 * campaigns (one scanner sweeping the fleet's addresses, or many sources
 * probing at once): the first ban is the best sign that more follow. So,
 * while a campaign is under way, this host pulls at a quarter of
 * `--lapi-poll` (never under 50 ms) and goes back to its grid once nothing
 * new came for `max(10 s, 3 polls)`. A campaign is a delta pull that brought
 * a decision this host applied, or a ban this host made itself. At rest it
 * changes nothing: the same one request per period, no timer more. During a
 * campaign it costs at most four times the requests for the hold time; the
 * first ban of a campaign still waits up to one period.
 *
 * **Full pulls.** CrowdSec's stream cursor can skip a decision for good (read
 * in v1.4.6 `StreamDecision`, unchanged since): a delta returns decisions
 * with `created_at > last_pull`, then sets the key's `last_pull` to the time
 * that request began, while a decision's `created_at` is stamped just before
 * its INSERT, which may commit after the delta's query (it waits for
 * SQLite's write lock, which every bouncer's `last_pull` update takes). Such
 * a decision is in no delta, ever; `bench/lapi_cursor_race.ts` loses 2 to 12
 * of 1,500 that way at 20 ms pulls. Only a `startup=true` pull, which lists
 * every active decision, brings it; the answer is reconciled with what this
 * host holds (missing ones applied, ones the LAPI no longer has removed). So
 * a full pull is made every minute, or every 60 periods above 1 s (one
 * request in 60 at the default 1 s), and once when a campaign ends (when
 * decisions were being written, hence when one could be missed): a skipped
 * decision arrives within that time, whatever the LAPI does. A
 * second bouncer key with its own cursor would close the gap without the
 * cost, but asks every operator for two keys per host. A full pull costs the
 * LAPI a query of the whole active set (170 to 270 ms for 10,000 decisions
 * on this 2-core VM; with none, the same as a delta; 1.4.6 adds every
 * expired decision still in its database): the period grows so that full
 * pulls take at most 1 % of the time.
 */

/** Pull period while a campaign is under way: --lapi-poll divided by this. */
const BURST_DIVISOR = 4;
/** The burst period never goes below this, ms (the lowest --lapi-poll). */
const BURST_MIN_MS = 50;
/** A campaign ends this long after its last sign, ms, or after HOLD_POLLS periods if longer. */
const HOLD_MIN_MS = 10_000;
const HOLD_POLLS = 3;
/**
 * A full pull at least this often, ms, or every FULL_EVERY_POLLS periods when
 * that is longer (a fleet of hundreds polls slower; its full pulls too).
 */
const FULL_EVERY_MS = 60_000;
const FULL_EVERY_POLLS = 60;
/** Full pulls take at most 1/FULL_COST_SHARE of the time. */
const FULL_COST_SHARE = 100;

/** The schedule of one host's pulls (times are performance.now() ms). */
export class PullPace {
  readonly #pollMs: number;
  readonly burstMs: number;
  readonly holdMs: number;
  readonly fullEveryMs: number;
  /** A point of the fixed grid (the first pull; moved by a retry after a failure). */
  #gridAt: number;
  /** A point of the burst grid, and when the campaign ends. */
  #burstAt = 0;
  #burstUntil = -Infinity;
  /** When the next periodic full pull is due. */
  #fullDue = -Infinity;
  /** A full pull is owed at the end of the campaign under way. */
  #owed = false;

  constructor(o: { pollMs: number; fullEveryMs?: number }, now: number) {
    this.#pollMs = o.pollMs;
    this.burstMs = Math.max(BURST_MIN_MS, o.pollMs / BURST_DIVISOR);
    this.holdMs = Math.max(HOLD_MIN_MS, HOLD_POLLS * o.pollMs);
    this.fullEveryMs = o.fullEveryMs ?? Math.max(FULL_EVERY_MS, FULL_EVERY_POLLS * o.pollMs);
    this.#gridAt = now;
  }

  /** True while a campaign is under way. */
  #inCampaign(now: number): boolean {
    return now < this.#burstUntil;
  }

  /**
   * A sign of a campaign at `at`: a pull that began then brought news, or a
   * local ban. A new campaign's short grid starts there; a running one is
   * prolonged.
   */
  campaign(at: number): void {
    if (!this.#inCampaign(at)) this.#burstAt = at;
    this.#burstUntil = Math.max(this.#burstUntil, at + this.holdMs);
    this.#owed = true;
  }

  /**
   * When the pull after `now` is due: the next point of the short grid while
   * the campaign lasts, else of the fixed grid (the same phase as before it).
   */
  next(now: number): number {
    if (this.#inCampaign(now)) {
      const k = Math.floor((now - this.#burstAt) / this.burstMs) + 1;
      const due = this.#burstAt + k * this.burstMs;
      if (due < this.#burstUntil) return due;
    }
    return this.#gridAt +
      (Math.floor(Math.max(0, now - this.#gridAt) / this.#pollMs) + 1) * this.#pollMs;
  }

  /** After a failed pull: the retry at now + delay; the fixed grid goes on from there. */
  retry(now: number, delayMs: number): number {
    this.#gridAt = now + delayMs;
    return this.#gridAt;
  }

  /** True when the pull starting at `now` should be a full one (startup=true). */
  wantFull(now: number): boolean {
    return now >= this.#fullDue || (this.#owed && !this.#inCampaign(now));
  }

  /** A full pull began at `startedAt` and was answered at `now`. */
  fullDone(startedAt: number, now: number): void {
    if (!this.#inCampaign(now)) this.#owed = false;
    this.#fullDue = now + Math.max(this.fullEveryMs, FULL_COST_SHARE * (now - startedAt));
  }
}
