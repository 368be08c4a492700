/**
 * The live capture worker: one thread that waits for packets in poll(2),
 * decodes them, runs the detection engine and puts the ban into the kernel
 * over netlink (an nftables set element, or an iptables-nft rule), all
 * before it sleeps again. The main thread keeps the metrics server, the
 * firewall's bookkeeping, timers and the command runners; it hears about
 * scans after they are banned.
 *
 * Why a thread of its own: with the wait on a pool thread and the work on the
 * event loop, a packet needs two wake-ups, and on a busy machine the second
 * one waited for nmap's whole burst (320 probes, 3.4 ms, measured). This
 * thread runs under SCHED_FIFO when allowed (`--realtime`), so the kernel
 * runs it as soon as a packet wakes it: each probe of the same burst was in
 * its hands 10 µs after its capture timestamp.
 *
 * Protocol: see src/capture/protocol.ts. The worker never blocks on
 * anything but poll(2), and never yields to its event loop while capturing:
 * requests come on a MessagePort it reads with receiveMessageOnPort (a few
 * µs) whenever the shared mailbox counter says the main thread posted some,
 * and every 200 ms. (It used to let them in with an event-loop turn, which
 * waits for a pool thread: 50 µs on an idle machine, but up to 4 ms under
 * nmap's burst, measured, while the next probes waited in the ring.)
 */
import { type MessagePort as NodePort, receiveMessageOnPort } from "node:worker_threads";
import { realtimeMs, setRealtimePriority } from "../../ffi/libc.ts";
import { Pcap } from "../../ffi/pcap.ts";
import { addressKey, parseAddress } from "../address.ts";
import { FastBanner } from "../firewall/fastpath.ts";
import { AllowList } from "../allowlist.ts";
import { type ScanNotice, type WorkerReply, type WorkerRequest } from "./protocol.ts";
import { Slot } from "../detect/counters.ts";
import {
  createEngine,
  type Engine,
  type EngineSettings,
  publishCounters,
  reconfigureEngine,
  type SourcePorts,
  topSources,
} from "../detect/engine.ts";
import { EventLog, journalStreams } from "../report/log.ts";
import { stdioOutput } from "../report/output.ts";
import { warmUp } from "./warmup.ts";
import type { ScanReport } from "../detect/pipeline.ts";

/** This module runs as a worker: its global scope is the worker's. */
const scope = globalThis as unknown as {
  postMessage(m: WorkerReply): void;
  onmessage: ((e: MessageEvent<WorkerRequest>) => void) | null;
};

const post = (m: WorkerReply) => scope.postMessage(m);
const enc = new TextEncoder();
/** stdout that never blocks this thread (main.ts makes it O_NONBLOCK): lines it cannot take are counted. */
const out = stdioOutput(1);
const stdout = (text: string) => out.write(enc.encode(text));

/** Longest sleep in poll(2): the log's suppression notes are written at least this often. */
const WAIT_MS = 1000;

let pcap: Pcap | null = null;
let stopped = false;
let started = false;
let openReq: Extract<WorkerRequest, { type: "open" }> | null = null;
let allow: AllowList | null = null;
const openPorts = new Uint8Array(65536);
let countOpen = false;
const banned = new Set<string>();
/** Scanners that were banned before the scan that found them ("already in disallowed list"). */
const wasBanned = new Set<string>();
/** The running engine, its log and settings, for a reload ("settings"). */
let current: { engine: Engine; log: EventLog; settings: EngineSettings } | null = null;
let fast: FastBanner | null = null;
const forgets: string[] = [];
let requests: MessagePort | null = null;
/** The engine's top sources, once it exists. */
let topOf: ((n: number) => SourcePorts[]) | null = null;
/** The thread runs under SCHED_FIFO (--realtime was granted). */
let fifo = false;

scope.onmessage = (e: MessageEvent<WorkerRequest>) => {
  if (e.data.type === "open") open(e.data);
};

/** Handles every request waiting on the port; false when there was none. */
function takeRequests(): boolean {
  let any = false;
  // Deno's receiveMessageOnPort takes the web MessagePort; only its type is Node's.
  const port = requests as unknown as NodePort | null;
  for (let r; port && (r = receiveMessageOnPort(port)) !== undefined;) {
    handle(r.message as WorkerRequest);
    any = true;
  }
  return any;
}

function handle(m: WorkerRequest): void {
  switch (m.type) {
    case "open":
      break; // only as the worker's first message
    case "start":
      for (const a of m.banned) banned.add(a);
      if (m.fastBan) {
        try {
          fast = new FastBanner(m.fastBan);
        } catch (err) {
          fast = null;
          post({
            type: "warning",
            message: `capture worker cannot ban over netlink (${
              err instanceof Error ? err.message : err
            }); bans go through the main thread`,
          });
        }
      }
      started = true;
      break;
    case "local":
      allow?.setLocal(m.local);
      break;
    case "guard":
      allow?.setGuard(m.guard);
      break;
    case "openPorts":
      openPorts.fill(0);
      for (const p of m.ports) openPorts[p] = 1;
      break;
    case "banned":
      if (m.replace) {
        banned.clear();
        for (const a of m.replace) banned.add(a);
        for (const a of wasBanned) if (!banned.has(a)) wasBanned.delete(a);
      }
      for (const a of m.add ?? []) banned.add(a);
      if (fast && m.room !== undefined) fast.desc.room = m.room;
      break;
    case "forget":
      forgets.push(m.address);
      break;
    case "top":
      post({ type: "top", id: m.id, sources: topOf ? topOf(m.n) : [] });
      break;
    case "settings":
      if (current) {
        reconfigureEngine(current.engine, current.settings, m.settings);
        current.settings = m.settings;
        current.engine.pipeline.setEveryDestinationLocal(m.everyDestinationLocal);
        current.log.configure(m.logFormat, m.logRate);
      }
      allow?.setAllowed(m.allow);
      break;
    case "stop":
      stopped = true;
      break;
  }
}

function open(m: Extract<WorkerRequest, { type: "open" }>): void {
  try {
    pcap = Pcap.openLive({
      device: m.device,
      snaplen: m.snaplen,
      bufferSize: m.bufferSize,
      filter: m.filter,
    });
  } catch (e) {
    post({ type: "failed", message: e instanceof Error ? e.message : String(e) });
    return;
  }
  openReq = m;
  requests = m.requests;
  allow = new AllowList([...m.allow], m.local);
  countOpen = m.openPorts === null;
  for (const p of m.openPorts ?? []) openPorts[p] = 1;
  let realtime = "off";
  if (m.realtime > 0) {
    const err = setRealtimePriority(m.realtime);
    realtime = err === null ? `SCHED_FIFO ${m.realtime}` : `off (${err})`;
    fifo = err === null;
  }
  post({ type: "opened", linktype: pcap.linktype, wakeDescriptor: pcap.wakeDescriptor, realtime });
  run().then(
    (error) => post({ type: "ended", error }),
    (e) => post({ type: "ended", error: e instanceof Error ? e.message : String(e) }),
  );
}

/**
 * After a batch, the worker keeps looking at the ring this long before it
 * sleeps: a wake-up from poll(2) costs about 0.1 ms here, and the probes of
 * one scanner come in bursts with gaps shorter than that. At most 0.3 ms of
 * one core per batch: 3 % of a core at 100 batches a second.
 */
const SPIN_MS = 0.3;

/**
 * A flood, for scheduling: more packets than this in FLOOD_WINDOW_MS (50,000
 * a second). nmap's fastest scan of 1,000 ports sends 1,000 probes in all,
 * so a scan keeps SCHED_FIFO; a flood costs it (its probes wait their turn).
 */
const FLOOD_PACKETS = 5000;
const FLOOD_WINDOW_MS = 100;

/** Messages are let in at least this often, whatever the mailbox says. */
const MESSAGES_MS = 200;

/**
 * The capture loop; resolves with the capture's error, or null after "stop".
 * Long on purpose: the per-packet path and the ban it makes stay in one
 * function, as closures over its locals, so the hot loop reaches nothing
 * through module state; a split would have to be measured against the
 * ban-latency bench first (not done).
 */
async function run(): Promise<string | null> {
  const p = pcap!, m = openReq!, al = allow!;
  const counters = new Float64Array(m.counters);
  // The same lines as the main thread's, journald prefixes included.
  const log = new EventLog(m.logFormat, m.logRate, stdout, { journal: journalStreams().stdout });
  let notices: ScanNotice[] = [];
  // When the batch being processed was read from the ring (realtime ms).
  let readAt = 0;
  const banFirst = (scan: ScanReport) => {
    const detectedAt = realtimeMs();
    let ban: ScanNotice["ban"] = null;
    // The pipeline never reports a local or allow-listed source; checked
    // again on the bytes (parsing text here cost 30-100 µs of cold code).
    if (banned.has(scan.src)) wasBanned.add(scan.src);
    // A prefix (range) ban goes through the main thread's firewall (interval elements).
    const one = scan.prefix === (scan.family === 4 ? 32 : 128);
    if (one && fast && !banned.has(scan.src) && !al.isProtected(scan.family, scan.key)) {
      ban = fast.ban(scan.family, scan.key, realtimeMs);
      if (ban?.ok) {
        banned.add(scan.src);
        fastBanned = { src: scan.src, at: ban.at, detectedAt, readAt };
      }
    }
    // Without a ban here the main thread bans: tell it now, not after the batch.
    if (ban === null) post({ type: "scans", scans: [{ scan, detectedAt, ban }] });
    else notices.push({ scan, detectedAt, ban });
  };
  // Banned here: the ban line follows the detection line at once (the main
  // thread does not write it again), before any later probe's line.
  let fastBanned: { src: string; at: number; detectedAt: number; readAt: number } | null = null;
  const onScan = (scan: ScanReport) => {
    const f = fastBanned;
    fastBanned = null;
    if (f?.src !== scan.src) return;
    log.banned(Date.now(), scan.src, {
      latencyMs: Math.max(0, f.at - scan.ms),
      detectMs: f.detectedAt - scan.ms,
      readMs: Math.max(0, f.readAt - scan.ms),
    });
  };
  const engine = createEngine(m.settings, {
    linktype: p.linktype,
    allow: al,
    log,
    openPorts: countOpen ? null : { has: (port) => openPorts[port] === 1 },
    everyDestinationLocal: m.everyDestinationLocal,
    summarize: false,
    onScan,
    banFirst,
    onRepeatScanner: (ms, src) => {
      // Only a source banned before this scan began is "already" banned.
      if (wasBanned.has(src)) log.alreadyBanned(ms, src, true);
    },
  });
  current = { engine, log, settings: m.settings };
  const pl = engine.pipeline;
  topOf = (n) => topSources(engine, n);
  const publish = () => {
    publishCounters(engine, log, counters);
    counters[Slot.LogDropped] = out.dropped;
  };
  let statsAt = 0;
  const publishStats = (now: number) => {
    statsAt = now;
    try {
      counters[Slot.PcapDropped] = p.stats().dropped;
    } catch { /* closing */ }
  };

  // Compile the packet path before the first real packet (see warmup.ts),
  // and say so: the main thread announces "Listening on:" only then.
  warmUp(m.settings, { format: m.logFormat, rate: m.logRate });
  // Map the admission table's pages now, not on a fresh scanner's first probe.
  engine.admission.prefault();
  post({ type: "ready" });
  // Packets wait in the kernel ring until the firewall is ready.
  while (!started && !stopped) {
    if (!takeRequests()) await new Promise((r) => setTimeout(r, 5));
  }
  const mailbox = new Int32Array(m.mailbox);
  let read = Atomics.load(mailbox, 0);
  let takenAt = Date.now();
  let busyUntil = 0;
  // Under a flood this thread would, at SCHED_FIFO, take a core ahead of the
  // main thread (on 2 cores /metrics p99 went from 14 ms to 117-158 ms):
  // past FLOOD_PACKETS in a FLOOD_WINDOW_MS window it runs under normal
  // scheduling, and under SCHED_FIFO again after a window with a tenth of that.
  let windowStart = performance.now(), windowPackets = 0, demoted = false;
  try {
    while (!stopped) {
      while (forgets.length > 0) {
        const a = parseAddress(forgets.pop()!);
        if (a) engine.forget(addressKey(a.family, a.bytes));
      }
      let b;
      try {
        b = p.dispatch();
      } catch (e) {
        return e instanceof Error ? e.message : String(e);
      }
      if (b && b.count > 0) {
        readAt = realtimeMs(); // once a batch, not on every empty look at the ring
        busyUntil = performance.now() + SPIN_MS;
        pl.processBatch(b);
        // The detection lines go out before the main thread writes the ban lines.
        log.flush();
        publish();
        if (notices.length > 0) {
          post({ type: "scans", scans: notices });
          notices = [];
        }
      } else if (performance.now() < busyUntil) {
        // Probes come in bursts: look again rather than pay a wake-up.
      } else if (!p.waitSync(WAIT_MS)) log.flush(realtimeMs());
      if (fifo) {
        if (b) windowPackets += b.count;
        const t = performance.now();
        if (t - windowStart >= FLOOD_WINDOW_MS) {
          if (!demoted && windowPackets > FLOOD_PACKETS) demoted = setRealtimePriority(0) === null;
          else if (demoted && windowPackets < FLOOD_PACKETS / 10) {
            demoted = setRealtimePriority(m.realtime) !== null;
          }
          windowStart = t;
          windowPackets = 0;
        }
      }
      const now = Date.now();
      counters[Slot.Heartbeat] = now;
      counters[Slot.LogDropped] = out.dropped;
      if (now - statsAt >= 500) publishStats(now);
      const posted = Atomics.load(mailbox, 0);
      if (posted !== read || now - takenAt >= MESSAGES_MS) {
        read = posted;
        takenAt = now;
        takeRequests();
      }
    }
    return null;
  } finally {
    log.flush(realtimeMs());
    publish();
    publishStats(Date.now());
    fast?.close();
    p.close();
  }
}
