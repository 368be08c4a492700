/**
 * Slow scans (issue 17): the SYNs of a real nmap capture replayed through
 * `-r` at nmap -T0's pace (one probe every 5 minutes) are caught by the slow
 * rule at the 8th closed port; 7 such probes are not a scan.
 */
import assert from "node:assert/strict";
import { runMain } from "./daemon.ts";
import { parsePcap } from "./pcapfile.ts";
import { decodePacket } from "../src/detect/decode.ts";
import { DecodeStatus, newProbeEvent } from "../src/types.ts";
import { formatAddress } from "../src/address.ts";

const fixture = (name: string) => new URL(`./fixtures/${name}`, import.meta.url).pathname;

/**
 * The first `count` SYNs of the capture's first scanning source, each to a
 * new port, rewritten `gapS` seconds apart; returns their source.
 */
function stretchedSyns(src: string, dst: string, count: number, gapS: number): string {
  const bytes = Deno.readFileSync(src);
  const f = parsePcap(bytes);
  const ev = newProbeEvent();
  const parts: Uint8Array[] = [bytes.subarray(0, 24)];
  let scanner = "";
  const ports = new Set<number>();
  for (const r of f.records) {
    if (decodePacket(f.linktype, f.view, r.offset, r.caplen, ev) !== DecodeStatus.Ok) continue;
    if ((ev.flags & 0x12) !== 0x02 || ev.family !== 4) continue;
    const s = formatAddress(4, ev.src);
    scanner ||= s;
    if (s !== scanner || ports.has(ev.dport)) continue;
    ports.add(ev.dport);
    const rec = bytes.slice(r.offset - 16, r.offset + r.caplen);
    const v = new DataView(rec.buffer);
    v.setUint32(0, 1_700_000_000 + parts.length * gapS, true);
    v.setUint32(4, 0, true);
    parts.push(rec);
    if (ports.size === count) break;
  }
  assert.equal(ports.size, count, "the fixture holds enough distinct ports");
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  Deno.writeFileSync(dst, out);
  return scanner;
}

Deno.test("slow scan: 8 closed ports at -T0 pace (one every 5 min) are caught by the slow rule at the 8th", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const file = `${dir}/t0.pcap`;
    const scanner = stretchedSyns(fixture("eth.pcap"), file, 8, 300);
    const r = await runMain(["-r", file, "--log-format", "json"]);
    assert.equal(r.code, 0, r.stderr);
    const ev = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
    const scans = ev.filter((e) => e.event === "scan_detected");
    assert.equal(scans.length, 1, r.stdout);
    assert.equal(scans[0].src, scanner);
    assert.equal(scans[0].rule, "slow");
    // At the 8th probe: 35 minutes after the first.
    assert.equal(Date.parse(scans[0].time), (1_700_000_000 + 8 * 300) * 1000);

    // Seven closed ports over 30 minutes are not a scan.
    const seven = `${dir}/t0-7.pcap`;
    stretchedSyns(fixture("eth.pcap"), seven, 7, 300);
    const r7 = await runMain(["-r", seven]);
    assert.match(r7.stdout, /, 0 scans/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
