/**
 * Keeps the capture thread's view of this host current while it runs:
 * interfaces and their addresses come and go (re-read every 5 s unless
 * --local fixed them), and listening ports open and close (every 2 s), so
 * that SYNs to this host's new addresses count and SYNs to a new listener
 * do not.
 */
import { type AllowList, interfaceAddresses } from "../allowlist.ts";
import type { Address } from "../address.ts";
import type { OpenPorts } from "../openports.ts";

/** The capture side that hears about changes. */
export interface HostListener {
  setLocal(local: Address[]): void;
  setOpenPorts(ports: number[]): void;
}

/** See the module comment; call tick() once a second. */
export class HostWatch {
  #n = 0;
  #open: number[];

  constructor(
    readonly capture: HostListener,
    readonly allow: AllowList,
    readonly openPorts: OpenPorts | null,
    /** True when --local fixed this host's addresses. */
    readonly fixedLocal: boolean,
    readonly warn: (line: string) => void,
  ) {
    this.#open = openPorts?.list() ?? [];
  }

  /** The listening ports as last sent. */
  get open(): number[] {
    return this.#open;
  }

  /** Once a second. */
  tick(): void {
    this.#n++;
    if (!this.fixedLocal && this.#n % 5 === 0) {
      try {
        const addrs = interfaceAddresses();
        this.allow.setLocal(addrs);
        this.capture.setLocal(addrs);
      } catch (e) {
        this.warn(`cannot refresh local addresses: ${e instanceof Error ? e.message : e}`);
      }
    }
    if (this.openPorts && this.#n % 2 === 0) {
      try {
        this.openPorts.refresh();
        const now = this.openPorts.list();
        if (now.join() !== this.#open.join()) this.capture.setOpenPorts(this.#open = now);
      } catch { /* lastError keeps the reason; the old list stays */ }
    }
  }
}
