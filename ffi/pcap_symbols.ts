/**
 * The libpcap symbols scanblocker uses, each with its C prototype, and the
 * loader that finds the library. Only `ffi/pcap.ts` uses this file.
 */
import { trustedPathVariable } from "./libc.ts";
import { bindLazily, openLibrary } from "./loader.ts";

/** libpcap symbols (libpcap >= 1.5 for pcap_set_immediate_mode). */
export const pcapSymbols = {
  /** pcap_t *pcap_create(const char *source, char *errbuf); */
  pcap_create: { parameters: ["buffer", "buffer"], result: "pointer" },
  /** int pcap_set_snaplen(pcap_t *p, int snaplen); */
  pcap_set_snaplen: { parameters: ["pointer", "i32"], result: "i32" },
  /** int pcap_set_promisc(pcap_t *p, int promisc); */
  pcap_set_promisc: { parameters: ["pointer", "i32"], result: "i32" },
  /** int pcap_set_immediate_mode(pcap_t *p, int immediate_mode); */
  pcap_set_immediate_mode: { parameters: ["pointer", "i32"], result: "i32" },
  /** int pcap_set_buffer_size(pcap_t *p, int buffer_size); */
  pcap_set_buffer_size: { parameters: ["pointer", "i32"], result: "i32" },
  /** int pcap_activate(pcap_t *p); */
  pcap_activate: { parameters: ["pointer"], result: "i32" },
  /** int pcap_setnonblock(pcap_t *p, int nonblock, char *errbuf); */
  pcap_setnonblock: { parameters: ["pointer", "i32", "buffer"], result: "i32" },
  /** pcap_t *pcap_open_dead(int linktype, int snaplen); (compiles filters for capture files read in JavaScript) */
  pcap_open_dead: { parameters: ["i32", "i32"], result: "pointer" },
  /** pcap_t *pcap_open_offline(const char *fname, char *errbuf); */
  pcap_open_offline: { parameters: ["buffer", "buffer"], result: "pointer" },
  /** int pcap_compile(pcap_t *p, struct bpf_program *fp, const char *str, int optimize, bpf_u_int32 netmask); */
  pcap_compile: { parameters: ["pointer", "buffer", "buffer", "i32", "u32"], result: "i32" },
  /** int pcap_setfilter(pcap_t *p, struct bpf_program *fp); */
  pcap_setfilter: { parameters: ["pointer", "buffer"], result: "i32" },
  /** void pcap_freecode(struct bpf_program *fp); */
  pcap_freecode: { parameters: ["buffer"], result: "void" },
  /** char *pcap_geterr(pcap_t *p); */
  pcap_geterr: { parameters: ["pointer"], result: "pointer" },
  /** const char *pcap_statustostr(int error); */
  pcap_statustostr: { parameters: ["i32"], result: "pointer" },
  /** int pcap_datalink(pcap_t *p); */
  pcap_datalink: { parameters: ["pointer"], result: "i32" },
  /** int pcap_snapshot(pcap_t *p); */
  pcap_snapshot: { parameters: ["pointer"], result: "i32" },
  /** int pcap_dispatch(pcap_t *p, int cnt, pcap_handler callback, u_char *user); */
  pcap_dispatch: { parameters: ["pointer", "i32", "pointer", "pointer"], result: "i32" },
  /** FILE *pcap_file(pcap_t *p); (the savefile's stream; NULL for a live capture) */
  pcap_file: { parameters: ["pointer"], result: "pointer" },
  /** pcap_dumper_t *pcap_dump_fopen(pcap_t *p, FILE *fp); */
  pcap_dump_fopen: { parameters: ["pointer", "pointer"], result: "pointer" },
  /** void pcap_dump_close(pcap_dumper_t *p); (also closes the FILE) */
  pcap_dump_close: { parameters: ["pointer"], result: "void" },
  /** int pcap_get_selectable_fd(pcap_t *p); */
  pcap_get_selectable_fd: { parameters: ["pointer"], result: "i32" },
  /** int pcap_stats(pcap_t *p, struct pcap_stat *ps); */
  pcap_stats: { parameters: ["pointer", "buffer"], result: "i32" },
  /** void pcap_close(pcap_t *p); */
  pcap_close: { parameters: ["pointer"], result: "void" },
  /** int pcap_findalldevs(pcap_if_t **alldevsp, char *errbuf); */
  pcap_findalldevs: { parameters: ["buffer", "buffer"], result: "i32" },
  /** void pcap_freealldevs(pcap_if_t *alldevs); */
  pcap_freealldevs: { parameters: ["pointer"], result: "void" },
  /** const char *pcap_lib_version(void); */
  pcap_lib_version: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The opened library and the name it was opened by (dlsym needs the same name). */
export interface LoadedPcap {
  lib: Deno.DynamicLibrary<typeof pcapSymbols>;
  name: string;
}

/** Library names tried in order when SB_LIBPCAP is not set. */
export const LIBPCAP_NAMES: readonly string[] = ["libpcap.so.0.8", "libpcap.so.1", "libpcap.so"];

let loaded: LoadedPcap | null = null;

/**
 * Opens libpcap once: SB_LIBPCAP (a file name or path) alone when set and the
 * process is not elevated (see trustedPathVariable), else the usual sonames;
 * the error lists every name tried and the packages that provide it.
 */
export function loadPcap(): LoadedPcap {
  if (loaded) return loaded;
  const { name } = openLibrary({
    what: "libpcap",
    names: LIBPCAP_NAMES,
    override: { variable: "SB_LIBPCAP", value: trustedPathVariable("SB_LIBPCAP") },
    install: `Debian/Ubuntu "apt-get install libpcap0.8", Fedora/RHEL "dnf install libpcap"`,
  }, { pcap_lib_version: pcapSymbols.pcap_lib_version });
  // Each function bound on first use (an offline run uses five of them).
  loaded = { lib: bindLazily(name, pcapSymbols), name };
  return loaded;
}
