/** The one library loader of ffi/: override alone, candidates in order, an error naming every try. */
import assert from "node:assert/strict";
import { bindLazily, openLibrary } from "../ffi/loader.ts";

const symbols = { getpid: { parameters: [], result: "i32" } } as const;

Deno.test("loader: the first candidate that opens wins; the error lists every name and the package", () => {
  const tried: string[] = [];
  const fake = (name: string) => {
    tried.push(name);
    if (name !== "libc.so.6") throw new Error(`${name}: cannot open shared object file`);
    return Deno.dlopen(name, symbols);
  };
  const ok = openLibrary(
    { what: "libc", names: ["libnope.so.9", "libc.so.6"], install: "x" },
    symbols,
    fake,
  );
  assert.equal(ok.name, "libc.so.6");
  assert.equal(ok.lib.symbols.getpid(), Deno.pid);
  ok.lib.close();
  assert.deepEqual(tried, ["libnope.so.9", "libc.so.6"]);
  assert.throws(
    () =>
      openLibrary({
        what: "libfoo",
        names: ["libfoo.so.1", "libfoo.so"],
        install: `apt-get install libfoo1`,
      }, symbols),
    (e: Error) =>
      /cannot load libfoo; tried: libfoo\.so\.1 \(.*\); libfoo\.so \(.*\)\. Install it: apt-get install libfoo1/
        .test(e.message),
  );
});

Deno.test("loader: an override is tried alone and named in the error", () => {
  assert.throws(
    () =>
      openLibrary({
        what: "libfoo",
        names: ["libc.so.6"],
        override: { variable: "SB_LIBFOO", value: "/nonexistent/libfoo.so" },
        install: "x",
      }, symbols),
    (e: Error) =>
      /tried: \/nonexistent\/libfoo\.so \(.*\); SB_LIBFOO is set to "\/nonexistent\/libfoo\.so": correct it, or unset it to try libc\.so\.6/
        .test(e.message),
  );
  // Not set (or not trusted): the candidates.
  const ok = openLibrary({
    what: "libc",
    names: ["libc.so.6"],
    override: { variable: "SB_LIBFOO", value: undefined },
    install: "x",
  }, symbols);
  assert.equal(ok.name, "libc.so.6");
  ok.lib.close();
});

Deno.test("loader: bindLazily binds each symbol on first use, and only that one", () => {
  // Bound eagerly, the missing symbol would fail the whole table at once.
  const lib = bindLazily(
    "libc.so.6",
    {
      getpid: { parameters: [], result: "i32" },
      no_such_function_in_libc: { parameters: [], result: "i32" },
    } as const,
  );
  assert.equal(lib.symbols.getpid(), Deno.pid);
  assert.equal(typeof Object.getOwnPropertyDescriptor(lib.symbols, "getpid")!.value, "function");
  assert.throws(() => lib.symbols.no_such_function_in_libc());
});
