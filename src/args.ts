/**
 * The command line's grammar: what `node:util`'s `parseArgs` does with
 * `strict: true, allowPositionals: true`, with its words in the errors —
 * long options (`--name value`, `--name=value`), short ones (`-i eth0`,
 * `-ieth0`, `-h`, groups of boolean shorts such as `-hh`), repeatable
 * options, positionals and `--`. Written out because loading `node:util`
 * took 15-20 ms of every start (a third of an offline run's start-up);
 * tests/args_test.ts holds it to parseArgs on thousands of command lines.
 */

/** One option: a string value or a flag, its one-letter form, repeatable or not. */
export interface ArgOption {
  type: "string" | "boolean";
  short?: string;
  multiple?: boolean;
}

/** What the command line says: option values by long name, then the positionals. */
export interface ParsedArgs {
  values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  positionals: string[];
}

/** Parses `args` against `options`; throws an Error worded as parseArgs words it. */
export function parseArgs(args: string[], options: Record<string, ArgOption>): ParsedArgs {
  const values: ParsedArgs["values"] = Object.create(null);
  const positionals: string[] = [];
  const byShort = new Map<string, string>();
  for (const [long, o] of Object.entries(options)) if (o.short) byShort.set(o.short, long);
  const name = (long: string) => {
    const s = options[long].short;
    return s ? `-${s}, --${long}` : `--${long}`;
  };
  const store = (long: string, value: string | undefined) => {
    const o = options[long];
    if (o.type === "string" && value === undefined) {
      throw new Error(`Option '${name(long)} <value>' argument missing`);
    }
    if (o.type === "boolean" && value !== undefined) {
      throw new Error(`Option '${name(long)}' does not take an argument`);
    }
    const v = value ?? true;
    if (o.multiple) ((values[long] ??= []) as (string | boolean)[]).push(v);
    else values[long] = v;
  };
  const unknown = (token: string): never => {
    throw new Error(
      `Unknown option '${token}'. To specify a positional argument starting with a '-', place it at the end of the command after '--', as in '-- "${token}"`,
    );
  };
  // A separate value that looks like an option is refused, as parseArgs does.
  const takeValue = (long: string, token: string, rest: string[]): string | undefined => {
    if (options[long].type !== "string" || rest.length === 0) return undefined;
    const v = rest.shift()!;
    if (v.length > 1 && v.startsWith("-")) {
      throw new Error(
        `Option '${token}' argument is ambiguous.\nDid you forget to specify the option argument for '${token}'?\nTo specify an option argument starting with a dash use '--${long}=-XYZ'${
          options[long].short ? ` or '-${options[long].short}-XYZ'` : ""
        }.`,
      );
    }
    return v;
  };
  const rest = [...args];
  while (rest.length > 0) {
    const arg = rest.shift()!;
    if (arg === "--") {
      positionals.push(...rest);
      break;
    }
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=", 3); // --=x is an option named "=x"
      const long = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      if (!Object.hasOwn(options, long)) unknown(eq < 0 ? arg : arg.slice(0, eq));
      store(long, eq < 0 ? takeValue(long, arg, rest) : arg.slice(eq + 1));
    } else if (arg.startsWith("-") && arg.length > 1) {
      const long = byShort.get(arg[1]);
      if (long === undefined) unknown(`-${arg[1]}`);
      if (options[long!].type === "string") {
        // -i eth0, or -ieth0
        store(long!, arg.length > 2 ? arg.slice(2) : takeValue(long!, arg, rest));
        continue;
      }
      // -h, or a group of flags -hh; a string option in it takes the rest (-hieth0)
      // or, last, the next argument (-hi eth0).
      for (let i = 1; i < arg.length; i++) {
        const l = byShort.get(arg[i]);
        if (l === undefined) unknown(`-${arg[i]}`);
        if (options[l!].type !== "string") store(l!, undefined);
        else {
          store(l!, i < arg.length - 1 ? arg.slice(i + 1) : takeValue(l!, `-${arg[i]}`, rest));
          break;
        }
      }
    } else positionals.push(arg);
  }
  return { values, positionals };
}
