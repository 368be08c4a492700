/**
 * The messages between the main thread and the live capture worker
 * (src/capture/worker.ts), and the layout of the counters the worker shares.
 */
import type { FastBan, FastResult } from "../firewall/fastpath.ts";
import type { Address, Cidr } from "../address.ts";
import type { EngineSettings, SourcePorts } from "../detect/engine.ts";
import type { LogFormat } from "../report/log.ts";
import type { ScanReport } from "../detect/pipeline.ts";

/** Main thread → worker: "open" as the worker's message, the rest on its `requests` port. */
export type WorkerRequest =
  | {
    type: "open";
    device: string;
    snaplen: number;
    bufferSize: number;
    filter: string;
    settings: EngineSettings;
    allow: Cidr[];
    local: Address[];
    everyDestinationLocal: boolean;
    openPorts: number[] | null;
    logFormat: LogFormat;
    logRate: number;
    /** SCHED_FIFO priority of this thread; 0 = normal scheduling. */
    realtime: number;
    counters: SharedArrayBuffer;
    /** Int32Array[1]: the main thread adds 1 for every message it posts on `requests`. */
    mailbox: SharedArrayBuffer;
    /**
     * Every later request comes on this port; the worker takes them with
     * receiveMessageOnPort, synchronously, without an event-loop turn.
     */
    requests: MessagePort;
  }
  | { type: "start"; banned: string[]; fastBan: FastBan | null }
  | { type: "local"; local: Address[] }
  | { type: "guard"; guard: Cidr[] }
  | { type: "openPorts"; ports: number[] }
  | { type: "banned"; add?: string[]; replace?: string[]; room?: number }
  | { type: "forget"; address: string }
  /** The `n` tracked sources with the most distinct ports (for `scanblocker status`). */
  | { type: "top"; id: number; n: number }
  | {
    type: "settings";
    settings: EngineSettings;
    allow: Cidr[];
    everyDestinationLocal: boolean;
    logFormat: LogFormat;
    logRate: number;
  }
  | { type: "stop" };

/** What the worker did about one scan. */
export interface ScanNotice {
  scan: ScanReport;
  /** When the engine reported it (CLOCK_REALTIME, epoch ms). */
  detectedAt: number;
  /**
   * null: not banned here (the main thread bans); else the netlink outcome,
   * with the expiry written (epoch ms, null = never) and the confirmation time.
   */
  ban: FastResult;
}

/** Worker → main thread. */
export type WorkerReply =
  | { type: "opened"; linktype: number; wakeDescriptor: number; realtime: string }
  | { type: "failed"; message: string }
  /**
   * After "opened": the packet path is compiled and the detection state
   * mapped (packets wait in the ring meanwhile).
   */
  | { type: "ready" }
  | { type: "scans"; scans: ScanNotice[] }
  | { type: "warning"; message: string }
  | { type: "top"; id: number; sources: SourcePorts[] }
  | { type: "ended"; error: string | null };
