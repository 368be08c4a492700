/**
 * An offline run on two threads: a decoding thread (./decode_worker.ts)
 * reads the capture file, filters it and decodes its packets into chunks
 * (Pipeline.decodeNext: the slots and admission keys of up to 64 packets),
 * and hands them over through a ring of shared memory; the main thread runs
 * them through the rules (Pipeline.runDecoded), in file order, as one thread
 * would. Same code, same results: only where the first half runs changes.
 *
 * Why: on a 1,000,000-SYN file the reading, filtering, decoding and keying
 * took ~65 ns of each packet's ~155 (measured by leaving parts out, 100,000
 * packets at a time), so the main thread was the whole program's limit with
 * a second core idle. Used for files the JavaScript reader takes and large
 * enough to pay for a thread's start (offline.ts); a small file, standard
 * input and libpcap's formats stay on one thread.
 *
 * The ring: SLOTS chunks, each with a state word (empty, full). The decoder
 * fills slots in order and waits while the next one is still full; the main
 * thread takes them in order and waits, at most WAIT_MS at a time (then the
 * event loop turns), while the next one is still empty. After the last chunk
 * the decoder sets the end word: the file's end, or its error (a damaged
 * file, after every complete record; or the thread's own failure).
 */
import type { Address, Cidr } from "../address.ts";
import type { EngineSettings } from "../detect/engine.ts";
import { CHUNK_BYTES } from "../detect/pipeline.ts";

/** Chunks in the ring (64 packets each; 2 MiB of shared memory). */
export const SLOTS = 300;
/** State words: one per slot, then the end word and the error text's length. */
const END = SLOTS, ERROR_LENGTH = SLOTS + 1, STATE_WORDS = SLOTS + 2;
/** Bytes before the slots: state words, then each slot's file position (a double). */
const POSITIONS = Math.ceil((STATE_WORDS * 4) / 8) * 8;
const SLOTS_AT = Math.ceil((POSITIONS + SLOTS * 8) / 64) * 64;
/** Room for the error's text (UTF-8), after the slots. */
const ERROR_BYTES = 2048;
const RING_BYTES = SLOTS_AT + SLOTS * CHUNK_BYTES + ERROR_BYTES;

/** Slot states and end states. */
export const EMPTY = 0, FULL = 1;
const RUNNING = 0, ENDED = 1, FAILED = 2;

/** How long the main thread waits for a chunk before the event loop gets a turn. */
const WAIT_MS = 20;

/** What the decoding thread needs: the file, and everything that decides a packet's slot and keys. */
export interface DecodeRequest {
  path: string;
  filter: string;
  settings: EngineSettings;
  allowed: Cidr[];
  local: Address[];
  guard: Cidr[];
  everyDestinationLocal: boolean;
  seeds: readonly [number, number];
  ring: SharedArrayBuffer;
}

/** The ring's views, the same on both threads. */
export class Ring {
  readonly state: Int32Array<SharedArrayBuffer>;
  readonly positions: Float64Array<SharedArrayBuffer>;
  readonly bytes: Uint8Array<SharedArrayBuffer>;
  constructor(readonly buffer: SharedArrayBuffer) {
    this.state = new Int32Array(buffer, 0, STATE_WORDS);
    this.positions = new Float64Array(buffer, POSITIONS, SLOTS);
    this.bytes = new Uint8Array(buffer);
  }

  /** Byte offset of slot `i`'s chunk in `bytes`. */
  static at(i: number): number {
    return SLOTS_AT + i * CHUNK_BYTES;
  }

  /** Decoder: ends the ring, with an error's text or without. */
  end(error: string | null): void {
    if (error !== null) {
      const text = new TextEncoder().encode(error).subarray(0, ERROR_BYTES);
      this.bytes.set(text, SLOTS_AT + SLOTS * CHUNK_BYTES);
      Atomics.store(this.state, ERROR_LENGTH, text.length);
    }
    Atomics.store(this.state, END, error === null ? ENDED : FAILED);
    // The main thread may wait on any slot; it looks at the end word when woken.
    for (let i = 0; i < SLOTS; i++) Atomics.notify(this.state, i);
  }

  /** The end word (RUNNING, ENDED or FAILED). */
  get ended(): number {
    return Atomics.load(this.state, END);
  }

  /** The error's text, once the end word is FAILED. */
  get error(): string {
    const n = Atomics.load(this.state, ERROR_LENGTH);
    const at = SLOTS_AT + SLOTS * CHUNK_BYTES;
    return new TextDecoder().decode(this.bytes.slice(at, at + n));
  }
}

/** A decoded chunk (its offset in DecodeThread.bytes), or none yet (count 0). */
export interface Chunk {
  at: number;
  count: number;
}

/** The main thread's side: the decoding thread and the ring it fills (read like a capture file, see runCapture). */
export class DecodeThread {
  readonly live = false;
  readonly #chunk: Chunk = { at: 0, count: 0 };
  #stopped = false;
  readonly #worker: Worker;
  readonly #ring: Ring;
  #slot = 0;
  #taken = -1;
  #failure: string | null = null;
  #position = 0;

  /** The decoded chunks' bytes (Ring.at gives a slot's offset). */
  readonly bytes: Uint8Array<SharedArrayBuffer>;

  /**
   * Starts the thread: it loads its code while this one sets up the run
   * (started where the run starts, it kept the main thread waiting for its
   * first chunks: 5-10% of a 1,000,000-SYN run); `start` gives it the file.
   */
  constructor() {
    this.#ring = new Ring(new SharedArrayBuffer(RING_BYTES));
    this.bytes = this.#ring.bytes;
    this.#worker = new Worker(new URL("./decode_worker.ts", import.meta.url).href, {
      type: "module",
    });
    // Its module failed to load, or it threw outside its own handling.
    this.#worker.onerror = (e) => {
      e.preventDefault();
      this.#failure = `the decoding thread failed: ${e.message}`;
    };
  }

  /** Gives the thread its file and what decides each packet's slot and keys. */
  start(request: Omit<DecodeRequest, "ring">): void {
    this.#worker.postMessage({ ...request, ring: this.#ring.buffer } satisfies DecodeRequest);
  }

  /**
   * The next chunk (its bytes stay valid until the next call); a chunk of
   * count 0 when none came within WAIT_MS (the event loop may turn); null
   * after the last one. Throws the file's or the thread's error after the
   * last good chunk.
   */
  dispatch(): Chunk | null {
    this.#release();
    if (this.#stopped) return null;
    const st = this.#ring.state, i = this.#slot, c = this.#chunk;
    if (Atomics.load(st, i) !== FULL) {
      if (this.#failure !== null) throw new Error(this.#failure);
      const ended = this.#ring.ended;
      if (ended === RUNNING) Atomics.wait(st, i, EMPTY, WAIT_MS);
      if (Atomics.load(st, i) !== FULL) {
        if (ended === RUNNING) {
          c.count = 0;
          return c;
        }
        // Every chunk before the end word was stored before it.
        if (ended === FAILED) throw new Error(this.#ring.error);
        return null;
      }
    }
    this.#taken = i;
    this.#position = this.#ring.positions[i];
    this.#slot = i + 1 === SLOTS ? 0 : i + 1;
    c.at = Ring.at(i);
    c.count = 1;
    return c;
  }

  /** Ends the reading: the next dispatch returns null. */
  interrupt(): void {
    this.#stopped = true;
  }

  /** Hands the chunk dispatch returned last back to the decoding thread. */
  #release(): void {
    const i = this.#taken;
    if (i < 0) return;
    this.#taken = -1;
    Atomics.store(this.#ring.state, i, EMPTY);
    Atomics.notify(this.#ring.state, i);
  }

  /** Bytes of the file read up to the last chunk taken (for progress). */
  get position(): number {
    return this.#position;
  }

  /** Stops the thread (at the end, or when the run is interrupted); safe to call twice. */
  close(): void {
    this.#stopped = true;
    this.#worker.terminate();
  }
}
