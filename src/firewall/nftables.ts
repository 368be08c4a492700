/**
 * The nftables backend: table `inet scanblocker` with the sets `banned4` and
 * `banned6` (flags timeout, so the kernel expires bans) and a base chain on the
 * input hook (and, with the "forward" hook, one on the forward hook) dropping
 * their members. Bans go through one long-lived `nft -i`
 * fed over stdin: each line is one transaction that also sets the one element
 * of the `marks` set to a fresh number, and the `list set` line after it
 * shows whether that number (so the whole transaction) is in place. (`nft -e`
 * would echo each command, but echo makes nft fetch every set element per
 * command: 170 ms per ban with 50,000 bans held, against 0.4 ms this way.)
 *
 * Faster path: when no commandPrefix is set (the program runs in the
 * namespace it guards) and libnftables loads, every command instead goes
 * through the library in this process (ffi/libnftables.ts): a zero return is
 * the kernel's confirmation, about 0.06 ms per ban whether the sets are empty
 * or hold 50,000 elements. The `nft -i` runner stays as the fallback.
 */
import type { Ban, Family, FastBan, KernelState } from "../types.ts";
import { canonicalTarget } from "../address.ts";
import { BaseFirewall, type FirewallHook, type FirewallOptions, type Op } from "./base.ts";
import {
  type CommandResult,
  type Deferred,
  deferred,
  errorText,
  firstLine,
  Helper,
  runCommand,
} from "./runner.ts";
import { NftContext } from "../../ffi/libnftables.ts";
import { NftSocket, type SetElement } from "../../ffi/nfnetlink.ts";
import { parseAddress } from "../address.ts";
import { KernelGeneration } from "./generation.ts";
import type { BumpConfig, BumpState } from "./bump.ts";
import { bumpListsKey, bumpRulesKey, bumpWhat } from "./bump.ts";
import {
  NFT_BUMP_CHAIN,
  NFT_BUMP_PRIORITY,
  nftBumpLists,
  nftBumpRemoval,
  nftBumpRules,
  nftBumpSetup,
} from "./bump_nft.ts";

/** Table name, family included. */
export const NFT_TABLE = "inet scanblocker";
/** Elements per transaction on the text paths (ffi/nfnetlink.ts splits its own batches). */
const CHUNK = 4096;
/** How long stderr must stay quiet before an error is complete. */
const ERR_SETTLE_MS = 15;
/** Longest wait for a transaction's confirmation before nft is restarted. */
const CONFIRM_MS = 10_000;

/**
 * The set-up transaction: table, sets, and one base chain per wanted hook
 * (named after it) dropping the sets' members. A chain for a managed hook no
 * longer wanted is created-then-deleted, which removes it whether it existed
 * or not; hooks not in `managed` are left as found.
 */
export function nftSetup(
  hooks: readonly FirewallHook[],
  managed: readonly FirewallHook[] = ["input", "forward"],
): string {
  let text = `add table ${NFT_TABLE}
add set ${NFT_TABLE} banned4 { type ipv4_addr; flags timeout; }
add set ${NFT_TABLE} banned6 { type ipv6_addr; flags timeout; }
add set ${NFT_TABLE} nets4 { type ipv4_addr; flags interval, timeout; }
add set ${NFT_TABLE} nets6 { type ipv6_addr; flags interval, timeout; }
add set ${NFT_TABLE} marks { type mark; flags timeout; }
`;
  for (const hook of managed) {
    text += `add chain ${NFT_TABLE} ${hook} ` +
      `{ type filter hook ${hook} priority filter - 10; policy accept; }
flush chain ${NFT_TABLE} ${hook}
`;
    text += hooks.includes(hook)
      ? `add rule ${NFT_TABLE} ${hook} ip saddr @banned4 drop
add rule ${NFT_TABLE} ${hook} ip6 saddr @banned6 drop
add rule ${NFT_TABLE} ${hook} ip saddr @nets4 drop
add rule ${NFT_TABLE} ${hook} ip6 saddr @nets6 drop
`
      : `delete chain ${NFT_TABLE} ${hook}
`;
  }
  return text;
}

interface NftElemObject {
  elem?: { val?: unknown; timeout?: unknown; expires?: unknown };
}

/** An element's value as a ban target: an address string, or `{prefix: {addr, len}}` in the range sets. */
function elemTarget(val: unknown): string | null {
  // As the kernel holds it: a mapped address in banned6 stays IPv6.
  if (typeof val === "string") return canonicalTarget(val, true);
  const p = (val as { prefix?: { addr?: unknown; len?: unknown } } | null)?.prefix;
  if (p && typeof p.addr === "string" && typeof p.len === "number") {
    return canonicalTarget(`${p.addr}/${p.len}`);
  }
  return null;
}

/** The sets holding bans: one address each (banned4/6), or blocks (nets4/6, interval sets). */
const BAN_SET_NAMES = ["banned4", "banned6", "nets4", "nets6"];
const BAN_SETS: Record<string, Family> = { banned4: 4, banned6: 6, nets4: 4, nets6: 6 };

/** Reads `nft -j list table` output into bans; skips what it does not understand. */
export function parseNftBans(json: string, now = Date.now()): Ban[] {
  const out: Ban[] = [];
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch {
    return out;
  }
  const items = (doc as { nftables?: unknown }).nftables;
  if (!Array.isArray(items)) return out;
  for (const item of items) {
    const set = (item as { set?: { name?: unknown; elem?: unknown } }).set;
    const family = set && typeof set.name === "string" ? BAN_SETS[set.name] : undefined;
    if (!set || family === undefined) continue;
    if (!Array.isArray(set.elem)) continue;
    for (const e of set.elem) {
      const bare = elemTarget(e);
      if (bare) {
        out.push({ address: bare, family, expiresAt: null });
        continue;
      }
      const el = (e as NftElemObject).elem;
      const address = el ? elemTarget(el.val) : null;
      if (!el || !address) continue;
      const expires = typeof el.expires === "number" ? el.expires : null;
      const timeout = typeof el.timeout === "number" ? el.timeout : null;
      const left = expires ?? timeout;
      out.push({
        address,
        family,
        expiresAt: left === null ? null : Math.floor(now / 1000) * 1000 + left * 1000,
      });
    }
  }
  return out;
}

/**
 * What of the installed chains is missing in `nft -j list table` output: one
 * entry per wanted hook whose base chain is gone, on another hook or
 * priority, or no longer holds exactly the two rules dropping the sets'
 * members; "sets" when a set is gone; with the speed bump on (`bumpRules`
 * rules expected in its chain), "bump" when its chain is gone, moved or
 * holds other rules. Empty when all is in place.
 */
export function nftMissing(
  json: string,
  hooks: readonly FirewallHook[],
  bumpRules = 0,
): string[] {
  let items: unknown[] = [];
  try {
    const doc = JSON.parse(json) as { nftables?: unknown };
    if (Array.isArray(doc.nftables)) items = doc.nftables;
  } catch {
    return ["table"];
  }
  const chains = new Map<string, { hook?: unknown; prio?: unknown }>();
  const rules = new Map<string, string[]>();
  const sets = new Set<string>();
  for (const item of items) {
    const o = item as {
      chain?: { name?: unknown; hook?: unknown; prio?: unknown };
      rule?: { chain?: unknown };
      set?: { name?: unknown };
    };
    if (o.chain && typeof o.chain.name === "string") chains.set(o.chain.name, o.chain);
    if (o.rule && typeof o.rule.chain === "string") {
      const list = rules.get(o.rule.chain) ?? [];
      list.push(JSON.stringify(o.rule));
      rules.set(o.rule.chain, list);
    }
    if (o.set && typeof o.set.name === "string") sets.add(o.set.name);
  }
  const missing: string[] = [];
  if (!BAN_SET_NAMES.every((n) => sets.has(n))) missing.push("sets");
  for (const hook of hooks) {
    const c = chains.get(hook);
    const r = rules.get(hook) ?? [];
    const dropping = (set: string) =>
      r.some((t) => t.includes(`"@${set}"`) && t.includes('"drop"'));
    if (!c || c.hook !== hook || c.prio !== -10) missing.push(`${hook} chain`);
    else if (r.length !== BAN_SET_NAMES.length || !BAN_SET_NAMES.every(dropping)) {
      missing.push(`${hook} rules`);
    }
  }
  if (bumpRules > 0) {
    const c = chains.get(NFT_BUMP_CHAIN);
    const n = (rules.get(NFT_BUMP_CHAIN) ?? []).length;
    if (!c || c.hook !== "input" || c.prio !== NFT_BUMP_PRIORITY || n !== bumpRules) {
      missing.push("bump");
    }
  }
  return missing;
}

/** nftables backend; see the module comment. */
export class NftablesFirewall extends BaseFirewall {
  readonly kind = "nftables" as const;
  #helper: Helper | null = null;
  #ready: Promise<boolean> | null = null;

  protected override resetSetup(): void {
    this.#ready = null;
  }
  /** Random start: marks of an earlier instance may still be in the set. */
  #mark = crypto.getRandomValues(new Uint32Array(1))[0];
  #waiting: { mark: number; done: Deferred<string | null>; refused: boolean } | null = null;
  #block = "";
  #stderr = "";
  #errTimer: ReturnType<typeof setTimeout> | null = null;
  /** The in-process library path; null when not (yet) in use. */
  #lib: NftContext | null = null;
  #libTried = false;
  #libError = "";
  /** The netlink path for set elements (bans, unbans); null when not in use. */
  #netlink: NftSocket | null = null;
  #netlinkTried = false;
  /** Skips re-reading a kernel where nothing was committed since the last read. */
  readonly #generation = new KernelGeneration();
  /** The speed bump's settings (null: not asked for), its state and what is installed. */
  #bump: BumpConfig | null = null;
  #bumpState: BumpState | null = null;
  #bumpRules = "";
  #bumpLists = "";

  constructor(opts: FirewallOptions) {
    super(opts);
  }

  /**
   * Which path carries bans: "netlink" (set elements straight to the kernel,
   * the rest through libnftables), "libnftables" (in process) or "nft -i"
   * (child process).
   */
  get path(): "netlink" | "libnftables" | "nft -i" {
    return this.#useNetlink() ? "netlink" : this.#useLib() ? "libnftables" : "nft -i";
  }

  /** Why the library path is not in use (empty when it is, or was not tried). */
  get libError(): string {
    return this.#libError;
  }

  /** The library context, opened on first use; null with a commandPrefix or when it cannot load. */
  #useLib(): NftContext | null {
    if (this.#lib || this.#libTried || this.prefix.length > 0) return this.#lib;
    this.#libTried = true;
    try {
      this.#lib = new NftContext();
    } catch (e) {
      this.#libError = errorText(e);
    }
    return this.#lib;
  }

  /**
   * Bans and unbans go straight to the kernel over netlink when the library
   * path is in use (same process, same namespace): ~25 µs a ban.
   */
  #useNetlink(): NftSocket | null {
    if (this.#netlink || this.#netlinkTried || !this.#useLib()) return this.#netlink;
    this.#netlinkTried = true;
    try {
      this.#netlink = new NftSocket(NFT_TABLE.split(" ")[1]);
    } catch (e) {
      this.#libError = `netlink: ${errorText(e)}`;
    }
    return this.#netlink;
  }

  /** Runs an nft command line (argv after "nft", text for -f) on the current path. */
  async #command(args: string[], stdin?: string, json = false): Promise<CommandResult> {
    const lib = this.#useLib();
    if (!lib) return await runCommand(this.#nft(json ? ["-j", ...args] : args), stdin);
    const r = lib.run(stdin ?? args.join(" "), json);
    return { code: r.ok ? 0 : 1, stdout: r.output, stderr: r.error };
  }

  #nft(args: string[]): string[] {
    return [...this.prefix, "nft", ...args];
  }

  /** Creates the table, sets and chain (idempotent, one transaction). */
  #setup(): Promise<boolean> {
    if (!this.#ready) {
      this.#ready = (async () => {
        const r = await this.#command(["-f", "-"], nftSetup(this.hooks, this.managedHooks));
        if (r.code !== 0) {
          this.report(`nft -f - (create table ${NFT_TABLE}) failed: ${firstLine(r.stderr)}`);
          this.#ready = null;
          return false;
        }
        // The table may have been re-created (a repair): the bump with it.
        if (this.#bump) await this.#installBump(this.#bump);
        return true;
      })();
    }
    return this.#ready;
  }

  async init(): Promise<Ban[]> {
    try {
      if (!(await this.#setup())) return [];
      const r = await this.#command(["list", "table", ...NFT_TABLE.split(" ")], undefined, true);
      if (r.code !== 0) {
        this.report(`nft -j list table ${NFT_TABLE} failed: ${firstLine(r.stderr)}`);
        return [];
      }
      const found = parseNftBans(r.stdout);
      this.bans.clear();
      const bans: Ban[] = [];
      for (const b of found) {
        if (this.refusedAtRestore(b) === null) {
          this.bans.set(b.address, b);
          bans.push(b);
        } else this.enqueue(false, b); // fails with a line of its own if it cannot
      }
      const lib = this.#useLib();
      // Warm the path so the first ban is not the cold one.
      if (lib) this.#useNetlink()?.add("banned4", []);
      else this.#startHelper();
      return bans.map((b) => ({ ...b }));
    } catch (e) {
      this.report(`nftables init failed: ${String(e)}`);
      return [];
    }
  }

  /**
   * Re-reads the table from the kernel with `nft -j` in a child process (a
   * list of 65,536 elements would hold the event loop for long in the
   * library), puts back what was removed from outside, and takes the
   * kernel's list of bans. Skipped while nf_tables' generation has not moved
   * since the last read (see generation.ts): then that read's list stands.
   */
  async reconcile(): Promise<KernelState | null> {
    try {
      const readAt = performance.now();
      // Nothing committed in this namespace since the last read: its list stands.
      const gen = this.prefix.length === 0 ? this.#generation.current() : null;
      if (this.#generation.unchanged(gen)) return { bans: [], repaired: [], unchanged: true };
      const args = ["-j", "list", "table", ...NFT_TABLE.split(" ")];
      let r = await runCommand(this.#nft(args));
      const gone = r.code !== 0 && /No such file or directory/.test(r.stderr);
      if (r.code !== 0 && !gone) {
        this.report(`nft -j list table ${NFT_TABLE} failed: ${firstLine(r.stderr)}`);
        return null;
      }
      const bumpRules = this.#bumpState?.on && this.#bump ? nftBumpRules(this.#bump).length : 0;
      const missing = gone ? ["table"] : nftMissing(r.stdout, this.hooks, bumpRules);
      if (missing.length > 0) {
        this.#ready = null;
        if (!(await this.#setup())) return null;
        if (gone) r = { code: 0, stdout: "{}", stderr: "" };
      }
      const found = parseNftBans(r.stdout);
      // After a repair the generation moved again: the next read is a full one.
      if (missing.length === 0) this.#generation.took(gen);
      else this.#generation.forget();
      const bans = this.takeKernelList(found, readAt);
      return { bans, repaired: missing.map((m) => `nftables ${m}`) };
    } catch (e) {
      this.report(`nftables reconcile failed: ${errorText(e)}`);
      return null;
    }
  }

  override fastPath(banTimeSeconds: number, room: number): FastBan | null {
    if (this.path !== "netlink") return null;
    return { table: NFT_TABLE.split(" ")[1], banTimeMs: banTimeSeconds * 1000, room };
  }

  /**
   * The speed bump (bump.ts, bump_nft.ts): installed with the table (again
   * after every set-up: a repair or a reload), rebuilt when the threshold,
   * window or interface change, its exempt lists refilled when they change.
   */
  async setBump(c: BumpConfig | null): Promise<BumpState> {
    this.#bump = c;
    if (c === null) {
      // Off (say --detector psd): a bump an earlier run left must not hold back on its own.
      this.#bumpState = null;
      this.#bumpRules = this.#bumpLists = "";
      if (await this.#setup()) await this.#removeBump();
      return { on: false, why: "not asked for" };
    }
    if (!this.#ready) {
      if (!(await this.#setup())) return { on: false, why: "the table could not be set up" };
    } else if (bumpRulesKey(c) !== this.#bumpRules) await this.#installBump(c);
    else if (bumpListsKey(c) !== this.#bumpLists) {
      const r = await this.#command(["-f", "-"], nftBumpLists(NFT_TABLE, c));
      if (r.code === 0) this.#bumpLists = bumpListsKey(c);
      else this.report(`nft (speed bump exempt lists) failed: ${firstLine(r.stderr)}`);
    }
    return this.#bumpState ?? { on: false, why: "not installed" };
  }

  /** See Firewall.bumpState. */
  bumpState(): BumpState | null {
    return this.#bumpState;
  }

  /**
   * Deletes the bump's chain (nothing when there is none). A bump that
   * cannot be removed is a firewall error: left in place, it would go on
   * holding back new connections with old exempt lists.
   */
  async #removeBump(): Promise<void> {
    const r = await this.#command(["-f", "-"], nftBumpRemoval(NFT_TABLE));
    if (r.code !== 0) {
      this.report(`speed bump not removed: nftables refused it: ${firstLine(r.stderr)}`);
    }
  }

  /**
   * One transaction after the table's set-up; a refusal leaves the bump off,
   * never the bans, and is a firewall error when the bump was on (a repair
   * that could not put it back).
   */
  async #installBump(c: BumpConfig): Promise<void> {
    const r = await this.#command(["-f", "-"], nftBumpSetup(NFT_TABLE, c));
    if (r.code !== 0) {
      const why = `nftables refused it: ${firstLine(r.stderr)}`;
      if (this.#bumpState?.on) this.report(`speed bump not put back: ${why}`);
      this.#bumpState = { on: false, why };
      this.#bumpRules = "";
      // An older bump (other settings) must not go on holding back.
      await this.#removeBump();
      return;
    }
    this.#bumpRules = bumpRulesKey(c);
    this.#bumpLists = bumpListsKey(c);
    this.#bumpState = { on: true, what: bumpWhat(c) };
  }

  override describePath(): string {
    return this.path === "netlink"
      ? "netlink"
      : `${this.path} (${this.libError || "no libnftables"})`;
  }

  #startHelper(): boolean {
    if (this.#helper?.alive) return true;
    const h = new Helper(this.#nft(["-i"]), {
      onLine: (line) => this.#onLine(line),
      onStderr: (text) => this.#onStderr(text),
      onExit: (code) => this.#onExit(h, code),
    });
    this.#helper = h;
    return h.start();
  }

  #onLine(line: string): void {
    // `list set ... marks` prints a multi-line block; the table's closing brace ends it.
    if (line === "}") {
      const block = this.#block;
      this.#block = "";
      this.#onMarkBlock(block);
    } else {
      this.#block += line + "\n";
    }
  }

  #onMarkBlock(block: string): void {
    const w = this.#waiting;
    if (!w) return;
    const m = /elements = \{ (0x[0-9a-f]+|\d+)/.exec(block);
    if (m && Number(m[1]) === w.mark) {
      this.#waiting = null;
      w.done.resolve(null);
      return;
    }
    // The transaction was refused; its error may still be on its way on stderr.
    w.refused = true;
    this.#settle();
  }

  #onStderr(text: string): void {
    this.#stderr += text;
    this.#settle();
  }

  #settle(): void {
    if (this.#errTimer !== null) clearTimeout(this.#errTimer);
    this.#errTimer = setTimeout(() => this.#settled(), ERR_SETTLE_MS);
  }

  #settled(): void {
    this.#errTimer = null;
    const text = this.#stderr;
    const w = this.#waiting;
    // Only a refused transaction, or a failed `list` (no block will come), ends the wait.
    if (w && (w.refused || text.includes(`list set ${NFT_TABLE} marks`))) {
      this.#stderr = "";
      this.#waiting = null;
      w.done.resolve(text.trim() ? firstLine(text) : "transaction not applied");
    } else if (!w && text.trim()) {
      this.#stderr = "";
      this.report(`nft -i: ${firstLine(text)}`);
    }
  }

  #onExit(h: Helper, code: number): void {
    if (this.#helper === h) this.#helper = null;
    const text = this.#stderr;
    this.#stderr = "";
    this.#block = "";
    if (this.#errTimer !== null) clearTimeout(this.#errTimer);
    this.#errTimer = null;
    const w = this.#waiting;
    this.#waiting = null;
    const why = `exited with status ${code}${text.trim() ? `: ${firstLine(text)}` : ""}`;
    if (w) w.done.resolve(why);
    else if (code !== 0) this.report(`nft -i ${why}`);
  }

  /**
   * Sends one transaction line that also replaces the only element of `marks`
   * with a fresh number, then lists `marks`: the number is there only if the
   * transaction went through. Null on success, else the error.
   */
  async #transact(body: string): Promise<string | null> {
    const lib = this.#useLib();
    if (lib) {
      const r = lib.run(body);
      return r.ok ? null : r.error.trim() ? firstLine(r.error) : "transaction not applied";
    }
    if (!this.#startHelper()) return "could not start nft";
    const h = this.#helper;
    if (!h) return "nft is not running";
    const mark = (this.#mark = (this.#mark + 1) >>> 0);
    const done = deferred<string | null>();
    this.#waiting = { mark, done, refused: false };
    this.#stderr = "";
    const ok = await h.write(
      `${body}flush set ${NFT_TABLE} marks; add element ${NFT_TABLE} marks { ${mark} }\n` +
        `list set ${NFT_TABLE} marks\n`,
    );
    if (!ok && this.#waiting?.mark === mark) {
      this.#waiting = null;
      return "cannot write to nft";
    }
    const timer = setTimeout(() => {
      if (this.#waiting?.mark !== mark) return;
      this.#waiting = null;
      done.resolve(`no confirmation from nft within ${CONFIRM_MS / 1000} s`);
      this.#helper = null;
      h.stop(); // a fresh nft for the next transaction
    }, CONFIRM_MS);
    const result = await done.promise;
    clearTimeout(timer);
    return result;
  }

  protected override canApplyNow(ban: Ban): boolean {
    // A block (CIDR) goes into an interval set through the command language.
    return !ban.address.includes("/") && this.#ready !== null && this.#useNetlink() !== null;
  }

  protected override applyNow(ban: Ban): boolean {
    const nl = this.#useNetlink();
    if (!nl) return false;
    const err = this.#runNetlink(nl, [{ add: true, ban, done: () => {} }], true);
    if (err === null) return true;
    this.#ready = null; // re-create the table before the next transaction
    this.report(`nft add element ${ban.address}: ${err}`);
    return false;
  }

  protected async apply(ops: Op[]): Promise<void> {
    if (!(await this.#setup())) {
      for (const op of ops) op.done(false);
      return;
    }
    const adds = ops.filter((o) => o.add);
    const dels = ops.filter((o) => !o.add);
    for (let i = 0; i < adds.length; i += CHUNK) await this.#run(adds.slice(i, i + CHUNK), true);
    for (let i = 0; i < dels.length; i += CHUNK) {
      const chunk = dels.slice(i, i + CHUNK);
      const failed = await this.#run(chunk, false, chunk.length > 1);
      // One missing element fails a whole delete; retry the others one by one.
      for (const op of failed) await this.#run([op], false);
    }
  }

  /** Runs ops as one transaction; returns the ops left unresolved when `keep` is set. */
  async #run(ops: Op[], add: boolean, keep = false): Promise<Op[]> {
    const nl = this.#useNetlink();
    // Blocks need interval elements (a start and an end key): nft computes them.
    const ranges = ops.some((o) => o.ban.address.includes("/"));
    const err = nl && !ranges ? this.#runNetlink(nl, ops, add) : await this.#runText(ops, add);
    if (err === null) {
      for (const op of ops) op.done(true);
      return [];
    }
    if (keep) return ops;
    this.#ready = null; // re-create the table before the next transaction
    const what = add ? "add element" : "delete element";
    const first = ops[0].ban.address + (ops.length > 1 ? ` and ${ops.length - 1} more` : "");
    this.report(`nft ${what} ${first}: ${err}`);
    for (const op of ops) op.done(false);
    return [];
  }

  /** One netlink transaction per family; null on success, else the kernel's error. */
  #runNetlink(nl: NftSocket, ops: Op[], add: boolean): string | null {
    const v4: SetElement[] = [], v6: SetElement[] = [];
    const now = Date.now();
    for (const { ban } of ops) {
      const a = parseAddress(ban.address, true);
      if (!a) return `not an address: ${ban.address}`;
      const timeoutMs = add && ban.expiresAt !== null ? Math.max(1000, ban.expiresAt - now) : 0;
      (a.family === 4 ? v4 : v6).push({ key: a.bytes, timeoutMs });
    }
    for (const [set, els] of [["banned4", v4], ["banned6", v6]] as const) {
      if (els.length === 0) continue;
      const err = add ? nl.add(set, els) : nl.delete(set, els.map((e) => e.key));
      if (err !== null) return `${err} (netlink, set ${NFT_TABLE} ${set})`;
    }
    return null;
  }

  /** The same through nft's command language (libnftables or `nft -i`). */
  #runText(ops: Op[], add: boolean): Promise<string | null> {
    const sets: Record<string, string[]> = { banned4: [], banned6: [], nets4: [], nets6: [] };
    const now = Date.now();
    for (const { ban } of ops) {
      let item = ban.address;
      if (add && ban.expiresAt !== null) {
        item += ` timeout ${Math.max(1, Math.round((ban.expiresAt - now) / 1000))}s`;
      }
      const kind = ban.address.includes("/") ? "nets" : "banned";
      sets[`${kind}${ban.family}`].push(item);
    }
    const verb = add ? "add" : "delete";
    let body = "";
    for (const [set, items] of Object.entries(sets)) {
      if (items.length) body += `${verb} element ${NFT_TABLE} ${set} { ${items.join(", ")} }; `;
    }
    return this.#transact(body);
  }

  async flush(): Promise<void> {
    try {
      await this.drain();
      this.bans.clear();
      await this.#helper?.stop();
      this.#helper = null;
      this.#ready = null;
      const r = await this.#command(["delete", "table", ...NFT_TABLE.split(" ")]);
      if (r.code !== 0 && !/No such file or directory/.test(r.stderr)) {
        this.report(`nft delete table ${NFT_TABLE} failed: ${firstLine(r.stderr)}`);
      }
    } catch (e) {
      this.report(`nftables flush failed: ${String(e)}`);
    }
  }

  async close(): Promise<void> {
    try {
      await this.drain();
      const h = this.#helper;
      this.#helper = null;
      await h?.stop();
      this.#lib?.close();
      this.#lib = null;
      this.#netlink?.close();
      this.#generation.close();
      this.#netlink = null;
      this.#netlinkTried = false;
      this.#libTried = false;
    } catch (e) {
      this.report(`nftables close failed: ${String(e)}`);
    }
  }
}
