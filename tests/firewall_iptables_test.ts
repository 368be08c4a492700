/**
 * The iptables backend against real iptables/ip6tables inside a namespace
 * lab: bans become DROP rules in SCANBLOCKER that really drop the scanner,
 * restart reloads them without a second INPUT jump, the timer expires short
 * bans, unban/flush work, and an iptables-restore error mid-stream is
 * reported and the runner recovers.
 */
import assert from "node:assert/strict";
import { canUseNetns, createLab, type Lab, portStates } from "./netns.ts";
import { createFirewall, type FirewallHook } from "../src/firewall/firewall.ts";
import type { Firewall } from "../src/types.ts";
import { TEST_BUMP, withRefusingFirewall } from "./refusing_firewall.ts";

const enabled = await canUseNetns();

function make(lab: Lab, errors: string[], hooks?: FirewallHook[]): Firewall {
  return createFirewall("iptables-rules", {
    isProtected: (a) => a === lab.target4 || a === lab.target6,
    onError: (m) => errors.push(m),
    maxBans: 1000,
    commandPrefix: lab.prefix(lab.target),
    hooks,
  });
}

async function rules(lab: Lab, tool = "iptables", chain = "SCANBLOCKER"): Promise<string> {
  const r = await lab.exec(lab.target, [tool, "-S", chain]);
  return r.stdout + r.stderr;
}

/** Waits until SCANBLOCKER holds no rule matching `re` (10 s at most). */
async function gone(lab: Lab, re: RegExp): Promise<void> {
  for (const end = Date.now() + 10_000;;) {
    const r = await rules(lab);
    if (!re.test(r)) return;
    assert.ok(Date.now() < end, `still there after 10 s: ${r}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** nmap's state word for one port, scanned from the scanner namespace. */
const portState = (lab: Lab, addr: string, port: number) => portStates(lab, addr, [port]);

Deno.test({
  name: "iptables backend: ban, drop, restart, expiry, unban, recovery, flush",
  ignore: !enabled,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const lab = await createLab("fwipt");
    const errors: string[] = [];
    let fw = make(lab, errors);
    try {
      await t.step("init creates the chain and one INPUT jump", async () => {
        assert.deepEqual(await fw.init(), []);
        assert.match(await rules(lab, "iptables", "INPUT"), /^-A INPUT -j SCANBLOCKER$/m);
        assert.match(await rules(lab, "ip6tables", "INPUT"), /^-A INPUT -j SCANBLOCKER$/m);
      });

      await t.step("IPv4 ban becomes a DROP rule and drops the scanner", async () => {
        assert.equal(await portState(lab, lab.target4, 22), "closed");
        assert.equal(await fw.ban(lab.scanner4, 3600), "banned");
        const exp = Math.floor(Date.now() / 1000) + 3600;
        const m = /-s (\S+)\/32 -m comment --comment "scanblocker expires=(\d+)" -j DROP/.exec(
          await rules(lab),
        );
        assert.ok(m, "rule present");
        assert.equal(m[1], lab.scanner4);
        assert.ok(Math.abs(Number(m[2]) - exp) <= 2);
        assert.equal(await fw.ban(lab.scanner4, 3600), "already");
        assert.equal(await portState(lab, lab.target4, 22), "filtered");
      });

      await t.step("IPv6 ban lands in ip6tables and drops the scanner", async () => {
        assert.equal(await portState(lab, lab.target6, 80), "closed");
        assert.equal(await fw.ban(lab.scanner6, 0), "banned");
        assert.match(
          await rules(lab, "ip6tables"),
          new RegExp(`-s ${lab.scanner6}/128 .*scanblocker expires=never`),
        );
        assert.equal(await portState(lab, lab.target6, 80), "filtered");
      });

      await t.step("a protected address is refused", async () => {
        assert.equal(await fw.ban(lab.target4, 60), "refused");
        assert.doesNotMatch(await rules(lab), new RegExp(`${lab.target4}/32`));
      });

      await t.step("bans requested together all land", async () => {
        const addrs = Array.from({ length: 200 }, (_, i) => `10.77.${i >> 8}.${i & 255}`);
        const res = await Promise.all(addrs.map((a) => fw.ban(a, 3600)));
        assert.ok(res.every((r) => r === "banned"), res.join(","));
        const text = await rules(lab);
        for (const a of [addrs[0], addrs[100], addrs[199]]) assert.ok(text.includes(`${a}/32`), a);
      });

      await t.step("restart reloads the bans without a second jump", async () => {
        await fw.close();
        fw = make(lab, errors);
        const bans = await fw.init();
        assert.equal(bans.length, 202);
        const v4 = bans.find((b) => b.address === lab.scanner4);
        const v6 = bans.find((b) => b.address === lab.scanner6);
        assert.ok(v4 && v4.expiresAt !== null && v4.expiresAt > Date.now() + 3500_000);
        assert.ok(v6 && v6.expiresAt === null);
        assert.equal(await fw.ban(lab.scanner4, 3600), "already");
        const input = await rules(lab, "iptables", "INPUT");
        assert.equal(input.match(/-j SCANBLOCKER/g)?.length, 1, input);
      });

      await t.step("a 2 s ban is removed on time", async () => {
        assert.equal(await fw.ban("10.88.0.1", 2), "banned");
        assert.match(await rules(lab), /10\.88\.0\.1\/32/);
        // Gone after its 2 s (the expiry timer, then iptables-restore; polled:
        // a loaded machine's removal can take longer than a fixed wait).
        await new Promise((r) => setTimeout(r, 2000));
        await gone(lab, /10\.88\.0\.1\/32/);
        assert.ok(!(await fw.list()).some((b) => b.address === "10.88.0.1"));
      });

      await t.step("an expired rule found at start is dropped", async () => {
        await lab.exec(lab.target, [
          "iptables",
          "-A",
          "SCANBLOCKER",
          "-s",
          "10.66.0.1/32",
          "-m",
          "comment",
          "--comment",
          "scanblocker expires=1000",
          "-j",
          "DROP",
        ]);
        await fw.close();
        fw = make(lab, errors);
        const bans = await fw.init();
        assert.ok(!bans.some((b) => b.address === "10.66.0.1"));
        await gone(lab, /10\.66\.0\.1/);
      });

      await t.step("unban removes one ban", async () => {
        assert.equal(await fw.unban(lab.scanner4), true);
        assert.doesNotMatch(await rules(lab), new RegExp(`${lab.scanner4}/32`));
        assert.equal(await fw.unban(lab.scanner4), false);
        assert.equal(await portState(lab, lab.target4, 22), "closed");
      });

      await t.step("an iptables-restore error is reported and the runner recovers", async () => {
        errors.length = 0;
        // Pull the chain away under the running iptables-restore: the next block fails.
        for (
          const cmd of [
            ["iptables", "-D", "INPUT", "-j", "SCANBLOCKER"],
            ["iptables", "-F", "SCANBLOCKER"],
            ["iptables", "-X", "SCANBLOCKER"],
          ]
        ) assert.equal((await lab.exec(lab.target, cmd)).code, 0);
        assert.equal(await fw.ban("10.99.0.1", 60), "failed");
        assert.ok(
          errors.some((e) => /^iptables-restore .*10\.99\.0\.1.*exited with status/.test(e)),
          errors.join("\n"),
        );
        assert.equal(await fw.ban("10.99.0.2", 60), "banned");
        assert.match(await rules(lab), /10\.99\.0\.2\/32/);
        const input = await rules(lab, "iptables", "INPUT");
        assert.equal(input.match(/-j SCANBLOCKER/g)?.length, 1, input);
      });

      await t.step(
        "the forward hook adds one FORWARD jump; a restart without it drops it",
        async () => {
          const jumps = async (tool: string, chain: string) =>
            (await rules(lab, tool, chain)).match(/-j SCANBLOCKER/g)?.length ?? 0;
          for (const round of [1, 2]) {
            await fw.close();
            fw = make(lab, errors, ["input", "forward"]);
            await fw.init();
            for (const tool of ["iptables", "ip6tables"]) {
              assert.equal(await jumps(tool, "FORWARD"), 1, `${tool} FORWARD, round ${round}`);
              assert.equal(await jumps(tool, "INPUT"), 1, `${tool} INPUT, round ${round}`);
            }
            assert.match(await rules(lab, "iptables", "FORWARD"), /^-A FORWARD -j SCANBLOCKER$/m);
          }
          await fw.close();
          fw = make(lab, errors); // no hooks given (a subcommand): forward left as found
          await fw.init();
          assert.equal(await jumps("iptables", "FORWARD"), 1, "FORWARD kept without hooks");
          await fw.close();
          fw = make(lab, errors, ["input"]);
          await fw.init();
          for (const tool of ["iptables", "ip6tables"]) {
            assert.equal(
              await jumps(tool, "FORWARD"),
              0,
              `${tool} FORWARD after input-only restart`,
            );
            assert.equal(await jumps(tool, "INPUT"), 1, `${tool} INPUT after input-only restart`);
          }
          await fw.close();
          fw = make(lab, errors, ["forward", "input"]);
          await fw.init(); // the flush below must remove the FORWARD jump too
          assert.equal(await jumps("iptables", "FORWARD"), 1);
        },
      );

      await t.step("flush leaves nothing installed", async () => {
        await fw.flush();
        for (const tool of ["iptables", "ip6tables"]) {
          const r = await lab.exec(lab.target, [tool, "-S"]);
          assert.doesNotMatch(r.stdout, /SCANBLOCKER/, tool);
        }
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
    "iptables (ipset sets): a repair that cannot put the speed bump back is a firewall error, and the bump says off",
  ignore: !enabled,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withRefusingFirewall(
      "fwibmp",
      "iptables",
      ["iptables-restore --noflush", "ip6tables-restore --noflush"],
      "-A SCANBLOCKER-BUMP",
      "refused by the test",
      async ({ lab, fw, errors, refuse }) => {
        const bump = TEST_BUMP;
        await fw.init();
        assert.equal((await fw.setBump!(bump)).on, true, fw.describePath());
        await refuse(true);
        // The jump to the bump's chain removed from outside, and the rules now refused.
        const jump = ["-p", "tcp", "--tcp-flags", "SYN,ACK", "SYN", "-j", "SCANBLOCKER-BUMP"];
        const r = await lab.exec(lab.target, ["iptables", "-D", "INPUT", ...jump]);
        assert.equal(r.code, 0, r.stderr);
        const k = await fw.reconcile!();
        assert.ok(k?.repaired.some((m) => /speed bump/.test(m)), JSON.stringify(k?.repaired));
        assert.equal(fw.bumpState!()?.on, false);
        assert.match(
          errors.join("\n"),
          /speed bump not put back: iptables refused it: refused by the test/,
        );
        await refuse(false);
        assert.equal((await fw.setBump!(bump)).on, true);
        assert.match(await rules(lab, "iptables", "INPUT"), /-j SCANBLOCKER-BUMP/);
        assert.equal(errors.length, 1, errors.join("\n"));
      },
    );
  },
});

Deno.test({
  name:
    "iptables (ipset sets): a speed bump that cannot be removed (turned off) is a firewall error",
  ignore: !enabled,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withRefusingFirewall(
      "fwibrm",
      "iptables",
      ["iptables-restore --noflush", "ip6tables-restore --noflush"],
      "-X SCANBLOCKER-BUMP",
      "refused by the test",
      async ({ lab, fw, errors, refuse }) => {
        await fw.init();
        assert.equal((await fw.setBump!(TEST_BUMP)).on, true, fw.describePath());
        await refuse(true);
        assert.equal((await fw.setBump!(null)).on, false);
        assert.match(
          errors.join("\n"),
          /speed bump not removed: iptables refused it: refused by the test/,
        );
        assert.match(await rules(lab, "iptables", "INPUT"), /-j SCANBLOCKER-BUMP/);
        await refuse(false);
        await fw.setBump!(null);
        assert.doesNotMatch(await rules(lab, "iptables", "INPUT"), /-j SCANBLOCKER-BUMP/);
        assert.equal(
          errors.filter((e) => /iptables refused/.test(e)).length,
          1,
          errors.join("\n"),
        );
      },
    );
  },
});

Deno.test({
  name:
    "iptables (ipset sets): a set an earlier run made smaller (maxelem) is grown, with its bans, so bans past its old size land",
  ignore: !enabled,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const lab = await createLab("fwigrow");
    const errors: string[] = [];
    const ipset = (...args: string[]) => lab.exec(lab.target, ["ipset", ...args]);
    // An earlier run's set: 16 bans at most, one held.
    const made = await ipset(
      ...["create", "scanblocker4", "hash:ip", "family", "inet"],
      "maxelem",
      "16",
    );
    assert.equal(made.code, 0, made.stderr);
    assert.equal((await ipset("add", "scanblocker4", "10.66.0.1")).code, 0);
    const fw = createFirewall("iptables", {
      isProtected: () => false,
      onError: (m) => errors.push(m),
      maxBans: 1000,
      commandPrefix: lab.prefix(lab.target),
    });
    try {
      const restored = await fw.init();
      assert.deepEqual(restored.map((b) => b.address), ["10.66.0.1"], "its ban kept");
      const header = (await ipset("list", "-t", "scanblocker4")).stdout;
      assert.match(header, /maxelem 2024\b/, header);
      const addrs = Array.from({ length: 40 }, (_, i) => `10.77.0.${i + 1}`);
      const got = await Promise.all(addrs.map((a) => fw.ban(a, 600)));
      assert.deepEqual(got, Array(40).fill("banned"), errors.join("\n"));
      const held = (await ipset("save", "scanblocker4")).stdout;
      assert.equal(held.match(/^add scanblocker4 /gm)?.length, 41, held);
      assert.match(held, /^add scanblocker4 10\.66\.0\.1 timeout \d+$/m);
      assert.deepEqual(errors, []);
      assert.notEqual((await ipset("list", "-n", "scanblocker4-grow")).code, 0, "no copy left");
    } finally {
      await fw.flush();
      await fw.close();
      await lab.destroy();
    }
  },
});
