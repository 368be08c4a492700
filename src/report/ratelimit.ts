/**
 * Rate limits for repetitive stderr lines. When the ban cap is reached or the
 * firewall keeps failing, every new scan (and a spoofed flood makes as many
 * as it likes) would write its own lines; the limiter lets the first few of
 * each kind through per interval, counts the rest, and says how many were
 * suppressed once the interval is over, so the operator sees the episode
 * and the log stays readable.
 */

/** Settings of a LineLimiter. */
export interface LineLimiterOptions {
  /** Lines of one kind written per interval before the rest are counted instead. */
  burst: number;
  /** Length of an interval, ms. */
  intervalMs: number;
  /** Where lines go (stderr, with its prefix). */
  write: (line: string) => void;
  /** Clock, epoch ms (tests pass their own). */
  now?: () => number;
}

interface Window {
  start: number;
  written: number;
  suppressed: number;
  /** The kind's label for the summary line. */
  label: string;
}

/** Per-kind fixed windows; see the module comment. */
export class LineLimiter {
  readonly #o: LineLimiterOptions;
  readonly #now: () => number;
  readonly #windows = new Map<string, Window>();
  #suppressed = 0;

  constructor(o: LineLimiterOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
  }

  /** Lines suppressed since the start, over every kind (for a metric). */
  get suppressed(): number {
    return this.#suppressed;
  }

  /**
   * Writes `line` unless `kind` has used its burst in the current interval
   * (then it is counted); returns whether it was written. `label` names the
   * kind in the summary ("failed bans"), `kind` by default.
   */
  line(kind: string, line: string, label = kind): boolean {
    const now = this.#now();
    let w = this.#windows.get(kind);
    if (w && now - w.start >= this.#o.intervalMs) {
      this.#close(w);
      w = undefined;
    }
    if (!w) {
      w = { start: now, written: 0, suppressed: 0, label };
      this.#windows.set(kind, w);
    }
    if (w.written < this.#o.burst) {
      w.written++;
      this.#o.write(line);
      return true;
    }
    w.suppressed++;
    this.#suppressed++;
    return false;
  }

  /**
   * Closes the intervals that are over (every one with `all`, at the end of
   * a run), writing one summary line for each that suppressed something.
   * Call it now and then (once a second), so the count appears even when no
   * further line of that kind comes.
   */
  flush(all = false): void {
    const now = this.#now();
    for (const [kind, w] of this.#windows) {
      if (!all && now - w.start < this.#o.intervalMs) continue;
      this.#close(w);
      this.#windows.delete(kind);
    }
  }

  #close(w: Window): void {
    if (w.suppressed === 0) return;
    const secs = Math.max(1, Math.round((this.#now() - w.start) / 1000));
    this.#o.write(`${w.suppressed} more ${w.label} lines suppressed in the last ${secs} s`);
  }
}
