/**
 * The iptables backend: chain SCANBLOCKER in the filter table (iptables and
 * ip6tables), jumped to from the top of INPUT, one DROP rule per banned source
 * whose comment holds its expiry. With the "forward" hook FORWARD jumps to it
 * too (once; a restart without it removes that jump). Changes go through a long-lived
 * `iptables-restore --noflush` per family. It prints nothing on success, so
 * each block is followed by a second one flushing the empty chain
 * SCANBLOCKER-SYNC with -v: the "Flushing chain" line it prints (stdout made
 * line-buffered by stdbuf) can only come once the first COMMIT went through.
 * At its first error the process exits; the runner reports it and starts a
 * new one for the next block. A timer removes expired bans.
 *
 * Faster path for bans (iptables-nft, the program in the firewall's own
 * namespace): at init iptables-restore writes two template rules into
 * SCANBLOCKER-SYNC (never jumped to, flushed right after), the kernel lists
 * them back over netlink, and each ban then appends a copy with another
 * source address and expiry to SCANBLOCKER in one netlink transaction
 * (~0.06 ms, against ~0.7 ms through iptables-restore and its marker). The
 * copy is the rule iptables itself writes, byte for byte, so `iptables -S`
 * shows it and `iptables -D` removes it as usual; a probe copy is read back
 * with `iptables -S` at init before the path is used. With iptables-legacy,
 * a commandPrefix, or any mismatch, bans go through iptables-restore.
 */
import type { Ban, Family, FastBan, KernelState } from "../types.ts";
import { canonicalTarget, parseAddress } from "../address.ts";
import {
  NFPROTO_IPV4,
  NFPROTO_IPV6,
  NftSocket,
  type RuleTemplate,
  ruleTemplate,
} from "../../ffi/nfnetlink.ts";
import { expiryDigits } from "./fastpath.ts";
import { KernelGeneration } from "./generation.ts";
import { iptBumpRemoval } from "./bump_ipt.ts";
import { BaseFirewall, type FirewallHook, type FirewallOptions, type Op } from "./base.ts";
import { type Deferred, deferred, errorText, firstLine, Helper, runCommand } from "./runner.ts";

/** The chain holding the DROP rules. */
export const IPT_CHAIN = "SCANBLOCKER";
/** The always-empty chain flushed as a confirmation marker. */
export const IPT_SYNC_CHAIN = "SCANBLOCKER-SYNC";
const SYNC_LINE = `Flushing chain \`${IPT_SYNC_CHAIN}'`;
/** Rules per block, so one block stays a reasonable transaction. */
const CHUNK = 5000;
/** Longest wait for a block's confirmation before the process is restarted. */
const CONFIRM_MS = 30_000;

/** Source addresses of the template and probe rules (documentation ranges, in SCANBLOCKER-SYNC only). */
const TEMPLATE_ADDRESSES: Record<Family, { expiring: string; never: string; probe: string }> = {
  4: { expiring: "192.0.2.123", never: "192.0.2.125", probe: "192.0.2.124" },
  6: { expiring: "2001:db8::7b", never: "2001:db8::7d", probe: "2001:db8::7c" },
};
/** Expiries of the template and probe rules: ten digits, as every expiry until 2286. */
const TEMPLATE_EXPIRY = 1999999999;
const PROBE_EXPIRY = 1888888888;

/**
 * Bans held beyond which a ban no longer takes the netlink path: the kernel
 * rebuilds the chain on every change, about 1 µs per rule held (0.9 ms at
 * 1,000 rules, 54 ms at 50,000; measured), and one rule per transaction
 * would then block the capture thread for long. iptables-restore on the main
 * thread batches them instead.
 */
export const NETLINK_MAX_RULES = 1000;

/** The two rules a ban appends over netlink: with an expiry, and until removed. */
export interface IptablesRules {
  expiring: RuleTemplate;
  never: RuleTemplate;
}

/** Comment text carrying a ban's expiry. */
export function expiryComment(expiresAt: number | null): string {
  return `scanblocker expires=${expiresAt === null ? "never" : Math.floor(expiresAt / 1000)}`;
}

/** The rule spec (after `-A`/`-D SCANBLOCKER`) of one ban. */
export function banRuleSpec(ban: Ban): string {
  // A block (CIDR text) is already masked; one address gets its host length.
  const host = ban.address.includes("/") ? "" : ban.family === 4 ? "/32" : "/128";
  return `-s ${ban.address}${host} -m comment --comment "${expiryComment(ban.expiresAt)}" -j DROP`;
}

const RULE_RE =
  /^-A SCANBLOCKER -s (\S+?)(?:\/(?:32|128))? -m comment --comment "?scanblocker expires=(never|\d+)"? -j DROP$/;

/** The built-in chain that jumps to SCANBLOCKER for each hook. */
const HOOK_CHAIN: Record<FirewallHook, string> = { input: "INPUT", forward: "FORWARD" };

/** Reads `iptables -S` output: our bans, whether the chains exist, the jumps per hook. */
export function parseIptablesRules(
  text: string,
  family: Family,
): {
  bans: Ban[];
  hasChain: boolean;
  hasSync: boolean;
  jumps: number;
  forwardJumps: number;
} {
  const bans: Ban[] = [];
  let hasChain = false, hasSync = false, jumps = 0, forwardJumps = 0;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === `-N ${IPT_CHAIN}`) hasChain = true;
    else if (line === `-N ${IPT_SYNC_CHAIN}`) hasSync = true;
    else if (line === `-A INPUT -j ${IPT_CHAIN}`) jumps++;
    else if (line === `-A FORWARD -j ${IPT_CHAIN}`) forwardJumps++;
    else {
      const m = RULE_RE.exec(line);
      if (!m) continue;
      // As the kernel holds it: a mapped address in ip6tables stays IPv6.
      const address = canonicalTarget(m[1], true);
      if (!address) continue;
      bans.push({ address, family, expiresAt: m[2] === "never" ? null : Number(m[2]) * 1000 });
    }
  }
  return { bans, hasChain, hasSync, jumps, forwardJumps };
}

/**
 * One family's long-lived iptables-restore: each block is followed by a
 * flush of the empty SCANBLOCKER-SYNC chain, whose "Flushing chain" line
 * (with -v) confirms it. Exported for its tests (a fake slow helper).
 */
export class RestoreRunner {
  /** The current process and what it owes; a replaced one keeps its own object. */
  #gen: Generation | null = null;
  /** First line of what the last process said before it ended (or why it could not start). */
  #lastError = "";

  /** `confirmMs`: longest wait for a block's confirmation before the process is replaced. */
  constructor(
    readonly tool: string,
    private readonly argv: string[],
    private readonly confirmMs = CONFIRM_MS,
  ) {}

  /**
   * The running process, or a new one. Its events touch only its own
   * generation: a marker answers the oldest block written to that process,
   * its exit fails that process's blocks, and nothing of a replaced process
   * reaches the blocks of the next one.
   */
  #start(): Generation | null {
    if (this.#gen?.helper.alive && !this.#gen.retired) return this.#gen;
    // deno-lint-ignore prefer-const -- assigned once the helper exists; its events read it later
    let gen: Generation;
    const helper = new Helper(this.argv, {
      onLine: (line) => {
        if (line.startsWith(SYNC_LINE) && !gen.retired) gen.waits.shift()?.resolve(null);
      },
      onStderr: (text) => (gen.stderr += text),
      onExit: (code) => {
        if (this.#gen === gen) {
          this.#gen = null;
          this.#lastError = firstLine(gen.stderr);
        }
        const why = `exited with status ${code}: ${firstLine(gen.stderr)}`;
        for (const w of gen.waits.splice(0)) w.resolve(why);
      },
    });
    gen = { helper, waits: [], stderr: "", retired: false };
    this.#gen = gen;
    return gen.helper.start() ? gen : null;
  }

  /** Applies one block of rule lines; null when confirmed, else the error. */
  async apply(lines: string[]): Promise<string | null> {
    const gen = this.#start();
    if (!gen) return `cannot start: ${this.#lastError}`;
    const done = deferred<string | null>();
    gen.waits.push(done);
    const text = `*filter\n${lines.join("\n")}\nCOMMIT\n*filter\n-F ${IPT_SYNC_CHAIN} -v\nCOMMIT\n`;
    // A failed write means the process died before reading; its exit answers.
    await gen.helper.write(text);
    const timer = setTimeout(() => {
      if (!gen.waits.includes(done)) return;
      // Give up on this process: every block it still owes fails (a late
      // marker could no longer be told apart), and the next block gets a
      // fresh process.
      gen.retired = true;
      const why = `no confirmation within ${this.confirmMs / 1000} s`;
      for (const w of gen.waits.splice(0)) w.resolve(why);
      if (this.#gen === gen) this.#gen = null;
      gen.helper.stop();
    }, this.confirmMs);
    const result = await done.promise;
    clearTimeout(timer);
    return result;
  }

  async stop(): Promise<void> {
    const gen = this.#gen;
    this.#gen = null;
    await gen?.helper.stop();
  }
}

/** One iptables-restore process of a RestoreRunner and the blocks it has yet to confirm, oldest first. */
interface Generation {
  helper: Helper;
  waits: Deferred<string | null>[];
  stderr: string;
  /** Given up on after a timeout: its markers confirm nothing. */
  retired: boolean;
}

/** iptables backend; see the module comment. */
export class IptablesFirewall extends BaseFirewall {
  readonly #runners: Record<Family, RestoreRunner>;
  readonly #ready: Record<Family, Promise<boolean> | null> = { 4: null, 6: null };
  #timer: ReturnType<typeof setTimeout> | null = null;
  #nextExpiry = Infinity;
  /** The netlink path's rules per family; null when bans go through iptables-restore. */
  readonly #fast: Record<Family, IptablesRules | null> = { 4: null, 6: null };
  #netlink: NftSocket | null = null;
  /** Skips re-reading a kernel where nothing was committed since the last read. */
  readonly #generation = new KernelGeneration();
  /** Why the netlink path is not in use, per family (empty when it is). */
  readonly fastError: Record<Family, string> = { 4: "", 6: "" };

  /** `kind`: "iptables-rules" when named so, "iptables" as the default backend's fallback form. */
  constructor(
    opts: FirewallOptions,
    readonly kind: "iptables" | "iptables-rules" = "iptables-rules",
  ) {
    super(opts);
    this.#runners = {
      4: new RestoreRunner("iptables-restore", this.#restoreArgv(4)),
      6: new RestoreRunner("ip6tables-restore", this.#restoreArgv(6)),
    };
  }

  #tool(family: Family): string {
    return family === 4 ? "iptables" : "ip6tables";
  }

  #restoreArgv(family: Family): string[] {
    return [...this.prefix, "stdbuf", "-oL", `${this.#tool(family)}-restore`, "--noflush"];
  }

  /** Reads the table, creates the chains and one jump per wanted hook (dropping unwanted ones); returns the bans found. */
  async #setup(family: Family): Promise<Ban[] | null> {
    const tool = this.#tool(family);
    const r = await runCommand([...this.prefix, tool, "-w", "-S"]);
    if (r.code !== 0) {
      this.report(`${tool} -S failed: ${firstLine(r.stderr)}`);
      return null;
    }
    const found = parseIptablesRules(r.stdout, family);
    const lines: string[] = [];
    if (!found.hasChain) lines.push(`-N ${IPT_CHAIN}`);
    if (!found.hasSync) lines.push(`-N ${IPT_SYNC_CHAIN}`);
    // The ipset form's speed bump, left by an earlier run: this form has none to keep current.
    lines.push(...iptBumpRemoval(r.stdout));
    for (const hook of this.managedHooks) {
      const chain = HOOK_CHAIN[hook];
      const have = hook === "input" ? found.jumps : found.forwardJumps;
      const want = this.hooks.includes(hook) ? 1 : 0;
      if (have === 0 && want === 1) lines.push(`-I ${chain} 1 -j ${IPT_CHAIN}`);
      for (let i = want; i < have; i++) lines.push(`-D ${chain} -j ${IPT_CHAIN}`);
    }
    if (lines.length > 0) {
      const w = await runCommand(
        [...this.prefix, `${tool}-restore`, "--noflush"],
        `*filter\n${lines.join("\n")}\nCOMMIT\n`,
      );
      if (w.code !== 0) {
        this.report(`${tool}-restore (create chain ${IPT_CHAIN}) failed: ${firstLine(w.stderr)}`);
        return null;
      }
    }
    return found.bans;
  }

  #ensure(family: Family): Promise<boolean> {
    let p = this.#ready[family];
    if (!p) {
      p = this.#setup(family).then(async (bans) => {
        if (bans === null) return false;
        // After a netlink failure (a chain deleted underneath): the path again.
        this.#fast[family] ??= await this.#prepareFast(family);
        return true;
      });
      p.then((ok) => {
        if (!ok) this.#ready[family] = null;
      });
      this.#ready[family] = p;
    }
    return p;
  }

  /**
   * Sets up the netlink path of one family (see the module comment): the
   * template rules, or null with the reason in fastError. The rules are left
   * in SCANBLOCKER-SYNC for the runner's first marker to flush.
   */
  async #prepareFast(family: Family): Promise<IptablesRules | null> {
    const no = (why: string) => {
      this.fastError[family] = why;
      return null;
    };
    if (this.prefix.length > 0) return no("commands run in another namespace");
    const tool = this.#tool(family);
    const addr = TEMPLATE_ADDRESSES[family];
    const spec = (address: string, expiry: number | null) =>
      banRuleSpec({ address, family, expiresAt: expiry === null ? null : expiry * 1000 });
    const w = await runCommand(
      [...this.prefix, `${tool}-restore`, "--noflush"],
      `*filter\n-F ${IPT_SYNC_CHAIN}\n-A ${IPT_SYNC_CHAIN} ${
        spec(addr.expiring, TEMPLATE_EXPIRY)
      }\n` +
        `-A ${IPT_SYNC_CHAIN} ${spec(addr.never, null)}\nCOMMIT\n`,
    );
    if (w.code !== 0) return no(`${tool}-restore (template rules): ${firstLine(w.stderr)}`);
    try {
      this.#netlink ??= new NftSocket();
    } catch (e) {
      return no(errorText(e));
    }
    const nl = this.#netlink;
    const nfFamily = family === 4 ? NFPROTO_IPV4 : NFPROTO_IPV6;
    const rules = nl.rules(nfFamily, "filter", IPT_SYNC_CHAIN);
    if (typeof rules === "string") {
      return no(`${tool} is not iptables-nft (nf_tables has no chain ${IPT_SYNC_CHAIN}: ${rules})`);
    }
    const where = { family: nfFamily, table: "filter", chain: IPT_CHAIN };
    const template = (address: string, text: string | null): RuleTemplate | string => {
      const key = parseAddress(address, true)!.bytes;
      let why = `no rule for ${address}`;
      for (const r of rules) {
        const t = ruleTemplate(r, where, key, text);
        if (typeof t !== "string") return t;
        if (!t.startsWith("address not found")) why = t; // this rule, but not as expected
      }
      return why;
    };
    const expiring = template(addr.expiring, String(TEMPLATE_EXPIRY));
    const never = template(addr.never, null);
    if (typeof expiring === "string") return no(`template rule: ${expiring}`);
    if (typeof never === "string") return no(`template rule: ${never}`);
    // A probe copy of each, read back with iptables -S: the path is used only if iptables sees exactly its own rule.
    const probe = parseAddress(addr.probe)!.bytes;
    for (const [t, text] of [[expiring, String(PROBE_EXPIRY)], [never, null]] as const) {
      const err = nl.addRule({ ...t, chain: IPT_SYNC_CHAIN }, probe, text);
      if (err !== null) return no(`netlink probe rule: ${err}`);
    }
    const r = await runCommand([...this.prefix, tool, "-w", "-S", IPT_SYNC_CHAIN]);
    const want = [
      `-A ${IPT_SYNC_CHAIN} ${spec(addr.probe, PROBE_EXPIRY)}`,
      `-A ${IPT_SYNC_CHAIN} ${spec(addr.probe, null)}`,
    ];
    const seen = r.stdout.split("\n").map((l) => l.trim());
    const missing = want.find((l) => !seen.includes(l));
    if (r.code !== 0 || missing) {
      return no(
        `${tool} -S does not show the netlink probe rule as written (${
          missing ?? firstLine(r.stderr)
        })`,
      );
    }
    this.fastError[family] = "";
    return { expiring, never };
  }

  /**
   * The rules the capture worker appends itself, per family, for bans with
   * an expiry (or until removed); null when neither family has the netlink path.
   */
  fastRules(expiring: boolean): Record<Family, RuleTemplate | null> | null {
    const pick = (f: Family) => this.#fast[f]?.[expiring ? "expiring" : "never"] ?? null;
    const rules = { 4: pick(4), 6: pick(6) };
    return rules[4] || rules[6] ? rules : null;
  }

  /**
   * Re-reads both families with `iptables -S` / `ip6tables -S`, puts back a
   * chain or jump removed from outside, and takes the kernel's list of bans.
   */
  async reconcile(): Promise<KernelState | null> {
    try {
      const readAt = performance.now();
      // With iptables-nft on both families (the netlink path proved it), a
      // kernel where nothing was committed since the last read keeps its list.
      const nft = this.#fast[4] !== null && this.#fast[6] !== null && this.prefix.length === 0;
      const gen = nft ? this.#generation.current() : null;
      if (this.#generation.unchanged(gen)) return { bans: [], repaired: [], unchanged: true };
      const found: Ban[] = [];
      const repaired: string[] = [];
      for (const family of [4, 6] as const) {
        const tool = this.#tool(family);
        const r = await runCommand([...this.prefix, tool, "-w", "-S"]);
        if (r.code !== 0) {
          this.report(`${tool} -S failed: ${firstLine(r.stderr)}`);
          return null;
        }
        const k = parseIptablesRules(r.stdout, family);
        found.push(...k.bans);
        const missing: string[] = [];
        if (!k.hasChain) missing.push(`chain ${IPT_CHAIN}`);
        for (const hook of this.hooks) {
          const n = hook === "input" ? k.jumps : k.forwardJumps;
          if (n !== 1) missing.push(`${HOOK_CHAIN[hook]} jump`);
        }
        if (missing.length === 0) continue;
        this.#ready[family] = null;
        if (!(await this.#ensure(family))) return null;
        repaired.push(...missing.map((m) => `${tool} ${m}`));
      }
      if (repaired.length === 0) this.#generation.took(gen);
      else this.#generation.forget();
      const bans = this.takeKernelList(found, readAt);
      for (const b of bans) this.added(b);
      return { bans, repaired };
    } catch (e) {
      this.report(`iptables reconcile failed: ${errorText(e)}`);
      return null;
    }
  }

  override fastPath(banTimeSeconds: number, room: number): FastBan | null {
    const rules = this.fastRules(banTimeSeconds > 0);
    return rules ? { rules, banTimeMs: banTimeSeconds * 1000, room } : null;
  }

  override get fastLimit(): number {
    return NETLINK_MAX_RULES;
  }

  override describePath(): string {
    if (this.path(4) === "netlink") {
      return this.path(6) === "netlink" ? "netlink" : "netlink (IPv4 only)";
    }
    return `iptables-restore (${this.fastError[4] || "not set up"})`;
  }

  /** "netlink" when bans of this family skip iptables-restore. */
  path(family: Family): "netlink" | "iptables-restore" {
    return this.#fast[family] ? "netlink" : "iptables-restore";
  }

  protected override canApplyNow(ban: Ban): boolean {
    const text = expiryDigits(ban.expiresAt);
    // The netlink template matches one address; a block goes through iptables-restore.
    return !ban.address.includes("/") && this.#fast[ban.family] !== null &&
      this.#ready[ban.family] !== null &&
      this.bans.size < NETLINK_MAX_RULES &&
      (text === null || text.length === String(TEMPLATE_EXPIRY).length);
  }

  protected override applyNow(ban: Ban): boolean | null {
    const rules = this.#fast[ban.family], nl = this.#netlink;
    const parsed = parseAddress(ban.address, true);
    if (!rules || !nl || !parsed) return null;
    const text = expiryDigits(ban.expiresAt);
    const err = nl.addRule(text === null ? rules.never : rules.expiring, parsed.bytes, text);
    if (err === null) return true;
    // Hand this ban to iptables-restore, which re-creates the chains (and this path).
    this.#fast[ban.family] = null;
    this.#ready[ban.family] = null;
    this.fastError[ban.family] = err;
    this.report(
      `${this.#tool(ban.family)} (netlink) -A ${IPT_CHAIN} ${ban.address}: ${err}; handing it to ${
        this.#tool(ban.family)
      }-restore`,
    );
    return null;
  }

  async init(): Promise<Ban[]> {
    try {
      const found: Ban[] = [];
      for (const family of [4, 6] as const) {
        const bans = await this.#setup(family);
        // After a failure the next ban tries again (and reports again).
        this.#ready[family] = bans ? Promise.resolve(true) : null;
        if (bans) {
          found.push(...bans);
          this.#fast[family] = await this.#prepareFast(family);
          // Start the long-lived iptables-restore now: spawning it at the
          // first ban costs 5–15 ms, time in which nmap -T4 learns every port.
          const err = await this.#runners[family].apply([]);
          if (err) this.report(`${this.#tool(family)}-restore: ${err}`);
        }
      }
      this.bans.clear();
      const now = Date.now();
      const live: Ban[] = [];
      const stale: Ban[] = [];
      for (const b of found) {
        if (this.bans.has(b.address) || this.refusedAtRestore(b) !== null) {
          stale.push(b); // a duplicate rule, or a protected address: remove it
          continue;
        }
        this.bans.set(b.address, b);
        if (this.expired(b, now)) stale.push(b);
        else live.push(b);
      }
      for (const b of stale) {
        this.enqueue(false, b).then((ok) => {
          if (ok && this.bans.get(b.address) === b) this.bans.delete(b.address);
        });
      }
      for (const b of live) this.added(b);
      return live.map((b) => ({ ...b }));
    } catch (e) {
      this.report(`iptables init failed: ${String(e)}`);
      return [];
    }
  }

  protected override added(ban: Ban): void {
    if (ban.expiresAt === null || ban.expiresAt >= this.#nextExpiry) return;
    this.#nextExpiry = ban.expiresAt;
    this.#schedule();
  }

  #schedule(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#nextExpiry === Infinity) return;
    const delay = Math.max(20, this.#nextExpiry - Date.now());
    const t = setTimeout(() => this.#sweep(), Math.min(delay, 2 ** 31 - 1));
    Deno.unrefTimer(t);
    this.#timer = t;
  }

  #sweep(): void {
    this.#timer = null;
    const now = Date.now();
    let next = Infinity;
    for (const b of this.bans.values()) {
      if (b.expiresAt === null) continue;
      if (b.expiresAt <= now) {
        this.enqueue(false, b).then((ok) => {
          if (ok && this.bans.get(b.address) === b) this.bans.delete(b.address);
        });
      } else if (b.expiresAt < next) next = b.expiresAt;
    }
    this.#nextExpiry = next;
    this.#schedule();
  }

  protected async apply(ops: Op[]): Promise<void> {
    const work: Promise<void>[] = [];
    for (const family of [4, 6] as const) {
      const mine = ops.filter((o) => o.ban.family === family);
      if (mine.length > 0) work.push(this.#applyFamily(family, mine));
    }
    await Promise.all(work);
  }

  async #applyFamily(family: Family, ops: Op[]): Promise<void> {
    if (!(await this.#ensure(family))) {
      for (const op of ops) op.done(false);
      return;
    }
    const adds = ops.filter((o) => o.add);
    const dels = ops.filter((o) => !o.add);
    for (let i = 0; i < adds.length; i += CHUNK) {
      await this.#block(family, adds.slice(i, i + CHUNK), true, false);
    }
    if (dels.length > 0) {
      // One rule already gone fails a whole block; retry the rest one by one.
      const left = await this.#block(family, dels, false, dels.length > 1);
      for (const op of left) await this.#block(family, [op], false, false);
    }
  }

  async #block(family: Family, ops: Op[], add: boolean, keep: boolean): Promise<Op[]> {
    const verb = add ? "-A" : "-D";
    const lines = ops.map((o) => `${verb} ${IPT_CHAIN} ${banRuleSpec(o.ban)}`);
    const err = await this.#runners[family].apply(lines);
    if (err === null) {
      for (const op of ops) op.done(true);
      return [];
    }
    if (keep) return ops;
    this.#ready[family] = null; // re-check the chains before the next block
    const tool = `${this.#tool(family)}-restore`;
    const first = ops[0].ban.address + (ops.length > 1 ? ` and ${ops.length - 1} more` : "");
    this.report(`${tool} ${verb} ${IPT_CHAIN} ${first}: ${err}`);
    for (const op of ops) op.done(false);
    return [];
  }

  async flush(): Promise<void> {
    try {
      await this.drain();
      if (this.#timer !== null) clearTimeout(this.#timer);
      this.#timer = null;
      this.#nextExpiry = Infinity;
      this.bans.clear();
      this.#fast[4] = this.#fast[6] = null;
      for (const family of [4, 6] as const) {
        await this.#runners[family].stop();
        this.#ready[family] = null;
        const tool = this.#tool(family);
        const r = await runCommand([...this.prefix, tool, "-w", "-S"]);
        if (r.code !== 0) {
          this.report(`${tool} -S failed: ${firstLine(r.stderr)}`);
          continue;
        }
        const found = parseIptablesRules(r.stdout, family);
        const lines: string[] = [];
        for (let i = 0; i < found.jumps; i++) lines.push(`-D INPUT -j ${IPT_CHAIN}`);
        for (let i = 0; i < found.forwardJumps; i++) lines.push(`-D FORWARD -j ${IPT_CHAIN}`);
        if (found.hasChain) lines.push(`-F ${IPT_CHAIN}`, `-X ${IPT_CHAIN}`);
        if (found.hasSync) lines.push(`-F ${IPT_SYNC_CHAIN}`, `-X ${IPT_SYNC_CHAIN}`);
        lines.push(...iptBumpRemoval(r.stdout));
        if (lines.length === 0) continue;
        const w = await runCommand(
          [...this.prefix, `${tool}-restore`, "--noflush"],
          `*filter\n${lines.join("\n")}\nCOMMIT\n`,
        );
        if (w.code !== 0) this.report(`${tool}-restore (flush) failed: ${firstLine(w.stderr)}`);
      }
    } catch (e) {
      this.report(`iptables flush failed: ${String(e)}`);
    }
  }

  async close(): Promise<void> {
    try {
      await this.drain();
      if (this.#timer !== null) clearTimeout(this.#timer);
      this.#timer = null;
      await this.#runners[4].stop();
      await this.#runners[6].stop();
      this.#fast[4] = this.#fast[6] = null;
      this.#netlink?.close();
      this.#netlink = null;
      this.#generation.close();
    } catch (e) {
      this.report(`iptables close failed: ${String(e)}`);
    }
  }
}
