/**
 * The main thread's side of the live capture worker (src/capture/worker.ts):
 * starts it, forwards what the worker must know (local addresses, open
 * ports, bans), reads the counters it shares, and hands its scan notices to
 * the caller. Requests after "open" go on a MessagePort the worker reads
 * synchronously; each also bumps a shared mailbox counter, which the worker
 * checks after each batch, and writes a byte to the capture's wake-up pipe,
 * so a worker asleep in poll(2) reads it at once.
 */
import { wakeUp } from "../../ffi/libc.ts";
import type { Address, Cidr } from "../address.ts";
import type { FastBan } from "../firewall/fastpath.ts";
import type { ScanNotice, WorkerReply, WorkerRequest } from "./protocol.ts";
import { Slot } from "../detect/counters.ts";
import type { SourcePorts } from "../detect/engine.ts";

/** What the worker needs to open the capture and build its engine. */
export type LiveOptions = Omit<
  Extract<WorkerRequest, { type: "open" }>,
  "type" | "counters" | "mailbox" | "requests"
>;

/** A live capture running on its own thread. */
export class LiveCapture {
  readonly #worker: Worker;
  readonly #port: MessagePort;
  readonly #wake: number;
  readonly #counters: Float64Array;
  readonly #mailbox: Int32Array;
  readonly #ended: Promise<string | null>;
  #done = false;
  /**
   * Resolves when the worker has compiled its packet path (packets captured
   * meanwhile wait in the ring), or when it ended first. The start-up lines wait for it: a flood that begins when
   * "Listening on:" is printed meets compiled code, not a warming thread
   * whose ring fills (80 ms here).
   */
  readonly ready: Promise<void>;
  /** Link-layer type of the device. */
  readonly linktype: number;
  /** The worker's scheduling: "SCHED_FIFO N", "off", or "off (reason)". */
  readonly realtime: string;
  /** Called with the scans of one batch, after the worker logged them (and banned them, on the fast path). */
  onScans: (scans: ScanNotice[]) => void = () => {};
  /** Called with a line for stderr. */
  onWarning: (message: string) => void = () => {};

  private constructor(
    worker: Worker,
    port: MessagePort,
    opened: Extract<WorkerReply, { type: "opened" }>,
    counters: Float64Array,
    mailbox: Int32Array,
    ended: Promise<string | null>,
    ready: Promise<void>,
  ) {
    this.ready = ready;
    this.#mailbox = mailbox;
    this.#worker = worker;
    this.#port = port;
    this.#wake = opened.wakeDescriptor;
    this.linktype = opened.linktype;
    this.realtime = opened.realtime;
    this.#counters = counters;
    this.#ended = ended;
  }

  /** Starts the worker and opens the device; throws the capture's Error when it cannot. */
  static open(opts: LiveOptions): Promise<LiveCapture> {
    const shared = new SharedArrayBuffer(Slot.Count * 8);
    const mailbox = new SharedArrayBuffer(4);
    const channel = new MessageChannel();
    const worker = new Worker(new URL("./worker.ts", import.meta.url).href, {
      type: "module",
    });
    let self: LiveCapture | null = null;
    let endWith: (e: string | null) => void = () => {};
    const ended = new Promise<string | null>((r) => (endWith = r));
    let readyWith: () => void = () => {};
    const ready = new Promise<void>((r) => (readyWith = r));
    return new Promise<LiveCapture>((resolve, reject) => {
      worker.onerror = (e) => {
        e.preventDefault();
        const msg = `capture worker failed: ${e.message}`;
        if (self) {
          readyWith();
          endWith(msg);
        } else {
          worker.terminate();
          channel.port1.close();
          reject(new Error(msg));
        }
      };
      worker.onmessage = (e: MessageEvent<WorkerReply>) => {
        const m = e.data;
        switch (m.type) {
          case "opened":
            self = new LiveCapture(
              worker,
              channel.port1,
              m,
              new Float64Array(shared),
              new Int32Array(mailbox),
              ended,
              ready,
            );
            resolve(self);
            break;
          case "ready":
            readyWith();
            break;
          case "failed":
            worker.terminate();
            channel.port1.close();
            reject(new Error(m.message));
            break;
          case "scans":
            self?.onScans(m.scans);
            break;
          case "warning":
            self?.onWarning(m.message);
            break;
          case "top":
            if (self) (self as LiveCapture).#answered(m.id, m.sources);
            break;
          case "ended":
            readyWith();
            endWith(m.error);
            break;
        }
      };
      worker.postMessage(
        {
          type: "open",
          ...opts,
          counters: shared,
          mailbox,
          requests: channel.port2,
        } satisfies WorkerRequest,
        [channel.port2],
      );
    });
  }

  #send(m: WorkerRequest): void {
    if (this.#done) return;
    this.#port.postMessage(m);
    // Seen by the worker after its current batch; the byte ends its poll(2).
    Atomics.add(this.#mailbox, 0, 1);
    wakeUp(this.#wake);
  }

  /** Lets packets flow: the bans in place, and the worker's own ban path (null: none). */
  start(banned: string[], fastBan: FastBan | null): void {
    this.#send({ type: "start", banned, fastBan });
  }

  /** This host's addresses changed. */
  setLocal(local: Address[]): void {
    this.#send({ type: "local", local });
  }

  /** The lockout guard's blocks changed (or are set before start). */
  setGuard(guard: Cidr[]): void {
    this.#send({ type: "guard", guard });
  }

  /** The listening ports changed. */
  setOpenPorts(ports: number[]): void {
    this.#send({ type: "openPorts", ports });
  }

  /** Bans made or found (replace: the whole list), and how many the worker may still add. */
  bans(change: { add?: string[]; replace?: string[]; room?: number }): void {
    this.#send({ type: "banned", ...change });
  }

  #asked = new Map<number, (s: SourcePorts[]) => void>();
  #nextId = 1;

  #answered(id: number, sources: SourcePorts[]): void {
    this.#asked.get(id)?.(sources);
    this.#asked.delete(id);
  }

  /** The `n` sources with the most distinct ports now (empty if the worker does not answer within 2 s). */
  top(n: number): Promise<SourcePorts[]> {
    const id = this.#nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.#answered(id, []), 2000);
      this.#asked.set(id, (s) => {
        clearTimeout(timer);
        resolve(s);
      });
      this.#send({ type: "top", id, n });
    });
  }

  /** New settings (a reload): thresholds, allow-list and log settings; detection state is kept. */
  settings(s: Omit<Extract<WorkerRequest, { type: "settings" }>, "type">): void {
    this.#send({ type: "settings", ...s });
  }

  /** A ban failed: the source's next probes count again. */
  forget(address: string): void {
    this.#send({ type: "forget", address });
  }

  /** One of the shared counters (see Slot). */
  counter(slot: number): number {
    return this.#counters[slot];
  }

  /** Resolves when the capture ends by itself (an error) or after stop(). */
  get ended(): Promise<string | null> {
    return this.#ended;
  }

  /** Stops the capture (the worker finishes its batch and closes the device) and ends the thread. */
  async stop(): Promise<string | null> {
    this.#send({ type: "stop" });
    this.#done = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<string>((
      r,
    ) => (timer = setTimeout(() => r("worker did not stop"), 3000)));
    const result = await Promise.race([this.#ended, late]);
    clearTimeout(timer);
    this.#worker.terminate();
    this.#port.close();
    return result;
  }
}
