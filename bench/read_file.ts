/**
 * Reads a capture file with the default filter and decodes every record, as
 * the program reads it (src/capture/pcapfile.ts, libpcap for what it leaves):
 * the reader half of the offline benchmark, timed as a whole process.
 * Usage: deno run -A bench/read_file.ts FILE  → prints "packets decoded".
 */
import { DEFAULT_FILTER, runCapture } from "../src/capture/capture.ts";
import { openCaptureFile } from "../src/capture/pcapfile.ts";
import { decodePacket } from "../src/detect/decode.ts";
import { DecodeStatus, newProbeEvent } from "../src/types.ts";

/** Reads `path` to the end; returns [records, decoded TCP segments]. */
export async function readFile(path: string): Promise<[number, number]> {
  const pcap = openCaptureFile(path, DEFAULT_FILTER);
  const ev = newProbeEvent();
  let records = 0;
  let decoded = 0;
  try {
    await runCapture(pcap, (b) => {
      const view = b.view;
      for (let at = b.start; at < b.end;) {
        const caplen = view.getUint32(at + 8, true);
        ev.tsSec = view.getUint32(at, true);
        ev.tsUsec = view.getUint32(at + 4, true);
        if (decodePacket(pcap.linktype, view, at + 16, caplen, ev) === DecodeStatus.Ok) decoded++;
        records++;
        at += 16 + caplen;
      }
    }, new AbortController().signal);
  } finally {
    pcap.close();
  }
  return [records, decoded];
}

if (import.meta.main) {
  const [records, decoded] = await readFile(Deno.args[0]);
  console.log(`${records} ${decoded}`);
}
