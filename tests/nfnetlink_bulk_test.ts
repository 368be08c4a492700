/**
 * Bulk set changes over netlink (ffi/nfnetlink.ts) inside a namespace of
 * this test's own: 100,000 IPv4 and 100,000 IPv6 elements in one call each
 * must all be in the kernel's sets afterwards (counted with `nft`, not with
 * the code under test), and a refused bulk change must come back promptly
 * with the kernel's error. Before the fix a nested attribute's 16-bit
 * length wrapped (2,000 IPv6 elements: success reported, 361 present) and a
 * refused large request waited ~10 s for an acknowledgement cut by the
 * reply buffer. Prints the time of each bulk add.
 */
import assert from "node:assert/strict";
import { canUseNetns, must, run } from "./netns.ts";

const enabled = await canUseNetns();
const nfnetlinkUrl = new URL("../ffi/nfnetlink.ts", import.meta.url).href;
const nftablesUrl = new URL("../src/firewall/nftables.ts", import.meta.url).href;

/** Run inside the namespace: creates the table, adds N elements per family, reports JSON. */
const SCRIPT = `
import { NftSocket } from ${JSON.stringify(nfnetlinkUrl)};
import { nftSetup } from ${JSON.stringify(nftablesUrl)};
const n = Number(Deno.args[0]);
const setup = new Deno.Command("nft", { args: ["-f", "-"], stdin: "piped" }).spawn();
const w = setup.stdin.getWriter();
await w.write(new TextEncoder().encode(nftSetup(["input"])));
await w.close();
if (!(await setup.status).success) Deno.exit(3);
const nl = new NftSocket("scanblocker");
const v4 = Array.from({ length: n }, (_, i) => ({
  key: new Uint8Array([10, (i >> 16) & 255, (i >> 8) & 255, i & 255]),
  timeoutMs: 3_600_000,
}));
const v6 = Array.from({ length: n }, (_, i) => {
  const key = new Uint8Array(16);
  key[0] = 0xfd; key[1] = 0x77; key[13] = (i >> 16) & 255; key[14] = (i >> 8) & 255; key[15] = i & 255;
  return { key, timeoutMs: i % 2 ? 3_600_000 : 0 };
});
// 2,000 IPv6 elements: before the fix, success was reported with 361 in the set.
const small = nl.add("banned6", Array.from({ length: 2000 }, (_, i) => {
  const key = new Uint8Array(16);
  key[0] = 0xfd; key[1] = 0x78; key[14] = i >> 8; key[15] = i & 255;
  return { key, timeoutMs: 3_600_000 };
}));
let t = performance.now();
const e4 = nl.add("banned4", v4);
const ms4 = performance.now() - t;
t = performance.now();
const e6 = nl.add("banned6", v6);
const ms6 = performance.now() - t;
t = performance.now();
const bad = nl.add("nosuchset", v6.slice(0, 5000));
const msBad = performance.now() - t;
t = performance.now();
const one = nl.add("banned4", [{ key: new Uint8Array([192, 0, 2, 1]), timeoutMs: 0 }]);
const msOne = performance.now() - t;
nl.close();
console.log(JSON.stringify({ small, e4, e6, ms4, ms6, bad, msBad, one, msOne }));
`;

/** Elements of one set, counted from `nft -j` output. */
async function count(ns: string, set: string): Promise<number> {
  const r = await run([
    "ip",
    "netns",
    "exec",
    ns,
    "nft",
    "-j",
    "list",
    "set",
    "inet",
    "scanblocker",
    set,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const doc = JSON.parse(r.stdout) as { nftables: { set?: { elem?: unknown[] } }[] };
  return doc.nftables.reduce((n, item) => n + (item.set?.elem?.length ?? 0), 0);
}

Deno.test({
  name: "nfnetlink: 100,000 IPv4 and 100,000 IPv6 elements in one call each all land",
  ignore: !enabled,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const n = 100_000;
    const ns = `sb-nlbulk-${Deno.pid % 100000}${Math.floor(Math.random() * 36 ** 3).toString(36)}`;
    const script = await Deno.makeTempFile({ prefix: "sb-nlbulk-", suffix: ".ts" });
    try {
      await must(["ip", "netns", "add", ns]);
      await Deno.writeTextFile(script, SCRIPT);
      const r = await run([
        "ip",
        "netns",
        "exec",
        ns,
        "timeout",
        "300",
        Deno.execPath(),
        "run",
        "-A",
        "--no-prompt",
        script,
        String(n),
      ]);
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
      console.log(
        `bulk add over netlink: ${n} IPv4 in ${out.ms4.toFixed(0)} ms, ` +
          `${n} IPv6 in ${out.ms6.toFixed(0)} ms; refused 5,000 in ${out.msBad.toFixed(0)} ms; ` +
          `one element in ${out.msOne.toFixed(2)} ms (loaded machine)`,
      );
      assert.equal(out.small, null);
      assert.equal(out.e4, null);
      assert.equal(out.e6, null);
      assert.equal(out.one, null);
      assert.equal(await count(ns, "banned4"), n + 1);
      assert.equal(await count(ns, "banned6"), n + 2000);
      // The refusal is the kernel's own error, without waiting for an acknowledgement cut short.
      assert.match(String(out.bad), /No such file or directory/);
      assert.ok(out.msBad < 3000, `refused bulk add took ${out.msBad} ms`);
    } finally {
      await run(["ip", "netns", "del", ns]);
      await Deno.remove(script).catch(() => {});
    }
  },
});
