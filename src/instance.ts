/**
 * One daemon per firewall: two would both install rules and duplicate them.
 * The daemon holds an exclusive flock(2) on a file under /run for its whole
 * life; the kernel drops it when the process ends, however it ends (SIGKILL
 * included), so a stale file never blocks a restart. The file is named after
 * the network namespace (the firewall is per namespace), so daemons guarding
 * different namespaces never meet.
 */
import { readSystemLink } from "../ffi/libc.ts";

/** Where the lock files live (the systemd unit's RuntimeDirectory=scanblocker). */
export const LOCK_DIR = "/run/scanblocker";

/** The outcome: held (keep `file` open), taken by another daemon, or not possible here. */
export type InstanceLock =
  | { held: true; file: Deno.FsFile; path: string }
  | { held: false; error: string }
  | { held: false; warning: string };

/**
 * Takes this namespace's firewall lock without waiting. `error`: another
 * daemon holds it (exit 2). `warning`: the lock file cannot be opened (say a
 * user without write access to /run); the daemon goes on, unguarded.
 */
export function lockFirewall(dir = LOCK_DIR): InstanceLock {
  const ns = readSystemLink("/proc/self/ns/net") ?? "net:[unknown]";
  const id = /\[(\d+)\]/.exec(ns)?.[1] ?? "unknown";
  const path = `${dir}/firewall-net${id}.lock`;
  let file: Deno.FsFile;
  try {
    try {
      Deno.mkdirSync(dir, { recursive: true, mode: 0o755 });
    } catch { /* exists, or not ours to create: opening says what matters */ }
    try {
      file = Deno.openSync(path, { read: true, write: true, create: true, mode: 0o644 });
    } catch (e) {
      // A file made by root is still lockable read-only by a capability-only user.
      if (!(e instanceof Deno.errors.PermissionDenied)) throw e;
      file = Deno.openSync(path, { read: true });
    }
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    return {
      held: false,
      warning: `cannot take the one-instance lock ${path} (${why}): a second daemon on this ` +
        `firewall would not be refused; make ${dir} writable for this user ` +
        `(systemd: RuntimeDirectory=scanblocker)`,
    };
  }
  if (!file.tryLockSync(true)) {
    let pid = "";
    try {
      pid = new TextDecoder().decode(Deno.readFileSync(path)).trim();
    } catch { /* unreadable: no pid to name */ }
    file.close();
    return {
      held: false,
      error: `another scanblocker${/^\d+$/.test(pid) ? ` (pid ${pid})` : ""} already guards ` +
        `this firewall (network namespace ${ns}, lock ${path}); stop it first`,
    };
  }
  try {
    file.truncateSync(0);
    file.writeSync(new TextEncoder().encode(`${Deno.pid}\n`));
  } catch { /* opened read-only: the lock is what counts */ }
  return { held: true, file, path };
}
