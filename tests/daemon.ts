/**
 * Runs the real daemon (`deno run -P main.ts`, the permission set the
 * compiled binary gets) inside a test namespace and collects its output.
 */

const root = new URL("..", import.meta.url).pathname;
const dec = new TextDecoder();

/** A running daemon and what it printed so far. */
export interface Daemon {
  stdout(): string;
  stderr(): string;
  /** Resolves once stdout+stderr match `re`; rejects after `ms` with what was printed. */
  waitFor(re: RegExp, ms?: number): Promise<void>;
  /** The exit code once it ends by itself within `ms`, else null. */
  exited(ms: number): Promise<number | null>;
  /** SIGTERM, then SIGKILL after 5 s; resolves with the exit code. */
  stop(): Promise<number>;
  /** Exit status, once it has ended. */
  status: Promise<Deno.CommandStatus>;
  /** Process id (`ip netns exec` and `env` exec, so this is the daemon itself). */
  pid: number;
}

/** Starts `argv` and collects its output (for any way of starting the daemon). */
export function spawnDaemon(
  argv: string[],
  opts: { cwd?: string; env?: Record<string, string> } = {},
): Daemon {
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    cwd: opts.cwd ?? root,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    env: opts.env ?? { NO_COLOR: "1" },
  }).spawn();
  let out = "", err = "";
  const pump = async (s: ReadableStream<Uint8Array>, add: (t: string) => void) => {
    for await (const chunk of s) add(dec.decode(chunk, { stream: true }));
  };
  const done = Promise.all([
    pump(child.stdout, (t) => (out += t)),
    pump(child.stderr, (t) => (err += t)),
  ]);
  const status = child.status.then(async (s) => {
    await done;
    return s;
  });
  let ended = false;
  status.then(() => (ended = true));
  return {
    pid: child.pid,
    stdout: () => out,
    stderr: () => err,
    status,
    waitFor: async (re, ms = 15000) => {
      const until = Date.now() + ms;
      while (Date.now() < until) {
        if (re.test(out) || re.test(err)) return;
        if (ended) break;
        await new Promise((r) => setTimeout(r, 25));
      }
      if (re.test(out) || re.test(err)) return;
      throw new Error(
        `daemon output did not match ${re} within ${ms} ms${
          ended ? " (it exited)" : ""
        }\n--- stdout\n${out.slice(-3000)}\n--- stderr\n${err.slice(-3000)}`,
      );
    },
    exited: async (ms) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<null>((r) => (timer = setTimeout(() => r(null), ms)));
      const code = await Promise.race([status.then((st) => st.code), late]);
      clearTimeout(timer);
      return code;
    },
    stop: async () => {
      if (!ended) {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
        const t = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch { /* gone */ }
        }, 5000);
        const s = await status;
        clearTimeout(t);
        return s.code;
      }
      return (await status).code;
    },
  };
}

let daemons = 0;

/** Starts `main.ts ARGS` inside namespace `ns` (or here when ns is null). */
export function startDaemon(
  ns: string | null,
  args: string[],
  env: Record<string, string> = {},
): Daemon {
  // A control socket of its own, so daemons of parallel runs never meet
  // (an explicit --control-socket or SB_CONTROL_SOCKET wins).
  env = { SB_CONTROL_SOCKET: `/run/scanblocker/test-${Deno.pid}-${++daemons}.sock`, ...env };
  const argv = [Deno.execPath(), "run", "-P", "--quiet", `${root}main.ts`, ...args];
  // In a namespace the variables go through env(1), so that one like PATH
  // changes the daemon's environment, not the lookup of `ip` itself.
  const vars = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  const full = ns ? ["ip", "netns", "exec", ns, "env", ...vars, ...argv] : argv;
  return spawnDaemon(full, { env: ns ? { NO_COLOR: "1" } : { NO_COLOR: "1", ...env } });
}

/**
 * Runs `main.ts ARGS` to completion (no namespace) and returns code and
 * output; `v8Flags` go to Deno's --v8-flags, `stdinFile` is written to its
 * standard input (while its output is read: neither pipe may fill up and
 * stop the other).
 */
export async function runMain(
  args: string[],
  env: Record<string, string> = {},
  opts: { v8Flags?: string; stdinFile?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const flags = opts.v8Flags ? [`--v8-flags=${opts.v8Flags}`] : [];
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-P", "--quiet", ...flags, `${root}main.ts`, ...args],
    cwd: root,
    stdin: opts.stdinFile ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).spawn();
  const feed = async () => {
    if (!opts.stdinFile) return;
    const w = child.stdin.getWriter();
    try {
      await w.write(await Deno.readFile(opts.stdinFile));
      await w.close();
    } catch (e) {
      // It stopped reading (an error, told on its stderr): its exit code and output say why.
      if (!(e instanceof Deno.errors.BrokenPipe)) throw e;
    }
  };
  const [o] = await Promise.all([child.output(), feed()]);
  return { code: o.code, stdout: dec.decode(o.stdout), stderr: dec.decode(o.stderr) };
}

/**
 * Runs `source` (a module; `ROOT/` in it is the repository's root) as a
 * process of its own under a limit of 128 descriptors, so that a server in
 * it runs out of them (EMFILE); returns the JSON of its last stdout line.
 */
export async function underDescriptorLimit(source: string): Promise<Record<string, unknown>> {
  const dir = await Deno.makeTempDir({ prefix: "sb-emfile-" });
  try {
    const file = `${dir}/emfile.ts`;
    await Deno.writeTextFile(file, source.replaceAll("ROOT/", root));
    const out = await new Deno.Command("prlimit", {
      args: ["--nofile=128:128", Deno.execPath(), "run", "-A", `--config=${root}deno.json`, file],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (out.code !== 0) throw new Error(`exit ${out.code}: ${dec.decode(out.stderr)}`);
    return JSON.parse(dec.decode(out.stdout).trim().split("\n").at(-1)!);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
