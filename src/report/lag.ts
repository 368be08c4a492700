/**
 * The event-loop lag sampler behind deno_eventloop_lag_seconds: a timer
 * that records how late it ran. Every wake-up of an idle Deno process costs
 * CPU (a bare 100 ms timer alone: 0.25 % of a core on the development VM,
 * a quarter of an idle daemon's budget), so the period adapts: every
 * fastMs while the process works (it used more than BUSY_SHARE of a core
 * over the last idleMs or more, or a sample was late by more than LATE_MS),
 * for busyForMs after that, and from the start for as long; every idleMs
 * otherwise. (The share is taken over a whole idle period: a fleet pull or
 * a scrape takes a few ms, more than 5 % of one 100 ms period.) A loop that blocks while idle is still seen
 * (its sample is late), and its work switches the fast period on.
 */

/** Periods and thresholds, ms (tests shorten them). */
export interface LagPeriods {
  fastMs: number;
  idleMs: number;
  busyForMs: number;
}

export const LAG_PERIODS: LagPeriods = { fastMs: 100, idleMs: 1000, busyForMs: 10_000 };
/** CPU share of one core (all threads) above which the process counts as working. */
const BUSY_SHARE = 0.05;
/** A sample later than this counts as work too. */
const LATE_MS = 50;

/** Starts sampling; returns a function that stops it. The timer never keeps the process alive. */
export function sampleLag(
  observe: (seconds: number) => void,
  cpuMicros: () => number,
  p: LagPeriods = LAG_PERIODS,
): () => void {
  let now = performance.now();
  let busyUntil = now + p.busyForMs;
  let cpu = cpuMicros();
  let last = now;
  let due = now + p.fastMs;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const sample = () => {
    now = performance.now();
    const late = Math.max(0, now - due);
    observe(late / 1000);
    if (late > LATE_MS) busyUntil = now + p.busyForMs;
    if (now - last >= 0.9 * p.idleMs) {
      const used = cpuMicros();
      if ((used - cpu) / 1000 > BUSY_SHARE * (now - last)) busyUntil = now + p.busyForMs;
      cpu = used;
      last = now;
    }
    const period = now < busyUntil ? p.fastMs : p.idleMs;
    due = now + period;
    timer = setTimeout(sample, period);
    Deno.unrefTimer(timer);
  };
  timer = setTimeout(sample, p.fastMs);
  Deno.unrefTimer(timer);
  return () => clearTimeout(timer);
}
