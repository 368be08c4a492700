/**
 * The ipset form of the iptables backend: what `--firewall iptables` (the
 * default) uses whenever ipset is usable, and `--firewall ipset` always.
 * Bans live in ipset sets, each matched by one rule in chain SCANBLOCKER
 * (`-m set --match-set scanblocker4 src -j DROP`), which INPUT (and with the
 * "forward" hook FORWARD) jumps to: hash:ip sets `scanblocker4` and
 * `scanblocker6` for single addresses, hash:net sets `scanblocker4net` and
 * `scanblocker6net` for blocks (IPv6 prefix bans, fleet ranges).
 *
 * Why: with one rule per ban (IptablesFirewall) every inbound packet walks
 * the whole chain, so a spoofed flood that fills the ban table slows the
 * host down (~30x with 65,536 rules), and each change rebuilds the chain. A
 * hash set is one lookup whatever it holds (hash:net one per prefix length
 * present), and the kernel expires each element itself (sets made with
 * `timeout 0`: every element has its own, 0 = until removed). Addresses and
 * blocks go to the kernel over netlink (NFNL_SUBSYS_IPSET, ffi/nfnetlink.ts;
 * a block with its prefix length), acknowledged per element, on the calling
 * thread; with a commandPrefix (tests driving another namespace) or without
 * netlink, one `ipset -exist restore` per batch does the same. Set-up and listing use the `ipset` and
 * `iptables-restore` commands. Rules of the per-rule form found in
 * SCANBLOCKER at start are moved into the sets.
 */
import type { Ban, Family, FastBan, KernelState } from "../types.ts";
import { canonicalTarget, parseAddress, parseTarget } from "../address.ts";
import { NftSocket, type SetElement } from "../../ffi/nfnetlink.ts";
import { BaseFirewall, type FirewallHook, type FirewallOptions, type Op } from "./base.ts";
import { IPT_CHAIN, IPT_SYNC_CHAIN, parseIptablesRules } from "./iptables.ts";
import { KernelGeneration } from "./generation.ts";
import { errorText, firstLine, runCommand } from "./runner.ts";
import type { BumpConfig, BumpState } from "./bump.ts";
import { bumpListsKey, bumpRulesKey, bumpWhat } from "./bump.ts";
import {
  BUMP_IPSETS,
  ipsetBumpLists,
  iptBumpLines,
  iptBumpPresent,
  iptBumpRemoval,
} from "./bump_ipt.ts";

/** The set of single addresses of each family (hash:ip). */
export const IPSET_NAMES: Record<Family, string> = { 4: "scanblocker4", 6: "scanblocker6" };
/** The set of blocks (CIDR) of each family (hash:net). */
export const IPSET_NET_NAMES: Record<Family, string> = {
  4: "scanblocker4net",
  6: "scanblocker6net",
};
/** Every set, with its family and type. */
const SETS = [
  { name: IPSET_NAMES[4], family: 4, type: "hash:ip" },
  { name: IPSET_NET_NAMES[4], family: 4, type: "hash:net" },
  { name: IPSET_NAMES[6], family: 6, type: "hash:ip" },
  { name: IPSET_NET_NAMES[6], family: 6, type: "hash:net" },
] as const;

/** The rule in SCANBLOCKER that drops what set `name` holds. */
export function setMatchRule(name: string): string {
  return `-A ${IPT_CHAIN} -m set --match-set ${name} src -j DROP`;
}
/** Room above the ban cap in the sets: evictions and new bans may overlap briefly. */
const SET_SLACK = 1024;
const HOOK_CHAIN: Record<FirewallHook, string> = { input: "INPUT", forward: "FORWARD" };

/**
 * Reads `ipset save` output into bans of `family` (timeout 0 or none: until
 * removed): the elements of the family's address set and block set.
 */
export function parseIpsetSave(text: string, family: Family, now = Date.now()): Ban[] {
  const out: Ban[] = [];
  const re = new RegExp(
    `^add (?:${IPSET_NAMES[family]}|${IPSET_NET_NAMES[family]}) (\\S+)(?: .*?\\btimeout (\\d+))?`,
  );
  for (const line of text.split("\n")) {
    const m = re.exec(line.trim());
    if (!m) continue;
    const address = canonicalTarget(m[1], true);
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

/**
 * Creates set `name`; null, or why ipset refused. `-exist`: an existing set
 * with these parameters is no error. An older set with other parameters is
 * kept, with its bans, unless it holds fewer than `maxelem` or has no
 * timeouts (an earlier run with a smaller --max-bans): then it is replaced
 * by a copy that does, in one swap. Kept as it was, it failed every ban past
 * its old size ("Hash is full") while the ban cap, counted against the new
 * size, never evicted; a copy that fails is reported through `warn`.
 */
async function createSet(
  prefix: string[],
  set: (typeof SETS)[number],
  maxelem: number,
  warn: (line: string) => void,
): Promise<string | null> {
  const create = (name: string) =>
    runCommand([
      ...prefix,
      "ipset",
      "-exist",
      "create",
      name,
      set.type,
      "family",
      set.family === 4 ? "inet" : "inet6",
      "timeout",
      "0",
      "maxelem",
      String(maxelem),
    ]);
  const c = await create(set.name);
  if (c.code === 0) return null;
  const have = await runCommand([...prefix, "ipset", "list", "-t", set.name]);
  if (have.code !== 0) return `ipset create ${set.name} failed: ${firstLine(c.stderr)}`;
  const header = /^Header: (.*)$/m.exec(have.stdout)?.[1] ?? "";
  const old = Number(/\bmaxelem (\d+)/.exec(header)?.[1] ?? 0);
  if (old >= maxelem && /\btimeout \d+/.test(header)) return null;
  const why = await regrowSet(prefix, set.name, create);
  if (why) {
    warn(
      `ipset ${set.name} (an earlier run's: ${header}) is kept as it is, and bans past its size fail: ${why}`,
    );
  }
  return null;
}

/** Copies set `name` into a new one (made by `create`), swaps them, drops the old; null, or why not. */
async function regrowSet(
  prefix: string[],
  name: string,
  create: (name: string) => Promise<{ code: number; stderr: string }>,
): Promise<string | null> {
  const grow = `${name}-grow`;
  const ipset = (args: string[], stdin?: string) =>
    runCommand([...prefix, "ipset", ...args], stdin);
  await ipset(["destroy", grow]); // a copy a crash left behind
  const made = await create(grow);
  if (made.code !== 0) return `ipset create ${grow} failed: ${firstLine(made.stderr)}`;
  const saved = await ipset(["save", name]);
  const adds = saved.stdout.split("\n").filter((l) => l.startsWith(`add ${name} `))
    .map((l) => `add ${grow} ${l.slice(`add ${name} `.length)}`);
  const copied = adds.length ? await ipset(["restore", "-exist"], adds.join("\n") + "\n") : made;
  const swapped = copied.code === 0 ? await ipset(["swap", name, grow]) : copied;
  await ipset(["destroy", grow]);
  return swapped.code === 0 ? null : `ipset could not copy it: ${firstLine(swapped.stderr)}`;
}

/**
 * The set and netlink element of a ban: an address in the family's hash:ip
 * set (a mapped IPv6 address stays IPv6, as the kernel holds it), a block
 * in its hash:net set with its prefix length; null when the text is neither.
 */
function setElement(b: Ban, timeoutMs: number): { name: string; element: SetElement } | null {
  if (!b.address.includes("/")) {
    const a = parseAddress(b.address, true);
    return a ? { name: IPSET_NAMES[a.family], element: { key: a.bytes, timeoutMs } } : null;
  }
  const t = parseTarget(b.address);
  if (!t) return null;
  return { name: IPSET_NET_NAMES[t.family], element: { key: t.bytes, timeoutMs, cidr: t.prefix } };
}

/** iptables with ipset sets; see the module comment. */
export class IpsetFirewall extends BaseFirewall {
  #ready: Promise<Ban[] | string> | null = null;
  /** nf_tables' generation at the last check of the rules (iptables-nft only). */
  readonly #rules = new KernelGeneration();
  /** Re-reads of the rules skipped because nf_tables' generation stood still (tests). */
  get skippedRuleReads(): number {
    return this.#rules.skipped;
  }

  /** Whether iptables is iptables-nft (`iptables -V` says nf_tables), checked at set-up. */
  #rulesNft = false;
  #netlink: NftSocket | null = null;
  #netlinkTried = false;
  /** The speed bump's settings (null: not asked for), its state and what is installed. */
  #bump: BumpConfig | null = null;
  #bumpState: BumpState | null = null;
  #bumpRules = "";
  #bumpLists = "";

  /** `kind`: "ipset" when named so, "iptables" as the default backend's form (metrics, messages). */
  constructor(opts: FirewallOptions, readonly kind: "ipset" | "iptables" = "ipset") {
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

  protected override resetSetup(): void {
    this.#ready = null;
  }

  /**
   * Sets, chain, match rules and jumps, once (again after a failure): the
   * rules-per-ban found (to move into the sets), or why it failed.
   */
  #setup(): Promise<Ban[] | string> {
    if (!this.#ready) {
      this.#ready = this.#build().then((r) => {
        if (typeof r === "string") this.#ready = null;
        return r;
      });
    }
    return this.#ready;
  }

  /**
   * Sets everything up without reporting: null when the sets and their rules
   * are in place, else why not (the default backend then holds one rule per
   * ban instead; src/firewall/choice.ts).
   */
  async probe(): Promise<string | null> {
    const r = await this.#setup();
    return typeof r === "string" ? r : null;
  }

  async #build(): Promise<Ban[] | string> {
    const legacy: Ban[] = [];
    for (const set of SETS) {
      const err = await createSet(
        this.prefix,
        set,
        this.maxBans + SET_SLACK,
        (m) => this.report(m),
      );
      if (err) return err;
    }
    // Only iptables-nft's rules move nf_tables' generation (see reconcile).
    const versions = await Promise.all(
      (["iptables", "ip6tables"] as const).map((t) => runCommand([...this.prefix, t, "-V"])),
    );
    this.#rulesNft = versions.every((v) => v.code === 0 && /\(nf_tables\)/.test(v.stdout));
    this.#rules.forget();
    for (const family of [4, 6] as const) {
      const tool = this.#tool(family);
      const r = await runCommand([...this.prefix, tool, "-w", "-S"]);
      if (r.code !== 0) return `${tool} -S failed: ${firstLine(r.stderr)}`;
      const found = parseIptablesRules(r.stdout, family);
      legacy.push(...found.bans);
      // Declaring the chain creates it, or empties it of the per-rule form's rules.
      const lines = [
        `:${IPT_CHAIN} - [0:0]`,
        setMatchRule(IPSET_NAMES[family]),
        setMatchRule(IPSET_NET_NAMES[family]),
      ];
      // The per-rule form's marker chain, never jumped to.
      if (found.hasSync) lines.push(`-F ${IPT_SYNC_CHAIN}`, `-X ${IPT_SYNC_CHAIN}`);
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
        return `${tool}-restore (chain ${IPT_CHAIN} matching the sets) failed: ${
          firstLine(w.stderr)
        }`;
      }
    }
    this.#bumpRules = this.#bumpLists = "";
    if (this.#bump) await this.#installBump(this.#bump);
    return legacy;
  }

  /**
   * The speed bump (bump.ts, bump_ipt.ts): installed with the chain (again
   * after every set-up), rebuilt when the threshold, window or interface
   * change, its exempt lists refilled when they change.
   */
  async setBump(c: BumpConfig | null): Promise<BumpState> {
    this.#bump = c;
    if (c === null) {
      // Off (say --detector psd): a bump an earlier run left must not hold back on its own.
      this.#bumpState = null;
      this.#bumpRules = this.#bumpLists = "";
      await this.#removeBump();
      return { on: false, why: "not asked for" };
    }
    if (!this.#ready) {
      const r = await this.#setup();
      if (typeof r === "string") return { on: false, why: "the chain could not be set up" };
    } else if (bumpRulesKey(c) !== this.#bumpRules) await this.#installBump(c);
    else if (bumpListsKey(c) !== this.#bumpLists) {
      const r = await runCommand([...this.prefix, "ipset", "restore"], ipsetBumpLists(c));
      if (r.code === 0) this.#bumpLists = bumpListsKey(c);
      else this.report(`ipset restore (speed bump exempt lists) failed: ${firstLine(r.stderr)}`);
    }
    return this.#bumpState ?? { on: false, why: "not installed" };
  }

  /** See Firewall.bumpState. */
  bumpState(): BumpState | null {
    return this.#bumpState;
  }

  /**
   * Sets, chain and jump of the bump; a refusal leaves it off (and removed),
   * never the bans, and is a firewall error when the bump was on (a repair
   * that could not put it back).
   */
  async #installBump(c: BumpConfig): Promise<void> {
    const off = async (why: string) => {
      if (this.#bumpState?.on) this.report(`speed bump not put back: ${why}`);
      this.#bumpState = { on: false, why };
      this.#bumpRules = "";
      await this.#removeBump();
    };
    for (const set of BUMP_IPSETS) {
      const r = await runCommand([
        ...this.prefix,
        "ipset",
        "-exist",
        "create",
        set.name,
        ...set.args,
      ]);
      if (r.code !== 0) return await off(`ipset create ${set.name}: ${firstLine(r.stderr)}`);
    }
    const lists = await runCommand([...this.prefix, "ipset", "restore"], ipsetBumpLists(c));
    if (lists.code !== 0) return await off(`ipset restore: ${firstLine(lists.stderr)}`);
    for (const family of [4, 6] as const) {
      const tool = this.#tool(family);
      const t = await runCommand([...this.prefix, tool, "-w", "-S"]);
      if (t.code !== 0) return await off(`${tool} -S: ${firstLine(t.stderr)}`);
      const lines = iptBumpLines(family, c, t.stdout);
      const w = await runCommand(
        [...this.prefix, `${tool}-restore`, "--noflush"],
        `*filter\n${lines.join("\n")}\nCOMMIT\n`,
      );
      if (w.code !== 0) return await off(`${tool} refused it: ${firstLine(w.stderr)}`);
    }
    this.#bumpRules = bumpRulesKey(c);
    this.#bumpLists = bumpListsKey(c);
    this.#bumpState = { on: true, what: bumpWhat(c) };
  }

  /**
   * Takes the bump's chain and jumps out of both families (its sets stay
   * until flush). A bump that cannot be removed is a firewall error: left in
   * place, it would go on holding back new connections with old exempt lists.
   */
  async #removeBump(): Promise<void> {
    for (const family of [4, 6] as const) {
      const tool = this.#tool(family);
      const t = await runCommand([...this.prefix, tool, "-w", "-S"]);
      if (t.code !== 0) {
        this.report(`speed bump not removed: ${tool} -S failed: ${firstLine(t.stderr)}`);
        continue;
      }
      const lines = iptBumpRemoval(t.stdout);
      if (lines.length === 0) continue;
      const r = await runCommand(
        [...this.prefix, `${tool}-restore`, "--noflush"],
        `*filter\n${lines.join("\n")}\nCOMMIT\n`,
      );
      if (r.code !== 0) {
        this.report(`speed bump not removed: ${tool} refused it: ${firstLine(r.stderr)}`);
      }
    }
  }

  /** Reads both sets of every family; the bans, or the names of the sets missing. */
  async #readSets(now = Date.now()): Promise<{ bans: Ban[]; missing: string[] }> {
    const bans: Ban[] = [];
    const missing: string[] = [];
    // One process for the four sets (an idle daemon reads them every 5 s);
    // when one is missing the batch fails and each is read alone to say which.
    const all = await runCommand(
      [...this.prefix, "ipset", "restore"],
      SETS.map((set) => `save ${set.name}\n`).join(""),
    );
    if (all.code === 0) {
      for (const family of [4, 6] as const) bans.push(...parseIpsetSave(all.stdout, family, now));
      return { bans, missing };
    }
    for (const set of SETS) {
      const r = await runCommand([...this.prefix, "ipset", "save", set.name]);
      if (r.code !== 0) missing.push(`set ${set.name}`);
      else bans.push(...parseIpsetSave(r.stdout, set.family, now));
    }
    return { bans, missing };
  }

  /**
   * Re-reads the sets (`ipset save`) and the chain (`iptables -S`): a set,
   * chain, match rule or jump removed from outside is put back; the sets'
   * members become this object's copy.
   */
  async reconcile(): Promise<KernelState | null> {
    try {
      const readAt = performance.now();
      const { bans: found, missing } = await this.#readSets();
      // The chain, its match rules and the jumps are nf_tables rules with
      // iptables-nft: while its generation stands still they are as the last
      // check found them (the sets are ipset's, read above every time).
      const gen = this.#rulesNft && this.prefix.length === 0 ? this.#rules.current() : null;
      const rulesUnchanged = this.#rules.unchanged(gen);
      for (const family of rulesUnchanged ? [] : [4, 6] as const) {
        const tool = this.#tool(family);
        const t = await runCommand([...this.prefix, tool, "-w", "-S"]);
        if (t.code !== 0) {
          this.report(`${tool} -S failed: ${firstLine(t.stderr)}`);
          return null;
        }
        const k = parseIptablesRules(t.stdout, family);
        const lines = t.stdout.split("\n").map((l) => l.trim());
        const rules = [IPSET_NAMES[family], IPSET_NET_NAMES[family]].map(setMatchRule);
        if (!k.hasChain || rules.some((m) => !lines.includes(m))) {
          missing.push(`${tool} chain ${IPT_CHAIN}`);
        }
        for (const hook of this.hooks) {
          if ((hook === "input" ? k.jumps : k.forwardJumps) !== 1) {
            missing.push(`${tool} ${HOOK_CHAIN[hook]} jump`);
          }
        }
        if (this.#bumpState?.on && !iptBumpPresent(t.stdout)) missing.push(`${tool} speed bump`);
      }
      if (!rulesUnchanged && missing.length === 0) this.#rules.took(gen);
      else if (missing.length > 0) this.#rules.forget();
      if (missing.length > 0) {
        this.#ready = null;
        const r = await this.#setup();
        if (typeof r === "string") {
          this.report(r);
          return null;
        }
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
      if (typeof legacy === "string") {
        this.report(legacy);
        return [];
      }
      const now = Date.now();
      // A protected address is not moved (one line says so); its rule went with the old chain.
      const move = legacy.filter((b) => !this.expired(b, now) && this.refusedAtRestore(b) === null);
      if (move.length > 0) {
        const err = await this.#change(move, true);
        if (err) this.report(`ipset: moving ${move.length} iptables rules into the sets: ${err}`);
      }
      const read = await this.#readSets(now);
      for (const m of read.missing) this.report(`ipset save: no ${m}`);
      this.bans.clear();
      const live: Ban[] = [];
      for (const b of read.bans) {
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
    const nl = this.#useNetlink();
    if (!nl) return await this.#changeText(bans, add, now);
    const per = new Map<string, SetElement[]>();
    for (const b of bans) {
      const timeoutMs = add && b.expiresAt !== null ? Math.max(1000, b.expiresAt - now) : 0;
      const e = setElement(b, timeoutMs);
      if (!e) return `not an address: ${b.address}`;
      const list = per.get(e.name);
      if (list) list.push(e.element); // (a copy per element made 50,000 bans take 26 s)
      else per.set(e.name, [e.element]);
    }
    for (const [name, els] of per) {
      const err = nl.ipset(name, els, !add);
      if (err !== null) return `${err} (netlink, set ${name})`;
    }
    return null;
  }

  /** The same through one `ipset -exist restore` (a commandPrefix, or no netlink). */
  async #changeText(bans: readonly Ban[], add: boolean, now: number): Promise<string | null> {
    const lines = bans.map((b) => {
      const name = (b.address.includes("/") ? IPSET_NET_NAMES : IPSET_NAMES)[b.family];
      const secs = b.expiresAt === null ? 0 : Math.max(1, Math.ceil((b.expiresAt - now) / 1000));
      return add ? `add ${name} ${b.address} timeout ${secs}` : `del ${name} ${b.address}`;
    });
    if (lines.length === 0) return null;
    const r = await runCommand(
      [...this.prefix, "ipset", "-exist", "restore"],
      lines.join("\n") + "\n",
    );
    return r.code === 0 ? null : `ipset restore: ${firstLine(r.stderr)}`;
  }

  protected override canApplyNow(_ban: Ban): boolean {
    return this.#ready !== null && this.#useNetlink() !== null;
  }

  protected override applyNow(ban: Ban): boolean {
    const nl = this.#useNetlink();
    const timeoutMs = ban.expiresAt === null ? 0 : Math.max(1000, ban.expiresAt - Date.now());
    const e = setElement(ban, timeoutMs);
    if (!nl || !e) return false;
    const name = e.name;
    const err = nl.ipset(name, [e.element]);
    if (err === null) return true;
    this.#ready = null; // set up again before the next ban
    this.report(`ipset add ${name} ${ban.address}: ${err}`);
    return false;
  }

  protected async apply(ops: Op[]): Promise<void> {
    const ready = await this.#setup();
    if (typeof ready === "string") {
      this.report(ready);
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
          if (found.hasSync) lines.push(`-F ${IPT_SYNC_CHAIN}`, `-X ${IPT_SYNC_CHAIN}`);
          lines.push(...iptBumpRemoval(r.stdout));
          if (lines.length > 0) {
            const w = await runCommand(
              [...this.prefix, `${tool}-restore`, "--noflush"],
              `*filter\n${lines.join("\n")}\nCOMMIT\n`,
            );
            if (w.code !== 0) this.report(`${tool}-restore (flush) failed: ${firstLine(w.stderr)}`);
          }
        } else this.report(`${tool} -S failed: ${firstLine(r.stderr)}`);
      }
      for (const set of [...SETS, ...BUMP_IPSETS]) {
        const d = await runCommand([...this.prefix, "ipset", "destroy", set.name]);
        if (d.code !== 0 && !/does not exist/.test(d.stderr)) {
          this.report(`ipset destroy ${set.name} failed: ${firstLine(d.stderr)}`);
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
      this.#rules.close();
      this.#netlinkTried = false;
    } catch (e) {
      this.report(`ipset close failed: ${errorText(e)}`);
    }
  }
}
