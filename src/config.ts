/**
 * Command line and environment → one validated Config. Every option also
 * reads an SB_* variable; a flag wins over the variable. Any bad value is a
 * ConfigError whose message names the option, the value and the accepted form
 * (main prints it and exits 2).
 */
import { type ArgOption, parseArgs } from "./args.ts";
import { type Address, type Cidr, parseAddress, parseCidr, parseTarget } from "./address.ts";
import { DEFAULT_BUFFER_BYTES, DEFAULT_SNAPLEN } from "./capture/capture.ts";
import type { FirewallKind } from "./types.ts";
import { ConfigError } from "./config_error.ts";
import { DEFAULT_CONFIG_FILE, type FileValues, readConfigFile } from "./configfile.ts";

/**
 * Where /metrics and /healthz listen unless told: loopback, so the daemon
 * adds no port every scanner sees (`:8080` opens it to every address).
 */
export const DEFAULT_METRICS_ADDR = "127.0.0.1:8080";

export { ConfigError };

/** A bad value of one option; parseConfig says where it came from (flag, variable or file). */
class BadValue extends ConfigError {
  constructor(readonly option: string, readonly value: string, readonly why: string) {
    super(`invalid --${option} "${value}": ${why}`);
  }
}

/** What the program was asked to do. */
export type Command =
  | "run"
  | "bans"
  | "unban"
  | "flush"
  | "status"
  | "config"
  | "help"
  | "version";

/** Where the value of an option came from, for `scanblocker config`. */
export interface Setting {
  /** Long option name, also the config file's key. */
  key: string;
  /** The text in force (a list for repeatable options); null = the default, described in `def`. */
  value: string | string[] | null;
  /** "--key", the SB_* variable, the config file's path, or "default". */
  source: string;
}

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
  /** --firewall or SB_FIREWALL was given (subcommands otherwise look where the bans are). */
  firewallGiven: boolean;
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
  /** The config file read; null when there was none. */
  configFile: string | null;
  /** Every option's value and where it came from (in option-table order). */
  settings: Setting[];
  /** `bans`, `status`: print one JSON document. */
  json: boolean;
  /** The daemon's control socket (status, bans). */
  controlSocket: string;
  /** File of SB_* variables read at start and on SIGHUP; null = none. */
  envFile: string | null;
  /** The CrowdSec LAPI to share bans through; null = no fleet (the default). */
  fleet: FleetConfig | null;
}

/** Where `scanblocker status` and `bans` find the running daemon. */
export const DEFAULT_CONTROL_SOCKET = "/run/scanblocker/control.sock";

/** How this host joins a CrowdSec Local API (secrets read from their files). */
export interface FleetConfig {
  /** Base URL, http or https, without a trailing slash. */
  url: string;
  /** PEM of the CA for https; null = the system's roots. */
  caPem: string | null;
  /** PEM of a client certificate and its key (mutual TLS); null = none. */
  clientCertPem: string | null;
  clientKeyPem: string | null;
  /** Watcher machine name. */
  machine: string;
  /** Watcher password (push); null = this host does not push. */
  password: string | null;
  /** Bouncer API key (pull); null = this host does not pull. */
  apiKey: string | null;
  /** Pull interval, ms. */
  pollMs: number;
  /** Origins whose decisions are applied; null = all. */
  origins: string[] | null;
}

/** Default pull interval, seconds (see the README's Fleet section for why). */
export const DEFAULT_LAPI_POLL_SECONDS = 1;

/** One option: flag names, env variable, default, help text. */
export interface OptionSpec {
  long: string;
  short?: string;
  env?: string;
  arg?: string;
  multiple?: boolean;
  boolean?: boolean;
  def: string;
  help: string;
  /** false: the config file may not set it (help, version, the file itself, --json). */
  fileKey?: false;
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
    help: "analyse a capture file (pcap or pcapng; - = standard input) and exit",
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
    arg: "iptables|iptables-rules|ipset|nftables|none",
    def: "iptables live, none with -r",
    help:
      "where bans go; iptables keeps them in ipset sets when ipset is usable, else one rule per ban (always: iptables-rules)",
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
    def: DEFAULT_METRICS_ADDR,
    help:
      "Prometheus /metrics and /healthz listen address (unauthenticated; `:8080` = every address); `off` disables",
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
    help: "never ban the gateways, resolvers, DHCP and NTP servers and cloud metadata address",
  },
  {
    long: "realtime",
    env: "SB_REALTIME",
    arg: "PRIORITY",
    def: "10",
    help: "SCHED_FIFO priority (1-99) of the capture thread, for bans within a burst; 0 = normal",
  },
  {
    long: "lapi-url",
    env: "SB_LAPI_URL",
    arg: "URL",
    def: "off",
    help: "CrowdSec Local API to share bans through (http:// or https://); off = no fleet",
  },
  {
    long: "lapi-machine",
    env: "SB_LAPI_MACHINE",
    arg: "NAME",
    def: "the host name",
    help: "watcher machine name (cscli machines add NAME)",
  },
  {
    long: "lapi-password-file",
    env: "SB_LAPI_PASSWORD_FILE",
    arg: "FILE",
    def: "-",
    help: "file holding the machine's password; without it this host does not push its bans",
  },
  {
    long: "lapi-key-file",
    env: "SB_LAPI_KEY_FILE",
    arg: "FILE",
    def: "-",
    help: "file holding this host's bouncer API key (cscli bouncers add); without it no pull",
  },
  {
    long: "lapi-poll",
    env: "SB_LAPI_POLL",
    arg: "SECONDS",
    def: String(DEFAULT_LAPI_POLL_SECONDS),
    help:
      "how often the fleet's decisions are pulled (0.05 to 3600; a quarter of it while bans are coming in)",
  },
  {
    long: "lapi-origins",
    env: "SB_LAPI_ORIGINS",
    arg: "LIST",
    def: "all",
    help: "origins whose decisions are applied, e.g. scanblocker,cscli (comma list)",
  },
  {
    long: "lapi-ca",
    env: "SB_LAPI_CA",
    arg: "FILE",
    def: "-",
    help: "PEM CA certificate(s) the LAPI's https certificate is checked against",
  },
  {
    long: "lapi-client-cert",
    env: "SB_LAPI_CLIENT_CERT",
    arg: "FILE",
    def: "-",
    help: "PEM client certificate for mutual TLS (with --lapi-client-key)",
  },
  {
    long: "lapi-client-key",
    env: "SB_LAPI_CLIENT_KEY",
    arg: "FILE",
    def: "-",
    help: "PEM private key of --lapi-client-cert",
  },
  {
    long: "config",
    env: "SB_CONFIG",
    arg: "FILE",
    def: DEFAULT_CONFIG_FILE,
    help: "TOML file with the same keys as these options; options and SB_* variables win",
    fileKey: false,
  },
  {
    long: "control-socket",
    env: "SB_CONTROL_SOCKET",
    arg: "PATH",
    def: DEFAULT_CONTROL_SOCKET,
    help: "unix socket where the daemon answers `status` (change it only for tests)",
  },
  {
    long: "env-file",
    env: "SB_ENV_FILE",
    arg: "FILE",
    def: "-",
    help:
      "SB_* variables (KEY=VALUE lines) read at start and again on SIGHUP; they replace the environment's",
    fileKey: false,
  },
  {
    long: "json",
    boolean: true,
    def: "",
    help: "bans, status: print one JSON document",
    fileKey: false,
  },
  { long: "help", short: "h", boolean: true, def: "", help: "show this help", fileKey: false },
  { long: "version", boolean: true, def: "", help: "show the version", fileKey: false },
];

/** The ways to run the program, as --help and the man page list them. */
export const COMMANDS: readonly { usage: string; help: string }[] = [
  {
    usage: "scanblocker [options]",
    help: "watch an interface, detect port scans, ban scanners",
  },
  { usage: "scanblocker -r FILE [options]", help: "analyse a capture file (- = standard input)" },
  { usage: "scanblocker bans [--json]", help: "list active bans (where they are, or --firewall)" },
  { usage: "scanblocker unban ADDRESS", help: "remove one ban; a daemon sees it within 5 s" },
  { usage: "scanblocker flush", help: "remove everything scanblocker installed" },
  { usage: "scanblocker status [--json]", help: "ask the running daemon what it sees" },
  { usage: "scanblocker config", help: "print the effective settings and where each came from" },
];

/** The usage text printed by --help. */
export function usage(): string {
  const lines = COMMANDS.map((c, i) =>
    `${i === 0 ? "Usage: " : "       "}${c.usage.padEnd(33)}${c.help}`
  );
  lines.push(
    "",
    "Options (each also read from its environment variable and the config file;",
    "a flag wins over the variable, the variable over the file):",
  );
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
    const why = /^\s*-\d/.test(text) ? "negative numbers are not allowed; " : "";
    throw new BadValue(name, text, `${why}expected ${form}`);
  }
  const n = Number(text.trim());
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new BadValue(name, text, `out of range; expected ${form}`);
  }
  return n;
}

function numberOption(name: string, text: string, form: string): number {
  const t = text.trim();
  const n = /^\d+(\.\d+)?$/.test(t) ? Number(t) : NaN;
  if (!(n > 0) || !Number.isFinite(n) || n > MAX_SECONDS) {
    throw new BadValue(name, text, `expected ${form}`);
  }
  return n;
}

/** Longest window accepted: ten years, far beyond any use (and finite). */
const MAX_SECONDS = 10 * 365 * 86400;

function oneOf<T extends string>(name: string, text: string, allowed: readonly T[]): T {
  const t = text.trim() as T;
  if (!allowed.includes(t)) {
    throw new BadValue(name, text, `expected one of ${allowed.join(", ")}`);
  }
  return t;
}

/**
 * Reads an /etc/default-style file of variables: `KEY=VALUE` lines, `#` or
 * `;` comments, an optional `export `, values optionally in single or double
 * quotes (as systemd's EnvironmentFile= reads them). Throws ConfigError
 * naming the file and line for anything else.
 */
export function readEnvFile(path: string): Record<string, string> {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    throw new ConfigError(
      `cannot read the environment file "${path}" (--env-file): ${readError(e)}`,
    );
  }
  const out: Record<string, string> = {};
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!m) {
      throw new ConfigError(
        `${path}:${i + 1}: expected KEY=VALUE, got ${JSON.stringify(line.slice(0, 60))}`,
      );
    }
    let v = m[2].trim();
    if (v.length >= 2 && (v[0] === '"' || v[0] === "'") && v.at(-1) === v[0]) v = v.slice(1, -1);
    out[m[1]] = v;
  }
  return out;
}

/**
 * The configuration in force: parseConfig over argv and the environment,
 * where an --env-file (or SB_ENV_FILE) replaces every SB_* variable of the
 * environment with the file's, so that a reload (SIGHUP) sees the file as
 * it is now rather than the values the service manager loaded at start.
 */
export function loadConfig(argv: string[], env: Record<string, string | undefined>): Config {
  const first = parseConfig(argv, env);
  if (first.envFile === null) return first;
  const file = readEnvFile(first.envFile);
  const merged: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(env)) {
    if (!k.startsWith("SB_") || k === "SB_ENV_FILE") merged[k] = v;
  }
  for (const [k, v] of Object.entries(file)) {
    if (k.startsWith("SB_") && k !== "SB_ENV_FILE") merged[k] = v;
  }
  return parseConfig(argv, merged, first.envFile);
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
export function parseConfig(
  argv: string[],
  env: Record<string, string | undefined>,
  envFile?: string,
): Config {
  const options: Record<string, ArgOption> = {};
  for (const o of OPTIONS) {
    options[o.long] = {
      type: o.boolean ? "boolean" : "string",
      ...(o.short ? { short: o.short } : {}),
      ...(o.multiple ? { multiple: true } : {}),
    };
  }
  // `deno task start -- -i eth0` passes the `--` on; it means nothing here.
  // `--ports -1`: parseArgs takes "-1" for an option; join it so the value is
  // checked, and refused with a reason, like any other.
  const args: string[] = [];
  for (const a of argv[0] === "--" ? argv.slice(1) : argv) {
    const prev = args.at(-1) ?? "";
    const spec = OPTIONS.find((o) => `--${o.long}` === prev && !o.boolean);
    if (spec && /^-\d/.test(a)) args[args.length - 1] = `${prev}=${a}`;
    else args.push(a);
  }
  let parsed;
  try {
    parsed = parseArgs(args, options);
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    throw new ConfigError(`${msg.split("\n")[0]} (see --help)`);
  }
  const v = parsed.values as Record<string, string | string[] | boolean | undefined>;
  const pos = parsed.positionals;

  let command: Command = "run";
  let unbanAddress: string | null = null;
  if (v.help) command = "help";
  else if (v.version) command = "version";
  else if (pos.length > 0) {
    const sub = pos[0];
    if (sub === "bans" || sub === "flush" || sub === "status" || sub === "config") {
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
        `unknown command "${sub}": expected bans, unban ADDRESS, flush, status, config, or options (see --help)`,
      );
    }
  }

  // The file: --config, else SB_CONFIG, else the default path (which need not exist).
  const explicitFile = typeof v.config === "string"
    ? v.config
    : env.SB_CONFIG !== undefined && env.SB_CONFIG.trim() !== ""
    ? env.SB_CONFIG.trim()
    : undefined;
  const configPath = explicitFile ?? DEFAULT_CONFIG_FILE;
  const file: FileValues | null = command === "help" || command === "version"
    ? null
    : readConfigFile(configPath, explicitFile !== undefined, OPTIONS);
  const layers = { flags: v, env, file, filePath: configPath };
  try {
    const cfg = validate(command, unbanAddress, layers);
    return { ...cfg, envFile: envFile ?? cfg.envFile };
  } catch (e) {
    if (!(e instanceof BadValue)) throw e;
    const source = sourceOf(e.option, layers);
    if (file && source === configPath) {
      throw new ConfigError(
        `config file ${configPath}: key "${e.option}": invalid value "${e.value}": ${e.why}`,
      );
    }
    // Error lines name the variable when the value came from one.
    if (source.startsWith("SB_")) {
      const where = envFile && source !== "SB_ENV_FILE" ? `${source} (in ${envFile})` : source;
      const shown = e.value.length > 60 ? `${e.value.slice(0, 60)}…` : e.value;
      throw new ConfigError(`invalid ${where} ${JSON.stringify(shown)}: ${e.why}`);
    }
    throw e;
  }
}

/** The three places a value can come from, strongest first, and the file's path. */
interface Layers {
  flags: Record<string, string | string[] | boolean | undefined>;
  env: Record<string, string | undefined>;
  file: FileValues | null;
  filePath: string;
}

function specOf(long: string): OptionSpec {
  return OPTIONS.find((o) => o.long === long)!;
}

/** Where `long`'s value comes from: "--long", its SB_* variable, the file's path, or "default". */
function sourceOf(long: string, l: Layers): string {
  const spec = specOf(long);
  const f = l.flags[long];
  if (f !== undefined && f !== false && !(Array.isArray(f) && f.length === 0)) return `--${long}`;
  const e = spec.env ? l.env[spec.env] : undefined;
  if (e !== undefined && e.trim() !== "") return spec.env!;
  if (l.file?.has(long)) return l.filePath;
  return "default";
}

/** The text of `long` from the strongest layer that has it (lists joined with commas). */
function rawValue(long: string, l: Layers): string | string[] | undefined {
  const source = sourceOf(long, l);
  if (source === `--${long}`) {
    const f = l.flags[long];
    return typeof f === "boolean" ? String(f) : f as string | string[];
  }
  if (source === "default") return undefined;
  if (source === l.filePath) return l.file!.get(long);
  return l.env[specOf(long).env!];
}

/** Every option's value and source, in option-table order (help, version, json left out). */
function settingsOf(l: Layers): Setting[] {
  return OPTIONS.filter((o) => !["help", "version", "json"].includes(o.long)).map((o) => {
    const source = sourceOf(o.long, l);
    return { key: o.long, value: rawValue(o.long, l) ?? null, source };
  });
}

/** The --env-file in force, or null; an empty one is an error. */
function envFileOf(text: string | undefined): string | null {
  if (text === undefined || text === "-") return null;
  if (text.trim() === "") throw new BadValue("env-file", "", "expected a file");
  return text;
}

/**
 * Checks every value (the strongest layer's) and builds the Config. Long on
 * purpose: one straight run of per-option checks in option-table order, each a
 * few lines, reads better than the same checks spread over helpers.
 */
function validate(command: Command, unbanAddress: string | null, l: Layers): Config {
  const v = l.flags, env = l.env;
  // The value of a single-valued option; lists come comma-separated from a variable.
  const get = (long: string): string | undefined => {
    const r = rawValue(long, l);
    return Array.isArray(r) ? r.join(",") : r;
  };
  const getList = (long: string): string[] | undefined => {
    const r = rawValue(long, l);
    if (r === undefined) return undefined;
    const f = v[long];
    const empty = Array.isArray(f) ? f.find((x) => x.trim() === "") : undefined;
    if (empty !== undefined) {
      throw new BadValue(long, empty, "expected a value (an empty one means nothing)");
    }
    return (Array.isArray(r) ? r : [r]).flatMap((x) => x.split(",")).map((x) => x.trim())
      .filter(Boolean);
  };
  // The value in force: the flag, else the variable, else the file, else the default --help shows.
  const value = (long: string): string => get(long) ?? specOf(long).def;

  const read = get("read") ?? null;
  const device = get("interface") ?? null;
  if (read !== null && v.interface !== undefined) {
    throw new ConfigError(`--read and --interface exclude each other: give one`);
  }
  if (read !== null && read !== "-") {
    try {
      const st = Deno.statSync(read);
      if (!st.isFile) throw new BadValue("read", read, "not a regular file");
    } catch (e) {
      if (e instanceof ConfigError) throw e;
      const why = e instanceof Deno.errors.NotFound
        ? "no such file"
        : e instanceof Deno.errors.PermissionDenied
        ? "permission denied"
        : e instanceof Error
        ? e.message
        : String(e);
      throw new BadValue("read", read, `${why}; expected a readable capture file`);
    }
  }
  if (device !== null && !/^[A-Za-z0-9_.:@-]{1,15}$/.test(device)) {
    throw new BadValue(
      "interface",
      device,
      `expected an interface name (1-15 characters) or "any"`,
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
    : oneOf(
      "firewall",
      fwText,
      ["iptables", "iptables-rules", "ipset", "nftables", "none"] as const,
    );
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
      throw new BadValue(
        "allow",
        t,
        "expected an IPv4 or IPv6 address or CIDR such as 10.0.0.0/8 or fd00::/8",
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
      if (!a) throw new BadValue("local", t, "expected an IPv4 or IPv6 address");
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
    throw new BadValue(
      "metrics-addr",
      metricsAddr,
      "expected HOST:PORT, :PORT, [IPv6]:PORT or off",
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
  const countText = countOpenPorts ? undefined : get("count-open-ports");
  if (countText !== undefined) {
    const t = countText.trim().toLowerCase();
    if (["1", "true", "yes", "on"].includes(t)) countOpenPorts = true;
    else if (!["0", "false", "no", "off"].includes(t)) {
      if (env.SB_COUNT_OPEN_PORTS) {
        throw new ConfigError(
          `invalid SB_COUNT_OPEN_PORTS "${env.SB_COUNT_OPEN_PORTS}": expected true or false`,
        );
      }
      throw new BadValue("count-open-ports", countText, "expected true or false");
    }
  }
  const hookText = value("hook").replace(/\s+/g, "");
  const hookSet = new Set(hookText.split(","));
  if (![...hookSet].every((h) => h === "input" || h === "forward") || !hookSet.has("input")) {
    throw new BadValue("hook", hookText, "expected input or input,forward");
  }
  const hooks = [...hookSet] as ("input" | "forward")[];
  const lockoutGuard =
    oneOf("lockout-guard", value("lockout-guard"), ["on", "off"] as const) === "on";
  const realtime = intOption("realtime", value("realtime"), 0, 99, "an integer from 0 (off) to 99");
  const fleet = fleetConfig(get, value, (long) => v[long] !== undefined);

  return {
    command,
    unbanAddress,
    device,
    read,
    ports,
    windowSeconds,
    firewall,
    firewallGiven: fwText !== undefined,
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
    configFile: l.file ? l.filePath : null,
    settings: settingsOf(l),
    json: v.json === true,
    controlSocket: controlSocketPath(value("control-socket")),
    envFile: envFileOf(get("env-file")),
    fleet,
  };
}

/**
 * The --lapi-* options: null when --lapi-url is off (then no other --lapi-*
 * flag may be given; SB_LAPI_* variables are ignored). Secrets come from files only, never from the
 * command line or a variable's value; each file must be readable and not
 * empty.
 */
function fleetConfig(
  get: (long: string) => string | undefined,
  value: (long: string) => string,
  flagGiven: (long: string) => boolean,
): FleetConfig | null {
  const urlText = value("lapi-url").trim();
  const others = [
    "lapi-machine",
    "lapi-password-file",
    "lapi-key-file",
    "lapi-poll",
    "lapi-origins",
    "lapi-ca",
    "lapi-client-cert",
    "lapi-client-key",
  ];
  if (urlText === "off") {
    // A flag without --lapi-url is a mistake; variables may sit in an env file
    // unused, but a bad one is still an error (a typo must not wait for the day
    // the fleet is switched on).
    const given = others.find(flagGiven);
    if (given) {
      throw new ConfigError(`--${given} needs --lapi-url (the CrowdSec Local API to join)`);
    }
    for (const long of others) {
      const text = get(long);
      if (text === undefined) continue;
      if (long.endsWith("-file") || long === "lapi-ca" || long.startsWith("lapi-client-")) {
        let isFile = false;
        try {
          isFile = Deno.statSync(text).isFile;
        } catch { /* reported below */ }
        if (!isFile) throw new BadValue(long, text, "no such file (it applies with --lapi-url)");
      } else if (long === "lapi-machine") machineName(text);
      else if (long === "lapi-poll") pollSeconds(text);
      else if (long === "lapi-origins") originList(text);
    }
    return null;
  }
  let url: URL;
  try {
    url = new URL(urlText);
  } catch {
    url = new URL("invalid:");
  }
  if ((url.protocol !== "http:" && url.protocol !== "https:") || url.username || url.search) {
    throw new ConfigError(
      `invalid --lapi-url "${urlText}": expected http://HOST:PORT or https://HOST:PORT (no credentials in the URL)`,
    );
  }
  const file = (long: string): string | null => {
    const path = get(long);
    if (path === undefined) return null;
    let text: string;
    try {
      text = Deno.readTextFileSync(path);
    } catch (e) {
      throw new ConfigError(`invalid --${long} "${path}": ${readError(e)}`);
    }
    if (text.trim() === "") throw new ConfigError(`invalid --${long} "${path}": the file is empty`);
    return text;
  };
  const password = file("lapi-password-file")?.trim() ?? null;
  const apiKey = file("lapi-key-file")?.trim() ?? null;
  if (password === null && apiKey === null) {
    throw new ConfigError(
      "--lapi-url needs --lapi-password-file (to push this host's bans) and/or --lapi-key-file (to pull the fleet's decisions)",
    );
  }
  const clientCertPem = file("lapi-client-cert");
  const clientKeyPem = file("lapi-client-key");
  if ((clientCertPem === null) !== (clientKeyPem === null)) {
    throw new ConfigError("--lapi-client-cert and --lapi-client-key go together: give both");
  }
  const caPem = file("lapi-ca");
  // Deno takes a CA file without a certificate and trusts nothing then.
  if (caPem !== null && !caPem.includes("-----BEGIN CERTIFICATE-----")) {
    throw new ConfigError(
      `invalid --lapi-ca: no PEM certificate ("-----BEGIN CERTIFICATE-----") in it`,
    );
  }
  // Deno reads the PEM only when the client is built, after the start-up:
  // a file that is not PEM would end the daemon there (exit 1, restarted
  // in a loop), so a client is built once here and the option named.
  tlsRefusal("lapi-ca", caPem === null ? null : { caCerts: [caPem] });
  tlsRefusal(
    "lapi-client-cert",
    clientCertPem === null ? null : { cert: clientCertPem, key: clientKeyPem! },
    "and --lapi-client-key",
  );
  const poll = pollSeconds(value("lapi-poll"));
  const machine = machineName(get("lapi-machine") ?? hostName());
  const origins = originList(value("lapi-origins"));
  return {
    url: `${url.protocol}//${url.host}${url.pathname.replace(/\/+$/, "")}`,
    caPem,
    clientCertPem,
    clientKeyPem,
    machine,
    password,
    apiKey,
    pollMs: poll * 1000,
    origins,
  };
}

/** Throws a ConfigError naming `--long` when Deno cannot build a TLS client from these PEM texts. */
function tlsRefusal(
  long: string,
  tls: (Deno.CreateHttpClientOptions & Partial<Deno.TlsCertifiedKeyPem>) | null,
  also = "",
): void {
  if (tls === null) return;
  try {
    Deno.createHttpClient(tls).close();
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new ConfigError(`invalid --${long}${also ? ` ${also}` : ""}: ${why} (PEM expected)`);
  }
}

/** --lapi-poll: seconds from 0.05 to 3600. */
function pollSeconds(text: string): number {
  const form = "a number of seconds from 0.05 to 3600";
  const n = numberOption("lapi-poll", text, form);
  if (n < 0.05 || n > 3600) throw new BadValue("lapi-poll", text, `expected ${form}`);
  return n;
}

/** --lapi-machine: a name cscli accepts (a letter or digit first). */
function machineName(text: string): string {
  const t = text.trim();
  if (!/^[A-Za-z0-9][A-Za-z0-9._@-]{0,199}$/.test(t)) {
    throw new BadValue(
      "lapi-machine",
      text,
      `expected a letter or digit, then letters, digits, ".", "_", "-" or "@"`,
    );
  }
  return t;
}

/** --lapi-origins: all, or a comma list of origin names; null = all. */
function originList(text: string): string[] | null {
  const t = text.trim();
  if (t === "all") return null;
  const list = t.split(",").map((o) => o.trim()).filter(Boolean);
  if (list.length === 0 || !list.every((o) => /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/.test(o))) {
    throw new BadValue("lapi-origins", text, "expected all or a comma list of origins");
  }
  return list;
}

/** Why a file could not be read, in a few words. */
function readError(e: unknown): string {
  return e instanceof Deno.errors.NotFound
    ? "no such file"
    : e instanceof Deno.errors.PermissionDenied
    ? "permission denied"
    : e instanceof Error
    ? e.message
    : String(e);
}

/** This host's name, for the default machine name. */
function hostName(): string {
  try {
    return Deno.hostname();
  } catch {
    return "scanblocker";
  }
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

/** A value written as TOML: numbers bare, lists as arrays, the rest quoted. */
function tomlValue(spec: OptionSpec, v: string | string[]): string {
  if (Array.isArray(v)) return `[${v.map((x) => JSON.stringify(x)).join(", ")}]`;
  if (spec.boolean) {
    return ["1", "true", "yes", "on"].includes(v.trim().toLowerCase()) ? "true" : "false";
  }
  return /^\d+(\.\d+)?$/.test(v.trim()) ? v.trim() : JSON.stringify(v);
}

/**
 * `scanblocker config`: the effective settings as a TOML file one could
 * install, each line ending in a comment saying where the value came from;
 * defaults that depend on the run (interface, firewall, local) are comments.
 */
export function formatSettings(cfg: Config): string {
  const src = cfg.settings.find((s) => s.key === "config");
  const lines = [
    `# scanblocker effective settings; precedence: option > SB_* variable > config file > default`,
    `# config file: ${cfg.configFile ?? `none (${src?.value ?? DEFAULT_CONFIG_FILE} not found)`}${
      cfg.configFile && src ? ` (from ${src.source})` : ""
    }`,
  ];
  const rows: [string, string][] = [];
  for (const s of cfg.settings) {
    const spec = OPTIONS.find((o) => o.long === s.key)!;
    if (spec.fileKey === false) continue;
    if (s.value !== null) rows.push([`${s.key} = ${tomlValue(spec, s.value)}`, s.source]);
    else if (spec.boolean) rows.push([`${s.key} = false`, "default"]);
    else if (spec.def && spec.def !== "-" && !/\s/.test(spec.def)) {
      rows.push([`${s.key} = ${tomlValue(spec, spec.def)}`, "default"]);
    } else rows.push([`# ${s.key}: ${spec.def === "-" ? "not set" : spec.def}`, "default"]);
  }
  const width = Math.min(48, rows.reduce((w, [t]) => Math.max(w, t.length), 0));
  for (const [text, source] of rows) lines.push(`${text.padEnd(width)}  # ${source}`);
  return lines.join("\n") + "\n";
}

/** A unix socket path: absolute, one line, at most 107 bytes (sun_path holds 108 with its NUL). */
function controlSocketPath(text: string): string {
  const t = text.trim();
  if (!t.startsWith("/") || /[\0\n]/.test(t) || new TextEncoder().encode(t).length > 107) {
    throw new BadValue("control-socket", text, "expected an absolute path of at most 107 bytes");
  }
  return t;
}
