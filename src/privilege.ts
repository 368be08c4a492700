/**
 * Who may make this program change the firewall. Installed with
 * `setcap cap_net_raw,cap_net_admin+ep`, any user who can execute the file
 * gains both capabilities for as long as it runs; the program must then not
 * let that user flush or rewrite the firewall. Root may; so may a member of
 * the group that owns the executable when the file is owned by root and that
 * group is not root's (the operator's choice, made with `chgrp`, which only
 * root can make and the caller cannot forge). A caller whose capabilities
 * were handed down to it (systemd's AmbientCapabilities=, not raised by this
 * exec) could change the firewall without us, so it is not refused either.
 */
import { type Credentials, credentials, elevated, PATH_VARIABLES } from "../ffi/libc.ts";

/** Owner and group of the executable file. */
export interface ExecutableOwner {
  /** The file's path, for the message. */
  path: string;
  uid: number | null;
  gid: number | null;
}

/**
 * Null when a caller with these credentials may run `what` (a command that
 * changes the firewall) from an executable with this owner; otherwise the
 * one-line reason it is refused.
 */
export function firewallRefusal(
  what: string,
  c: Credentials,
  exe: ExecutableOwner | null,
): string | null {
  if (c.uid === 0) return null;
  // Capabilities not gained at this exec: the caller holds them anyway.
  if (c.secureExec === false) return null;
  const group = exe && exe.uid === 0 && exe.gid !== null && exe.gid !== 0 ? exe.gid : null;
  if (group !== null && c.gids.includes(group)) return null;
  const how = group === null
    ? `give the file a group with \`chgrp GROUP ${exe?.path ?? "scanblocker"}\` ` +
      "(then setcap again) to let that group's members"
    : `only members of its group (gid ${group}) may`;
  return `refused: \`${what}\` changes the firewall and uid ${c.uid} is neither root nor allowed ` +
    `(${exe?.path ?? "the executable"} gained capabilities at exec; ${how} run it)`;
}

/** Owner of the running executable (Deno.execPath()); null when it cannot be read. */
export function executableOwner(): ExecutableOwner | null {
  try {
    const path = Deno.execPath();
    const st = Deno.statSync(path);
    return { path, uid: st.uid, gid: st.gid };
  } catch {
    return null;
  }
}

/**
 * firewallRefusal for this process: null when it may change the firewall.
 * When the credentials cannot be read the command is refused unless
 * Deno reports uid 0.
 */
export function callerRefusal(what: string): string | null {
  let c: Credentials;
  try {
    c = credentials();
  } catch {
    return Deno.uid() === 0 ? null : `refused: \`${what}\`: cannot read this process's credentials`;
  }
  return firewallRefusal(what, c, executableOwner());
}

/**
 * The library-path variables (SB_LIBPCAP, SB_LIBNFTABLES) set in the
 * environment but ignored because the process is elevated, for one start-up
 * line each.
 */
export function ignoredPathVariables(): string[] {
  if (!elevated()) return [];
  return PATH_VARIABLES.filter((n) => {
    try {
      return !!Deno.env.get(n);
    } catch {
      return false;
    }
  });
}

/**
 * Why this caller may not run a command that changes the firewall (unban,
 * flush, the daemon with a firewall), or null; see src/privilege.ts.
 */
export function commandRefusal(
  cfg: { command: string; firewall: string },
): string | null {
  const changes = cfg.command === "unban" || cfg.command === "flush" ||
    (cfg.command === "run" && cfg.firewall !== "none");
  return changes
    ? callerRefusal(cfg.command === "run" ? "scanblocker" : `scanblocker ${cfg.command}`)
    : null;
}
