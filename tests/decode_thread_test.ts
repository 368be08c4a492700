/**
 * A large capture file is read and decoded on a second thread
 * (src/capture/decode_thread.ts) while the main thread runs the rules: the
 * whole program's output must be the one thread's, byte for byte — here the
 * same file read from standard input, which libpcap reads on one thread —
 * for mixed traffic, a damaged file and a format the thread does not take.
 */
import assert from "node:assert/strict";
import { runMain } from "./daemon.ts";
import {
  type Frame,
  pcapBytes,
  pcapngBytes,
  SYN,
  SYN_ACK,
  synFrame4,
  synFrame6,
} from "./pcap_files.ts";

/** main.ts -r with `args`, the file given by path or on standard input (`-r -`). */
function replay(file: string, how: "path" | "stdin", args: string[] = []) {
  return how === "path"
    ? runMain(["-r", file, ...args])
    : runMain(["-r", "-", ...args], {}, { stdinFile: file });
}

/** An Ethernet + IPv4 + TCP frame between any two addresses and ports. */
function tcp4(src: number[], sport: number, dst: number[], dport: number, flags: number) {
  const b = synFrame4(0, dport, flags);
  b.set(src, 26);
  b.set(dst, 30);
  new DataView(b.buffer).setUint16(34, sport);
  return b;
}

/**
 * 90,000 frames (over 4 MiB, so the file gets the thread), 9 s of packet
 * time: a flood of one-packet IPv4 sources; IPv6 sources all in one /64
 * (a rotating scanner); an IPv4 scanner of 12 ports; an allow-listed
 * source probing as many; a client of 10.0.0.7 whose connections to six
 * ports are all accepted (SYN-ACK: the main thread takes back what the
 * decoding thread keyed, so both must key alike); other SYN-ACKs; repeats.
 */
function mixedFrames(): Frame[] {
  const frames: Frame[] = [];
  const client = [10, 255, 0, 1], server = [10, 0, 0, 7];
  const services = [22, 80, 443, 8080, 8443, 9000];
  for (let i = 0; i < 90_000; i++) {
    let data: Uint8Array;
    const s = Math.floor(i / 10_000);
    if (i % 10_000 === 5000 && s < services.length) {
      data = tcp4(client, 50000 + s, server, services[s], SYN);
    } else if (i % 10_000 === 5001 && s < services.length) {
      data = tcp4(server, services[s], client, 50000 + s, SYN_ACK);
    } else if (i % 7000 === 0) data = synFrame4(5, 20 + (i / 7000)); // the scanner, 10.0.0.5
    else if (i % 6000 === 1) data = synFrame4(6, 40 + Math.floor(i / 6000)); // allowed, 10.0.0.6
    else if (i % 4 === 3) data = synFrame6(i, 1 + (i % 1024));
    else if (i % 50 === 2) data = synFrame4(i * 7 + 100_000, 80, SYN_ACK);
    else if (i % 50 === 4) data = synFrame4(9, 443); // the same target again and again
    else data = synFrame4(i * 7 + 100_000, 1 + (i % 1024));
    frames.push({
      tsSec: 1_700_000_000 + Math.floor(i / 10_000),
      tsUsec: (i % 10_000) * 100,
      data,
    });
  }
  return frames;
}

async function withFile<T>(bytes: Uint8Array, fn: (path: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "sb-thread-" });
  try {
    const path = `${dir}/capture`;
    await Deno.writeFile(path, bytes);
    return await fn(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("-r FILE on two threads prints what one thread prints (mixed traffic, 90,000 frames)", async () => {
  const bytes = pcapBytes(mixedFrames());
  assert.ok(bytes.length >= 4 << 20, `${bytes.length} bytes: below the thread's threshold`);
  await withFile(bytes, async (path) => {
    const args = ["--allow", "10.0.0.6/32"];
    const two = await replay(path, "path", args);
    const one = await replay(path, "stdin", args);
    assert.equal(two.code, 0, two.stderr);
    assert.equal(one.code, 0, one.stderr);
    assert.equal(two.stdout, one.stdout);
    assert.match(two.stdout, /Summary: 90000 packets, \d+ connection attempts, [1-9]\d* scans/);
    assert.match(two.stdout, /Port scan detected: 10\.0\.0\.5 /);
    assert.match(two.stdout, /Port scan detected: fd00::\/64 /);
    assert.doesNotMatch(two.stdout, /Port scan detected: 10\.0\.0\.6 /);
    assert.doesNotMatch(two.stdout, /Port scan detected: 10\.255\.0\.1 /);
  });
});

Deno.test("-r FILE on two threads: a damaged file gives the one-thread lines, summary and exit code", async () => {
  const whole = pcapBytes(mixedFrames());
  // The last record cut short: damage after the last complete packet.
  await withFile(whole.subarray(0, whole.length - 20), async (path) => {
    const two = await replay(path, "path");
    const one = await replay(path, "stdin");
    assert.equal(two.code, 1, two.stderr);
    assert.equal(one.code, 1, one.stderr);
    assert.equal(two.stdout, one.stdout);
    assert.match(two.stdout, /Summary: 89999 packets, /);
    assert.match(two.stderr, /damaged after its last complete packet: truncated dump file/);
  });
});

Deno.test("-r FILE: a large pcapng file (libpcap's, one thread) is read whole, and the run ends", async () => {
  const bytes = pcapngBytes(mixedFrames());
  assert.ok(bytes.length >= 4 << 20);
  await withFile(bytes, async (path) => {
    const r = await replay(path, "path");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Summary: 90000 packets, /);
    assert.match(r.stdout, /Port scan detected: 10\.0\.0\.5 /);
  });
});

Deno.test("-r FILE of 4 MiB or more runs its chunks from the decoding thread; from standard input it never does", async () => {
  // Output alone cannot tell which path ran (that is the point of the tests
  // above): V8's trace names the functions that only the two-thread path
  // calls once they are hot.
  await withFile(pcapBytes(mixedFrames()), async (path) => {
    const trace = { v8Flags: "--trace-opt" };
    const two = await runMain(["-r", path], {}, trace);
    const one = await runMain(["-r", "-"], {}, { ...trace, stdinFile: path });
    assert.equal(two.code, 0, two.stderr);
    assert.equal(one.code, 0, one.stderr);
    assert.match(two.stdout, /JSFunction runDecoded /);
    assert.doesNotMatch(one.stdout, /JSFunction runDecoded /);
    assert.match(one.stdout, /JSFunction processBatch /);
  });
});
