/**
 * Process plumbing shared by the firewall backends: a long-lived helper
 * process fed over stdin whose stdout lines and exit are reported to the
 * backend, and a one-shot command runner for set-up and listing. Programs
 * are started by trusted absolute path with a fixed environment (helpers.ts).
 */
import { HELPER_ENV, trustedArgv } from "./helpers.ts";
import { errorText } from "../report/stdio.ts";

/** Result of a command run to completion. */
export interface CommandResult {
  /** Exit status; -1 when the program could not be started. */
  code: number;
  stdout: string;
  stderr: string;
}

export { errorText };

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Runs argv to completion (optionally feeding stdin); never throws. */
export async function runCommand(argv: string[], stdin?: string): Promise<CommandResult> {
  try {
    const [program, ...args] = trustedArgv(argv);
    const child = new Deno.Command(program, {
      args,
      clearEnv: true,
      env: HELPER_ENV,
      stdin: stdin !== undefined ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    if (stdin !== undefined) {
      const w = child.stdin.getWriter();
      try {
        await w.write(enc.encode(stdin));
        await w.close();
      } catch {
        // The program exited early; its status and stderr say why.
      }
    }
    const o = await child.output();
    return { code: o.code, stdout: dec.decode(o.stdout), stderr: dec.decode(o.stderr) };
  } catch (e) {
    return { code: -1, stdout: "", stderr: errorText(e) };
  }
}

/** First meaningful line of a command's stderr, for one-line error reports. */
export function firstLine(text: string): string {
  const lines = text.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  const err = lines.find((l) => /error|fail|denied|not found|no such|cannot|can't/i.test(l));
  return err ?? lines[0] ?? "no output";
}

/** Callbacks of a long-lived helper process. */
export interface HelperEvents {
  /** One complete stdout line. */
  onLine(line: string): void;
  /** stderr text as it arrives. */
  onStderr(text: string): void;
  /** The process ended (or never started: code -1 and the spawn error as stderr). */
  onExit(code: number): void;
}

/**
 * A long-lived helper process (`nft -e -i`, `iptables-restore --noflush`)
 * that reads commands on stdin. Writes never throw; a failed start or a dead
 * process shows up through onExit.
 */
export class Helper {
  #child: Deno.ChildProcess | null = null;
  #writer: WritableStreamDefaultWriter<Uint8Array> | null = null;
  #alive = false;
  #done: Promise<void> = Promise.resolve();

  constructor(readonly argv: string[], private readonly events: HelperEvents) {}

  /** True while the process runs. */
  get alive(): boolean {
    return this.#alive;
  }

  /** Starts the process; false (after onStderr + onExit) when it cannot start. */
  start(): boolean {
    try {
      const [program, ...args] = trustedArgv(this.argv);
      this.#child = new Deno.Command(program, {
        args,
        clearEnv: true,
        env: HELPER_ENV,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (e) {
      this.events.onStderr(errorText(e));
      this.events.onExit(-1);
      return false;
    }
    this.#alive = true;
    const child = this.#child;
    this.#writer = child.stdin.getWriter();
    const out = this.#readLines(child.stdout);
    const err = this.#readErr(child.stderr);
    this.#done = (async () => {
      const status = await child.status;
      await Promise.allSettled([out, err]);
      this.#alive = false;
      this.#writer = null;
      this.events.onExit(status.code);
    })();
    return true;
  }

  async #readLines(stream: ReadableStream<Uint8Array>): Promise<void> {
    let buf = "";
    const d = new TextDecoder();
    try {
      for await (const chunk of stream) {
        buf += d.decode(chunk, { stream: true });
        let at = 0;
        for (;;) {
          const nl = buf.indexOf("\n", at);
          if (nl < 0) break;
          this.events.onLine(buf.slice(at, nl));
          at = nl + 1;
        }
        buf = buf.slice(at);
      }
    } catch {
      // stream torn down with the process
    }
  }

  async #readErr(stream: ReadableStream<Uint8Array>): Promise<void> {
    const d = new TextDecoder();
    try {
      for await (const chunk of stream) this.events.onStderr(d.decode(chunk, { stream: true }));
    } catch {
      // stream torn down with the process
    }
  }

  /** Writes text to the process's stdin; false when it is not running. */
  async write(text: string): Promise<boolean> {
    const w = this.#writer;
    if (!w || !this.#alive) return false;
    try {
      await w.write(enc.encode(text));
      return true;
    } catch {
      return false;
    }
  }

  /** Closes stdin and waits for the process to end (killing it after 2 s). */
  async stop(): Promise<void> {
    if (!this.#child) return;
    const child = this.#child;
    try {
      await this.#writer?.close();
    } catch {
      // already closed
    }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }, 2000);
    await this.#done;
    clearTimeout(timer);
    this.#child = null;
  }
}

/** A promise with its resolve function exposed. */
export interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
}

/** Makes a Deferred. */
export function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}
