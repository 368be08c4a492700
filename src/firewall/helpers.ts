/**
 * Where the firewall helpers (iptables, iptables-restore, nft, stdbuf, …)
 * come from. The program may hold CAP_NET_ADMIN and CAP_NET_RAW that its
 * caller does not (setcap), and its children inherit them: a helper found
 * through the caller's PATH would run the caller's program with them. So a
 * helper is looked up only in a fixed list of directories, and used only when
 * the file, every directory above it and every symbolic link on the way lie in
 * directories owned by root that neither group nor others may write.
 * Children also start with a fixed environment (no LD_PRELOAD, XTABLES_LIBDIR,
 * PATH of the caller's choosing).
 */

/** The directories searched, in order. Not configurable, by design. */
export const HELPER_DIRS: readonly string[] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/** The environment every helper starts with (the caller's is not passed on). */
export const HELPER_ENV: Readonly<Record<string, string>> = {
  PATH: HELPER_DIRS.join(":"),
  LC_ALL: "C",
};

/** Stat fields the checks need (Deno.FileInfo has them; tests pass their own). */
export interface FileFacts {
  isFile: boolean;
  isDirectory: boolean;
  isSymlink: boolean;
  uid: number | null;
  mode: number | null;
}

/** File-system access the resolver uses; replaced in tests. */
export interface HelperFs {
  lstat(path: string): FileFacts | null;
  readLink(path: string): string;
}

const realFs: HelperFs = {
  lstat(path) {
    try {
      return Deno.lstatSync(path);
    } catch {
      return null;
    }
  },
  readLink: (path) => Deno.readLinkSync(path),
};

/** Why a file or directory may not be trusted; null when it may. */
function untrusted(path: string, f: FileFacts): string | null {
  if (f.uid !== 0) return `${path} is not owned by root`;
  if (f.mode === null || (f.mode & 0o022) !== 0) return `${path} is writable by group or others`;
  return null;
}

function dirname(path: string): string {
  const at = path.lastIndexOf("/");
  return at <= 0 ? "/" : path.slice(0, at);
}

/**
 * Follows `path` component by component (symbolic links included, at most 40)
 * and checks every directory passed through and the file reached. Returns the
 * checked file's path or the reason it is refused.
 */
function checkPath(path: string, fs: HelperFs): { ok: true } | { ok: false; why: string } {
  let todo = path.split("/").filter((p) => p !== "");
  let at = "/";
  let links = 0;
  const root = fs.lstat("/");
  if (!root) return { ok: false, why: "/ cannot be read" };
  const rootWhy = untrusted("/", root);
  if (rootWhy) return { ok: false, why: rootWhy };
  while (todo.length > 0) {
    const name = todo.shift()!;
    if (name === ".") continue;
    if (name === "..") {
      at = dirname(at);
      continue;
    }
    const next = at === "/" ? `/${name}` : `${at}/${name}`;
    const f = fs.lstat(next);
    if (!f) return { ok: false, why: `${next} does not exist` };
    if (f.isSymlink) {
      // The link is as safe as the directory holding it, checked already.
      if (++links > 40) return { ok: false, why: `${path}: too many symbolic links` };
      const target = fs.readLink(next);
      todo = [...target.split("/").filter((p) => p !== ""), ...todo];
      if (target.startsWith("/")) at = "/";
      continue;
    }
    const why = untrusted(next, f);
    if (why) return { ok: false, why };
    if (todo.length > 0 && !f.isDirectory) return { ok: false, why: `${next} is not a directory` };
    if (todo.length === 0 && !f.isFile) return { ok: false, why: `${next} is not a regular file` };
    if (todo.length === 0 && ((f.mode ?? 0) & 0o111) === 0) {
      return { ok: false, why: `${next} is not executable` };
    }
    at = next;
  }
  return { ok: true };
}

/** A helper's absolute path, or why none was found. */
export type Resolution = { path: string } | { error: string };

/**
 * Looks `name` up in HELPER_DIRS (see the module comment); the first trusted
 * match wins. Untrusted matches are skipped, and named in the error when no
 * trusted one is found.
 */
export function resolveHelper(name: string, fs: HelperFs = realFs): Resolution {
  if (!/^[A-Za-z0-9][A-Za-z0-9._+-]*$/.test(name)) {
    return { error: `${JSON.stringify(name)} is not a program name` };
  }
  const refused: string[] = [];
  for (const dir of HELPER_DIRS) {
    const path = `${dir}/${name}`;
    if (!fs.lstat(path)) continue;
    const r = checkPath(path, fs);
    if (r.ok) return { path };
    refused.push(r.why);
  }
  return {
    error: `${name}: not found in ${HELPER_DIRS.join(", ")}${
      refused.length ? ` (refused: ${refused.join("; ")})` : ""
    }`,
  };
}

const cache = new Map<string, Resolution>();

/**
 * resolveHelper for this process: a path found is kept (the start-up line
 * prints them: see resolvedHelpers); a helper not found is looked up again
 * next time, so one installed while the daemon runs is used.
 */
export function helperPath(name: string): Resolution {
  const known = cache.get(name);
  if (known && "path" in known) return known;
  const r = resolveHelper(name);
  cache.set(name, r);
  return r;
}

/** Every helper resolved so far, as "name=path" (or "name: error"), for the start-up line. */
export function resolvedHelpers(): string[] {
  return [...cache].map(([n, r]) => "path" in r ? `${n}=${r.path}` : r.error);
}

/**
 * The argv to start: a bare program name in argv[0] becomes its trusted
 * absolute path, and so does the program `stdbuf` is told to run. An argv[0]
 * with a slash is used as given (tests run helpers through a prefix such as
 * `ip netns exec`; the daemon never does). Throws when a helper is missing.
 */
export function trustedArgv(argv: readonly string[]): string[] {
  const out = [...argv];
  const fix = (i: number) => {
    if (i >= out.length || out[i].includes("/")) return;
    const r = helperPath(out[i]);
    if ("error" in r) throw new Error(r.error);
    out[i] = r.path;
  };
  fix(0);
  if (/(^|\/)stdbuf$/.test(out[0])) {
    let i = 1;
    while (i < out.length && out[i].startsWith("-")) i++;
    fix(i);
  }
  return out;
}
