/**
 * JIT warm-up for the live capture worker. V8 runs a function in its
 * interpreter until it has been called often enough; on a quiet host the
 * packet path would stay there for hours, and the first scanner would be
 * handled by cold code: about 50 µs a packet up to the threshold probe,
 * measured in the ban-latency bench, against about 1 µs once compiled. So
 * before the first real packet the worker runs a throw-away engine (same
 * settings, same classes, output discarded, nothing banned) over synthetic
 * scans from the benchmarking range 198.18.0.0/15 (RFC 2544) and fd00::/8.
 */
import { AllowList } from "../allowlist.ts";
import { createEngine, type EngineSettings } from "../detect/engine.ts";
import { EventLog, type LogFormat } from "../report/log.ts";

const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;
const RECORD_HEADER = 16;
const LINKTYPE_ETHERNET = 1;

/** Writes one pcap record (header + Ethernet/IP/TCP SYN) at `at`; returns the next offset. */
function writeSyn(v: DataView, at: number, ms: number, v6: boolean, src: number, port: number) {
  const ipLen = v6 ? 40 : 20;
  const caplen = 14 + ipLen + 20;
  v.setUint32(at, Math.floor(ms / 1000), true);
  v.setUint32(at + 4, Math.floor((ms % 1000) * 1000), true);
  v.setUint32(at + 8, caplen, true);
  v.setUint32(at + 12, caplen, true);
  const f = at + RECORD_HEADER;
  v.setUint16(f + 12, v6 ? ETHERTYPE_IPV6 : ETHERTYPE_IPV4);
  const ip = f + 14;
  if (v6) {
    v.setUint32(ip, 0x60000000);
    v.setUint16(ip + 4, 20);
    v.setUint8(ip + 6, 6);
    v.setUint8(ip + 7, 64);
    v.setUint32(ip + 8, 0xfd00_0000);
    v.setUint32(ip + 20, src);
    v.setUint32(ip + 24, 0xfd00_0000);
    v.setUint32(ip + 36, 1);
  } else {
    v.setUint8(ip, 0x45);
    v.setUint16(ip + 2, 40);
    v.setUint8(ip + 8, 64);
    v.setUint8(ip + 9, 6);
    v.setUint32(ip + 12, 0xc612_0000 | (src & 0xffff)); // 198.18.x.y
    v.setUint32(ip + 16, 0xc613_0001); // 198.19.0.1
  }
  const t = ip + ipLen;
  v.setUint16(t, 40000 + (src & 0xfff));
  v.setUint16(t + 2, port);
  v.setUint8(t + 12, 0x50);
  v.setUint8(t + 13, 0x02); // SYN
  return f + caplen;
}

/**
 * Runs `rounds` batches of synthetic probes (new sources, repeats, scans,
 * IPv4 and IPv6) through a throw-away engine built like the real one.
 * Returns the packets processed.
 */
export function warmUp(
  settings: EngineSettings,
  log: { format: LogFormat; rate: number },
  rounds = 40,
): number {
  // A small table: the code paths are the same, without a 48 MiB admission sketch to throw away.
  const engine = createEngine({ ...settings, maxSources: Math.min(settings.maxSources, 1000) }, {
    linktype: LINKTYPE_ETHERNET,
    allow: new AllowList([]),
    log: new EventLog(log.format, log.rate, () => {}),
    openPorts: { has: (port) => port === 22 },
    everyDestinationLocal: true,
    summarize: false,
    onScan: () => {},
    banFirst: () => {},
    onRepeatScanner: () => {},
  });
  const perBatch = 512;
  const buf = new Uint8Array(perBatch * (RECORD_HEADER + 14 + 40 + 20));
  const view = new DataView(buf.buffer);
  let ms = Date.UTC(2000, 0, 1);
  let packets = 0;
  for (let r = 0; r < rounds; r++) {
    let at = 0;
    for (let i = 0; i < perBatch; i++) {
      // 64 sources a batch, each probing 8 ports (a scan at the 4th), some twice.
      const src = r * 64 + (i >> 3);
      const port = 20 + (i & 7) - ((i & 7) === 7 ? 6 : 0);
      at = writeSyn(view, at, ms += 0.05, (i & 1) === 1 && (i & 8) !== 0, src, port);
    }
    engine.pipeline.processBatch({ view, start: 0, end: at });
    packets += perBatch;
  }
  return packets;
}
