/**
 * The speed bump's pure parts (src/firewall/bump*.ts): the refill rate in
 * the firewall's units, the exempt blocks made non-overlapping, the rule
 * text of both backends, and the check that finds a bump removed from
 * outside.
 */
import assert from "node:assert/strict";
import { cidrContains, neverBanned, parseCidr } from "../src/address.ts";
import { bumpRate, mergeBlocks, neverBannedBlocks } from "../src/firewall/bump.ts";
import { iptBumpLines, iptBumpPresent, iptBumpRemoval } from "../src/firewall/bump_ipt.ts";
import { nftBumpRules, nftBumpSetup } from "../src/firewall/bump_nft.ts";
import { nftMissing } from "../src/firewall/nftables.ts";
import type { BumpConfig, BumpState, Firewall } from "../src/types.ts";
import { BUMP_RETRY_MS, BumpSync } from "../src/run/bump.ts";
import { AllowList } from "../src/allowlist.ts";
import { parseConfig } from "../src/config.ts";

const cfg: BumpConfig = {
  ports: 3,
  windowSeconds: 60,
  device: "eth0",
  exempt4: ["10.0.0.0/8", "127.0.0.0/8"],
  exempt6: ["::/96"],
  openPorts: [22, 80],
};

Deno.test("bump rate: exact units when they divide, else rounded up per day (never slower)", () => {
  assert.deepEqual(bumpRate(3, 60), { n: 3, unit: "minute" });
  assert.deepEqual(bumpRate(12, 3), { n: 4, unit: "second" });
  // 3 per 2 h: 1.5 an hour is not whole: 36 a day.
  assert.deepEqual(bumpRate(3, 7200), { n: 36, unit: "day" });
  // 7 per 90 s: 4.67 a minute, 280 an hour.
  assert.deepEqual(bumpRate(7, 90), { n: 280, unit: "hour" });
  // 5 per 7 s: 61714.28… a day, rounded up so the refill is never slower than the window's.
  const r = bumpRate(5, 7);
  assert.equal(r.unit, "day");
  assert.ok(r.n / 86400 >= 5 / 7 && r.n === 61715, String(r.n));
});

Deno.test("exempt blocks: nested ones merged away, /0 split, never-banned blocks parse", () => {
  const c = (t: string) => parseCidr(t)!;
  assert.deepEqual(mergeBlocks([c("10.1.2.3/32"), c("10.0.0.0/8"), c("10.0.0.0/8")], 4), [
    "10.0.0.0/8",
  ]);
  assert.deepEqual(mergeBlocks([c("0.0.0.0/0"), c("192.0.2.1/32")], 4), [
    "0.0.0.0/1",
    "128.0.0.0/1",
  ]);
  // Host bits cleared, families kept apart.
  assert.deepEqual(mergeBlocks([c("192.0.2.77/24"), c("fd00::1/64")], 4), ["192.0.2.0/24"]);
  const never6 = mergeBlocks(neverBannedBlocks(), 6);
  assert.ok(never6.includes("::ffff:0.0.0.0/96") && never6.includes("::/96"), never6.join());
  assert.equal(mergeBlocks(neverBannedBlocks(), 4).length, 4);
});

Deno.test("nftables bump: its own base chain after the ban chain, fail-open add and limit in one rule", () => {
  const text = nftBumpSetup("inet scanblocker", cfg);
  assert.match(
    text,
    /add chain inet scanblocker bump \{ type filter hook input priority filter - 9;/,
  );
  assert.match(text, /iifname != "eth0" return/);
  assert.match(
    text,
    /add @sb_seen4 \{ ip saddr \. tcp dport timeout 61s \} update @sb_rate4 \{ ip saddr timeout 60s limit rate over 3\/minute burst 3 packets \} drop/,
  );
  assert.match(text, /add element inet scanblocker sb_open \{ 22, 80 \}/);
  assert.match(
    text,
    /add element inet scanblocker sb_exempt4 \{ 10\.0\.0\.0\/8, 127\.0\.0\.0\/8 \}/,
  );
  // Without an interface (capture on "any"), no iifname rule.
  assert.doesNotMatch(nftBumpSetup("inet scanblocker", { ...cfg, device: null }), /iifname/);
});

Deno.test("nftMissing: a bump chain gone or holding other rules is missing; the ban chain is judged alone", () => {
  const rule = (chain: string) => ({ rule: { chain, expr: [] } });
  const banRules = ["banned4", "banned6", "nets4", "nets6"].map((s) => ({
    rule: { chain: "input", expr: [{ match: { right: `@${s}` } }, { drop: null }] },
  }));
  const sets = ["banned4", "banned6", "nets4", "nets6"].map((name) => ({ set: { name } }));
  const base = [
    ...sets,
    { chain: { name: "input", hook: "input", prio: -10 } },
    ...banRules,
  ];
  const n = nftBumpRules(cfg).length;
  const bump = [
    { chain: { name: "bump", hook: "input", prio: -9 } },
    ...Array.from({ length: n }, () => rule("bump")),
  ];
  const json = (items: unknown[]) => JSON.stringify({ nftables: items });
  assert.deepEqual(nftMissing(json([...base, ...bump]), ["input"], n), []);
  assert.deepEqual(nftMissing(json(base), ["input"], n), ["bump"]);
  assert.deepEqual(nftMissing(json([...base, ...bump.slice(0, -1)]), ["input"], n), ["bump"]);
  // Bump off: its chain is not looked at.
  assert.deepEqual(nftMissing(json(base), ["input"], 0), []);
});

Deno.test("iptables bump: chain rebuilt, one jump right after the SCANBLOCKER jump, removal", () => {
  const listing = [
    "-P INPUT ACCEPT",
    "-N SCANBLOCKER",
    "-N SCANBLOCKER-BUMP",
    "-A INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT",
    "-A INPUT -j SCANBLOCKER",
    "-A INPUT -i eth1 -p tcp -m tcp --tcp-flags SYN,ACK SYN -j SCANBLOCKER-BUMP",
    "-A INPUT -p tcp --dport 22 -j ACCEPT",
  ].join("\n");
  const lines = iptBumpLines(4, cfg, listing);
  assert.equal(lines[0], ":SCANBLOCKER-BUMP - [0:0]");
  assert.ok(lines.includes("-A SCANBLOCKER-BUMP -m socket --nowildcard -j RETURN"));
  assert.ok(
    lines.some((l) =>
      /--hashlimit-above 3\/minute --hashlimit-burst 3 .*--hashlimit-name sb4-3-60 /.test(l)
    ),
  );
  assert.ok(
    lines.includes("-D INPUT -i eth1 -p tcp -m tcp --tcp-flags SYN,ACK SYN -j SCANBLOCKER-BUMP"),
  );
  assert.equal(
    lines.at(-1),
    "-I INPUT 3 -i eth0 -p tcp --tcp-flags SYN,ACK SYN -j SCANBLOCKER-BUMP",
  );
  assert.ok(iptBumpPresent(listing));
  assert.ok(!iptBumpPresent(listing.replace(/^-A INPUT -i eth1.*$/m, "")));
  assert.deepEqual(iptBumpRemoval(listing), [
    "-D INPUT -i eth1 -p tcp -m tcp --tcp-flags SYN,ACK SYN -j SCANBLOCKER-BUMP",
    "-F SCANBLOCKER-BUMP",
    "-X SCANBLOCKER-BUMP",
  ]);
});

Deno.test("BumpSync: a bump the backend lost is said once, sent again every 60 s, and said back", async () => {
  let state: BumpState = { on: true, what: "3 ports / 60 s" };
  let accept = true, sent = 0;
  const fw = {
    setBump: (_c: BumpConfig | null) => {
      sent++;
      state = accept ? { on: true, what: "3 ports / 60 s" } : { on: false, why: "refused" };
      return Promise.resolve(state);
    },
    bumpState: () => state,
  } as unknown as Firewall;
  const lines: string[] = [];
  let now = 1_000_000;
  const sync = new BumpSync(
    fw,
    parseConfig(["-i", "eth0"], {}),
    "eth0",
    new AllowList([]),
    () => [],
    (l) => lines.push(l),
    () => now,
  );
  assert.equal(await sync.sync(), "on (3 ports / 60 s)");
  assert.equal(sent, 1);
  assert.equal(await sync.sync(), "on (3 ports / 60 s)"); // nothing changed: nothing sent
  assert.equal(sent, 1);
  // A repair could not put it back: said once, not sent again at once.
  state = { on: false, why: "nftables refused it" };
  accept = false;
  assert.equal(await sync.sync(), "off (nftables refused it)");
  assert.deepEqual(lines, ["speed bump: off (nftables refused it); trying again every 60 s"]);
  now += BUMP_RETRY_MS - 1;
  await sync.sync();
  assert.equal(sent, 1);
  // A minute on: sent again; refused again, nothing more said.
  now += 1;
  await sync.sync();
  assert.equal(sent, 2);
  assert.equal(lines.length, 1, lines.join("\n"));
  now += 1000;
  await sync.sync();
  assert.equal(sent, 2);
  // The next minute the firewall takes it: on again, and said.
  accept = true;
  now += BUMP_RETRY_MS;
  assert.equal(await sync.sync(), "on (3 ports / 60 s)");
  assert.equal(sent, 3);
  assert.deepEqual(lines.slice(1), ["speed bump: on (3 ports / 60 s)"]);
  now += BUMP_RETRY_MS * 2;
  await sync.sync();
  assert.equal(sent, 3);
});

Deno.test("never-banned blocks: the bump exempts exactly the addresses neverBanned refuses", () => {
  // Two lists of one rule (address.ts checks bytes per packet, bump.ts gives CIDRs to the
  // kernel): random addresses, many of them near the special prefixes, must agree.
  const blocks = neverBannedBlocks();
  const starts4 = [0, 127, 224, 239, 240, 255, 1, 126, 128, 223];
  const starts6 = [0x00, 0xff, 0xfe, 0x20, 0xfd];
  for (let i = 0; i < 50_000; i++) {
    const v6 = i % 2 === 1;
    const b = new Uint8Array(v6 ? 16 : 4);
    crypto.getRandomValues(b);
    if (v6) {
      b[0] = starts6[(i >> 1) % starts6.length];
      // Often all zero up to byte 10 or 12 (the ::/96, ::ffff:0:0/96 and ::1 neighbourhood).
      if (b[0] === 0 && i % 3 !== 0) {
        b.fill(0, 1, 10);
        if (i % 5 === 0) b[10] = b[11] = 0xff;
        else if (i % 5 === 1) b.fill(0, 10, 15);
      }
    } else {
      b[0] = starts4[(i >> 1) % starts4.length];
      if (i % 7 === 0) b.fill(255);
    }
    const family = v6 ? 6 : 4;
    const exempt = blocks.some((c) => cidrContains(c, family, b));
    assert.equal(exempt, neverBanned(family, b) !== null, `${family} ${b.join(",")}`);
  }
});
