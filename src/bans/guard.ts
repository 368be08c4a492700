/**
 * The guard in front of every ban: who this host is and who is never
 * banned. --allow blocks, this host's addresses (every interface, or
 * --local), and the lockout guard's gateways, resolvers, DHCP and NTP
 * servers and metadata service (src/lockout.ts), so a spoofed probe cannot
 * cut the host off its network. The lockout guard is re-read while the
 * program runs (GuardWatch): a new DHCP lease or resolver is protected
 * within seconds, and at once on reload() (SIGHUP).
 */
import { type Cidr, parseCidr } from "../address.ts";
import { AllowList, interfaceAddresses } from "../allowlist.ts";
import type { Config } from "../config.ts";
import { guardAddresses, lockoutGuard } from "../lockout.ts";

/** The capture side that must hear about guard changes (LiveCapture). */
export interface GuardListener {
  setGuard(guard: Cidr[]): void;
}

/** Keeps the lockout guard in the allow-list (and the capture thread's) current. */
export class GuardWatch {
  #n = 0;
  #addresses: string[] = [];
  #listener: GuardListener | null = null;

  constructor(
    readonly allow: AllowList,
    readonly warn: (line: string) => void,
    readonly opts: {
      /** Root directory the files are read under ("" = this machine); tests use a temp dir. */
      root?: string;
      /** Seconds (ticks) between re-reads; 10 unless said. */
      everySeconds?: number;
    } = {},
  ) {
    this.#read();
  }

  /** The guarded addresses as last read (canonical text). */
  get addresses(): string[] {
    return [...this.#addresses];
  }

  /** Sends the guard to `listener` now and after every change (call before capture starts). */
  attach(listener: GuardListener): void {
    this.#listener = listener;
    listener.setGuard(this.allow.guard);
  }

  /** Once a second: re-reads every `everySeconds`. */
  tick(): void {
    if (++this.#n % (this.opts.everySeconds ?? 10) === 0) this.reload();
  }

  /**
   * Re-reads the guard now (SIGHUP, or the period); when it changed, applies
   * it to the allow-list and the listener and writes one line saying what.
   */
  reload(): { added: string[]; removed: string[] } {
    const before = this.#addresses;
    if (!this.#read()) return { added: [], removed: [] };
    const added = this.#addresses.filter((a) => !before.includes(a));
    const removed = before.filter((a) => !this.#addresses.includes(a));
    if (added.length > 0 || removed.length > 0) {
      this.#listener?.setGuard(this.allow.guard);
      this.warn(
        `lockout guard changed:${added.map((a) => ` +${a}`).join("")}${
          removed.map((a) => ` -${a}`).join("")
        }`,
      );
    }
    return { added, removed };
  }

  /** Reads and applies; false (old guard kept, one line) when reading failed. */
  #read(): boolean {
    let addrs: string[];
    try {
      addrs = guardAddresses(lockoutGuard(this.opts.root ?? ""));
    } catch (e) {
      this.warn(`cannot read gateways/resolvers: ${e instanceof Error ? e.message : e}`);
      return false;
    }
    const cidrs: Cidr[] = [];
    for (const a of addrs) {
      const c = parseCidr(a);
      if (c) cidrs.push(c);
    }
    this.allow.setGuard(cidrs);
    this.#addresses = addrs;
    return true;
  }
}

/**
 * The allow-list of a run, the addresses the lockout guard added (for the
 * start-up line) and the watch that keeps them current (null when the guard
 * is off or the run is offline).
 */
export function protectedAddresses(
  cfg: Pick<Config, "allow" | "local" | "lockoutGuard">,
  live: boolean,
  warn: (line: string) => void,
): { allow: AllowList; guarded: string[]; guard: GuardWatch | null } {
  const allow = new AllowList([...cfg.allow]);
  if (cfg.local) allow.setLocal(cfg.local);
  else if (live) allow.setLocal(interfaceAddresses());
  const guard = live && cfg.lockoutGuard ? new GuardWatch(allow, warn) : null;
  return { allow, guarded: guard?.addresses ?? [], guard };
}
