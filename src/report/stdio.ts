/**
 * The program's two output streams as its modules use them: stdout for the
 * event log (never waiting for its reader once a live daemon made it
 * non-blocking), stderr for errors and notices, with syslog severity
 * prefixes and no timestamps when they go to the journal (JOURNAL_STREAM).
 */
import { EventLog, journalStreams, Severity, stderrLine, writeAll } from "./log.ts";
import { LineOutput, nonBlockingStdio } from "./output.ts";
import { offlineProgress } from "./progress.ts";

/** The message of a thrown value, for one line of text. */
export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

const encoder = new TextEncoder();

/** Where stdout and stderr go: the journal gets severity prefixes and no timestamps. */
const journal = journalStreams();
/** stderr through a LineOutput: never blocks once the daemon made it non-blocking. */
export const stderrOut: LineOutput = new LineOutput(Deno.stderr);
/** stdout for a live daemon's event log. */
export const stdoutOut: LineOutput = new LineOutput(Deno.stdout);

const stderr = (text: string, severity: Severity) =>
  stderrOut.write(encoder.encode(stderrLine(text, severity, journal.stderr)));
/** An error or warning on stderr (`<3>` in the journal). */
export const warn = (text: string): void => {
  stderr(text, Severity.Error);
};
/** A start-up notice on stderr (`<6>` in the journal). */
export const notice = (text: string): void => {
  stderr(text, Severity.Info);
};
/** Writes text to stdout, waiting until it is all written (subcommands, offline reports). */
export const stdoutWrite = (text: string): void => writeAll(Deno.stdout, encoder.encode(text));

/** The event log of a run, and how to put stdio back at the end. */
export interface RunLog {
  log: EventLog;
  /** Offline on a terminal: the progress line (null otherwise). */
  progress: ReturnType<typeof offlineProgress>;
  restore: () => void;
}

/**
 * The event log of a live daemon (non-blocking stdout, lines it cannot take
 * dropped and counted) or of an offline run (blocking stdout, and a progress
 * line on a terminal, erased before each write).
 */
export function openRunLog(
  cfg: { logFormat: "text" | "json"; logRate: number; read: string | null },
): RunLog {
  const live = cfg.read === null;
  const restore = live ? nonBlockingStdio() : () => {};
  const progress = live
    ? null
    : offlineProgress(cfg.read!, Deno.stderr.isTerminal(), (t) =>
      writeAll(Deno.stderr, encoder.encode(t)));
  const out = live
    ? (t: string) => stdoutOut.write(encoder.encode(t))
    : progress
    ? (text: string) => {
      progress.clear();
      stdoutWrite(text);
    }
    : stdoutWrite;
  const log = new EventLog(cfg.logFormat, cfg.logRate, out, { journal: journal.stdout });
  return { log, progress, restore };
}
