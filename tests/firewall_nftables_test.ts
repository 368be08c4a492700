/**
 * The nftables backend against real nft inside a namespace lab: bans land in
 * the sets and really drop the scanner's traffic, restart reloads them, the
 * kernel expires short bans, unban/flush work, and a failing transaction is
 * reported and recovered from.
 */
import assert from "node:assert/strict";
import { canUseNetns, createLab, type Lab, portStates } from "./netns.ts";
import { createFirewall, type FirewallHook } from "../src/firewall/firewall.ts";
import type { Firewall } from "../src/types.ts";
import { TEST_BUMP, withRefusingFirewall } from "./refusing_firewall.ts";

/** Lists the speed bump's chain (fails when there is none). */
const LIST_BUMP = ["nft", "list", "chain", "inet", "scanblocker", "bump"];

const enabled = await canUseNetns();

function make(lab: Lab, errors: string[], hooks?: FirewallHook[]): Firewall {
  return createFirewall("nftables", {
    isProtected: (a) => a === lab.target4 || a === lab.target6,
    onError: (m) => errors.push(m),
    maxBans: 1000,
    commandPrefix: lab.prefix(lab.target),
    hooks,
  });
}

async function setText(lab: Lab, set: string): Promise<string> {
  const r = await lab.exec(lab.target, ["nft", "list", "set", "inet", "scanblocker", set]);
  return r.stdout;
}

/** nmap's state word for one port, scanned from the scanner namespace. */
const portState = (lab: Lab, addr: string, port: number) => portStates(lab, addr, [port]);

Deno.test({
  name: "nftables backend: ban, drop, restart, expiry, unban, failure, flush",
  ignore: !enabled,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const lab = await createLab("fwnft");
    const errors: string[] = [];
    let fw = make(lab, errors);
    try {
      await t.step("init on a fresh namespace finds nothing and installs the table", async () => {
        assert.deepEqual(await fw.init(), []);
        const r = await lab.exec(lab.target, [
          "nft",
          "list",
          "chain",
          "inet",
          "scanblocker",
          "input",
        ]);
        assert.match(r.stdout, /hook input/);
        assert.match(r.stdout, /ip saddr @banned4 drop/);
        assert.match(r.stdout, /ip6 saddr @banned6 drop/);
      });

      await t.step("IPv4 ban lands in banned4 and drops the scanner", async () => {
        assert.equal(await portState(lab, lab.target4, 22), "closed");
        assert.equal(await fw.ban(lab.scanner4, 3600), "banned");
        assert.match(
          await setText(lab, "banned4"),
          new RegExp(lab.scanner4.replaceAll(".", "\\.")),
        );
        assert.equal(await fw.ban(lab.scanner4, 3600), "already");
        assert.equal(await portState(lab, lab.target4, 22), "filtered");
      });

      await t.step("IPv6 ban lands in banned6 and drops the scanner", async () => {
        assert.equal(await portState(lab, lab.target6, 80), "closed");
        assert.equal(await fw.ban(lab.scanner6, 0), "banned");
        assert.match(await setText(lab, "banned6"), new RegExp(lab.scanner6));
        assert.equal(await portState(lab, lab.target6, 80), "filtered");
      });

      await t.step("a protected address is refused", async () => {
        assert.equal(await fw.ban(lab.target4, 60), "refused");
        assert.doesNotMatch(await setText(lab, "banned4"), new RegExp(`${lab.target4}\\b`));
      });

      await t.step("bans requested together all land", async () => {
        const addrs = Array.from({ length: 300 }, (_, i) => `10.77.${i >> 8}.${i & 255}`);
        const res = await Promise.all(addrs.map((a) => fw.ban(a, 3600)));
        assert.ok(res.every((r) => r === "banned"), res.join(","));
        const text = await setText(lab, "banned4");
        for (const a of [addrs[0], addrs[150], addrs[299]]) assert.ok(text.includes(a), a);
      });

      await t.step("restart reloads the bans with their expiry", async () => {
        await fw.close();
        fw = make(lab, errors);
        const bans = await fw.init();
        const v4 = bans.find((b) => b.address === lab.scanner4);
        const v6 = bans.find((b) => b.address === lab.scanner6);
        assert.ok(v4 && v4.expiresAt !== null && v4.expiresAt > Date.now() + 3500_000);
        assert.ok(v6 && v6.expiresAt === null);
        assert.equal(bans.length, 302);
        assert.equal(await fw.ban(lab.scanner4, 3600), "already");
        const r = await lab.exec(lab.target, [
          "nft",
          "list",
          "chain",
          "inet",
          "scanblocker",
          "input",
        ]);
        assert.equal(r.stdout.match(/@banned4 drop/g)?.length, 1, "rule not duplicated");
      });

      await t.step("a 2 s ban expires in the kernel", async () => {
        assert.equal(await fw.ban("10.88.0.1", 2), "banned");
        assert.match(await setText(lab, "banned4"), /10\.88\.0\.1/);
        await new Promise((r) => setTimeout(r, 3000));
        assert.doesNotMatch(await setText(lab, "banned4"), /10\.88\.0\.1/);
        assert.ok(!(await fw.list()).some((b) => b.address === "10.88.0.1"));
        assert.equal(await fw.ban("10.88.0.1", 60), "banned");
      });

      await t.step("unban removes one ban", async () => {
        assert.equal(await fw.unban(lab.scanner4), true);
        assert.doesNotMatch(await setText(lab, "banned4"), new RegExp(`${lab.scanner4}\\b`));
        assert.equal(await fw.unban(lab.scanner4), false);
        assert.equal(await portState(lab, lab.target4, 22), "closed");
      });

      await t.step("a failing transaction is reported and the next ban recovers", async () => {
        errors.length = 0;
        await lab.exec(lab.target, ["nft", "delete", "table", "inet", "scanblocker"]);
        assert.equal(await fw.ban("10.99.0.1", 60), "failed");
        assert.ok(errors.some((e) => /^nft .*10\.99\.0\.1/.test(e)), errors.join("\n"));
        assert.equal(await fw.ban("10.99.0.2", 60), "banned");
        assert.match(await setText(lab, "banned4"), /10\.99\.0\.2/);
      });

      await t.step(
        "the forward hook adds one forward chain; a restart without it drops it",
        async () => {
          const table = async () =>
            (await lab.exec(lab.target, ["nft", "list", "table", "inet", "scanblocker"])).stdout;
          for (const round of [1, 2]) {
            await fw.close();
            fw = make(lab, errors, ["input", "forward"]);
            await fw.init();
            const text = await table();
            assert.match(text, /chain forward \{\s*type filter hook forward/, `round ${round}`);
            assert.equal(text.match(/@banned4 drop/g)?.length, 2, `round ${round}: ${text}`);
            assert.equal(text.match(/@banned6 drop/g)?.length, 2, `round ${round}: ${text}`);
          }
          await fw.close();
          fw = make(lab, errors); // no hooks given (a subcommand): forward left as found
          await fw.init();
          assert.match(await table(), /hook forward/, "forward chain kept without hooks");
          await fw.close();
          fw = make(lab, errors, ["input"]);
          await fw.init();
          const text = await table();
          assert.doesNotMatch(text, /hook forward/);
          assert.equal(text.match(/@banned4 drop/g)?.length, 1, text);
          await fw.close();
          fw = make(lab, errors, ["forward"]);
          await fw.init();
          const fwd = await table();
          assert.match(fwd, /hook forward/);
          assert.doesNotMatch(fwd, /hook input/);
          assert.equal(await fw.ban("10.99.0.3", 60), "banned");
        },
      );

      await t.step("flush removes the table", async () => {
        await fw.flush();
        const r = await lab.exec(lab.target, ["nft", "list", "tables"]);
        assert.doesNotMatch(r.stdout, /scanblocker/);
        assert.deepEqual(await fw.list(), []);
      });
    } finally {
      await fw.close();
      await lab.destroy();
    }
  },
});

Deno.test({
  name:
    "nftables backend: a repair that cannot put the speed bump back is a firewall error, and the bump says off",
  ignore: !enabled,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withRefusingFirewall(
      "fwbmp",
      "nftables",
      ["nft -f -"],
      "scanblocker bump {",
      "Error: refused by the test",
      async ({ lab, fw, errors, refuse }) => {
        const bump = TEST_BUMP;
        await fw.init();
        assert.equal((await fw.setBump!(bump)).on, true);
        assert.equal(fw.bumpState!()?.on, true);
        // Removed from outside, and nft now refuses it: the repair puts the table back, not the bump.
        await refuse(true);
        for (const cmd of [["flush", "chain"], ["delete", "chain"]]) {
          const r = await lab.exec(lab.target, ["nft", ...cmd, "inet", "scanblocker", "bump"]);
          assert.equal(r.code, 0, r.stderr);
        }
        const k = await fw.reconcile!();
        assert.deepEqual(k?.repaired, ["nftables bump"]);
        const state = fw.bumpState!();
        assert.equal(state?.on, false);
        assert.match(
          errors.join("\n"),
          /speed bump not put back: nftables refused it: Error: refused by the test/,
        );
        // Once nft takes it again, the same settings put it back (BumpSync retries them).
        await refuse(false);
        assert.equal((await fw.setBump!(bump)).on, true);
        const r = await lab.exec(lab.target, LIST_BUMP);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(errors.length, 1, errors.join("\n"));
      },
    );
  },
});

Deno.test({
  name: "nftables backend: a speed bump that cannot be removed (turned off) is a firewall error",
  ignore: !enabled,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withRefusingFirewall(
      "fwbrm",
      "nftables",
      ["nft -f -"],
      "delete chain inet scanblocker bump",
      "Error: refused by the test",
      async ({ lab, fw, errors, refuse }) => {
        await fw.init();
        assert.equal((await fw.setBump!(TEST_BUMP)).on, true);
        await refuse(true);
        // Off (a reload to --detector psd): nft refuses the removal.
        assert.equal((await fw.setBump!(null)).on, false);
        assert.match(
          errors.join("\n"),
          /speed bump not removed: nftables refused it: Error: refused by the test/,
        );
        const left = await lab.exec(lab.target, LIST_BUMP);
        assert.equal(left.code, 0, "the bump is still there, and said so");
        await refuse(false);
        await fw.setBump!(null);
        const gone = await lab.exec(lab.target, LIST_BUMP);
        assert.notEqual(gone.code, 0, "removed once nft takes it");
        assert.equal(errors.length, 1, errors.join("\n"));
      },
    );
  },
});
