/**
 * The default backend, `--firewall iptables`: iptables holding its bans in
 * ipset sets matched by one rule (src/firewall/ipset.ts) whenever ipset is
 * usable, and one rule per ban (src/firewall/iptables.ts) only when it is
 * not. "Usable" means the `ipset` program is found among the trusted helpers
 * (src/firewall/helpers.ts) and the kernel accepts the sets and the rules
 * matching them; the reason for the fallback goes on the start-up line
 * (describePath).
 *
 * Why a choice at run time rather than a second default: with one rule per
 * ban every inbound packet walks the whole chain, so a spoofed flood that
 * fills the ban table (65,536 rules) cuts the host's throughput to a few per
 * cent, and every change makes the kernel rebuild the chain (slow bans while
 * the table fills). Sets cost one hash lookup whatever they hold. Operators
 * who ask for iptables get that, without having to know about ipset; those
 * who need the old form name it (`--firewall iptables-rules`).
 *
 * The choice is made once, at the first init() (or the first call that needs
 * the kernel), and kept for the life of this object: a reload must not move
 * bans between forms under the capture thread's fast path.
 */
import type {
  Ban,
  BanResult,
  BumpConfig,
  BumpState,
  FastBan,
  Firewall,
  KernelState,
} from "../types.ts";
import type { FirewallOptions } from "./base.ts";
import { helperPath } from "./helpers.ts";
import { IpsetFirewall } from "./ipset.ts";
import { IptablesFirewall } from "./iptables.ts";

/**
 * Why ipset cannot hold the default backend's bans (null: it can). With a
 * commandPrefix the helper check is left to the set-up run through it.
 */
function ipsetMissing(prefix: readonly string[]): string | null {
  if (prefix.length > 0) return null;
  const r = helperPath("ipset");
  if ("path" in r) return null;
  return r.error.includes("(refused:") ? `ipset not usable: ${r.error}` : "ipset not installed";
}

/** `--firewall iptables`; see the module comment. */
export class IptablesChoiceFirewall implements Firewall {
  readonly kind = "iptables" as const;
  #inner: IpsetFirewall | IptablesFirewall | null = null;
  #picking: Promise<IpsetFirewall | IptablesFirewall> | null = null;
  /** Why bans are held one rule per ban ("" while in sets or not chosen yet). */
  #fallback = "";
  #hooks: readonly string[] | null = null;

  constructor(private readonly opts: FirewallOptions) {}

  /** The form in use, chosen at the first call (see the module comment). */
  #pick(): Promise<IpsetFirewall | IptablesFirewall> {
    this.#picking ??= (async () => {
      let why = ipsetMissing(this.opts.commandPrefix ?? []);
      if (why === null) {
        const sets = new IpsetFirewall(this.opts, "iptables");
        if (this.#hooks) sets.setHooks(this.#hooks);
        why = await sets.probe();
        if (why === null) return (this.#inner = sets);
        await sets.close();
      }
      this.#fallback = why;
      const rules = new IptablesFirewall(this.opts, "iptables");
      if (this.#hooks) rules.setHooks(this.#hooks);
      return (this.#inner = rules);
    })();
    return this.#picking;
  }

  async init(): Promise<Ban[]> {
    return await (await this.#pick()).init();
  }

  async ban(address: string, ttlSeconds: number): Promise<BanResult> {
    return await (await this.#pick()).ban(address, ttlSeconds);
  }

  banNow(address: string, ttlSeconds: number): BanResult | null {
    return this.#inner?.banNow(address, ttlSeconds) ?? null;
  }

  adopt(address: string, ttlSeconds: number, expiresAt?: number | null): void {
    this.#inner?.adopt(address, ttlSeconds, expiresAt);
  }

  async unban(address: string): Promise<boolean> {
    return await (await this.#pick()).unban(address);
  }

  async list(): Promise<Ban[]> {
    return await (this.#inner?.list() ?? []);
  }

  async reconcile(): Promise<KernelState | null> {
    return await (await this.#pick()).reconcile();
  }

  fastPath(banTimeSeconds: number, room: number): FastBan | null {
    return this.#inner?.fastPath(banTimeSeconds, room) ?? null;
  }

  get fastLimit(): number {
    return this.#inner?.fastLimit ?? Infinity;
  }

  /** "ipset sets (netlink)", or the per-rule path and why ipset is not used. */
  describePath(): string {
    const inner = this.#inner;
    if (inner === null) return "";
    if (inner instanceof IpsetFirewall) return `ipset sets (${inner.describePath()})`;
    return `${inner.describePath()} (one rule per ban: ${this.#fallback})`;
  }

  async flush(): Promise<void> {
    await (await this.#pick()).flush();
  }

  async close(): Promise<void> {
    await this.#inner?.close();
  }

  /** The ipset form's bump; the per-rule form has none (it needs ipset's sets). */
  async setBump(c: BumpConfig | null): Promise<BumpState> {
    const inner = await this.#pick();
    if (inner instanceof IpsetFirewall) return await inner.setBump(c);
    return { on: false, why: `one rule per ban: ${this.#fallback}` };
  }

  bumpState(): BumpState | null {
    const inner = this.#inner;
    return inner instanceof IpsetFirewall ? inner.bumpState() : null;
  }

  setHooks(hooks: readonly string[]): void {
    this.#hooks = [...hooks];
    this.#inner?.setHooks(hooks);
  }
}
