/**
 * ruleTemplate: where the address and the expiry text sit in a rule's
 * expressions, and the refusals that keep a wrong copy out of the kernel.
 * (The netlink socket itself is exercised in namespaces: firewall_inside_test.)
 */
import assert from "node:assert/strict";
import { type KernelRule, NFPROTO_IPV4, ruleTemplate } from "../ffi/nfnetlink.ts";

const where = { family: NFPROTO_IPV4, table: "filter", chain: "SCANBLOCKER" };
const key = new Uint8Array([192, 0, 2, 123]);
const text = "1999999999";

function rule(...parts: (number[] | string)[]): KernelRule {
  const bytes = parts.flatMap((p) => typeof p === "string" ? [...new TextEncoder().encode(p)] : p);
  return { handle: 1n, expressions: new Uint8Array(bytes), userdata: null };
}

Deno.test("ruleTemplate finds the address and the expiry digits once each", () => {
  const r = rule([0, 0, 0, 0], [192, 0, 2, 123], [9, 9], "scanblocker expires=", text, [0, 0]);
  const t = ruleTemplate(r, where, key, text);
  assert.ok(typeof t !== "string", String(t));
  assert.equal(t.keyAt, 4);
  assert.equal(t.keyLen, 4);
  assert.equal(t.textAt, 10 + "scanblocker expires=".length);
  assert.equal(t.textLen, 10);
  assert.equal(t.chain, "SCANBLOCKER");
  // A copy: changing the kernel's buffer later does not change the template.
  r.expressions[4] = 0;
  assert.equal(t.expressions[4], 192);
  const never = ruleTemplate(rule([192, 0, 2, 123], "scanblocker expires=never"), where, key, null);
  assert.ok(typeof never !== "string");
  assert.equal(never.textAt, -1);
  assert.equal(never.textLen, 0);
});

Deno.test("ruleTemplate refuses a rule where a field is missing or ambiguous", () => {
  assert.match(
    String(ruleTemplate(rule([10, 0, 0, 1], text), where, key, text)),
    /address not found/,
  );
  assert.match(
    String(ruleTemplate(rule([192, 0, 2, 123, 192, 0, 2, 123], text), where, key, text)),
    /address occurs twice/,
  );
  assert.match(
    String(ruleTemplate(rule([192, 0, 2, 123], "expires=never"), where, key, text)),
    /"1999999999" not found/,
  );
  assert.match(
    String(ruleTemplate(rule([192, 0, 2, 123], text, text), where, key, text)),
    /occurs twice/,
  );
});
