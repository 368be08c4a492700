/**
 * Progress of an offline run on a terminal: percent of the capture file read
 * and packets per second, redrawn in place on stderr at most four times a
 * second. Only for files big enough to take a while, only when stderr is a
 * terminal (never in a pipe, a file or the journal), never for standard input
 * (its size is unknown).
 */

/** Files smaller than this finish before a progress line would help. */
export const PROGRESS_MIN_BYTES = 4 << 20;

const REDRAW_MS = 250;
const CLEAR = "\r\x1b[K";

/** One progress line redrawn in place. */
export class Progress {
  readonly #total: number;
  readonly #write: (text: string) => void;
  readonly #now: () => number;
  readonly #start: number;
  #drawnAt = -Infinity;
  #shown = false;

  /** `total`: the file's size in bytes; `write`: raw stderr output. */
  constructor(total: number, write: (text: string) => void, now = () => performance.now()) {
    this.#total = total;
    this.#write = write;
    this.#now = now;
    this.#start = now();
  }

  /** Redraws the line when due: `bytes` of the file read, `packets` seen so far. */
  update(bytes: number | null, packets: number): void {
    const t = this.#now();
    if (t - this.#drawnAt < REDRAW_MS || bytes === null) return;
    this.#drawnAt = t;
    const pct = Math.min(100, (bytes / this.#total) * 100);
    const secs = (t - this.#start) / 1000;
    const rate = secs > 0 ? Math.round(packets / secs) : 0;
    this.#write(
      `${CLEAR}${pct.toFixed(1).padStart(5)}%  ${packets.toLocaleString("en-US")} packets  ${
        rate.toLocaleString("en-US")
      } packets/s`,
    );
    this.#shown = true;
  }

  /** Erases the line (before other output, and at the end). */
  clear(): void {
    if (!this.#shown) return;
    this.#write(CLEAR);
    this.#shown = false;
  }
}

/**
 * A Progress for reading `path`, or null when none should be shown: standard
 * input, a file under PROGRESS_MIN_BYTES, or stderr not a terminal.
 */
export function offlineProgress(
  path: string,
  stderrIsTerminal: boolean,
  write: (text: string) => void,
): Progress | null {
  if (path === "-" || !stderrIsTerminal) return null;
  let size = 0;
  try {
    size = Deno.statSync(path).size;
  } catch {
    return null;
  }
  return size >= PROGRESS_MIN_BYTES ? new Progress(size, write) : null;
}
