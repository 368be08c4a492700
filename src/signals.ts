/**
 * Signals the daemon gives no meaning to are ignored. SIGTERM and SIGINT end
 * it and SIGHUP reloads (main.ts); fault and job-control-stop signals keep the
 * kernel's action. Every other catchable signal would either end the daemon
 * by its default action (SIGUSR2, SIGALRM, the real-time signals, …) or, for
 * SIGUSR1, make Deno ≥ 2.9.2 start the V8 inspector on 127.0.0.1:9229: an
 * unauthenticated debugger in a root process, which a JS signal listener does
 * not prevent.
 */
import { ignoreSignal } from "../ffi/libc.ts";

/** The signals set to SIG_IGN (Linux numbers; x86_64 and aarch64 share them). */
export const IGNORED_SIGNALS: Readonly<Record<string, number>> = {
  SIGUSR1: 10,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGSTKFLT: 16,
  SIGTSTP: 20,
  SIGTTIN: 21,
  SIGTTOU: 22,
  SIGVTALRM: 26,
  SIGPROF: 27,
  SIGIO: 29,
  SIGPWR: 30,
  // SIGRTMIN (34, after glibc's two) to SIGRTMAX (64).
  ...Object.fromEntries(Array.from({ length: 31 }, (_, i) => [`SIGRT${34 + i}`, 34 + i])),
};

const SIGUSR1 = 10;

/**
 * Ignores every signal of IGNORED_SIGNALS. SIGUSR1 needs a step first: `deno
 * run` registers its inspector trigger 500 ms after start, and the first
 * registration of a signal installs a handler over SIG_IGN. A listener added
 * here makes that first registration ours, so Deno's later one only joins a
 * list and changes no handler; SIG_IGN then keeps the signal from reaching
 * either. Should a later Deno install a handler some other way, SIG_IGN is
 * put back once a second anyway: by a timer in a live run
 * (keepSigusr1Ignored), by the reading loop of an offline one
 * (sigusr1Ignored), which starts no timer (the first timer of a process
 * costs 8-12 ms of Deno's start-up, a tenth of an offline run's).
 */
export function quietSignals(): void {
  try {
    Deno.addSignalListener("SIGUSR1", () => {});
    // SIGHUP reloads a running daemon (main.ts); until then, and for the
    // other commands, it does nothing rather than end the process.
    Deno.addSignalListener("SIGHUP", () => {});
    for (const n of Object.values(IGNORED_SIGNALS)) ignoreSignal(n);
  } catch {
    // no libc: nothing can be done, and Deno itself needs libc
  }
}

/** When sigusr1Ignored puts SIG_IGN back next (performance.now() ms). */
let nextIgnore = 0;

/** Puts SIG_IGN back on SIGUSR1 when a second passed since it last did (see quietSignals). */
export function sigusr1Ignored(now = performance.now()): void {
  if (now < nextIgnore) return;
  nextIgnore = now + 1000;
  try {
    ignoreSignal(SIGUSR1);
  } catch {
    // no libc (see quietSignals)
  }
}

/**
 * Puts SIG_IGN back on SIGUSR1 once a second (see quietSignals) on a timer
 * that does not keep the process alive; returns a function that stops it.
 */
export function keepSigusr1Ignored(): () => void {
  const timer = setInterval(() => sigusr1Ignored(), 1000);
  Deno.unrefTimer(timer);
  return () => clearInterval(timer);
}

/** The stop signals of a live run (see stopSignals). */
export interface StopSignals {
  /** Resolves on the first SIGINT or SIGTERM. */
  wanted: Promise<void>;
  /** True once one came. */
  stopped(): boolean;
  /** Removes the listeners; resolves once a reload under way is done. */
  remove(): Promise<void>;
}

/**
 * SIGINT/SIGTERM listeners that end a live run, and SIGHUP for `reload` (one
 * reload at a time; a SIGHUP during one runs another after it). Installed
 * before the start-up lines, so a signal right after them is handled.
 */
export function stopSignals(reload: () => Promise<void> = async () => {}): StopSignals {
  let stopped = false;
  let wake: () => void = () => {};
  const wanted = new Promise<void>((r) => (wake = r));
  const stop = () => {
    stopped = true;
    wake();
  };
  let reloading: Promise<void> = Promise.resolve();
  const hup = () => {
    reloading = reloading.then(reload).catch((e) =>
      Deno.stderr.writeSync(new TextEncoder().encode(`scanblocker: SIGHUP: reload failed: ${e}\n`))
    ).then(() => {});
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGHUP", hup);
  return {
    wanted,
    stopped: () => stopped,
    remove: async () => {
      Deno.removeSignalListener("SIGINT", stop);
      Deno.removeSignalListener("SIGTERM", stop);
      Deno.removeSignalListener("SIGHUP", hup);
      await reloading;
    },
  };
}
