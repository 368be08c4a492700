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
  let s = text;
  let sign = 1;
  if (s.startsWith("-") || s.startsWith("+")) {
    if (s[0] === "-") sign = -1;
    s = s.slice(1);
  }
  if (s === "0") return 0;
  if (s === "") return null;
  let total = 0;
  const re = /^(\d*)(?:\.(\d*))?(ns|us|\u00b5s|\u03bcs|ms|s|m|h)/;
  while (s.length > 0) {
    const m = re.exec(s);
    if (!m || (m[1] === "" && (m[2] === undefined || m[2] === ""))) return null;
    const unit = UNIT_MS[m[3]];
    // Integer and fraction apart, so "0.000000001s" is not a float of its text.
    const whole = m[1] === "" ? 0 : Number(m[1]);
    const frac = m[2] ? Number(m[2]) / 10 ** m[2].length : 0;
    total += whole * unit + frac * unit;
    s = s.slice(m[0].length);
  }
  if (!Number.isFinite(total) || total > MAX_MS) return null;
  return sign * total;
}

/** A whole number of seconds as a Go duration the LAPI accepts ("3600s"). */
export function formatGoSeconds(seconds: number): string {
  return `${Math.max(0, Math.round(seconds))}s`;
}
