/**
 * The ipset backend (`--firewall ipset`): iptables with the bans in two
 * ipset hash:ip sets, `scanblocker4` and `scanblocker6`, each matched by
 * one rule in chain SCANBLOCKER (`-m set --match-set scanblocker4 src -j
 * DROP`), which INPUT (and with the "forward" hook FORWARD) jumps to.
 *
 * Why: with one rule per ban (the iptables backend) every inbound packet
 * walks the whole chain, so a spoofed flood that fills the ban table slows
 * the host down (~30x with 65,536 rules), and each change rebuilds the
 * chain. A hash set is one lookup whatever it holds, and the kernel expires
 * each element itself (sets made with `timeout 0`: every element has its
 * own, 0 = until removed). Bans and unbans go to the kernel over netlink
 * (NFNL_SUBSYS_IPSET, ffi/nfnetlink.ts), acknowledged per element, on the
 * calling thread; with a commandPrefix (tests driving another namespace) or
 * without netlink, one `ipset -exist restore` per batch does the same.
 * Set-up and listing use the `ipset` and `iptables-restore` commands. Rules
 * of the iptables backend found in SCANBLOCKER at start are moved into the
 * sets.
 */
import type { Ban, Family, FastBan, KernelState } from "../types.ts";
import { canonicalAddress, parseAddress } from "../address.ts";
import { NftSocket, type SetElement } from "../../ffi/nfnetlink.ts";
import { BaseFirewall, type FirewallHook, type FirewallOptions, type Op } from "./base.ts";
import { IPT_CHAIN, parseIptablesRules } from "./iptables.ts";
import { errorText, firstLine, runCommand } from "./runner.ts";

/** The set of each family. */
export const IPSET_NAMES: Record<Family, string> = { 4: "scanblocker4", 6: "scanblocker6" };
/** Room above the ban cap in the sets: evictions and new bans may overlap briefly. */
const SET_SLACK = 1024;
const HOOK_CHAIN: Record<FirewallHook, string> = { input: "INPUT", forward: "FORWARD" };

/** Reads `ipset save NAME` output into bans (timeout 0 or none: until removed). */
export function parseIpsetSave(text: string, family: Family, now = Date.now()): Ban[] {
  const out: Ban[] = [];
  const re = new RegExp(`^add ${IPSET_NAMES[family]} (\\S+)(?: .*?\\btimeout (\\d+))?`);
  for (const line of text.split("\n")) {
    const m = re.exec(line.trim());
    if (!m) continue;
    const address = canonicalAddress(m[1], true);
    if (!address) continue;
    const left = m[2] === undefined ? 0 : Number(m[2]);
    out.push({
      address,
      family,
      expiresAt: left > 0 ? Math.floor(now / 1000) * 1000 + left * 1000 : null,
    });
  }
  return out;
}

/** iptables with ipset sets; see the module comment. */
export class IpsetFirewall extends BaseFirewall {
  readonly kind = "ipset" as const;
  #ready: Promise<Ban[] | null> | null = null;
  #netlink: NftSocket | null = null;
  #netlinkTried = false;

  constructor(opts: FirewallOptions) {
    super(opts);
  }

  /** Which path carries bans: netlink in this process, or `ipset restore` processes. */
  get path(): "netlink" | "ipset restore" {
    return this.#useNetlink() ? "netlink" : "ipset restore";
  }

  #useNetlink(): NftSocket | null {
    if (this.#netlink || this.#netlinkTried || this.prefix.length > 0) return this.#netlink;
    this.#netlinkTried = true;
    try {
      this.#netlink = new NftSocket();
    } catch {
      this.#netlink = null;
    }
    return this.#netlink;
  }

  #tool(family: Family): string {
    return family === 4 ? "iptables" : "ip6tables";
  }

  /** Sets, chains, the one rule per family and the jumps; returns rules-per-ban found (to move into the sets). */
  #setup(): Promise<Ban[] | null> {
    if (!this.#ready) {
      this.#ready = this.#build().then((r) => {
        if (r === null) this.#ready = null;
        return r;
      });
    }
    return this.#ready;
  }

  async #build(): Promise<Ban[] | null> {
    const legacy: Ban[] = [];
    for (const family of [4, 6] as const) {
      const name = IPSET_NAMES[family];
      const maxelem = this.maxBans + SET_SLACK;
      const c = await runCommand([
        ...this.prefix,
        "ipset",
        "-exist",
        "create",
        name,
        "hash:ip",
        "family",
        family === 4 ? "inet" : "inet6",
        "timeout",
        "0",
        "maxelem",
        String(maxelem),
      ]);
      if (c.code !== 0) {
        // An older set with other parameters: use it as it is, and say so.
        const have = await runCommand([...this.prefix, "ipset", "list", "-n", name]);
        if (have.code !== 0) {
          this.report(`ipset create ${name} failed: ${firstLine(c.stderr)}`);
          return null;
        }
        this.report(`ipset ${name} exists with other parameters (${firstLine(c.stderr)}); kept`);
      }
      const tool = this.#tool(family);
      const r = await runCommand([...this.prefix, tool, "-w", "-S"]);
      if (r.code !== 0) {
        this.report(`${tool} -S failed: ${firstLine(r.stderr)}`);
        return null;
      }
      const found = parseIptablesRules(r.stdout, family);
      legacy.push(...found.bans);
      // Declaring the chain creates it, or empties it of the rules of the iptables backend.
      const lines = [
        `:${IPT_CHAIN} - [0:0]`,
        `-A ${IPT_CHAIN} -m set --match-set ${name} src -j DROP`,
      ];
      for (const hook of this.managedHooks) {
        const chain = HOOK_CHAIN[hook];
        const have = hook === "input" ? found.jumps : found.forwardJumps;
        const want = this.hooks.includes(hook) ? 1 : 0;
        if (have === 0 && want === 1) lines.push(`-I ${chain} 1 -j ${IPT_CHAIN}`);
        for (let i = want; i < have; i++) lines.push(`-D ${chain} -j ${IPT_CHAIN}`);
      }
      const w = await runCommand(
        [...this.prefix, `${tool}-restore`, "--noflush"],
        `*filter\n${lines.join("\n")}\nCOMMIT\n`,
      );
      if (w.code !== 0) {
        this.report(
          `${tool}-restore (chain ${IPT_CHAIN} for ${name}) failed: ${firstLine(w.stderr)}`,
        );
        return null;
      }
    }
    return legacy;
  }

  /**
   * Re-reads the sets (`ipset save`) and the chain (`iptables -S`): a set,
   * chain, match rule or jump removed from outside is put back; the sets'
   * members become this object's copy.
   */
  async reconcile(): Promise<KernelState | null> {
    try {
      const readAt = performance.now();
      const missing: string[] = [];
      const found: Ban[] = [];
      for (const family of [4, 6] as const) {
        const name = IPSET_NAMES[family];
        const r = await runCommand([...this.prefix, "ipset", "save", name]);
        if (r.code !== 0) missing.push(`set ${name}`);
        else found.push(...parseIpsetSave(r.stdout, family));
        const tool = this.#tool(family);
        const t = await runCommand([...this.prefix, tool, "-w", "-S"]);
        if (t.code !== 0) {
          this.report(`${tool} -S failed: ${firstLine(t.stderr)}`);
          return null;
        }
        const k = parseIptablesRules(t.stdout, family);
        const match = `-A ${IPT_CHAIN} -m set --match-set ${name} src -j DROP`;
        if (!k.hasChain || !t.stdout.split("\n").some((l) => l.trim() === match)) {
          missing.push(`${tool} chain ${IPT_CHAIN}`);
        }
        for (const hook of this.hooks) {
          if ((hook === "input" ? k.jumps : k.forwardJumps) !== 1) {
            missing.push(`${tool} ${HOOK_CHAIN[hook]} jump`);
          }
        }
      }
      if (missing.length > 0) {
        this.#ready = null;
        if ((await this.#setup()) === null) return null;
      }
      return { bans: this.takeKernelList(found, readAt), repaired: missing };
    } catch (e) {
      this.report(`ipset reconcile failed: ${errorText(e)}`);
      return null;
    }
  }

  override fastPath(banTimeSeconds: number, room: number): FastBan | null {
    if (this.path !== "netlink") return null;
    return { ipset: { ...IPSET_NAMES }, banTimeMs: banTimeSeconds * 1000, room };
  }

  override describePath(): string {
    return this.path;
  }

  async init(): Promise<Ban[]> {
    try {
      const legacy = await this.#setup();
      if (legacy === null) return [];
      const now = Date.now();
      const move = legacy.filter((b) => !this.expired(b, now));
      if (move.length > 0) {
        const err = await this.#change(move, true);
        if (err) this.report(`ipset: moving ${move.length} iptables rules into the sets: ${err}`);
      }
      const found: Ban[] = [];
      for (const family of [4, 6] as const) {
        const r = await runCommand([...this.prefix, "ipset", "save", IPSET_NAMES[family]]);
        if (r.code !== 0) {
          this.report(`ipset save ${IPSET_NAMES[family]} failed: ${firstLine(r.stderr)}`);
          continue;
        }
        found.push(...parseIpsetSave(r.stdout, family, now));
      }
      this.bans.clear();
      const live: Ban[] = [];
      for (const b of found) {
        if (this.refusedAtRestore(b) === null) {
          this.bans.set(b.address, b);
          live.push(b);
        } else this.enqueue(false, b);
      }
      this.#useNetlink();
      return live.map((b) => ({ ...b }));
    } catch (e) {
      this.report(`ipset init failed: ${errorText(e)}`);
      return [];
    }
  }

  /** Adds or deletes `bans` in their sets; null, or the first error. */
  async #change(bans: readonly Ban[], add: boolean): Promise<string | null> {
    const now = Date.now();
    const per: Record<Family, SetElement[]> = { 4: [], 6: [] };
    for (const b of bans) {
      const a = parseAddress(b.address, true);
      if (!a) return `not an address: ${b.address}`;
      const timeoutMs = add && b.expiresAt !== null ? Math.max(1000, b.expiresAt - now) : 0;
      per[a.family].push({ key: a.bytes, timeoutMs });
    }
    const nl = this.#useNetlink();
    for (const family of [4, 6] as const) {
      const els = per[family];
      if (els.length === 0) continue;
      const name = IPSET_NAMES[family];
      if (nl) {
        const err = nl.ipset(name, els, !add);
        if (err !== null) return `${err} (netlink, set ${name})`;
        continue;
      }
      const lines = bans.filter((b) => b.family === family).map((b) =>
        add
          ? `add ${name} ${b.address} timeout ${
            b.expiresAt === null ? 0 : Math.max(1, Math.ceil((b.expiresAt - now) / 1000))
          }`
          : `del ${name} ${b.address}`
      );
      const r = await runCommand(
        [...this.prefix, "ipset", "-exist", "restore"],
        lines.join("\n") + "\n",
      );
      if (r.code !== 0) return `ipset restore: ${firstLine(r.stderr)}`;
    }
    return null;
  }

  protected override canApplyNow(_ban: Ban): boolean {
    return this.#ready !== null && this.#useNetlink() !== null;
  }

  protected override applyNow(ban: Ban): boolean {
    const nl = this.#useNetlink();
    const a = parseAddress(ban.address, true);
    if (!nl || !a) return false;
    const timeoutMs = ban.expiresAt === null ? 0 : Math.max(1000, ban.expiresAt - Date.now());
    const err = nl.ipset(IPSET_NAMES[a.family], [{ key: a.bytes, timeoutMs }]);
    if (err === null) return true;
    this.#ready = null; // set up again before the next ban
    this.report(`ipset add ${IPSET_NAMES[a.family]} ${ban.address}: ${err}`);
    return false;
  }

  protected async apply(ops: Op[]): Promise<void> {
    if ((await this.#setup()) === null) {
      for (const op of ops) op.done(false);
      return;
    }
    for (const add of [true, false]) {
      const mine = ops.filter((o) => o.add === add);
      if (mine.length === 0) continue;
      const err = await this.#change(mine.map((o) => o.ban), add);
      if (err === null) {
        for (const op of mine) op.done(true);
        continue;
      }
      // One refused element fails the report of all: find out which, one by one.
      let first = err;
      for (const op of mine) {
        const e = await this.#change([op.ban], add);
        if (e !== null) first = e;
        op.done(e === null);
        if (e !== null) {
          this.report(`ipset ${add ? "add" : "del"} ${op.ban.address}: ${first}`);
        }
      }
      if (/No such file|does not exist/i.test(first)) this.#ready = null;
    }
  }

  async flush(): Promise<void> {
    try {
      await this.drain();
      this.bans.clear();
      this.#ready = null;
      for (const family of [4, 6] as const) {
        const tool = this.#tool(family);
        const r = await runCommand([...this.prefix, tool, "-w", "-S"]);
        if (r.code === 0) {
          const found = parseIptablesRules(r.stdout, family);
          const lines: string[] = [];
          for (let i = 0; i < found.jumps; i++) lines.push(`-D INPUT -j ${IPT_CHAIN}`);
          for (let i = 0; i < found.forwardJumps; i++) lines.push(`-D FORWARD -j ${IPT_CHAIN}`);
          if (found.hasChain) lines.push(`-F ${IPT_CHAIN}`, `-X ${IPT_CHAIN}`);
          if (lines.length > 0) {
            const w = await runCommand(
              [...this.prefix, `${tool}-restore`, "--noflush"],
              `*filter\n${lines.join("\n")}\nCOMMIT\n`,
            );
            if (w.code !== 0) this.report(`${tool}-restore (flush) failed: ${firstLine(w.stderr)}`);
          }
        } else this.report(`${tool} -S failed: ${firstLine(r.stderr)}`);
        const name = IPSET_NAMES[family];
        const d = await runCommand([...this.prefix, "ipset", "destroy", name]);
        if (d.code !== 0 && !/does not exist/.test(d.stderr)) {
          this.report(`ipset destroy ${name} failed: ${firstLine(d.stderr)}`);
        }
      }
    } catch (e) {
      this.report(`ipset flush failed: ${errorText(e)}`);
    }
  }

  async close(): Promise<void> {
    try {
      await this.drain();
      this.#netlink?.close();
      this.#netlink = null;
      this.#netlinkTried = false;
    } catch (e) {
      this.report(`ipset close failed: ${errorText(e)}`);
    }
  }
}
