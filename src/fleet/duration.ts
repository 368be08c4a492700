/**
 * Go duration strings, the form the CrowdSec LAPI writes a decision's
 * remaining time in ("3h59m47.7s", "-64.75ms", "1h0m0s", "0s") and reads a
 * new decision's length in. Parsed exactly as Go's time.ParseDuration does,
 * to milliseconds.
 */

/** Milliseconds per unit, as Go spells them (µ as U+00B5 and U+03BC). */
const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  "\u00b5s": 1e-3,
  "\u03bcs": 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/** Go's limit: a duration is an int64 of nanoseconds (about 292 years). */
const MAX_MS = 9223372036854.775807;

/**
 * Parses a Go duration ("3h59m47.7s", "1.5h", "-64.75ms", "0") into
 * milliseconds; null when the text is not one (empty, no unit, unknown unit,
 * or beyond ±292 years). Each element is computed from its digits exactly
 * enough that nanosecond-level strings round to the right millisecond.
 */
export function parseGoDuration(text: string): number | null {
  // One pass over the characters (10,000 decisions at start parse this 10,000 times).
  let i = 0;
  const n = text.length;
  let sign = 1;
  if (i < n && (text[i] === "-" || text[i] === "+")) {
    if (text[i] === "-") sign = -1;
    i++;
  }
  if (text.slice(i) === "0") return 0;
  if (i === n) return null;
  let total = 0;
  while (i < n) {
    // Integer part, then an optional fraction: at least one digit in all.
    let whole = 0, digits = 0;
    for (let c = text.charCodeAt(i); c >= 48 && c <= 57; c = text.charCodeAt(++i)) {
      whole = whole * 10 + (c - 48);
      digits++;
    }
    let frac = 0, scale = 1;
    if (text[i] === ".") {
      i++;
      for (let c = text.charCodeAt(i); c >= 48 && c <= 57; c = text.charCodeAt(++i)) {
        if (scale < 1e15) {
          frac = frac * 10 + (c - 48);
          scale *= 10;
        }
        digits++;
      }
    }
    if (digits === 0) return null;
    // The unit: every character up to the next digit or ".", as Go reads it.
    const u0 = i;
    while (i < n) {
      const c = text.charCodeAt(i);
      if ((c >= 48 && c <= 57) || c === 46) break;
      i++;
    }
    const name = text.slice(u0, i);
    if (!Object.hasOwn(UNIT_MS, name)) return null;
    const unit = UNIT_MS[name];
    total += whole * unit + (frac / scale) * unit;
  }
  if (!Number.isFinite(total) || total > MAX_MS) return null;
  return sign * total;
}

/** A whole number of seconds as a Go duration the LAPI accepts ("3600s"). */
export function formatGoSeconds(seconds: number): string {
  return `${Math.max(0, Math.round(seconds))}s`;
}
