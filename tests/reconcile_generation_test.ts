/**
 * Reconciliation skips listing the kernel (a child process every 5 s, the
 * largest cost of an idle daemon after /proc/net/tcp) while nf_tables'
 * generation stands still, and still sees every change made from outside:
 * both backends run in a script inside a namespace (as the daemon does: no
 * command prefix), which prints what each reconcile returned.
 */
import assert from "node:assert/strict";
import { canUseNetns, createLab } from "./netns.ts";
import { KernelGeneration } from "../src/firewall/generation.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const enabled = await canUseNetns();

Deno.test("KernelGeneration: a read is skipped only for the same generation, and not for long", () => {
  let now = 0;
  const g = new KernelGeneration(() => now);
  assert.equal(g.unchanged(7), false, "nothing read yet");
  g.took(7);
  assert.equal(g.unchanged(7), true);
  assert.equal(g.unchanged(8), false, "moved");
  assert.equal(g.unchanged(null), false, "unknown");
  now = 59_999;
  assert.equal(g.unchanged(7), true);
  now = 60_000;
  assert.equal(g.unchanged(7), false, "a full read at least every FULL_READ_MS");
  g.took(7);
  g.forget();
  assert.equal(g.unchanged(7), false, "forgotten after a repair");
  assert.equal(g.skipped, 2);
});

/** A removal from outside, per backend (the default iptables holds its bans in ipset sets). */
const OUTSIDE: Record<string, string[]> = {
  "nftables": ["nft", "flush", "set", "inet", "scanblocker", "banned4"],
  "iptables-rules": ["iptables", "-w", "-F", "SCANBLOCKER"],
  "iptables": ["ipset", "flush", "scanblocker4"],
};

const script = (firewall: string, scanner: string, skips: boolean) => `
import { createFirewall } from "${ROOT}src/firewall/firewall.ts";
const run = (...cmd) => new Deno.Command(cmd[0], { args: cmd.slice(1) }).output();
const fw = createFirewall("${firewall}", {
  isProtected: () => false, onError: (m) => console.error(m), maxBans: 1000,
});
await fw.init();
const show = (k) => console.log(JSON.stringify({ unchanged: k?.unchanged === true, bans: k?.bans.map((b) => b.address) ?? null }));
// Nothing changed: a read is skipped once the backend's own late commits
// (the per-rule form's set-up, a ban's marker) are through; at most 1 s.
const quiet = async () => {
  let k = await fw.reconcile();
  for (let i = 0; ${skips} && i < 20 && k?.unchanged !== true; i++) {
    await new Promise((r) => setTimeout(r, 50));
    k = await fw.reconcile();
  }
  return k;
};
show(await fw.reconcile()); // 1: first read
show(await quiet()); // 2: nothing changed
await fw.ban("${scanner}", 3600);
show(await fw.reconcile()); // 3: our own ban moved the generation
show(await quiet()); // 4: nothing changed
await run(...${JSON.stringify(OUTSIDE[firewall])});
show(await fw.reconcile()); // 5: removed from outside: seen
show(await quiet()); // 6: nothing changed
await fw.close();
`;

for (const firewall of ["nftables", "iptables-rules", "iptables"]) {
  // ipset is not nf_tables: its changes do not move the generation, so the
  // ipset form (the default iptables) lists the kernel on every read.
  const skips = firewall !== "iptables";
  Deno.test({
    name: `${firewall}: reconcile ${
      skips ? "skips the listing while nothing was committed" : "lists on every read (ipset)"
    }, and sees a removal`,
    ignore: !enabled,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const lab = await createLab("gen");
      const file = await Deno.makeTempFile({ suffix: ".ts" });
      try {
        await Deno.writeTextFile(file, script(firewall, "192.0.2.7", skips));
        const r = await lab.exec(lab.target, [
          Deno.execPath(),
          "run",
          "-A",
          `--config=${ROOT}deno.json`,
          file,
        ]);
        assert.equal(r.code, 0, r.stderr);
        const got = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
        // An unchanged read carries no list: the last one stands.
        const same = (bans: string[]) =>
          skips ? { unchanged: true, bans: [] } : { unchanged: false, bans };
        assert.deepEqual(got, [
          { unchanged: false, bans: [] },
          same([]),
          { unchanged: false, bans: ["192.0.2.7"] },
          same(["192.0.2.7"]),
          { unchanged: false, bans: [] },
          same([]),
        ], r.stdout + r.stderr);
      } finally {
        await Deno.remove(file);
        await lab.destroy();
      }
    },
  });
}

Deno.test({
  name:
    "ipset form: the sets are read every time, the rules only when nf_tables moved; a match rule removed from outside is put back",
  ignore: !enabled,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const lab = await createLab("gens");
    const file = await Deno.makeTempFile({ suffix: ".ts" });
    try {
      await Deno.writeTextFile(
        file,
        `
import { createFirewall } from "${ROOT}src/firewall/firewall.ts";
const run = (...cmd) => new Deno.Command(cmd[0], { args: cmd.slice(1) }).output();
const fw = createFirewall("ipset", { isProtected: () => false, onError: (m) => console.error(m), maxBans: 1000 });
await fw.init();
const show = (k) => console.log(JSON.stringify({ skipped: fw.skippedRuleReads, repaired: k?.repaired ?? null, bans: k?.bans.map((b) => b.address) ?? null }));
show(await fw.reconcile()); // 1: rules read
show(await fw.reconcile()); // 2: rules skipped, sets read
await fw.ban("192.0.2.7", 3600);
show(await fw.reconcile()); // 3: a set element moves no generation: skipped, the ban is listed
await run("ipset", "del", "scanblocker4", "192.0.2.7");
show(await fw.reconcile()); // 4: removed from outside: seen
await run("iptables", "-w", "-D", "SCANBLOCKER", "-m", "set", "--match-set", "scanblocker4", "src", "-j", "DROP");
show(await fw.reconcile()); // 5: the generation moved: the rule is missing and put back
const s = await run("iptables", "-w", "-S", "SCANBLOCKER");
console.log(JSON.stringify({ rule: new TextDecoder().decode(s.stdout).includes("--match-set scanblocker4 src -j DROP") }));
await fw.flush();
await fw.close();
`,
      );
      const r = await lab.exec(lab.target, [
        Deno.execPath(),
        "run",
        "-A",
        `--config=${ROOT}deno.json`,
        file,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const got = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
      assert.deepEqual(got.slice(0, 4), [
        { skipped: 0, repaired: [], bans: [] },
        { skipped: 1, repaired: [], bans: [] },
        { skipped: 2, repaired: [], bans: ["192.0.2.7"] },
        { skipped: 3, repaired: [], bans: [] },
      ], r.stdout + r.stderr);
      assert.equal(got[4].skipped, 3, r.stdout);
      assert.deepEqual(got[4].repaired, ["iptables chain SCANBLOCKER"], r.stdout);
      assert.deepEqual(got[5], { rule: true }, r.stdout);
    } finally {
      await Deno.remove(file);
      await lab.destroy();
    }
  },
});
