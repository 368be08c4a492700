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
import type { CaptureFile } from "./pcapfile.ts";

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
}

/**
 * From this file size on, the admission table's pages are mapped before the
 * first packet (Admission.prefault): a file this large (about 50,000
 * records) touches nearly every page anyway, and at random, page by page,
 * that cost more than mapping them in one pass (first 10,000 packets of the
 * 1,000,000-SYN file: 57-86 ms, against 31-36 ms after a 15-22 ms pass).
 * A small file starts without it.
 */
const PREFAULT_BYTES = 4 << 20;

/** Reads `pcap` to its end; resolves with the engine and the damaged file's message, if any. */
export async function analyseFile(
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
  if (o.bytes !== null && o.bytes >= PREFAULT_BYTES) engine.admission.prefault();
  o.bans.forgetSource = (src) => {
    const a = parseAddress(src);
    if (a) engine.forget(addressKey(a.family, a.bytes));
  };
  let error: string | null = null;
  try {
    await runCapture(pcap, (batch) => {
      engine.pipeline.processBatch(batch);
      o.log.flush();
      o.progress?.update(pcap.position(), engine.pipeline.packets);
      sigusr1Ignored();
    }, new AbortController().signal);
  } catch (e) {
    error = e instanceof Error ? e.message : String(e);
  }
  o.progress?.clear();
  pcap.close();
  return { engine, error };
}
