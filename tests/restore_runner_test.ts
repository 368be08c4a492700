/**
 * The iptables-restore runner's confirmations belong to the process and the
 * block they answer. A fake helper (a shell script given as the command; the
 * real iptables-restore cannot be made slow on purpose) plays three process
 * generations: the first confirms its block too late, after the runner gave
 * up on it and started a second; the second never confirms; the third
 * confirms at once. Before the fix one waiting slot was shared by all
 * generations, so the first process's late marker (or its exit) answered
 * the second process's block.
 */
import assert from "node:assert/strict";
import { IPT_SYNC_CHAIN, RestoreRunner } from "../src/firewall/iptables.ts";

const FAKE = `#!/bin/sh
dir=$(dirname "$0")
n=$(cat "$dir/gen" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$dir/gen"
while IFS= read -r line; do
  if [ "$line" = "-F ${IPT_SYNC_CHAIN} -v" ]; then
    case "$n" in
      1) sleep 1.5; echo "Flushing chain \\\`${IPT_SYNC_CHAIN}'" ;;
      2) : ;;
      *) echo "Flushing chain \\\`${IPT_SYNC_CHAIN}'" ;;
    esac
  fi
done
`;

Deno.test("RestoreRunner: a late marker of a replaced process confirms nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sb-restore-" });
  const fake = `${dir}/fake-restore`;
  await Deno.writeTextFile(fake, FAKE);
  await Deno.chmod(fake, 0o755);
  const runner = new RestoreRunner("fake-restore", [fake], 1000);
  try {
    // Generation 1 confirms after 1.5 s: too late, the block is given up at 1 s.
    const a = await runner.apply(["-A SCANBLOCKER -s 192.0.2.1/32 -j DROP"]);
    assert.match(String(a), /no confirmation within 1 s/);
    // Generation 2 never confirms; generation 1's late marker (at 1.5 s) and
    // its exit must not answer for it.
    const t0 = Date.now();
    const b = await runner.apply(["-A SCANBLOCKER -s 192.0.2.2/32 -j DROP"]);
    assert.match(String(b), /no confirmation within 1 s/, `answered after ${Date.now() - t0} ms`);
    // Generation 3 confirms promptly.
    const c = await runner.apply(["-A SCANBLOCKER -s 192.0.2.3/32 -j DROP"]);
    assert.equal(c, null);
    assert.equal((await Deno.readTextFile(`${dir}/gen`)).trim(), "3");
  } finally {
    await runner.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
