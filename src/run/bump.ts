/**
 * Keeps the firewall's speed bump (src/firewall/bump.ts) in step with the
 * daemon: the threshold and window (a reload changes them), the captured
 * interface, and who is never held back: the allow-list, this host's
 * addresses, the lockout guard and the never-banned blocks, and the
 * listening ports the detector does not count. Those change from several
 * places (SIGHUP, the guard's and the host's watches), so the tick compares
 * what the bump would be now with what was sent, and sends only a change:
 * a few hundred bytes compared once a second.
 */
import type { Cidr } from "../address.ts";
import type { AllowList } from "../allowlist.ts";
import type { Config } from "../config.ts";
import { describeBump, mergeBlocks, neverBannedBlocks } from "../firewall/bump.ts";
import type { BumpConfig, BumpState, Firewall } from "../types.ts";
import { errorText } from "../report/stdio.ts";

/** How often a bump that a repair could not put back is tried again. */
export const BUMP_RETRY_MS = 60_000;

/** See the module comment. */
export class BumpSync {
  #sent = "";
  #busy = false;
  #state: BumpState | null = null;
  /** When a bump the backend lost may be tried again (epoch ms). */
  #retryAt = 0;

  constructor(
    readonly fw: Firewall,
    readonly cfg: Config,
    readonly device: string,
    readonly allow: AllowList,
    /** The listening ports as the host watch last read them. */
    readonly openPorts: () => number[],
    readonly warn: (line: string) => void,
    readonly now: () => number = Date.now,
  ) {}

  /** What the bump should be now; a reason instead when there is none to have. */
  config(): BumpConfig | string {
    if (!this.fw.setBump) return `none with --firewall ${this.cfg.firewall}`;
    // psd scores ports by weight and gap: no count of ports in a window matches it.
    if (this.cfg.detector !== "window") return `follows --ports/--window, not --detector psd`;
    const a = this.allow;
    const hosts: Cidr[] = a.local.map((l) => ({ ...l, prefix: l.family === 4 ? 32 : 128 }));
    const blocks = [...a.allowed, ...a.guard, ...hosts, ...neverBannedBlocks()];
    return {
      ports: this.cfg.ports,
      windowSeconds: this.cfg.windowSeconds,
      device: this.device === "any" ? null : this.device,
      exempt4: mergeBlocks(blocks, 4),
      exempt6: mergeBlocks(blocks, 6),
      openPorts: this.cfg.countOpenPorts
        ? []
        : [...new Set(this.openPorts())].sort((x, y) => x - y),
    };
  }

  /** Sends the bump's settings when they changed; the start-up line's text. */
  async sync(): Promise<string> {
    const c = this.config();
    if (typeof c === "string") {
      // Once: take away a bump an earlier run (other settings) left in the firewall.
      if (this.#sent !== "off" && this.fw.setBump) {
        this.#sent = "off";
        await this.fw.setBump(null);
      }
      return `off (${c})`;
    }
    const key = JSON.stringify(c);
    if (this.#busy || !this.fw.setBump) return describeBump(this.#state);
    const retry = key === this.#sent && this.#lost();
    if (key === this.#sent && !retry) return describeBump(this.#state);
    this.#busy = true;
    try {
      const before = this.#state ? describeBump(this.#state) : null;
      this.#state = await this.fw.setBump(c);
      this.#sent = key;
      if (this.#state.on) this.#retryAt = 0;
      const now = describeBump(this.#state);
      // A retry that failed again says nothing new (#lost said it).
      if (before !== null && before !== now && !(retry && !this.#state.on)) {
        this.warn(`speed bump: ${now}`);
      }
      return now;
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Whether to send the same settings again: the backend lost the bump that
   * it had for them (a repair that could not put it back). Said once, then
   * true every BUMP_RETRY_MS until it is back.
   */
  #lost(): boolean {
    const now = this.fw.bumpState?.();
    if (now === undefined || now === null || now.on) return false;
    const t = this.now();
    if (this.#state?.on) {
      // Lost since the last sync (the backend reported the failure): say what it is now.
      this.#state = now;
      this.warn(`speed bump: ${describeBump(now)}; trying again every ${BUMP_RETRY_MS / 1000} s`);
      this.#retryAt = t + BUMP_RETRY_MS;
      return false;
    }
    if (this.#retryAt === 0 || t < this.#retryAt) return false;
    this.#retryAt = t + BUMP_RETRY_MS;
    return true;
  }

  /** Once a second: sends what changed, in the background. */
  tick(): void {
    this.sync().catch((e) => this.warn(`speed bump: ${errorText(e)}`));
  }
}
