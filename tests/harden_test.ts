/**
 * Hardening checks that need no namespace (issue 18): what a from-source
 * command prints, and the misleading messages of item 10.
 */
import assert from "node:assert/strict";
import { run } from "./netns.ts";

const root = new URL("..", import.meta.url).pathname;

Deno.test({
  name: "from source, `deno task start` prints nothing but the program's own output (item 11)",
  sanitizeResources: false,
  fn: async () => {
    const r = await run([
      "sh",
      "-c",
      `cd ${root} && NO_COLOR=1 timeout 60 deno task start --version`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^scanblocker \d/);
    assert.doesNotMatch(r.stderr, /experimental|Warning/i, r.stderr);
  },
});
