/**
 * The bans owner with the in-memory backend (`none`, a real backend: the
 * same guard, book and batching as the others, without a kernel): the
 * firewall state for /healthz follows the last outcome, a full table makes
 * room for new bans, and reconciliation keeps bans newer than the read.
 */
import assert from "node:assert/strict";
import { Bans, type BansOptions } from "../src/bans/bans.ts";
import { BanBook } from "../src/bans/book.ts";
import type { ScanReport } from "../src/detect/pipeline.ts";
import { createFirewall } from "../src/firewall/firewall.ts";
import { nullMetrics } from "../src/report/counters.ts";

function scan(src: string): ScanReport {
  const key = new Uint8Array(src.split(".").map(Number));
  return {
    ms: Date.now(),
    family: 4,
    src,
    key,
    dst: "10.0.0.2",
    ports: [1, 2, 3, 4],
    scanType: "SYN" as ScanReport["scanType"],
    slow: false,
    prefix: 32,
  };
}

function owner(maxBans: number, extra: Partial<BansOptions> = {}) {
  const lines: string[] = [];
  const log: string[] = [];
  const fw = createFirewall("none", {
    isProtected: () => false,
    onError: (m) => bans.failure(m),
    onEvict: (ban, line) => bans.evicted(ban.address, line),
    maxBans,
  });
  const bans: Bans = new Bans({
    fw,
    banTime: 3600,
    maxBans,
    live: false,
    log: {
      banned: (_ms, a) => log.push(`banned ${a}`),
      alreadyBanned: (_ms, a) => log.push(`already ${a}`),
      flush: () => {},
    },
    metrics: nullMetrics(),
    warn: (l) => lines.push(l),
    now: () => Date.now(),
    claims: true, // the in-memory backend stands in for a kernel one here
    ...extra,
  });
  return { bans, fw, lines, log };
}

Deno.test("bans: /healthz state is the current one: an error, then ok again after a good read", async () => {
  const { bans } = owner(10);
  await bans.start();
  assert.equal(bans.state, "ok");
  bans.failure("nftables: netlink: No such file or directory");
  assert.match(bans.state, /^error: nftables/);
  await bans.reconcile();
  assert.equal(bans.state, "ok");
  bans.failure("iptables: gone");
  bans.onScan(scan("192.0.2.1"));
  await bans.settled();
  assert.equal(bans.state, "ok", "a confirmed ban means the firewall works again");
});

Deno.test("bans: a full table never stops a new ban: the oldest make room, said once", async () => {
  const { bans, fw, lines, log } = owner(3);
  await bans.start();
  // One after another (a cap smaller than the bans of one turn cannot evict bans still under way).
  for (let i = 1; i <= 6; i++) {
    bans.onScan(scan(`192.0.2.${i}`));
    await bans.settled();
  }
  assert.deepEqual(log, [1, 2, 3, 4, 5, 6].map((i) => `banned 192.0.2.${i}`));
  assert.equal(bans.size, 3);
  const held = (await fw.list()).map((b) => b.address).sort();
  assert.deepEqual(held, ["192.0.2.4", "192.0.2.5", "192.0.2.6"]);
  assert.equal(
    lines.filter((l) => /ban table full \(3 bans/.test(l)).length,
    1,
    lines.join("\n"),
  );
  // Already banned: no eviction, no second ban.
  bans.onScan(scan("192.0.2.6"));
  await bans.settled();
  assert.equal(log.at(-1), "already 192.0.2.6");
  assert.equal(bans.size, 3);
});

Deno.test("ban book: the kernel's list wins, except bans taken after the read began", () => {
  const book = new BanBook();
  book.add("192.0.2.1", null, "local", "port scan", 100);
  book.add("192.0.2.2", null, "local", "port scan", 300);
  // Read began at 200: .1 is gone from the kernel (removed outside), .2 is newer than the read.
  const lost = book.replace([{ address: "192.0.2.3", family: 4, expiresAt: null }], 200);
  assert.deepEqual(lost.map((e) => e.address), ["192.0.2.1"]);
  assert.ok(book.has("192.0.2.2", Date.now()));
  assert.ok(book.has("192.0.2.3", Date.now()));
  assert.equal(book.get("192.0.2.3")?.origin, "restored");
  assert.equal(book.get("192.0.2.2")?.reason, "port scan");
});

Deno.test("bans: a read that found the kernel unchanged sends nothing to the capture thread", async () => {
  const { bans, fw } = owner(10);
  await bans.start();
  bans.onScan(scan("192.0.2.1"));
  await bans.settled();
  const sent: unknown[] = [];
  bans.attachCapture({ forget: () => {}, bans: (c) => sent.push(c) });
  await bans.reconcile();
  assert.equal(sent.length, 1, "a full read tells the capture thread");
  const real = fw.reconcile.bind(fw);
  fw.reconcile = async () => {
    const k = await real();
    return k && { ...k, unchanged: true };
  };
  bans.failure("nftables: gone for a moment");
  await bans.reconcile();
  assert.equal(sent.length, 1, "nothing sent when nothing changed");
  assert.equal(bans.state, "ok");
  assert.ok(bans.has("192.0.2.1"));
});

Deno.test("bans: a firewall read that throws is a firewall failure on the tick, not an unhandled rejection", async () => {
  const { bans, fw, lines } = owner(10);
  await bans.start();
  // No backend is known to throw here (they report their own failures); a bug might.
  (fw as { reconcile: () => Promise<unknown> }).reconcile = () =>
    Promise.reject(new Error("a bug in the backend"));
  (fw as { kind: string }).kind = "nftables"; // "none" is never read back
  bans.tick(Date.now() + 60_000);
  await new Promise((r) => setTimeout(r, 20));
  assert.match(bans.state, /^error: reading the firewall back failed: a bug in the backend/);
  await bans.settled();
  assert.ok(lines.some((l) => /reading the firewall back failed/.test(l)), lines.join("\n"));
});
