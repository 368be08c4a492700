/**
 * Large nftables batches (found by the fleet's 10,000 decisions at start):
 * the netlink element list is one attribute with a 16-bit length, so a batch
 * past 64 KiB got no answer from the kernel and every ban in it failed after
 * 10 s. 5,000 IPv4 and 2,000 IPv6 bans with a timeout, then their removal,
 * in a namespace of this test's own.
 */
import assert from "node:assert/strict";
import { canUseNetns, run } from "./netns.ts";

const root = await canUseNetns();

Deno.test({
  name: "nftables: 5,000 IPv4 and 2,000 IPv6 bans with timeouts in one batch, then removed",
  ignore: !root,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const ns = `sb-nftchunk-${Deno.pid}-${Math.floor(Math.random() * 1e6)}`;
    const script = `
      import { NftablesFirewall } from "${
      new URL("../src/firewall/nftables.ts", import.meta.url).href
    }";
      const errors = [];
      const fw = new NftablesFirewall({ isProtected: () => false, onError: (m) => errors.push(m), maxBans: 100000 });
      await fw.init();
      const v4 = Array.from({ length: 5000 }, (_, i) => "198.18." + (i >> 8) + "." + (i & 255));
      const v6 = Array.from({ length: 2000 }, (_, i) => "2001:db8::" + i.toString(16));
      const t0 = performance.now();
      const added = await Promise.all([...v4, ...v6].map((a) => fw.ban(a, 3600)));
      const addMs = performance.now() - t0;
      const removed = await Promise.all([...v4, ...v6].map((a) => fw.unban(a)));
      await fw.flush();
      await fw.close();
      console.log(JSON.stringify({
        banned: added.filter((r) => r === "banned").length,
        removed: removed.filter(Boolean).length,
        addMs, errors,
      }));`;
    await run(["ip", "netns", "add", ns]);
    try {
      const r = await run([
        "ip",
        "netns",
        "exec",
        ns,
        "timeout",
        "120",
        Deno.execPath(),
        "eval",
        script,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout.trim().split("\n").pop()!);
      assert.deepEqual(out.errors, []);
      assert.equal(out.banned, 7000);
      assert.equal(out.removed, 7000);
      assert.ok(out.addMs < 5000, `took ${out.addMs} ms`);
    } finally {
      await run(["ip", "netns", "del", ns]);
    }
  },
});
