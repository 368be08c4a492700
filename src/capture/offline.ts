/**
 * An offline run (`-r FILE`): the same engine the live capture thread runs,
 * fed from a capture file on the main thread, with its scans handed to the
 * bans owner. A damaged file is reported after everything read so far was
 * processed.
 */
import { addressKey, parseAddress } from "../address.ts";
import type { AllowList } from "../allowlist.ts";
import type { Bans } from "../bans/bans.ts";
import { createEngine, type Engine, type EngineSettings } from "../detect/engine.ts";
import type { EventLog } from "../report/log.ts";
import type { RunLog } from "../report/stdio.ts";
import { runCapture } from "./capture.ts";
import { sigusr1Ignored } from "../signals.ts";
import { type CaptureFile, PcapFile } from "./pcapfile.ts";
import { DecodeThread } from "./decode_thread.ts";

/** Everything the run needs besides the file. */
export interface OfflineRun {
  settings: EngineSettings;
  allow: AllowList;
  log: EventLog;
  progress: RunLog["progress"];
  everyDestinationLocal: boolean;
  bans: Bans;
  /** Where the engine is published as soon as it exists (the metrics read its counters). */
  onEngine: (e: Engine) => void;
  /** Size of the file in bytes; null when unknown (standard input). */
  bytes: number | null;
  /** A decoding thread started for this file (see `decodingThread`); closed when not used. */
  thread: DecodeThread | null;
}

/**
 * A decoding thread for a file of `bytes`, started before the run sets up
 * (the caller passes it to analyseFile); null for a small file or standard
 * input, which stay on one thread.
 */
export function decodingThread(bytes: number | null): DecodeThread | null {
  return bytes !== null && bytes >= LARGE_FILE_BYTES ? new DecodeThread() : null;
}

/**
 * A large file (about 50,000 records and more), for which the run pays two
 * costs up front:
 * - The admission table's pages are mapped before the first packet
 *   (Admission.prefault): such a file touches nearly every page anyway, and
 *   at random, page by page, that cost more than mapping them in one pass
 *   (first 10,000 packets of the 1,000,000-SYN file: 57-86 ms, against
 *   31-36 ms after a 15-22 ms pass).
 * - A file the JavaScript reader takes is read and decoded on a second
 *   thread (decode_thread.ts): its start (~25 ms, while this thread sets up)
 *   is paid back within the first 100,000 packets or so.
 * A small file starts without either.
 */
const LARGE_FILE_BYTES = 4 << 20;

/** Reads `pcap` to its end; resolves with the engine and the damaged file's message, if any. */
export async function analyseFile(
  pcap: CaptureFile,
  o: OfflineRun,
): Promise<{ engine: Engine; error: string | null }> {
  try {
    return await analyse(pcap, o);
  } finally {
    o.thread?.close(); // whatever ended the run, the thread ends with it
  }
}

async function analyse(
  pcap: CaptureFile,
  o: OfflineRun,
): Promise<{ engine: Engine; error: string | null }> {
  const engine = createEngine(o.settings, {
    linktype: pcap.linktype,
    allow: o.allow,
    log: o.log,
    openPorts: null,
    everyDestinationLocal: o.everyDestinationLocal,
    summarize: true,
    onScan: (scan) => o.bans.onScan(scan),
    onRepeatScanner: (ms, src) => o.bans.repeat(ms, src),
  });
  o.onEngine(engine);
  // A file libpcap reads (pcapng, ...) stays on this thread.
  let thread: DecodeThread | null = null;
  if (o.thread && pcap instanceof PcapFile) {
    thread = o.thread;
    thread.start({
      path: pcap.source,
      filter: pcap.filter,
      settings: o.settings,
      allowed: o.allow.allowed,
      local: o.allow.local,
      guard: o.allow.guard,
      everyDestinationLocal: o.everyDestinationLocal,
      seeds: engine.admission.seeds,
    });
  }
  if (o.bytes !== null && o.bytes >= LARGE_FILE_BYTES) engine.admission.prefault();
  o.bans.forgetSource = (src) => {
    const a = parseAddress(src);
    if (a) engine.forget(addressKey(a.family, a.bytes));
  };
  const pl = engine.pipeline, never = new AbortController().signal;
  const after = (position: number | null) => {
    o.log.flush();
    o.progress?.update(position, pl.packets);
    sigusr1Ignored();
  };
  let error: string | null = null;
  try {
    if (thread) {
      pcap.close(); // the thread reads the file
      await runCapture(thread, (c) => {
        pl.runDecoded(thread.bytes, c.at);
        after(thread.position);
      }, never);
    } else {
      await runCapture(pcap, (batch) => {
        pl.processBatch(batch);
        after(pcap.position());
      }, never);
    }
  } catch (e) {
    error = e instanceof Error ? e.message : String(e);
  }
  o.progress?.clear();
  pcap.close();
  return { engine, error };
}
