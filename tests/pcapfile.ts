/**
 * A tiny pure-TypeScript reader of classic pcap files, for tests only: it
 * lets the decoder be checked against real captures without the libpcap
 * binding. Both byte orders, microsecond and nanosecond timestamps.
 */

/** One record of a capture file; `offset` is where its bytes start in `PcapFile.view`. */
export interface PcapRecord {
  tsSec: number;
  /** Fraction of the second, in microseconds (nanosecond files are truncated to µs). */
  tsUsec: number;
  caplen: number;
  /** Length of the packet on the wire. */
  len: number;
  offset: number;
}

/** A parsed capture file. */
export interface PcapFile {
  linktype: number;
  snaplen: number;
  view: DataView;
  records: PcapRecord[];
}

/** Parses a classic pcap file held in memory; throws an Error naming what is wrong. */
export function parsePcap(bytes: Uint8Array): PcapFile {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.byteLength < 24) throw new Error("not a pcap file: shorter than the 24-byte header");
  let le: boolean;
  let nano: boolean;
  const magic = view.getUint32(0, true);
  if (magic === 0xa1b2c3d4) [le, nano] = [true, false];
  else if (magic === 0xa1b23c4d) [le, nano] = [true, true];
  else if (magic === 0xd4c3b2a1) [le, nano] = [false, false];
  else if (magic === 0x4d3cb2a1) [le, nano] = [false, true];
  else throw new Error(`not a pcap file: magic 0x${magic.toString(16)}`);
  const snaplen = view.getUint32(16, le);
  const linktype = view.getUint32(20, le) & 0xffff;
  const records: PcapRecord[] = [];
  let off = 24;
  while (off < bytes.byteLength) {
    if (off + 16 > bytes.byteLength) throw new Error(`truncated record header at byte ${off}`);
    const tsSec = view.getUint32(off, le);
    const frac = view.getUint32(off + 4, le);
    const caplen = view.getUint32(off + 8, le);
    const len = view.getUint32(off + 12, le);
    if (off + 16 + caplen > bytes.byteLength) throw new Error(`truncated record at byte ${off}`);
    records.push({
      tsSec,
      tsUsec: nano ? Math.floor(frac / 1000) : frac,
      caplen,
      len,
      offset: off + 16,
    });
    off += 16 + caplen;
  }
  return { linktype, snaplen, view, records };
}

/** Reads and parses a classic pcap file. */
export async function readPcapFile(path: string | URL): Promise<PcapFile> {
  return parsePcap(await Deno.readFile(path));
}
