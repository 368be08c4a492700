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
}

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
    }, new AbortController().signal);
  } catch (e) {
    error = e instanceof Error ? e.message : String(e);
  }
  o.progress?.clear();
  pcap.close();
  return { engine, error };
}
