/**
 * The decoding thread of an offline run (see ./decode_thread.ts): opens
 * the capture file again with the same filter, decodes its packets with a
 * pipeline built like the main thread's (same settings, protected
 * addresses and admission seeds, so the same slots and keys), and puts each
 * chunk into the ring. The pipeline's rules are never run here.
 */
import { AllowList } from "../allowlist.ts";
import { createEngine } from "../detect/engine.ts";
import { EventLog } from "../report/log.ts";
import { type DecodeRequest, EMPTY, FULL, Ring, SLOTS } from "./decode_thread.ts";
import { PcapFile } from "./pcapfile.ts";

/** This module runs as a worker: its global scope is the worker's. */
const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent<DecodeRequest>) => void) | null;
};

scope.onmessage = (e) => {
  scope.onmessage = null;
  const m = e.data, ring = new Ring(m.ring);
  let error: string | null = null;
  try {
    decode(m, ring);
  } catch (err) {
    error = err instanceof Error ? err.message : String(err);
  }
  ring.end(error);
};

/** Decodes the whole file into the ring; throws the file's error after its complete records. */
function decode(m: DecodeRequest, ring: Ring): void {
  const pcap = PcapFile.open(m.path, m.filter);
  if (pcap === null) throw new Error(`capture file "${m.path}" could not be opened again`);
  try {
    const allow = new AllowList(m.allowed, m.local);
    allow.setGuard(m.guard);
    const { pipeline } = createEngine(m.settings, {
      linktype: pcap.linktype,
      allow,
      log: new EventLog("text", 0, () => {}),
      openPorts: null,
      everyDestinationLocal: m.everyDestinationLocal,
      summarize: false,
      onScan: () => {},
      onRepeatScanner: () => {},
      admissionSeeds: m.seeds,
    });
    const st = ring.state, chunk = pipeline.chunkBytes;
    let slot = 0;
    for (let b = pcap.dispatch(); b !== null; b = pcap.dispatch()) {
      if (b.count === 0) continue;
      const view = b.view, end = b.end, position = pcap.position() ?? 0;
      let off = b.start;
      do {
        off = pipeline.decodeNext(view, off, end);
        // Wait for the main thread to hand the slot back.
        while (Atomics.load(st, slot) !== EMPTY) Atomics.wait(st, slot, FULL);
        ring.bytes.set(chunk, Ring.at(slot));
        ring.positions[slot] = position;
        Atomics.store(st, slot, FULL);
        Atomics.notify(st, slot);
        slot = slot + 1 === SLOTS ? 0 : slot + 1;
      } while (off >= 0);
    }
  } finally {
    pcap.close();
  }
}
