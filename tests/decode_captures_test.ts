/**
 * The decoder against real captures: nmap scans between two network
 * namespaces recorded by tcpdump (tests/fixtures/record.sh) on the Ethernet
 * veth and with `-i any` (Linux cooked v1 and v2). Every packet is decoded
 * and compared with tcpdump's own reading of the same file, line by line:
 * tcpdump prints one line per packet, so line i is packet i.
 */
import assert from "node:assert/strict";
import { decodePacket, isSupportedLinktype, LINKTYPE } from "../src/detect/decode.ts";
import { parseAddress } from "../src/address.ts";
import { DecodeStatus, newProbeEvent, TCP } from "../src/types.ts";
import { readPcapFile } from "./pcapfile.ts";
import { run } from "./netns.ts";

const FIXTURES = [
  { file: "eth.pcap", linktype: LINKTYPE.ETHERNET },
  { file: "any-sll2.pcap", linktype: LINKTYPE.LINUX_SLL2 },
  { file: "any-sll.pcap", linktype: LINKTYPE.LINUX_SLL },
];

/** tcpdump's flag letters (print-tcp.c); "e" is the AE/NS bit in newer releases. */
const FLAG_LETTERS: Record<string, number> = {
  F: TCP.FIN,
  S: TCP.SYN,
  R: TCP.RST,
  P: TCP.PSH,
  ".": TCP.ACK,
  U: TCP.URG,
  E: TCP.ECE,
  W: TCP.CWR,
  e: TCP.NS,
};

interface Seen {
  ts: string;
  family: 4 | 6;
  src: number[];
  sport: number;
  dst: number[];
  dport: number;
  flags: number;
}

const TCP_LINE = /^(\d+\.\d{6}) .*?\bIP(6?) (\S+)\.(\d+) > (\S+)\.(\d+): Flags \[([^\]]*)\]/;

/** Parses one line of `tcpdump -tt -nn -r`: the TCP fields, or null for anything else. */
function parseLine(line: string): Seen | null {
  const m = TCP_LINE.exec(line);
  if (!m) return null;
  const family = m[2] === "6" ? 6 : 4;
  const src = parseAddress(m[3]), dst = parseAddress(m[5]);
  assert.ok(src && dst, `addresses in ${line}`);
  assert.equal(src.family, family, line);
  assert.equal(dst.family, family, line);
  let flags = 0;
  if (m[7] !== "none") {
    for (const ch of m[7]) {
      assert.ok(ch in FLAG_LETTERS, `flag letter ${ch} in ${line}`);
      flags |= FLAG_LETTERS[ch];
    }
  }
  return {
    ts: m[1],
    family,
    src: [...src.bytes],
    sport: Number(m[4]),
    dst: [...dst.bytes],
    dport: Number(m[6]),
    flags,
  };
}

async function hasTcpdump(): Promise<boolean> {
  try {
    return (await run(["tcpdump", "--version"])).code === 0;
  } catch {
    return false;
  }
}

const tcpdumpOk = await hasTcpdump();

for (const fx of FIXTURES) {
  Deno.test({
    name: `decode captures: ${fx.file} matches tcpdump packet by packet`,
    ignore: !tcpdumpOk,
    async fn() {
      const path = new URL(`./fixtures/${fx.file}`, import.meta.url);
      const pcap = await readPcapFile(path);
      assert.equal(pcap.linktype, fx.linktype);
      assert.ok(isSupportedLinktype(pcap.linktype));
      assert.equal(pcap.snaplen, 128);

      const td = await run(["tcpdump", "-tt", "-nn", "-r", path.pathname]);
      assert.equal(td.code, 0, td.stderr);
      const lines = td.stdout.split("\n").filter((l) => l !== "");
      assert.equal(lines.length, pcap.records.length, "one tcpdump line per packet");

      const ev = newProbeEvent();
      const syn = { 4: 0, 6: 0 };
      const ecnSyn = { 4: 0, 6: 0 };
      let tcpLines = 0, tinyFragments = 0;
      for (let i = 0; i < lines.length; i++) {
        const r = pcap.records[i], line = lines[i];
        const ts = `${r.tsSec}.${String(r.tsUsec).padStart(6, "0")}`;
        assert.ok(line.startsWith(ts + " "), `packet ${i}: timestamp ${ts} vs ${line}`);
        const st = decodePacket(pcap.linktype, pcap.view, r.offset, r.caplen, ev);
        const want = parseLine(line);
        if (want) {
          tcpLines++;
          assert.equal(st, DecodeStatus.Ok, `packet ${i}: ${line}`);
          const n = ev.family === 4 ? 4 : 16;
          const got: Seen = {
            ts,
            family: ev.family,
            src: [...ev.src.subarray(0, n)],
            sport: ev.sport,
            dst: [...ev.dst.subarray(0, n)],
            dport: ev.dport,
            flags: ev.flags,
          };
          assert.deepEqual(got, want, `packet ${i}: ${line}`);
          if ((ev.flags & (TCP.SYN | TCP.ACK)) === TCP.SYN) {
            syn[ev.family]++;
            if ((ev.flags & (TCP.ECE | TCP.CWR)) === (TCP.ECE | TCP.CWR)) ecnSyn[ev.family]++;
          }
        } else if (line.includes("[|tcp]")) {
          // nmap -f: a first fragment too short for the TCP header.
          tinyFragments++;
          assert.equal(st, DecodeStatus.Malformed, `packet ${i}: ${line}`);
        } else {
          // ARP, ICMPv6, non-first fragments ("ip-proto-6"): not ours, not broken.
          assert.equal(st, DecodeStatus.Skip, `packet ${i}: ${line}`);
        }
      }
      // What record.sh scanned must be there: 100 IPv4 + 100 IPv6 ports, 8 + 8 ECN SYNs.
      assert.ok(syn[4] >= 108 && syn[6] >= 108, `SYNs ${JSON.stringify(syn)}`);
      assert.ok(ecnSyn[4] === 8 && ecnSyn[6] === 8, `ECN SYNs ${JSON.stringify(ecnSyn)}`);
      assert.ok(tinyFragments >= 1, "fragmented SYNs");
      assert.ok(tcpLines >= 400, `${tcpLines} TCP packets`);
    },
  });
}
