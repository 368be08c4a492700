/**
 * A small safe wrapper over libpcap: open a live device or a capture file,
 * set a filter, read packets in batches, wait for packets without blocking
 * the event loop, statistics, close. Pointers never leave this file; callers
 * get plain values and Errors carrying libpcap's own message plus the fix.
 *
 * Why batches are shaped this way: crossing the FFI boundary once per packet
 * (pcap_next_ex, then reading the header and data through pointer views)
 * costs more than libpcap's own work, about 0.23 of tcpdump's rate. Instead
 * `pcap_dispatch` is handed libpcap's own C function `pcap_dump` as the
 * per-packet callback, writing to an in-memory FILE (`fmemopen`) over a
 * buffer that this side owns. One FFI call moves thousands of packets into
 * that buffer as plain pcap records, without any JavaScript running per
 * packet inside libpcap; the caller then walks the records with one DataView.
 * The per-dispatch packet count is bounded so the records always fit the
 * buffer (a record is 16 header bytes plus at most snaplen bytes), and the
 * stream is rewound after each batch so every batch starts at offset 0.
 */
import { bufferText, cstr, readCString } from "./cstring.ts";
import { loadLibc } from "./libc.ts";
import { type LoadedPcap, loadPcap } from "./pcap_symbols.ts";

/** Settings of a live capture. */
export interface LiveOptions {
  /** Interface name, or "any". */
  device: string;
  /** Bytes kept per packet. */
  snaplen: number;
  /** Kernel ring size in bytes. */
  bufferSize: number;
  /** BPF filter expression ("" = everything). */
  filter: string;
}

/**
 * pcap records in host byte order: u32 ts_sec, u32 ts_usec, u32 caplen,
 * u32 len, then caplen bytes; records lie in [start, end) of view. The view's
 * memory is reused by the next dispatch, so copy what you keep.
 */
export interface Batch {
  view: DataView;
  start: number;
  end: number;
  count: number;
}

/** Counters from pcap_stats (0 for capture files). */
export interface PcapStats {
  received: number;
  dropped: number;
  ifDropped: number;
}

const ERRBUF_SIZE = 256; // PCAP_ERRBUF_SIZE
const FILE_HEADER = 24;
const RECORD_HEADER = 16;
const PCAP_NETMASK_UNKNOWN = 0xffffffff;
const PCAP_ERROR_NO_SUCH_DEVICE = -5;
const PCAP_ERROR_PERM_DENIED = -8;
const PCAP_ERROR_IFACE_NOT_UP = -9;
const PCAP_ERROR_PROMISC_PERM_DENIED = -11;
const RTLD_NOW = 2;
const SEEK_SET = 0;
const POLLIN = 0x1;
const POLLERR = 0x8;
const POLLHUP = 0x10;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
/** Batch buffer of a live capture. */
const LIVE_BATCH_BYTES = 4 << 20;
/** Batch buffer of a capture file: bounds, scaled with the file's snaplen. */
const OFFLINE_BATCH_MIN = 4 << 20;
const OFFLINE_BATCH_MAX = 64 << 20;
/** Upper bound of packets per dispatch (keeps one batch's work short). */
const MAX_BATCH_PACKETS = 65536;

let dumpFn: Deno.PointerValue = null;

/** Address of libpcap's `pcap_dump`, the C callback handed to pcap_dispatch. */
function pcapDumpAddress(pcap: LoadedPcap): Deno.PointerObject {
  if (dumpFn) return dumpFn;
  const libc = loadLibc().symbols;
  let dlopen = libc.dlopen;
  let dlsym = libc.dlsym;
  if (!dlopen || !dlsym) {
    // glibc before 2.34 keeps these in libdl.
    const dl = Deno.dlopen(
      "libdl.so.2",
      {
        dlopen: { parameters: ["buffer", "i32"], result: "pointer" },
        dlsym: { parameters: ["pointer", "buffer"], result: "pointer" },
      } as const,
    );
    dlopen = dl.symbols.dlopen;
    dlsym = dl.symbols.dlsym;
  }
  const handle = dlopen(cstr(pcap.name), RTLD_NOW);
  const fn = handle ? dlsym(handle, cstr("pcap_dump")) : null;
  if (!fn) throw new Error(`cannot find pcap_dump in ${pcap.name}`);
  dumpFn = fn;
  return fn;
}

/** Lists the names of the capture devices libpcap can open. */
export function listDevices(): string[] {
  const { lib } = loadPcap();
  const errbuf = new Uint8Array(ERRBUF_SIZE);
  const out = new BigUint64Array(1);
  if (lib.symbols.pcap_findalldevs(out, errbuf) !== 0) {
    throw new Error(`cannot list capture devices: ${bufferText(errbuf)}`);
  }
  const names: string[] = [];
  const head = Deno.UnsafePointer.create(out[0]);
  // struct pcap_if { struct pcap_if *next; char *name; char *description; ...; bpf_u_int32 flags; }
  for (let p = head; p;) {
    const v = new Deno.UnsafePointerView(p);
    const name = v.getPointer(8);
    if (name) names.push(Deno.UnsafePointerView.getCString(name));
    p = v.getPointer(0);
  }
  if (head) lib.symbols.pcap_freealldevs(head);
  return names;
}

function devicesHint(): string {
  try {
    const devs = listDevices();
    return devs.length ? `devices that exist: ${devs.join(", ")}` : "no capture devices exist";
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

/**
 * Compiles `filter` for packets of link type `dlt` (a DLT_ value) with
 * libpcap's optimizer, as pcap_setfilter would get it; returns the
 * instructions (`struct bpf_insn[]`, 8 bytes each, host byte order) for an
 * interpreter on this side (src/capture/bpf.ts).
 */
export function compileFilter(dlt: number, snaplen: number, filter: string): Uint8Array {
  const s = loadPcap().lib.symbols;
  const p = s.pcap_open_dead(dlt, snaplen);
  if (!p) throw new Error(`cannot compile a filter for link type ${dlt}`);
  try {
    const prog = compileOn(s, p, filter);
    try {
      const v = new DataView(prog.buffer);
      const n = v.getUint32(0, true);
      const insns = Deno.UnsafePointer.create(v.getBigUint64(8, true));
      const out = new Uint8Array(n * 8);
      if (insns) new Deno.UnsafePointerView(insns).copyInto(out);
      return out;
    } finally {
      s.pcap_freecode(prog);
    }
  } finally {
    s.pcap_close(p);
  }
}

/** pcap_compile with the optimizer into a new `struct bpf_program` (free it with pcap_freecode). */
function compileOn(
  s: LoadedPcap["lib"]["symbols"],
  p: Deno.PointerObject,
  filter: string,
): Uint8Array<ArrayBuffer> {
  const prog = new Uint8Array(16); // struct bpf_program { u_int bf_len; struct bpf_insn *bf_insns; }
  if (s.pcap_compile(p, prog, cstr(filter), 1, PCAP_NETMASK_UNKNOWN) < 0) {
    throw new Error(`bad capture filter "${filter}": ${readCString(s.pcap_geterr(p))}`);
  }
  return prog;
}

/** An open capture handle (live device or capture file). */
export class Pcap {
  /** Link-layer type of the packets (pcap_datalink). */
  readonly linktype: number;
  /** True for a live device, false for a capture file. */
  readonly live: boolean;
  /** What was opened, for messages. */
  readonly source: string;

  #pcap: LoadedPcap;
  #p: Deno.PointerObject | null;
  #buf: Uint8Array<ArrayBuffer>;
  #view: DataView;
  /** The batch every dispatch hands out, refilled (its records are valid until the next one). */
  #batch: Batch;
  #file: Deno.PointerObject | null = null;
  #dumper: Deno.PointerObject | null = null;
  #dumpFn: Deno.PointerObject;
  #count: number;
  #pendingError: Error | null = null;
  #eof = false;
  #fd = -1;
  #pollfds = new Uint8Array(16);
  #wakeR = -1;
  #wakeW = -1;
  #waiting = false;
  #closeWanted = false;
  #statBuf = new Uint32Array(4);

  private constructor(
    pcap: LoadedPcap,
    p: Deno.PointerObject,
    live: boolean,
    source: string,
    filter: string,
  ) {
    this.#pcap = pcap;
    this.#p = p;
    this.live = live;
    this.source = source;
    const s = pcap.lib.symbols;
    try {
      this.linktype = s.pcap_datalink(p);
      const snap = Math.max(s.pcap_snapshot(p), 64);
      const rec = RECORD_HEADER + snap;
      const bytes = live
        ? LIVE_BATCH_BYTES
        : Math.min(OFFLINE_BATCH_MAX, Math.max(OFFLINE_BATCH_MIN, rec * 4096));
      this.#count = Math.max(1, Math.min(MAX_BATCH_PACKETS, Math.floor((bytes - 1) / rec)));
      this.#buf = new Uint8Array(Math.max(bytes, rec + FILE_HEADER + 1));
      this.#view = new DataView(this.#buf.buffer);
      this.#batch = { view: this.#view, start: 0, end: 0, count: 0 };
      if (filter) this.#setFilter(filter);
      this.#dumpFn = pcapDumpAddress(pcap);
      this.#openStream();
      if (live) this.#openWaiting();
    } catch (e) {
      this.#release();
      throw e;
    }
  }

  /**
   * Opens a live capture: snaplen, promiscuous mode off, immediate mode on
   * (packets are delivered as they arrive, not when a ring block fills),
   * kernel buffer size, non-blocking, then the filter.
   */
  static openLive(opts: LiveOptions): Pcap {
    const pcap = loadPcap();
    const s = pcap.lib.symbols;
    const errbuf = new Uint8Array(ERRBUF_SIZE);
    const p = s.pcap_create(cstr(opts.device), errbuf);
    if (!p) throw new Error(`cannot capture on "${opts.device}": ${bufferText(errbuf)}`);
    let ok = false;
    try {
      s.pcap_set_snaplen(p, opts.snaplen);
      s.pcap_set_promisc(p, 0);
      s.pcap_set_immediate_mode(p, 1);
      s.pcap_set_buffer_size(p, opts.bufferSize);
      const rc = s.pcap_activate(p);
      if (rc < 0) {
        const msg = readCString(s.pcap_geterr(p)) || readCString(s.pcap_statustostr(rc));
        const where = `cannot capture on "${opts.device}": ${msg}`;
        if (rc === PCAP_ERROR_NO_SUCH_DEVICE) {
          throw new Error(
            `${where}; choose an existing device with -i/--interface or SB_DEVICE (${devicesHint()})`,
          );
        }
        if (rc === PCAP_ERROR_PERM_DENIED || rc === PCAP_ERROR_PROMISC_PERM_DENIED) {
          throw new Error(
            `${where}; capturing needs the CAP_NET_RAW capability (run as root, or grant it, e.g. setcap cap_net_raw+ep on the binary or AmbientCapabilities=CAP_NET_RAW in the systemd unit)`,
          );
        }
        if (rc === PCAP_ERROR_IFACE_NOT_UP) {
          throw new Error(`${where}; bring the interface up first (ip link set ${opts.device} up)`);
        }
        throw new Error(where);
      }
      if (s.pcap_setnonblock(p, 1, errbuf) < 0) {
        throw new Error(
          `cannot make the capture on "${opts.device}" non-blocking: ${bufferText(errbuf)}`,
        );
      }
      ok = true;
    } finally {
      if (!ok) s.pcap_close(p);
    }
    return new Pcap(pcap, p, true, opts.device, opts.filter);
  }

  /** Opens a capture file (pcap or pcapng; "-" = standard input) and sets the filter. */
  static openOffline(path: string, filter: string): Pcap {
    const pcap = loadPcap();
    const errbuf = new Uint8Array(ERRBUF_SIZE);
    const p = pcap.lib.symbols.pcap_open_offline(cstr(path), errbuf);
    if (!p) {
      const msg = bufferText(errbuf);
      let fix = "";
      if (/no such file/i.test(msg)) fix = "the capture file does not exist; check the path";
      else if (/permission denied/i.test(msg)) {
        fix = "the capture file is not readable by this user";
      } else if (/truncated/i.test(msg)) {
        fix = "the file is truncated (shorter than a capture file header); it holds no packets";
      } else if (/is a directory/i.test(msg)) fix = "give a capture file, not a directory";
      else fix = "the file is not a pcap or pcapng capture file";
      if (path === "-") {
        throw new Error(
          `cannot read a capture from standard input: ${msg} (${
            /truncated/i.test(msg) ? "no capture header arrived" : fix.replace("file", "stream")
          }; e.g. tcpdump -w - | scanblocker -r -)`,
        );
      }
      throw new Error(`cannot read capture file "${path}": ${msg} (${fix})`);
    }
    return new Pcap(pcap, p, false, path, filter);
  }

  #setFilter(filter: string): void {
    const s = this.#pcap.lib.symbols;
    const p = this.#p!;
    const prog = compileOn(s, p, filter);
    const rc = s.pcap_setfilter(p, prog);
    s.pcap_freecode(prog);
    if (rc < 0) {
      throw new Error(`cannot set capture filter "${filter}": ${readCString(s.pcap_geterr(p))}`);
    }
  }

  #openStream(): void {
    const s = this.#pcap.lib.symbols;
    const c = loadLibc().symbols;
    const f = c.fmemopen(Deno.UnsafePointer.of(this.#buf), BigInt(this.#buf.length), cstr("w"));
    if (!f) throw new Error("fmemopen failed: cannot create the in-memory packet stream");
    const d = s.pcap_dump_fopen(this.#p!, f);
    if (!d) {
      c.fclose(f);
      throw new Error(`pcap_dump_fopen failed: ${readCString(s.pcap_geterr(this.#p!))}`);
    }
    this.#file = f;
    this.#dumper = d;
    // The file header was written; drop it so every batch starts at 0.
    c.fflush(f);
    c.fseek(f, 0n, SEEK_SET);
  }

  #openWaiting(): void {
    const s = this.#pcap.lib.symbols;
    this.#fd = s.pcap_get_selectable_fd(this.#p!);
    if (this.#fd < 0) throw new Error(`"${this.source}" has no selectable descriptor`);
    const fds = new Int32Array(2);
    if (loadLibc().symbols.pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
      throw new Error("pipe2 failed: cannot create the capture wake-up pipe");
    }
    this.#wakeR = fds[0];
    this.#wakeW = fds[1];
    // struct pollfd { int fd; short events; short revents; } [2]: packets, wake-up pipe
    const v = new DataView(this.#pollfds.buffer);
    v.setInt32(0, this.#fd, true);
    v.setInt16(4, POLLIN, true);
    v.setInt32(8, this.#wakeR, true);
    v.setInt16(12, POLLIN, true);
  }

  /**
   * Reads what is ready now into one batch (count may be 0 for a live
   * capture); null at the end of a capture file. A damaged capture file
   * yields its complete packets first, then throws on the next call.
   */
  dispatch(): Batch | null {
    if (this.#pendingError) {
      const e = this.#pendingError;
      this.#pendingError = null;
      this.#eof = true;
      throw e;
    }
    if (!this.#p || this.#eof) return null;
    const s = this.#pcap.lib.symbols;
    const c = loadLibc().symbols;
    const n = s.pcap_dispatch(this.#p, this.#count, this.#dumpFn, this.#dumper);
    const b = this.#batch;
    if (n === 0) {
      // Nothing was dumped: the stream is still at 0 (the live thread looks
      // at an empty ring often, and this look allocates nothing).
      if (!this.live) {
        this.#eof = true;
        return null;
      }
      b.end = b.count = 0;
      return b;
    }
    const f = this.#file!;
    c.fflush(f);
    const end = Number(c.ftell(f));
    c.fseek(f, 0n, SEEK_SET);
    if (n > 0) {
      // One Batch object, refilled, rather than a literal per call.
      b.end = end;
      b.count = n;
      return b;
    }
    const msg = readCString(s.pcap_geterr(this.#p));
    const err = this.live ? new Error(`capture on "${this.source}" failed: ${msg}`) : new Error(
      `capture file "${this.source}" is damaged after its last complete packet: ${msg}`,
    );
    if (end <= 0) {
      this.#eof = true;
      throw err;
    }
    // Hand over the complete records read before the error, throw next time.
    this.#pendingError = err;
    let count = 0;
    for (let at = 0; at + RECORD_HEADER <= end;) {
      at += RECORD_HEADER + this.#view.getUint32(at + 8, true);
      if (at <= end) count++;
    }
    return { view: this.#view, start: 0, end, count };
  }

  /**
   * Live only: waits up to timeoutMs for packets without blocking the event
   * loop; true when packets may be ready, false on timeout or interrupt().
   * A capture file resolves true at once.
   *
   * The wait is poll(2) on pcap_get_selectable_fd and a wake-up pipe, run as
   * a `nonblocking` FFI call on a thread off the event loop. Measured here, a
   * packet reaches onBatch about as fast this way as with the main thread
   * spinning on the ring or with a SIGIO (O_ASYNC) wake-up: 0.3 ms median
   * from the kernel's timestamp, most of it before the packet is in the ring.
   */
  async wait(timeoutMs: number): Promise<boolean> {
    if (!this.live) return true;
    if (!this.#p || this.#waiting || this.#closeWanted) return false;
    this.#waiting = true;
    try {
      return this.#polled(
        await loadLibc().symbols.poll(this.#pollfds, 2n, this.#armPoll(timeoutMs)),
      );
    } finally {
      this.#waiting = false;
      // close() during the wait: poll(2) held the descriptors until now.
      if (this.#closeWanted) this.#release();
    }
  }

  /**
   * The same wait, on the calling thread: for a capture worker, whose thread
   * does nothing else, so a packet wakes the thread that handles it (one
   * wake-up instead of a pool thread's and then the event loop's).
   */
  waitSync(timeoutMs: number): boolean {
    if (!this.live) return true;
    if (!this.#p || this.#closeWanted) return false;
    const poll = loadLibc().symbols.pollSync;
    if (!poll) throw new Error("libc has no poll");
    return this.#polled(poll(this.#pollfds, 2n, this.#armPoll(timeoutMs)));
  }

  #armPoll(timeoutMs: number): number {
    const v = new DataView(this.#pollfds.buffer);
    v.setInt16(6, 0, true);
    v.setInt16(14, 0, true);
    return Math.max(0, Math.floor(timeoutMs));
  }

  /** Reads poll's outcome: true when packets may be ready; empties the wake-up pipe. */
  #polled(rc: number): boolean {
    if (rc <= 0) return false;
    const c = loadLibc().symbols;
    const v = new DataView(this.#pollfds.buffer);
    if (v.getInt16(14, true) !== 0) {
      const drain = new Uint8Array(64);
      while (Number(c.read(this.#wakeR, drain, 64n)) > 0) { /* empty the pipe */ }
    }
    return (v.getInt16(6, true) & (POLLIN | POLLERR | POLLHUP)) !== 0;
  }

  /**
   * The write end of the wake-up pipe: one byte written to it (see wakeUp)
   * ends a pending wait from any thread. -1 for a capture file.
   */
  get wakeDescriptor(): number {
    return this.#wakeW;
  }

  /**
   * Bytes of a capture file read so far (libpcap's stream position, for
   * progress); null for a live capture or a stream that cannot tell (a pipe).
   */
  position(): number | null {
    if (this.live || !this.#p) return null;
    const f = this.#pcap.lib.symbols.pcap_file(this.#p);
    if (!f) return null;
    const at = Number(loadLibc().symbols.ftell(f));
    return at >= 0 ? at : null;
  }

  /** Makes a pending wait() return false now (used to stop a capture loop). */
  interrupt(): void {
    if (this.#wakeW >= 0) loadLibc().symbols.write(this.#wakeW, new Uint8Array(1), 1n);
  }

  /** Kernel counters of a live capture; zeros for a capture file. */
  stats(): PcapStats {
    if (!this.live || !this.#p) return { received: 0, dropped: 0, ifDropped: 0 };
    const s = this.#pcap.lib.symbols;
    if (s.pcap_stats(this.#p, this.#statBuf) < 0) {
      throw new Error(`pcap_stats failed: ${readCString(s.pcap_geterr(this.#p))}`);
    }
    return {
      received: this.#statBuf[0],
      dropped: this.#statBuf[1],
      ifDropped: this.#statBuf[2],
    };
  }

  /** Closes the handle; safe to call twice and while a wait() is pending. */
  close(): void {
    if (this.#waiting) {
      this.#closeWanted = true;
      this.interrupt();
      return;
    }
    this.#release();
  }

  #release(): void {
    const c = loadLibc().symbols;
    const s = this.#pcap.lib.symbols;
    if (this.#dumper) s.pcap_dump_close(this.#dumper); // also fcloses the stream
    else if (this.#file) c.fclose(this.#file);
    this.#dumper = null;
    this.#file = null;
    if (this.#p) s.pcap_close(this.#p);
    this.#p = null;
    this.#fd = -1; // closed by pcap_close
    if (this.#wakeR >= 0) c.close(this.#wakeR);
    if (this.#wakeW >= 0) c.close(this.#wakeW);
    this.#wakeR = this.#wakeW = -1;
  }
}
