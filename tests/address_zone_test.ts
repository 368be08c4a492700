/**
 * parseAddress and the IPv6 zone id (`fe80::1%eth0`): only an interface-name
 * shaped zone is accepted, so no text with newlines, spaces or control
 * characters can pass the validator and reach a firewall command later.
 */
import assert from "node:assert/strict";
import { canonicalAddress, parseAddress, parseCidr } from "../src/address.ts";

Deno.test("parseAddress: a zone id like an interface name is accepted and dropped", () => {
  for (const z of ["eth0", "enp0s31f6", "br-1a2b.100", "wg_0", "1", "a23456789012345"]) {
    const a = parseAddress(`fe80::1%${z}`);
    assert.ok(a, z);
    assert.equal(a.family, 6);
    assert.equal(canonicalAddress(`fe80::1%${z}`), "fe80::1");
  }
});

Deno.test("parseAddress: a zone id with newlines, spaces, control characters or odd length is refused", () => {
  const bad = [
    "fe80::1%eth0\n-A INPUT -j ACCEPT\nCOMMIT",
    "fe80::1%eth0\nx",
    "fe80::1%eth 0",
    "fe80::1%eth0\tx",
    "fe80::1%eth0\rx",
    "fe80::1%eth0\0",
    "fe80::1%\u0085x",
    "fe80::1%",
    "fe80::1%a234567890123456", // 16 characters: longer than IFNAMSIZ-1
    "fe80::1%eth0%eth1",
    "fe80::1%eth/0",
    "fe80::1%ä",
    "[fe80::1%eth0\n]",
  ];
  for (const t of bad) {
    assert.equal(parseAddress(t), null, JSON.stringify(t));
    assert.equal(parseCidr(`${t}/128`), null, JSON.stringify(t));
  }
});
