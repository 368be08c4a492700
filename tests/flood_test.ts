/**
 * A spoofed-source SYN flood must not blind the detector (issue 17): offline
 * captures written here (100,000 SYNs a second of packet time, every source
 * new) with one real scanner among them, read by the whole program at
 * default settings. The scanner is detected by its 5th probe; no flood
 * source is ever detected.
 */
import assert from "node:assert/strict";
import {
  FLOOD_DST4,
  FLOOD_DST6,
  type FloodSpec,
  SCANNER4,
  SCANNER6,
  SCANNER6_NET,
  writeFloodPcap,
} from "./flood_files.ts";

const ROOT = new URL("..", import.meta.url).pathname;

interface Detection {
  src: string;
  ms: number;
}

/** Runs `main.ts -r` on the file (JSON lines) and returns every detection and the summary line. */
export async function detectOffline(
  file: string,
  local: string,
  extra: string[] = [],
): Promise<{ detections: Detection[]; packets: number; scans: string[] }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-P",
      "--quiet",
      "--config",
      `${ROOT}deno.json`,
      `${ROOT}main.ts`,
      "-r",
      file,
      "--local",
      local,
      "--log-format",
      "json",
      "--log-rate",
      "1",
      ...extra,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const detections: Detection[] = [];
  let packets = -1;
  let scans: string[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith("{")) continue;
    const e = JSON.parse(line);
    if (e.event === "scan_detected") detections.push({ src: e.src, ms: Date.parse(e.time) });
    if (e.event === "summary") {
      packets = e.packets;
      scans = e.scans.map((s: { src: string }) => s.src);
    }
  }
  return { detections, packets, scans };
}

async function floodCase(spec: FloodSpec, scanner: string): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sb-flood-" });
  try {
    const file = `${dir}/flood.pcap`;
    const { probes, packets } = writeFloodPcap(file, spec);
    assert.ok(probes.length >= 5);
    const r = await detectOffline(file, spec.family === 4 ? FLOOD_DST4 : FLOOD_DST6);
    assert.equal(r.packets, packets);
    assert.deepEqual(r.scans, [scanner], "only the scanner is detected");
    const detections = r.detections;
    assert.deepEqual(detections.map((d) => d.src), [scanner]);
    assert.ok(
      detections[0].ms <= probes[4],
      `detected at ${detections[0].ms}, after the 5th probe (${probes[4]})`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("flood: 1,000,000 spoofed IPv4 SYNs at 100,000/s, scanner at one new port every 2 s → detected by its 5th probe, no flood source", async () => {
  await floodCase({ rate: 100_000, seconds: 10, family: 4, gapS: 2 }, SCANNER4);
});

Deno.test("flood: spoofed IPv4 SYNs at 100,000/s for 43 s, scanner every 10 s → detected by its 5th probe, no flood source", async () => {
  await floodCase({ rate: 100_000, seconds: 43, family: 4, gapS: 10 }, SCANNER4);
});

Deno.test("flood: 1,000,000 spoofed IPv6 SYNs at 100,000/s, IPv6 scanner every 2 s → detected by its 5th probe, no flood source", async () => {
  await floodCase({ rate: 100_000, seconds: 10, family: 6, gapS: 2 }, SCANNER6);
});

Deno.test("flood: spoofed IPv6 SYNs at 100,000/s for 43 s, IPv6 scanner every 10 s → detected by its 5th probe, no flood source", async () => {
  await floodCase({ rate: 100_000, seconds: 43, family: 6, gapS: 10 }, SCANNER6);
});

Deno.test("flood: a scanner taking a new address of one /64 for every probe → the /64 is detected, under an IPv6 flood", async () => {
  await floodCase(
    { rate: 100_000, seconds: 10, family: 6, gapS: 2, rotate64: true },
    SCANNER6_NET,
  );
});
