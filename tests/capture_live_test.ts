/**
 * Live capture in network namespaces with real libpcap and real nmap/hping3:
 * every SYN nmap sends is captured and decoded (IPv4 and IPv6), and a timer
 * and an HTTP request are served while the capture waits and while it is
 * flooded (DESIGN principle 1).
 */
import assert from "node:assert/strict";
import type { Batch, Pcap } from "../ffi/pcap.ts";
import { DEFAULT_FILTER, runCapture } from "../src/capture/capture.ts";
import { decodePacket } from "../src/detect/decode.ts";
import { DecodeStatus, newProbeEvent, TCP } from "../src/types.ts";
import { createLab, type Lab, nmap, run } from "./netns.ts";
import { openLiveIn } from "./pcap_files.ts";

const isRoot = Deno.uid() === 0;
if (!isRoot) console.log("capture_live_test: skipped (needs root for namespaces and capture)");

/** Counts SYNs (SYN set, ACK clear) per family and destination port, decoded from batches. */
class SynCounter {
  v4 = 0;
  v6 = 0;
  ports4 = new Set<number>();
  ports6 = new Set<number>();
  batches = 0;
  #ev = newProbeEvent();
  constructor(readonly linktype: number) {}
  add = (b: Batch): void => {
    this.batches++;
    for (let at = b.start; at < b.end;) {
      const caplen = b.view.getUint32(at + 8, true);
      const st = decodePacket(this.linktype, b.view, at + 16, caplen, this.#ev);
      if (st === DecodeStatus.Ok && (this.#ev.flags & (TCP.SYN | TCP.ACK)) === TCP.SYN) {
        if (this.#ev.family === 4) {
          this.v4++;
          this.ports4.add(this.#ev.dport);
        } else {
          this.v6++;
          this.ports6.add(this.#ev.dport);
        }
      }
      at += 16 + caplen;
    }
  };
}

/** Starts tcpdump on the scanner side and resolves once it listens; stop() returns SYNs seen. */
async function scannerTcpdump(lab: Lab, file: string) {
  const child = new Deno.Command("ip", {
    args: [
      ...lab.prefix(lab.scanner).slice(1),
      "timeout",
      "60",
      "tcpdump",
      "-i",
      lab.scannerIf,
      "-n",
      "-U",
      "--immediate-mode",
      "-Z",
      "root",
      "-s",
      "128",
      "-B",
      "16384",
      "-w",
      file,
      DEFAULT_FILTER,
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const deadline = Date.now() + 10000;
  while (!seen.includes("listening on") && Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += value;
  }
  assert.match(seen, /listening on/, "scanner-side tcpdump started");
  const drain = (async () => {
    while (!(await reader.read()).done) { /* keep stderr flowing */ }
  })();
  return {
    async stop(): Promise<{ v4: number; v6: number }> {
      child.kill("SIGINT");
      await child.status;
      await drain;
      const count = async (expr: string) => {
        const r = await run([
          "tcpdump",
          "-n",
          "-r",
          file,
          `tcp and (${DEFAULT_FILTER}) and ${expr}`,
        ]);
        return r.stdout.trim() ? r.stdout.trim().split("\n").length : 0;
      };
      return { v4: await count("ip"), v6: await count("ip6") };
    },
  };
}

async function waitFor(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
}

Deno.test({
  name: "live capture: every SYN of an nmap scan (IPv4 and IPv6) is captured and decoded",
  ignore: !isRoot,
  sanitizeResources: false,
  async fn() {
    const lab = await createLab("cap");
    const dir = await Deno.makeTempDir({ prefix: "sb-live-" });
    let pcap: Pcap | null = null;
    let pcapAny: Pcap | null = null;
    const abort = new AbortController();
    let loop: Promise<void> | null = null;
    let loopAny: Promise<void> | null = null;
    try {
      pcap = openLiveIn(lab.target, lab.targetIf);
      assert.equal(pcap.linktype, 1);
      const counter = new SynCounter(pcap.linktype);
      loop = runCapture(pcap, counter.add, abort.signal);
      // The same scan seen through "any" (Linux cooked headers).
      pcapAny = openLiveIn(lab.target, "any");
      assert.ok([113, 276].includes(pcapAny.linktype), `any: linktype ${pcapAny.linktype}`);
      const counterAny = new SynCounter(pcapAny.linktype);
      loopAny = runCapture(pcapAny, counterAny.add, abort.signal);
      const td = await scannerTcpdump(lab, `${dir}/scanner.pcap`);
      for (const [flag, addr] of [["-4", lab.target4], ["-6", lab.target6]]) {
        const r = await nmap(lab, [flag, "-sS", "-T4", "-p", "1-200", "-e", lab.scannerIf, addr], {
          seconds: 60,
        });
        assert.equal(r.code, 0, `nmap ${flag}: ${r.stderr}`);
      }
      const sent = await td.stop();
      assert.ok(sent.v4 >= 200 && sent.v6 >= 200, `nmap sent ${JSON.stringify(sent)}`);
      await waitFor(
        () =>
          counter.v4 >= sent.v4 && counter.v6 >= sent.v6 && counterAny.v4 >= sent.v4 &&
          counterAny.v6 >= sent.v6,
        5000,
      );
      const got = `captured v4 ${counter.v4} v6 ${counter.v6}, sent ${JSON.stringify(sent)}`;
      assert.equal(counter.v4, sent.v4, `IPv4 SYNs captured = sent (${got})`);
      assert.equal(counter.v6, sent.v6, `IPv6 SYNs captured = sent (${got})`);
      assert.equal(counterAny.v4, sent.v4, "IPv4 SYNs on any = sent");
      assert.equal(counterAny.v6, sent.v6, "IPv6 SYNs on any = sent");
      for (let p = 1; p <= 200; p++) {
        assert.ok(counter.ports4.has(p) && counter.ports6.has(p), `port ${p} seen`);
      }
      const st = pcap.stats();
      assert.equal(st.dropped, 0, "no pcap drops");
      assert.ok(st.received >= sent.v4 + sent.v6);
      abort.abort();
      await loop;
      await loopAny;
      loop = loopAny = null;
    } finally {
      abort.abort();
      await loop?.catch(() => {});
      await loopAny?.catch(() => {});
      pcap?.close();
      pcapAny?.close();
      await lab.destroy();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "live capture: timers and HTTP are served while waiting and while flooded",
  ignore: !isRoot,
  sanitizeResources: false,
  async fn() {
    const lab = await createLab("cfl");
    let pcap: Pcap | null = null;
    const abort = new AbortController();
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
      return new Response("ok");
    });
    let loop: Promise<void> | null = null;
    let ticks = 0;
    let maxGap = 0;
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
      ticks++;
    }, 10);
    const url = `http://127.0.0.1:${server.addr.port}/`;
    const get = async () => {
      const t0 = performance.now();
      const r = await fetch(url, { signal: AbortSignal.timeout(5000) });
      assert.equal(await r.text(), "ok");
      return performance.now() - t0;
    };
    try {
      pcap = openLiveIn(lab.target, lab.targetIf);
      const counter = new SynCounter(pcap.linktype);
      loop = runCapture(pcap, counter.add, abort.signal);

      // Waiting: no packets arrive, the event loop stays free.
      ticks = 0;
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(ticks >= 10, `timer ran while waiting (${ticks} ticks)`);
      await get();

      // Flooded: hping3 at full speed for 2 seconds.
      const flood = lab.exec(lab.scanner, [
        "timeout",
        "2",
        "hping3",
        "--flood",
        "-S",
        "-p",
        "80",
        "-q",
        lab.target4,
      ]);
      await waitFor(() => counter.v4 > 1000, 3000);
      assert.ok(counter.v4 > 1000, `flood is arriving (${counter.v4})`);
      ticks = 0;
      maxGap = 0;
      last = performance.now();
      const latencies: number[] = [];
      for (let i = 0; i < 5; i++) {
        latencies.push(await get());
        await new Promise((r) => setTimeout(r, 50));
      }
      const during = counter.v4;
      await flood;
      assert.ok(
        counter.v4 > during || counter.v4 > 10000,
        "packets kept coming during the requests",
      );
      assert.ok(
        ticks >= 10,
        `timer ran while flooded (${ticks} ticks, max gap ${maxGap.toFixed(1)} ms)`,
      );
      console.log(
        `flood: ${counter.v4} SYNs in ${counter.batches} batches, HTTP ${
          latencies.map((l) => l.toFixed(1)).join("/")
        } ms, timer max gap ${maxGap.toFixed(1)} ms, stats ${JSON.stringify(pcap.stats())}`,
      );

      // The loop stops promptly on abort even while waiting.
      const t0 = performance.now();
      abort.abort();
      await loop;
      loop = null;
      assert.ok(performance.now() - t0 < 500, "capture loop stopped on abort");
    } finally {
      clearInterval(timer);
      abort.abort();
      await loop?.catch(() => {});
      pcap?.close();
      await server.shutdown();
      await lab.destroy();
    }
  },
});
