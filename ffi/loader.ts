/**
 * The one way every binding opens its shared library: an operator's
 * override (an environment variable, passed in by the caller, which leaves
 * it out when the process runs with privilege its caller does not hold) is
 * tried alone, so a wrong override is reported rather than silently
 * replaced; otherwise each candidate name in order. The error lists every
 * name tried with the loader's reason, and the packages that provide the
 * library.
 */

/** What to open and how to explain a failure. */
export interface LibrarySpec {
  /** Library name for messages, e.g. "libpcap". */
  what: string;
  /** Candidate file names (sonames), tried in order. */
  names: readonly string[];
  /** The override variable and its value (undefined: not set, or not to be trusted). */
  override?: { variable: string; value: string | undefined };
  /** How to install it, e.g. `Debian/Ubuntu "apt-get install libpcap0.8"`. */
  install: string;
}

/** An opened library and the name that opened it (dlsym-style lookups need the same name). */
export interface OpenedLibrary<S extends Deno.ForeignLibraryInterface> {
  lib: Deno.DynamicLibrary<S>;
  name: string;
}

/** Opens the library of `spec` with `symbols`; throws an Error naming every name tried. */
export function openLibrary<const S extends Deno.ForeignLibraryInterface>(
  spec: LibrarySpec,
  symbols: S,
  dlopen: (name: string, symbols: S) => Deno.DynamicLibrary<S> = Deno.dlopen,
): OpenedLibrary<S> {
  const override = spec.override?.value;
  const names = override ? [override] : spec.names;
  const tried: string[] = [];
  for (const name of names) {
    try {
      return { lib: dlopen(name, symbols), name };
    } catch (e) {
      tried.push(`${name} (${e instanceof Error ? e.message : String(e)})`);
    }
  }
  const hint = override
    ? `; ${spec.override!.variable} is set to "${override}": correct it, or unset it to try ${
      spec.names.join(", ")
    }`
    : "";
  throw new Error(
    `cannot load ${spec.what}; tried: ${tried.join("; ")}${hint}. Install it: ${spec.install}`,
  );
}

/**
 * The symbols of the library `name` (as openLibrary found it), each bound on
 * its first use: Deno makes a trampoline per symbol at dlopen, and binding a
 * whole table took 10-40 ms of every start here (libc's 38 functions), while
 * a run uses a few of them.
 */
export function bindLazily<const S extends Deno.ForeignLibraryInterface>(
  name: string,
  symbols: S,
): Deno.DynamicLibrary<S> {
  const bound = {} as Deno.DynamicLibrary<S>["symbols"];
  for (const key of Object.keys(symbols) as (keyof S & string)[]) {
    Object.defineProperty(bound, key, {
      configurable: true,
      enumerable: true,
      get() {
        const fn = Deno.dlopen(name, { [key]: symbols[key] } as S).symbols[key];
        Object.defineProperty(bound, key, { value: fn, enumerable: true });
        return fn;
      },
    });
  }
  return { symbols: bound, close() {} } as Deno.DynamicLibrary<S>;
}
