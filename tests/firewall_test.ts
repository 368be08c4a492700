/**
 * The firewall guard, the `none` backend, the ban cap and failure handling:
 * protected and invalid addresses never reach a command, a missing binary is
 * one clear onError line and a "failed" result, never a throw.
 */
import assert from "node:assert/strict";
import { canUseNetns, createLab } from "./netns.ts";
import { createFirewall, formatBans, listBans } from "../src/firewall/firewall.ts";
import type { FirewallKind } from "../src/types.ts";

const enabled = await canUseNetns();

Deno.test("none backend keeps bans in memory: already, unban, list, flush", async () => {
  const errors: string[] = [];
  const fw = createFirewall("none", {
    isProtected: (a) => a === "127.0.0.1",
    onError: (m) => errors.push(m),
    maxBans: 10,
  });
  assert.equal(fw.kind, "none");
  assert.deepEqual(await fw.init(), []);
  assert.equal(await fw.ban("10.0.0.1", 60), "banned");
  assert.equal(await fw.ban("10.0.0.1", 60), "already");
  // IPv4-mapped text is refused, whatever the caller's guard says (tests/mapped_address_test.ts).
  assert.equal(await fw.ban("::ffff:10.0.0.1", 60), "refused", "IPv4-mapped is never banned");
  assert.equal(await fw.ban("::1", 60), "refused", "loopback is never banned");
  assert.equal(await fw.ban("FD00:0:0::1", 0), "banned");
  assert.equal(await fw.ban("fd00::1", 0), "already");
  assert.equal(await fw.ban("127.0.0.1", 60), "refused");
  const bans = await fw.list();
  assert.deepEqual(bans.map((b) => b.address).sort(), ["10.0.0.1", "fd00::1"]);
  assert.equal(bans.find((b) => b.address === "fd00::1")?.expiresAt, null);
  assert.equal(await fw.unban("10.0.0.1"), true);
  assert.equal(await fw.unban("10.0.0.1"), false);
  await fw.flush();
  assert.deepEqual(await fw.list(), []);
  await fw.close();
  assert.deepEqual(errors, []);
});

Deno.test("bans requested in one tick resolve together; concurrent duplicates say already", async () => {
  const fw = createFirewall("none", { isProtected: () => false, onError: () => {}, maxBans: 0 });
  const res = await Promise.all([
    fw.ban("10.1.0.1", 5),
    fw.ban("10.1.0.1", 5),
    fw.ban("10.1.0.2", 5),
  ]);
  assert.deepEqual(res, ["banned", "already", "banned"]);
});

Deno.test("ban cap: a full table makes room by removing the oldest ban, one notice per episode", async () => {
  const errors: string[] = [];
  const evicted: [string, string | null][] = [];
  const fw = createFirewall("none", {
    isProtected: () => false,
    onError: (m) => errors.push(m),
    onEvict: (ban, notice) => evicted.push([ban.address, notice]),
    maxBans: 2,
  });
  assert.equal(await fw.ban("10.0.0.1", 60), "banned");
  assert.equal(await fw.ban("10.0.0.2", 60), "banned");
  // Before: "failed" (a fail-open: a spoofed flood filled the table, then no scanner was banned).
  assert.equal(await fw.ban("10.0.0.3", 60), "banned");
  assert.equal(await fw.ban("10.0.0.4", 60), "banned");
  assert.deepEqual((await fw.list()).map((b) => b.address).sort(), ["10.0.0.3", "10.0.0.4"]);
  assert.deepEqual(evicted.map(([a]) => a), ["10.0.0.1", "10.0.0.2"]);
  assert.match(
    String(evicted[0][1]),
    /ban table full \(2 bans, --max-bans\): the oldest bans make room/,
  );
  assert.equal(evicted[1][1], null, "one notice per episode");
  assert.deepEqual(errors, []);
  // Without onEvict the notice goes to onError, once.
  const errors2: string[] = [];
  const fw2 = createFirewall("none", {
    isProtected: () => false,
    onError: (m) => errors2.push(m),
    maxBans: 1,
  });
  for (const a of ["10.1.0.1", "10.1.0.2", "10.1.0.3"]) {
    assert.equal(await fw2.ban(a, 60), "banned");
  }
  assert.equal(errors2.length, 1);
  assert.match(errors2[0], /ban table full/);
});

for (const kind of ["iptables", "iptables-rules", "nftables"] as FirewallKind[]) {
  Deno.test(`${kind}: protected and invalid addresses never reach a command`, async () => {
    // Any command would fail loudly: this program does not exist.
    const errors: string[] = [];
    const fw = createFirewall(kind, {
      isProtected: (a) => a === "192.0.2.1" || a === "2001:db8::1",
      onError: (m) => errors.push(m),
      maxBans: 100,
      commandPrefix: ["/nonexistent/scanblocker-test-prefix"],
    });
    assert.equal(await fw.ban("192.0.2.1", 60), "refused");
    assert.equal(await fw.ban("2001:DB8:0::1", 60), "refused", "checked on the canonical form");
    assert.deepEqual(errors, [], "no command ran");
    for (const bad of ["1.2.3.4; flush ruleset", "10.0.0.1 -j ACCEPT", "", "300.1.1.1", "::g"]) {
      assert.equal(await fw.ban(bad, 60), "failed", bad);
    }
    assert.equal(errors.length, 5);
    for (const e of errors) assert.match(e, /not an IP address/);
    assert.equal(await fw.ban("10.0.0.1", -1), "failed");
    await fw.close();
  });

  Deno.test({
    name: `${kind}: a missing binary is reported and the ban fails without a throw`,
    ignore: !enabled,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      const lab = await createLab("fwmiss");
      try {
        const errors: string[] = [];
        const fw = createFirewall(kind, {
          isProtected: () => false,
          onError: (m) => errors.push(m),
          maxBans: 100,
          // The binaries are not on this PATH.
          commandPrefix: [...lab.prefix(lab.target), "env", "PATH=/nonexistent"],
        });
        assert.deepEqual(await fw.init(), []);
        assert.ok(errors.length >= 1);
        const tool = kind.startsWith("iptables") ? "iptables" : "nft";
        assert.match(errors[0], new RegExp(`^${tool}.*(No such file|not found)`, "i"));
        errors.length = 0;
        assert.equal(await fw.ban("10.0.0.1", 60), "failed");
        assert.ok(errors.length >= 1, "the failed ban is reported");
        assert.ok(errors.every((e) => !e.includes("\n")), "one line per failure");
        assert.deepEqual(await fw.list(), []);
        assert.equal(await fw.unban("10.0.0.1"), false);
        await fw.flush();
        await fw.close();
      } finally {
        await lab.destroy();
      }
    },
  });

  Deno.test(`${kind}: a program that cannot be started at all is reported, never thrown`, async () => {
    const errors: string[] = [];
    const fw = createFirewall(kind, {
      isProtected: () => false,
      onError: (m) => errors.push(m),
      maxBans: 100,
      commandPrefix: ["/nonexistent/scanblocker-test-prefix"],
    });
    assert.deepEqual(await fw.init(), []);
    assert.equal(await fw.ban("10.0.0.1", 60), "failed");
    assert.ok(errors.some((e) => /nonexistent|No such file|not found/i.test(e)), errors.join("\n"));
    await fw.flush();
    await fw.close();
  });
}

Deno.test("listBans and formatBans: one line per ban with the time left", async () => {
  const now = 1_700_000_000_000;
  const text = formatBans([
    { address: "10.0.0.2", family: 4, expiresAt: now + 3723_000 },
    { address: "fd00::1", family: 6, expiresAt: null },
    { address: "10.0.0.10", family: 4, expiresAt: now + 59_000 },
  ], now);
  assert.deepEqual(text.split("\n"), [
    "10.0.0.2   1h 2m 3s left",
    "10.0.0.10  59s left",
    "fd00::1    until removed",
  ]);
  const fw = createFirewall("none", { isProtected: () => false, onError: () => {}, maxBans: 5 });
  assert.equal(await listBans(fw), "no active bans");
  await fw.ban("10.0.0.1", 0);
  assert.equal(await listBans(fw), "10.0.0.1  until removed");
});
