/**
 * The LAPI's decision stream as plain values: the JSON of
 * `GET /v1/decisions/stream` (1.4.6 writes `null` for an empty list) checked
 * field by field, each ban of scope Ip or Range turned into a canonical
 * target ("203.0.113.7", "2001:db8::/32") and its remaining time. Anything
 * else (another type, scope or malformed entry) is skipped and counted.
 */
import { type Cidr, cidrContains, formatAddress, parseCidr } from "../address.ts";
import type { Address } from "../address.ts";
import { parseGoDuration } from "./duration.ts";

/** One ban decision of the stream, checked and normalised. */
export interface Decision {
  /** The LAPI's decision id (unique per LAPI database). */
  id: number;
  /** Canonical address, or canonical CIDR (network bits only) for a real range. */
  target: string;
  /** "Ip" or "Range" as the LAPI wrote it. */
  scope: string;
  origin: string;
  scenario: string;
  /** Remaining time in milliseconds (may be ≤ 0 for an expired/deleted one). */
  remainingMs: number;
}

/** A parsed stream answer. */
export interface StreamAnswer {
  added: Decision[];
  deleted: Decision[];
  /** Entries skipped: other types or scopes, bad values, bad durations. */
  skipped: number;
}

/**
 * Canonical target for a scope and value: an address for Ip (or a range
 * covering one address), the network in canonical text for a wider Range;
 * null when the value does not fit the scope.
 */
export function canonicalTarget(scope: string, value: string): string | null {
  const sc = scope.toLowerCase();
  if (sc !== "ip" && sc !== "range") return null;
  if (sc === "ip" && value.includes("/")) return null;
  const c = parseCidr(value.trim());
  if (!c) return null;
  const max = c.family === 4 ? 32 : 128;
  if (c.prefix === max) return formatAddress(c.family, c.bytes);
  const net = c.bytes.slice();
  for (let i = 0; i < net.length; i++) {
    const bits = Math.max(0, Math.min(8, c.prefix - i * 8));
    net[i] &= (0xff << (8 - bits)) & 0xff;
  }
  return `${formatAddress(c.family, net)}/${c.prefix}`;
}

function decision(x: unknown): Decision | null {
  if (typeof x !== "object" || x === null) return null;
  const d = x as Record<string, unknown>;
  if (typeof d.type !== "string" || d.type.toLowerCase() !== "ban") return null;
  if (typeof d.scope !== "string" || typeof d.value !== "string") return null;
  if (typeof d.duration !== "string") return null;
  const target = canonicalTarget(d.scope, d.value);
  const remainingMs = parseGoDuration(d.duration);
  if (target === null || remainingMs === null) return null;
  return {
    id: typeof d.id === "number" ? d.id : -1,
    target,
    scope: d.scope,
    origin: typeof d.origin === "string" ? d.origin : "",
    scenario: typeof d.scenario === "string" ? d.scenario : "",
    remainingMs,
  };
}

/** Parses a stream body (any JSON value); throws only when it is not an object at all. */
export function parseStream(body: unknown): StreamAnswer {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new Error(
      `decision stream: expected an object, got ${JSON.stringify(body)?.slice(0, 80)}`,
    );
  }
  const b = body as Record<string, unknown>;
  const out: StreamAnswer = { added: [], deleted: [], skipped: 0 };
  for (const [key, into] of [["new", out.added], ["deleted", out.deleted]] as const) {
    const list = b[key];
    if (list === null || list === undefined) continue; // 1.4.6: null for an empty list
    if (!Array.isArray(list)) throw new Error(`decision stream: "${key}" is not a list`);
    for (const x of list) {
      const d = decision(x);
      if (d) into.push(d);
      else out.skipped++;
    }
  }
  return out;
}

/**
 * True when a target (address or CIDR) would cover something protected: it
 * holds one of `local`, or overlaps one of `allowed` (either block inside the
 * other), or is loopback.
 */
export function rangeTouches(target: string, local: Address[], allowed: Cidr[]): boolean {
  const t = parseCidr(target);
  if (!t) return true;
  const loop: Cidr = t.family === 4
    ? { family: 4, bytes: new Uint8Array([127, 0, 0, 0]), prefix: 8 }
    : { family: 6, bytes: new Uint8Array([...new Array(15).fill(0), 1]), prefix: 128 };
  for (const c of [...allowed, loop]) {
    if (c.family !== t.family) continue;
    if (cidrContains(c, t.family, t.bytes) || cidrContains(t, c.family, c.bytes)) return true;
  }
  return local.some((a) => cidrContains(t, a.family, a.bytes));
}
