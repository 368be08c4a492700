/**
 * Log lines the outputs could not take (a stdout pipe nobody reads): counted
 * in scanblocker_log_lines_dropped_total, one stderr line when an episode
 * begins, and a log note with the number dropped once stdout is read again.
 * Capture and bans never wait for the log (src/report/output.ts).
 */
import { writable } from "../../ffi/libc.ts";
import type { EventLog } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import type { LineOutput } from "./output.ts";

/** Returns the check to run once a second; `worker` reads the capture thread's dropped count. */
export function logDropWatch(
  outputs: LineOutput[],
  worker: () => number,
  o: { metrics: Metrics; warn: (line: string) => void; log: EventLog },
): () => void {
  let seen = 0, episodeFrom = -1;
  return () => {
    const total = outputs.reduce((n, out) => n + out.dropped, 0) + worker();
    if (total > seen) {
      o.metrics.logDropped.inc(total - seen);
      if (episodeFrom < 0) {
        episodeFrom = seen;
        o.warn(
          "stdout is not being read: log lines are dropped until it is (scanblocker_log_lines_dropped_total); capture and bans go on",
        );
      }
      seen = total;
    } else if (episodeFrom >= 0 && !outputs[0].blocked && writable(1)) {
      const n = seen - episodeFrom;
      episodeFrom = -1;
      o.log.note(Date.now(), "log_lines_dropped", `${n} log lines dropped: stdout was not read.`, {
        lines: n,
      });
    }
  };
}
