/**
 * The `none` backend: bans live in memory only (so "already" still works and
 * `-r` analyses report what would have been banned); nothing is installed and
 * nothing is logged.
 */
import type { Ban, KernelState } from "../types.ts";
import { BaseFirewall, type FirewallOptions, type Op } from "./base.ts";

/** In-memory backend; see the module comment. */
export class NoneFirewall extends BaseFirewall {
  readonly kind = "none" as const;

  constructor(opts: FirewallOptions) {
    super(opts);
  }

  init(): Promise<Ban[]> {
    return Promise.resolve([]);
  }

  /** Nothing in a kernel: the in-memory list is the whole truth. */
  async reconcile(): Promise<KernelState | null> {
    return { bans: await this.list(), repaired: [] };
  }

  protected apply(ops: Op[]): Promise<void> {
    for (const op of ops) op.done(true);
    return Promise.resolve();
  }

  async flush(): Promise<void> {
    await this.drain();
    this.bans.clear();
  }

  async close(): Promise<void> {
    await this.drain();
  }
}
