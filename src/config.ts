/**
 * Command line and environment → one validated Config. Every option also
 * reads an SB_* variable; a flag wins over the variable. Any bad value is a
 * ConfigError whose message names the option, the value and the accepted form
 * (main prints it and exits 2).
 */
import { parseArgs } from "node:util";
import { type Address, type Cidr, parseAddress, parseCidr, parseTarget } from "./address.ts";
import { DEFAULT_BUFFER_BYTES, DEFAULT_SNAPLEN } from "./capture/capture.ts";
import type { FirewallKind } from "./types.ts";

/** A configuration or usage error: exit code 2, one line. */
export class ConfigError extends Error {}

/** What the program was asked to do. */
export type Command = "run" | "bans" | "unban" | "flush" | "help" | "version";

/** The validated configuration. */
export interface Config {
  command: Command;
  /** Address given to `unban`. */
  unbanAddress: string | null;
  /** Live capture device; null = choose the default route's interface. */
  device: string | null;
  /** Capture file for offline analysis; null = live. */
  read: string | null;
  /** A scan is MORE than this many distinct destination ports… */
  ports: number;
  /** …from one source within this many seconds. */
  windowSeconds: number;
  firewall: FirewallKind;
  /** Ban duration in seconds; 0 = until removed. */
  banTime: number;
  /** Never-ban blocks, as given and parsed. */
  allow: Cidr[];
  /** Addresses of the protected host; null = all addresses of all interfaces (live) / every destination (-r). */
  local: Address[] | null;
  maxSources: number;
  maxBans: number;
  /** "New connection" lines per second at most; 0 = no limit. */
  logRate: number;
  /** Metrics listen address text ("off" disables). */
  metricsAddr: string;
  logFormat: "text" | "json";
  /** Kernel capture buffer, bytes. */
  bufferSize: number;
  /** Bytes captured per packet. */
  snaplen: number;
  /** Main rule: windowed distinct ports (the original's) or psd-style scoring. */
  detector: "window" | "psd";
  /** Slow-scan rule: MORE than this many distinct ports… (0 = off) */
  slowPorts: number;
  /** …within this many seconds. */
  slowWindowSeconds: number;
  /** IPv6 sources are also counted (and banned) per prefix of this length; 128 = per address only. */
  ipv6Prefix: number;
  /** Count probes to ports with a listening socket (the original rule). */
  countOpenPorts: boolean;
  /** Netfilter hooks the bans apply to. */
  hooks: ("input" | "forward")[];
  /** Allow-list the default gateways and resolvers automatically. */
  lockoutGuard: boolean;
  /** SCHED_FIFO priority of the capture thread; 0 = normal scheduling. */
  realtime: number;
}

/** One option: flag names, env variable, default, help text. */
interface OptionSpec {
  long: string;
  short?: string;
  env?: string;
  arg?: string;
  multiple?: boolean;
  boolean?: boolean;
  def: string;
  help: string;
}

/** Every option, in the order --help prints them (the README table mirrors this). */
export const OPTIONS: readonly OptionSpec[] = [
  {
    long: "interface",
    short: "i",
    env: "SB_DEVICE",
    arg: "NAME",
    def: "the default route's interface",
    help: "live capture device (`any` for all)",
  },
  {
    long: "read",
    short: "r",
    env: "SB_READ",
    arg: "FILE",
    def: "-",
    help: "analyse a capture file (pcap or pcapng) and exit",
  },
  {
    long: "ports",
    env: "SB_PORTS",
    arg: "N",
    def: "3",
    help: "a scan is MORE than N distinct destination ports …",
  },
  {
    long: "window",
    env: "SB_WINDOW",
    arg: "SECONDS",
    def: "60",
    help: "… from one source within this window",
  },
  {
    long: "firewall",
    env: "SB_FIREWALL",
    arg: "iptables|nftables|none",
    def: "iptables live, none with -r",
    help: "where bans go",
  },
  {
    long: "ban-time",
    env: "SB_BAN_TIME",
    arg: "SECONDS",
    def: "3600",
    help: "how long a ban lasts; 0 = until removed",
  },
  {
    long: "allow",
    env: "SB_ALLOW",
    arg: "CIDR",
    multiple: true,
    def: "-",
    help: "never ban these (repeatable; env: comma list)",
  },
  {
    long: "local",
    env: "SB_LOCAL",
    arg: "ADDR",
    multiple: true,
    def: "live: every address of every interface; -r: none (every destination counts)",
    help: "the addresses of the host being protected (repeatable; env: comma list)",
  },
  {
    long: "max-sources",
    env: "SB_MAX_SOURCES",
    arg: "N",
    def: "100000",
    help: "sources tracked at once; the least recently seen is forgotten first",
  },
  {
    long: "max-bans",
    env: "SB_MAX_BANS",
    arg: "N",
    def: "65536",
    help: "bans held at once",
  },
  {
    long: "log-rate",
    env: "SB_LOG_RATE",
    arg: "N",
    def: "100",
    help: '"New connection" lines per second at most (0 = no limit)',
  },
  {
    long: "metrics-addr",
    env: "SB_METRICS_ADDR",
    arg: "HOST:PORT",
    def: ":8080",
    help: "Prometheus /metrics and /healthz listen address; `off` disables",
  },
  {
    long: "log-format",
    env: "SB_LOG_FORMAT",
    arg: "text|json",
    def: "text",
    help: "stdout line format",
  },
  {
    long: "buffer-size",
    env: "SB_BUFFER_SIZE",
    arg: "BYTES",
    def: String(DEFAULT_BUFFER_BYTES),
    help: "kernel capture buffer (raise it if pcap drops packets)",
  },
  {
    long: "snaplen",
    env: "SB_SNAPLEN",
    arg: "N",
    def: String(DEFAULT_SNAPLEN),
    help: "bytes captured per packet (covers VLAN tags and IPv6 extension headers)",
  },
  {
    long: "detector",
    env: "SB_DETECTOR",
    arg: "window|psd",
    def: "window",
    help:
      "window: the --ports/--window rule; psd: weighted score (low ports 3, others 1) over 21 within 3 s",
  },
  {
    long: "slow-ports",
    env: "SB_SLOW_PORTS",
    arg: "N",
    def: "7",
    help: "slow scans: MORE than N distinct ports … (0 = off)",
  },
  {
    long: "slow-window",
    env: "SB_SLOW_WINDOW",
    arg: "SECONDS",
    def: "7200",
    help: "… from one source within this long window",
  },
  {
    long: "ipv6-prefix",
    env: "SB_IPV6_PREFIX",
    arg: "LENGTH",
    def: "64",
    help:
      "IPv6 sources are also counted and banned per prefix of this length (128 = per address only)",
  },
  {
    long: "count-open-ports",
    env: "SB_COUNT_OPEN_PORTS",
    boolean: true,
    def: "off",
    help: "count SYNs to ports this host listens on (the original rule)",
  },
  {
    long: "hook",
    env: "SB_HOOK",
    arg: "input|input,forward",
    def: "input",
    help: "where bans drop traffic; forward also guards routed/container traffic",
  },
  {
    long: "lockout-guard",
    env: "SB_LOCKOUT_GUARD",
    arg: "on|off",
    def: "on",
    help: "never ban the default gateways and the resolvers of /etc/resolv.conf",
  },
  {
    long: "realtime",
    env: "SB_REALTIME",
    arg: "PRIORITY",
    def: "10",
    help: "SCHED_FIFO priority (1-99) of the capture thread, for bans within a burst; 0 = normal",
  },
  { long: "help", short: "h", boolean: true, def: "", help: "show this help" },
  { long: "version", boolean: true, def: "", help: "show the version" },
];

/** The usage text printed by --help. */
export function usage(): string {
  const lines = [
    "Usage: scanblocker [options]            watch an interface, detect port scans, ban scanners",
    "       scanblocker -r FILE [options]    analyse a capture file",
    "       scanblocker bans                 list active bans",
    "       scanblocker unban ADDRESS        remove one ban",
    "       scanblocker flush                remove everything scanblocker installed",
    "",
    "Options (each also read from its environment variable; a flag wins):",
  ];
  for (const o of OPTIONS) {
    const flag = `${o.short ? `-${o.short}, ` : "    "}--${o.long}${o.arg ? ` ${o.arg}` : ""}`;
    const env = o.env ? ` [${o.env}]` : "";
    const def = o.def && o.def !== "-" ? ` (default: ${o.def})` : "";
    lines.push(`  ${flag.padEnd(38)} ${o.help}${env}${def}`);
  }
  return lines.join("\n");
}

function intOption(name: string, text: string, min: number, max: number, form: string): number {
  if (!/^\d+$/.test(text.trim())) {
    throw new ConfigError(`invalid --${name} "${text}": expected ${form}`);
  }
  const n = Number(text.trim());
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(`invalid --${name} "${text}": expected ${form}`);
  }
  return n;
}

function numberOption(name: string, text: string, form: string): number {
  const t = text.trim();
  const n = /^\d+(\.\d+)?$/.test(t) ? Number(t) : NaN;
  if (!(n > 0) || !Number.isFinite(n)) {
    throw new ConfigError(`invalid --${name} "${text}": expected ${form}`);
  }
  return n;
}

function oneOf<T extends string>(name: string, text: string, allowed: readonly T[]): T {
  const t = text.trim() as T;
  if (!allowed.includes(t)) {
    throw new ConfigError(`invalid --${name} "${text}": expected one of ${allowed.join(", ")}`);
  }
  return t;
}

/** Reads the environment without failing when env access is denied. */
export function readEnv(): Record<string, string | undefined> {
  try {
    return Deno.env.toObject();
  } catch {
    return {};
  }
}

/**
 * Parses argv and the environment into a Config. Throws ConfigError for any
 * unknown option or invalid value (flags and environment alike).
 */
export function parseConfig(argv: string[], env: Record<string, string | undefined>): Config {
  const options: Record<
    string,
    { type: "string" | "boolean"; short?: string; multiple?: boolean }
  > = {};
  for (const o of OPTIONS) {
    options[o.long] = {
      type: o.boolean ? "boolean" : "string",
      ...(o.short ? { short: o.short } : {}),
      ...(o.multiple ? { multiple: true } : {}),
    };
  }
  // `deno task start -- -i eth0` passes the `--` on; it means nothing here.
  const args = argv[0] === "--" ? argv.slice(1) : argv;
  let parsed;
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    throw new ConfigError(`${msg.split("\n")[0]} (see --help)`);
  }
  const v = parsed.values as Record<string, string | string[] | boolean | undefined>;
  const pos = parsed.positionals;

  // A flag wins over its variable; lists come from a comma-separated variable.
  const get = (long: string): string | undefined => {
    const f = v[long];
    if (typeof f === "string") return f;
    const spec = OPTIONS.find((o) => o.long === long);
    const e = spec?.env ? env[spec.env] : undefined;
    return e === undefined || e === "" ? undefined : e;
  };
  const getList = (long: string): string[] | undefined => {
    const f = v[long];
    if (Array.isArray(f)) {
      return f.flatMap((x) => x.split(",")).map((x) => x.trim()).filter(Boolean);
    }
    const spec = OPTIONS.find((o) => o.long === long);
    const e = spec?.env ? env[spec.env] : undefined;
    if (e === undefined || e.trim() === "") return undefined;
    return e.split(",").map((x) => x.trim()).filter(Boolean);
  };

  // The value in force: the flag, else the variable, else the default that --help shows.
  const value = (long: string): string => get(long) ?? OPTIONS.find((o) => o.long === long)!.def;

  let command: Command = "run";
  let unbanAddress: string | null = null;
  if (v.help) command = "help";
  else if (v.version) command = "version";
  else if (pos.length > 0) {
    const sub = pos[0];
    if (sub === "bans" || sub === "flush") {
      if (pos.length > 1) throw new ConfigError(`"${sub}" takes no argument, got "${pos[1]}"`);
      command = sub;
    } else if (sub === "unban") {
      if (pos.length !== 2) throw new ConfigError(`"unban" takes one ADDRESS (IPv4 or IPv6)`);
      const a = parseTarget(pos[1]);
      if (!a) {
        throw new ConfigError(
          `invalid address "${pos[1]}" for unban: expected IPv4 or IPv6, or a banned CIDR block`,
        );
      }
      command = "unban";
      unbanAddress = pos[1];
    } else {
      throw new ConfigError(
        `unknown command "${sub}": expected bans, unban ADDRESS, flush, or options (see --help)`,
      );
    }
  }

  const read = get("read") ?? null;
  const device = get("interface") ?? null;
  if (read !== null && v.interface !== undefined) {
    throw new ConfigError(`--read and --interface exclude each other: give one`);
  }
  if (read !== null) {
    try {
      const st = Deno.statSync(read);
      if (!st.isFile) throw new ConfigError(`invalid --read "${read}": not a regular file`);
    } catch (e) {
      if (e instanceof ConfigError) throw e;
      const why = e instanceof Deno.errors.NotFound
        ? "no such file"
        : e instanceof Deno.errors.PermissionDenied
        ? "permission denied"
        : e instanceof Error
        ? e.message
        : String(e);
      throw new ConfigError(`invalid --read "${read}": ${why}; expected a readable capture file`);
    }
  }
  if (device !== null && !/^[A-Za-z0-9_.:@-]{1,15}$/.test(device)) {
    throw new ConfigError(
      `invalid --interface "${device}": expected an interface name (1-15 characters) or "any"`,
    );
  }

  const ports = intOption("ports", value("ports"), 1, 65535, "an integer from 1 to 65535");
  const windowSeconds = numberOption(
    "window",
    value("window"),
    "a number of seconds greater than 0",
  );
  const fwText = get("firewall");
  const firewall: FirewallKind = fwText === undefined
    ? (read !== null ? "none" : "iptables")
    : oneOf("firewall", fwText, ["iptables", "nftables", "none"] as const);
  const banTime = intOption(
    "ban-time",
    value("ban-time"),
    0,
    10 * 365 * 86400,
    "a whole number of seconds (0 = until removed)",
  );
  const allow: Cidr[] = [];
  for (const t of getList("allow") ?? []) {
    const c = parseCidr(t);
    if (!c) {
      throw new ConfigError(
        `invalid --allow "${t}": expected an IPv4 or IPv6 address or CIDR such as 10.0.0.0/8 or fd00::/8`,
      );
    }
    allow.push(c);
  }
  const localList = getList("local");
  let local: Address[] | null = null;
  if (localList) {
    local = [];
    for (const t of localList) {
      const a = parseAddress(t);
      if (!a) throw new ConfigError(`invalid --local "${t}": expected an IPv4 or IPv6 address`);
      local.push(a);
    }
  }
  const maxSources = intOption(
    "max-sources",
    value("max-sources"),
    1,
    100_000_000,
    "an integer from 1 to 100000000",
  );
  const maxBans = intOption(
    "max-bans",
    value("max-bans"),
    1,
    10_000_000,
    "an integer from 1 to 10000000",
  );
  const logRate = intOption(
    "log-rate",
    value("log-rate"),
    0,
    1_000_000_000,
    "an integer ≥ 0 (0 = no limit)",
  );
  const metricsAddr = value("metrics-addr").trim();
  if (!validListenAddress(metricsAddr)) {
    throw new ConfigError(
      `invalid --metrics-addr "${metricsAddr}": expected HOST:PORT, :PORT, [IPv6]:PORT or off`,
    );
  }
  const logFormat = oneOf("log-format", value("log-format"), ["text", "json"] as const);
  const bufferSize = intOption(
    "buffer-size",
    value("buffer-size"),
    65536,
    2 ** 31 - 1,
    "a number of bytes from 65536 to 2147483647",
  );
  const snaplen = intOption(
    "snaplen",
    value("snaplen"),
    68,
    65535,
    "an integer from 68 to 65535",
  );
  const detector = oneOf("detector", value("detector"), ["window", "psd"] as const);
  const slowPorts = intOption(
    "slow-ports",
    value("slow-ports"),
    0,
    65535,
    "an integer from 0 (off) to 65535",
  );
  const slowWindowSeconds = numberOption(
    "slow-window",
    value("slow-window"),
    "a number of seconds greater than 0",
  );
  const ipv6Prefix = intOption(
    "ipv6-prefix",
    value("ipv6-prefix"),
    16,
    128,
    "a prefix length from 16 to 128 (128 = per address only)",
  );
  let countOpenPorts = v["count-open-ports"] === true;
  if (!countOpenPorts && env.SB_COUNT_OPEN_PORTS !== undefined && env.SB_COUNT_OPEN_PORTS !== "") {
    const t = env.SB_COUNT_OPEN_PORTS.trim().toLowerCase();
    if (["1", "true", "yes", "on"].includes(t)) countOpenPorts = true;
    else if (!["0", "false", "no", "off"].includes(t)) {
      throw new ConfigError(
        `invalid SB_COUNT_OPEN_PORTS "${env.SB_COUNT_OPEN_PORTS}": expected true or false`,
      );
    }
  }
  const hookText = value("hook").replace(/\s+/g, "");
  const hookSet = new Set(hookText.split(","));
  if (![...hookSet].every((h) => h === "input" || h === "forward") || !hookSet.has("input")) {
    throw new ConfigError(`invalid --hook "${hookText}": expected input or input,forward`);
  }
  const hooks = [...hookSet] as ("input" | "forward")[];
  const lockoutGuard =
    oneOf("lockout-guard", value("lockout-guard"), ["on", "off"] as const) === "on";
  const realtime = intOption("realtime", value("realtime"), 0, 99, "an integer from 0 (off) to 99");

  return {
    command,
    unbanAddress,
    device,
    read,
    ports,
    windowSeconds,
    firewall,
    banTime,
    allow,
    local,
    maxSources,
    maxBans,
    logRate,
    metricsAddr,
    logFormat,
    bufferSize,
    snaplen,
    detector,
    slowPorts,
    slowWindowSeconds,
    ipv6Prefix,
    countOpenPorts,
    hooks,
    lockoutGuard,
    realtime,
  };
}

/** Accepts `off`, `:PORT`, `HOST:PORT`, `[IPv6]:PORT` with PORT 0–65535. */
function validListenAddress(text: string): boolean {
  if (text === "off") return true;
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]*)):(\d{1,5})$/.exec(text);
  if (!m) return false;
  if (Number(m[3]) > 65535) return false;
  if (m[1] !== undefined && !parseAddress(m[1])) return false;
  return true;
}
