/**
 * When a ban ends, as the ban book, the backends and the capture thread all
 * write it (its own module: the offline path needs it without the netlink
 * code of the fast path).
 */

/**
 * When a ban of `ttlSeconds` made now ends: epoch ms on a whole second (the
 * iptables comment holds seconds), null for 0 (until removed). The capture
 * thread and the ban book use the same rule, so the book matches the rule.
 */
export function banExpiry(ttlSeconds: number, now = Date.now()): number | null {
  const ttl = Math.ceil(ttlSeconds);
  return ttl > 0 ? (Math.floor(now / 1000) + ttl) * 1000 : null;
}

/** The variable text of an iptables ban rule: its expiry's ten digits, or null for none. */
export function expiryDigits(expiresAt: number | null): string | null {
  return expiresAt === null ? null : String(Math.floor(expiresAt / 1000));
}
