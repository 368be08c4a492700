/**
 * The configuration file: TOML, one `key = value` per option, the keys being
 * the long option names of the option table (src/config.ts), so the file, the
 * flags, the SB_* variables and --help cannot drift apart.
 *
 * Why TOML: it is what operators of systemd services expect under /etc
 * (comments, no quoting of keys, no trailing-comma traps), and smol-toml (npm,
 * spec-compliant, no dependencies) parses it in a few kilobytes of code.
 *
 * Values are turned into the same text a flag would carry, so one validator
 * (parseConfig) checks flags, variables and the file alike.
 */
import { parse, TomlError } from "smol-toml";
// ConfigError is used only inside functions, so this import cycle is harmless.
import { ConfigError } from "./config_error.ts";

/** Where the daemon looks when neither --config nor SB_CONFIG names a file. */
export const DEFAULT_CONFIG_FILE = "/etc/scanblocker/scanblocker.toml";

/** What the file may say about one option (a subset of the option table's entry). */
export interface FileOptionSpec {
  long: string;
  multiple?: boolean;
  boolean?: boolean;
  /** Options the file may not set (help, version, config itself). */
  fileKey?: false;
}

/** The settings a file gave: option long name → text as a flag would carry it (lists for repeatable options). */
export type FileValues = Map<string, string | string[]>;

/**
 * Reads and checks `path`. A missing file is null when `explicit` is false
 * (the default path need not exist) and a ConfigError otherwise; unknown keys,
 * nested tables and values of the wrong type are ConfigErrors naming the file
 * and the key.
 */
export function readConfigFile(
  path: string,
  explicit: boolean,
  options: readonly FileOptionSpec[],
): FileValues | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound && !explicit) return null;
    const why = e instanceof Deno.errors.NotFound
      ? "no such file"
      : e instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : e instanceof Deno.errors.IsADirectory
      ? "is a directory"
      : e instanceof Error
      ? e.message
      : String(e);
    throw new ConfigError(`config file ${path}: ${why}`);
  }
  return parseConfigText(path, text, options);
}

/** Parses the text of a config file named `path` (for messages); see readConfigFile. */
export function parseConfigText(
  path: string,
  text: string,
  options: readonly FileOptionSpec[],
): FileValues {
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (e) {
    const m = e instanceof TomlError ? `line ${e.line}, column ${e.column}: ` : "";
    const first = (e instanceof Error ? e.message : String(e)).split("\n")[0];
    throw new ConfigError(
      `config file ${path}: ${m}${first.replace(/^Invalid TOML document: /, "")}`,
    );
  }
  const out: FileValues = new Map();
  for (const [key, value] of Object.entries(doc)) {
    const spec = options.find((o) => o.long === key && o.fileKey !== false);
    if (!spec) {
      const hint = options.find((o) => o.long === key)
        ? "it cannot be set in a file"
        : "not an option (keys are the long option names, e.g. ban-time)";
      throw new ConfigError(`config file ${path}: unknown key "${key}": ${hint}`);
    }
    out.set(key, fileValue(path, key, value, spec));
  }
  return out;
}

function fileValue(
  path: string,
  key: string,
  value: unknown,
  spec: FileOptionSpec,
): string | string[] {
  const wrong = (want: string) =>
    new ConfigError(
      `config file ${path}: key "${key}": expected ${want}, got ${describe(value)}`,
    );
  if (spec.boolean) {
    if (typeof value !== "boolean") throw wrong("true or false");
    return value ? "true" : "false";
  }
  if (spec.multiple) {
    if (typeof value === "string") return [value];
    if (Array.isArray(value) && value.every((v) => typeof v === "string")) {
      return value as string[];
    }
    throw wrong("a string or an array of strings");
  }
  // A list such as hook = ["input", "forward"] reads as the flag's comma list.
  if (Array.isArray(value) && value.every((v) => typeof v === "string")) return value.join(",");
  if (typeof value === "string") return value;
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  if (typeof value === "boolean") return value ? "on" : "off";
  throw wrong("a string or a number");
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return "an array";
  if (v instanceof Date) return "a date";
  if (v === null) return "nothing";
  if (typeof v === "object") return "a table";
  return `${typeof v} ${JSON.stringify(v)}`;
}
