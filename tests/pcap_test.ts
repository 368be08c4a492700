/**
 * The libpcap binding over real libpcap: capture files (pcap, pcapng,
 * damaged ones), filters, device errors and a missing library.
 */
import assert from "node:assert/strict";
import { type Batch, listDevices, Pcap } from "../ffi/pcap.ts";
import { DEFAULT_FILTER, DEFAULT_SNAPLEN, runCapture } from "../src/capture/capture.ts";
import { decodePacket } from "../src/detect/decode.ts";
import { DecodeStatus, newProbeEvent } from "../src/types.ts";
import { run } from "./netns.ts";
import {
  ACK,
  type Frame,
  pcapBytes,
  pcapngBytes,
  SYN,
  SYN_ACK,
  SYN_ECN,
  synFrame4,
  synFrame6,
} from "./pcap_files.ts";

const isRoot = Deno.uid() === 0;

/** 400 frames: v4/v6 SYNs, ECN SYNs, SYN-ACKs, and bare ACKs the filter must drop. */
function mixedFrames(): { frames: Frame[]; wanted: number } {
  const frames: Frame[] = [];
  let wanted = 0;
  for (let i = 0; i < 400; i++) {
    const flags = i % 5 === 0 ? ACK : i % 5 === 1 ? SYN_ECN : i % 5 === 2 ? SYN_ACK : SYN;
    if (flags !== ACK) wanted++;
    const data = i % 2 ? synFrame6(i, 1000 + i, flags) : synFrame4(i, 1000 + i, flags);
    frames.push({ tsSec: 1700000000 + Math.floor(i / 100), tsUsec: i * 7, data });
  }
  return { frames, wanted };
}

/** Reads a whole file through runCapture; returns decoded destination ports and timestamps. */
async function readAll(path: string, filter = DEFAULT_FILTER) {
  const pcap = Pcap.openOffline(path, filter);
  const ports: number[] = [];
  const stamps: number[] = [];
  const ev = newProbeEvent();
  let batches = 0;
  try {
    await runCapture(pcap, (b: Batch) => {
      batches++;
      let n = 0;
      for (let at = b.start; at < b.end; n++) {
        const caplen = b.view.getUint32(at + 8, true);
        stamps.push(b.view.getUint32(at, true) * 1e6 + b.view.getUint32(at + 4, true));
        if (decodePacket(pcap.linktype, b.view, at + 16, caplen, ev) === DecodeStatus.Ok) {
          ports.push(ev.dport);
        }
        at += 16 + caplen;
      }
      assert.equal(n, b.count, "records in a batch match its count");
    }, new AbortController().signal);
  } finally {
    pcap.close();
    pcap.close(); // idempotent
  }
  return { ports, stamps, batches, linktype: pcap.linktype };
}

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sb-pcap-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("offline pcap: default filter keeps SYNs (ECN too) of IPv4 and IPv6, as tcpdump does", async () => {
  await withTemp(async (dir) => {
    const { frames, wanted } = mixedFrames();
    const path = `${dir}/mixed.pcap`;
    await Deno.writeFile(path, pcapBytes(frames));
    const got = await readAll(path);
    assert.equal(got.linktype, 1);
    assert.equal(got.ports.length, wanted);
    const expected = frames.map((f, i) => ({ f, i })).filter(({ i }) => i % 5 !== 0);
    assert.deepEqual(got.ports, expected.map(({ i }) => 1000 + i));
    assert.deepEqual(got.stamps, expected.map(({ f }) => f.tsSec * 1e6 + f.tsUsec));
    const td = await run(["tcpdump", "-n", "-r", path, DEFAULT_FILTER]);
    if (td.code === 0) {
      assert.equal(td.stdout.trim().split("\n").length, wanted, "tcpdump agrees on the count");
    }
  });
});

Deno.test("offline: batches are sized to the buffer (a large file takes several dispatches)", async () => {
  await withTemp(async (dir) => {
    const frames: Frame[] = [];
    for (let i = 0; i < 30000; i++) {
      frames.push({ tsSec: 1700000000, tsUsec: i, data: synFrame4(i, 1 + (i % 60000)) });
    }
    const path = `${dir}/big.pcap`;
    // snaplen 262144 in the header: at most 255 records fit one 64 MiB batch.
    await Deno.writeFile(path, pcapBytes(frames));
    const got = await readAll(path);
    assert.equal(got.ports.length, 30000);
    assert.ok(got.batches > 1, `several batches (${got.batches})`);
    for (let i = 0; i < 30000; i++) assert.equal(got.ports[i], 1 + (i % 60000));
  });
});

Deno.test("offline pcapng: packets and timestamps are read", async () => {
  await withTemp(async (dir) => {
    const { frames, wanted } = mixedFrames();
    const path = `${dir}/mixed.pcapng`;
    await Deno.writeFile(path, pcapngBytes(frames));
    const got = await readAll(path);
    assert.equal(got.linktype, 1);
    assert.equal(got.ports.length, wanted);
    assert.equal(got.stamps[0], frames[1].tsSec * 1e6 + frames[1].tsUsec);
  });
});

Deno.test("offline: a truncated capture yields its complete packets, then a clear error", async () => {
  await withTemp(async (dir) => {
    const frames: Frame[] = [];
    for (let i = 0; i < 100; i++) frames.push({ tsSec: 1, tsUsec: i, data: synFrame4(i, 1 + i) });
    const bytes = pcapBytes(frames);
    const path = `${dir}/trunc.pcap`;
    // Cut inside the data of packet 60 (each record is 16 + 54 bytes).
    await Deno.writeFile(path, bytes.subarray(0, 24 + 60 * 70 + 30));
    const pcap = Pcap.openOffline(path, DEFAULT_FILTER);
    const ports: number[] = [];
    const ev = newProbeEvent();
    await assert.rejects(
      runCapture(pcap, (b) => {
        for (let at = b.start; at < b.end;) {
          const caplen = b.view.getUint32(at + 8, true);
          if (decodePacket(pcap.linktype, b.view, at + 16, caplen, ev) === DecodeStatus.Ok) {
            ports.push(ev.dport);
          }
          at += 16 + caplen;
        }
      }, new AbortController().signal),
      (e: Error) => /trunc\.pcap/.test(e.message) && /truncated/.test(e.message),
    );
    pcap.close();
    assert.equal(ports.length, 60);
    assert.equal(ports[59], 60);
    // Cut inside a record header.
    await Deno.writeFile(path, bytes.subarray(0, 24 + 10 * 70 + 5));
    const p2 = Pcap.openOffline(path, "");
    const b = p2.dispatch();
    assert.equal(b?.count, 10);
    assert.throws(() => p2.dispatch(), /truncated dump file/);
    assert.equal(p2.dispatch(), null);
    p2.close();
  });
});

Deno.test("offline: missing, empty, garbage and short files give clear errors", async () => {
  await withTemp(async (dir) => {
    assert.throws(() => Pcap.openOffline(`${dir}/none.pcap`, ""), (e: Error) => {
      return /none\.pcap/.test(e.message) && /does not exist/.test(e.message);
    });
    await Deno.writeFile(`${dir}/empty.pcap`, new Uint8Array(0));
    assert.throws(() => Pcap.openOffline(`${dir}/empty.pcap`, ""), /truncated/);
    const garbage = new Uint8Array(4096);
    crypto.getRandomValues(garbage);
    garbage.set([0x47, 0x41, 0x52, 0x42], 0); // not a known magic number
    await Deno.writeFile(`${dir}/garbage.pcap`, garbage);
    assert.throws(
      () => Pcap.openOffline(`${dir}/garbage.pcap`, ""),
      /not a pcap or pcapng capture file/,
    );
    await Deno.writeFile(`${dir}/short.pcap`, pcapBytes([]).subarray(0, 10));
    assert.throws(() => Pcap.openOffline(`${dir}/short.pcap`, ""), /truncated/);
    // A header and no packets: a clean end.
    await Deno.writeFile(`${dir}/nopackets.pcap`, pcapBytes([]));
    const got = await readAll(`${dir}/nopackets.pcap`);
    assert.equal(got.ports.length, 0);
  });
});

Deno.test("offline: a bad filter is reported with libpcap's own text", async () => {
  await withTemp(async (dir) => {
    await Deno.writeFile(`${dir}/a.pcap`, pcapBytes(mixedFrames().frames));
    assert.throws(
      () => Pcap.openOffline(`${dir}/a.pcap`, "tcp[[["),
      (e: Error) =>
        /bad capture filter "tcp\[\[\["/.test(e.message) && /syntax error/.test(e.message),
    );
    assert.equal(DEFAULT_SNAPLEN >= 130, true, "snaplen covers VLAN + IPv6 ext headers + TCP");
  });
});

Deno.test({
  name: "live: an unknown device is reported with the devices that exist",
  ignore: !isRoot,
  fn() {
    const devices = listDevices();
    assert.ok(devices.includes("lo"));
    assert.throws(
      () =>
        Pcap.openLive({
          device: "sbnosuch0",
          snaplen: DEFAULT_SNAPLEN,
          bufferSize: 1 << 20,
          filter: "",
        }),
      (e: Error) => /sbnosuch0/.test(e.message) && /devices that exist: .*\blo\b/.test(e.message),
    );
  },
});
if (!isRoot) console.log("pcap_test: live device test skipped (needs root)");

Deno.test("a wrong SB_LIBPCAP is reported with the names tried and the packages", async () => {
  const code = `import { listDevices } from ${
    JSON.stringify(new URL("../ffi/pcap.ts", import.meta.url).href)
  };
try { listDevices(); console.log("loaded"); } catch (e) { console.log(e.message); }`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env: { SB_LIBPCAP: "/nonexistent/libpcap-sb.so" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.match(text, /cannot load libpcap; tried: \/nonexistent\/libpcap-sb\.so/);
  assert.match(text, /libpcap0\.8/);
  assert.match(text, /libpcap\.so\.0\.8, libpcap\.so\.1, libpcap\.so/);
  assert.match(text, /dnf install libpcap/);
});

Deno.test({
  name: "live: without CAP_NET_RAW the error says which capability is needed",
  ignore: !isRoot,
  async fn() {
    // Runs as nobody, so the capture fails at socket(2) before seeing any packet.
    const dir = await Deno.makeTempDir({ prefix: "sb-nobody-" });
    try {
      await Deno.chmod(dir, 0o777);
      const code = `import { Pcap } from ${
        JSON.stringify(new URL("../ffi/pcap.ts", import.meta.url).href)
      };
try { Pcap.openLive({ device: "lo", snaplen: 160, bufferSize: 1 << 20, filter: "" }); console.log("opened"); }
catch (e) { console.log(e.message); }`;
      const r = await run([
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "env",
        `DENO_DIR=${dir}/cache`,
        `HOME=${dir}`,
        Deno.execPath(),
        "eval",
        code,
      ]);
      assert.match(r.stdout, /cannot capture on "lo": .*not permitted/, r.stderr);
      assert.match(r.stdout, /CAP_NET_RAW/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
