/** The report at the end of an offline run (`-r`): packets, connection attempts, every scan. */
import type { Pipeline } from "../detect/pipeline.ts";
import { localTimestamp } from "./log.ts";

/** The `Summary:` and `Scan:` lines (text), or one JSON object (json). */
export function offlineSummary(format: "text" | "json", pl: Pipeline): string {
  const scans = [...pl.scans.values()];
  if (format === "json") {
    return JSON.stringify({
      event: "summary",
      packets: pl.packets,
      connection_attempts: pl.attempts4 + pl.attempts6,
      decode_errors: pl.decodeErrors,
      scans: scans.map((s) => ({
        src: s.src,
        dst: s.dst,
        ports: s.targets.size,
        first: new Date(s.firstMs).toISOString(),
        last: new Date(s.lastMs).toISOString(),
      })),
    }) + "\n";
  }
  const lines = [
    `Summary: ${pl.packets} packets, ${
      pl.attempts4 + pl.attempts6
    } connection attempts, ${scans.length} scans${
      pl.decodeErrors ? `, ${pl.decodeErrors} undecodable` : ""
    }`,
  ];
  for (const s of scans) {
    lines.push(
      `Scan: ${s.src} -> ${s.dst}, ${s.targets.size} distinct ports, first ${
        localTimestamp(s.firstMs)
      }, last ${localTimestamp(s.lastMs)}`,
    );
  }
  return lines.join("\n") + "\n";
}
