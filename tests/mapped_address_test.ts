/**
 * IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) and the other addresses that
 * are never banned (unspecified, loopback, multicast, this host's), in every
 * form and on every path. The choice: a mapped address never appears on the
 * wire from a real host (RFC 4291 2.5.5.2; Linux drops TCP SYNs from one), so
 * a packet carrying one is spoofed; it is never counted or banned, neither
 * as IPv6 nor as the IPv4 address inside (which would let anyone with IPv6
 * reach get an IPv4 host banned). Typed by a person, the text means the IPv4
 * address (`unban ::ffff:192.0.2.1` is `unban 192.0.2.1`), but the firewall
 * refuses to ban it. Before the fix: the IPv4 rule `-s 192.0.2.55/32` from
 * IPv6 probes of ::ffff:192.0.2.55, and permanent IPv6 bans of
 * ::ffff:127.0.0.1 and of ::ffff:<this host's IPv4> from the worker.
 */
import assert from "node:assert/strict";
import { formatAddress, neverBanned, parseAddress } from "../src/address.ts";
import { AllowList } from "../src/allowlist.ts";
import { createFirewall } from "../src/firewall/firewall.ts";
import { runMain } from "./daemon.ts";
import { type Frame, pcapBytes } from "./pcap_files.ts";
import { eth, ipv6, tcp } from "./fixtures/frames.ts";

const v6 = (text: string) => [...parseAddress(text, true)!.bytes];

Deno.test("neverBanned names the address kinds that are never banned, in both families", () => {
  const cases: [string, string | null][] = [
    ["::ffff:192.0.2.55", "IPv4-mapped"],
    ["::ffff:127.0.0.1", "IPv4-mapped"],
    ["::192.0.2.55", "IPv4-compatible"],
    ["::", "unspecified"],
    ["::1", "loopback"],
    ["ff02::1", "multicast"],
    ["0.0.0.0", "unspecified"],
    ["0.1.2.3", "unspecified"],
    ["127.0.0.1", "loopback"],
    ["127.255.0.9", "loopback"],
    ["224.0.0.251", "multicast"],
    ["239.1.2.3", "multicast"],
    ["255.255.255.255", "broadcast"],
    ["192.0.2.55", null],
    ["2001:db8::55", null],
    ["64:ff9b::192.0.2.55", null],
  ];
  for (const [text, kind] of cases) {
    const a = parseAddress(text, true)!;
    assert.equal(neverBanned(a.family, a.bytes), kind, text);
  }
});

Deno.test("a mapped address keeps one text form; typed, it means the IPv4 address", () => {
  assert.equal(formatAddress(6, new Uint8Array(v6("::ffff:192.0.2.55"))), "::ffff:192.0.2.55");
  assert.deepEqual(parseAddress("::ffff:192.0.2.55"), {
    family: 4,
    bytes: new Uint8Array([192, 0, 2, 55]),
  });
  assert.equal(parseAddress("::ffff:192.0.2.55", true)?.family, 6);
});

Deno.test("the allow-list protects mapped and special addresses on bytes and on text", () => {
  const local4 = parseAddress("198.51.100.2")!;
  const al = new AllowList([], [local4]);
  for (
    const t of ["::ffff:192.0.2.55", "::ffff:127.0.0.1", "::ffff:198.51.100.2", "ff02::1", "::"]
  ) {
    const a = parseAddress(t, true)!;
    assert.ok(al.isProtected(a.family, a.bytes), t);
    assert.ok(al.isAllowed(a.family, a.bytes), t);
    assert.ok(al.isProtectedText(t), t);
    assert.ok(al.isProtectedText(`[${t.toUpperCase()}]`), t);
  }
  for (const t of ["224.0.0.1", "0.0.0.0", "255.255.255.255", "127.0.0.2", "198.51.100.2"]) {
    assert.ok(al.isProtectedText(t), t);
  }
  assert.ok(!al.isProtectedText("192.0.2.55"));
  assert.ok(!al.isProtectedText("2001:db8::55"));
});

Deno.test("the firewall refuses mapped and special addresses; unban of mapped text is the IPv4", async () => {
  const al = new AllowList([]);
  const errors: string[] = [];
  const fw = createFirewall("none", {
    isProtected: (t) => al.isProtectedText(t),
    onError: (m) => errors.push(m),
    maxBans: 10,
  });
  for (const t of ["::ffff:192.0.2.55", "::ffff:127.0.0.1", "::1", "ff02::1", "224.0.0.1", "::"]) {
    assert.equal(await fw.ban(t, 60), "refused", t);
  }
  assert.equal(await fw.ban("192.0.2.55", 60), "banned");
  assert.equal(await fw.unban("::ffff:192.0.2.55"), true);
  assert.deepEqual(await fw.list(), []);
  assert.deepEqual(errors, []);
});

/** SYNs from `src` (IPv6 text, mapped allowed) to `dst`, ports 1..n, 1 ms apart. */
function probes(src: string, dst: string, n: number, t0: number): Frame[] {
  return Array.from({ length: n }, (_, i) => ({
    tsSec: 1700000000,
    tsUsec: t0 + i * 1000,
    data: new Uint8Array(
      eth(
        0x86dd,
        ipv6({ src: v6(src), dst: v6(dst) }, tcp({ sport: 40000, dport: 1 + i, flags: 2 })),
      ),
    ),
  }));
}

Deno.test("offline: probes from mapped sources are never counted or banned; a real IPv6 scanner is", async () => {
  const dst = "2001:db8::2";
  const frames = [
    ...probes("::ffff:192.0.2.55", dst, 20, 0),
    ...probes("::ffff:127.0.0.1", dst, 20, 100_000),
    ...probes("::ffff:198.51.100.2", dst, 20, 200_000),
    ...probes("2001:db8::99", dst, 20, 300_000),
  ];
  const file = await Deno.makeTempFile({ prefix: "sb-mapped-", suffix: ".pcap" });
  try {
    await Deno.writeFile(file, pcapBytes(frames));
    const r = await runMain([
      "-r",
      file,
      "--local",
      "198.51.100.2",
      "--local",
      dst,
      "--log-rate",
      "0",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const scans = r.stdout.split("\n").filter((l) => /Port scan detected|banned\./.test(l));
    // -r bans nothing (firewall none), so the scan line is the verdict.
    assert.ok(scans.some((l) => l.includes("Port scan detected: 2001:db8::99")), r.stdout);
    for (const bad of ["ffff", "192.0.2.55", "127.0.0.1", "198.51.100.2"]) {
      assert.ok(!scans.some((l) => l.includes(bad)), `${bad}:\n${scans.join("\n")}`);
    }
    // Seen and logged, never counted as connection attempts against this host.
    assert.match(r.stdout, /New connection: \[::ffff:192\.0\.2\.55\]:40000 -> \[2001:db8::2\]:1$/m);
  } finally {
    await Deno.remove(file);
  }
});
