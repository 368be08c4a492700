/**
 * The nftables backend's libnftables path: a small Deno program runs *inside*
 * the lab's target namespace (no commandPrefix, so the backend loads
 * libnftables and acts on that namespace in process). The test drives it
 * over stdin, one command per line, and checks with `nft` in the namespace
 * that bans land, really drop the scanner, survive a batch, and that a table
 * deleted underneath is reported through onError and the next ban recovers.
 */
import assert from "node:assert/strict";
import { canUseNetns, createLab, type Lab, portStates } from "./netns.ts";
import { createFirewall } from "../src/firewall/firewall.ts";
import { NftablesFirewall } from "../src/firewall/nftables.ts";

const enabled = await canUseNetns();

const firewallUrl = new URL("../src/firewall/firewall.ts", import.meta.url).href;

/** The program run inside the namespace: one JSON line back per command line. */
const SCRIPT = `
import { createFirewall } from ${JSON.stringify(firewallUrl)};
const errors = [];
const fw = createFirewall("nftables", {
  isProtected: () => false,
  onError: (m) => errors.push(m),
  maxBans: 10000,
});
const out = (v) => console.log(JSON.stringify({ ...v, errors: errors.splice(0) }));
let buf = "";
const dec = new TextDecoder();
for await (const chunk of Deno.stdin.readable) {
  buf += dec.decode(chunk, { stream: true });
  let nl;
  while ((nl = buf.indexOf("\\n")) >= 0) {
    const [cmd, ...args] = buf.slice(0, nl).split(" ");
    buf = buf.slice(nl + 1);
    if (cmd === "init") out({ bans: await fw.init(), path: fw.path });
    else if (cmd === "ban") out({ result: await fw.ban(args[0], Number(args[1])) });
    else if (cmd === "batch") {
      const addrs = Array.from({ length: Number(args[0]) }, (_, i) => "10.77." + (i >> 8) + "." + (i & 255));
      out({ result: await Promise.all(addrs.map((a) => fw.ban(a, 3600))) });
    } else if (cmd === "unban") out({ result: await fw.unban(args[0]) });
    else if (cmd === "flush") out({ result: await fw.flush() });
    else if (cmd === "quit") { await fw.close(); out({}); Deno.exit(0); }
  }
}
`;

interface Reply {
  bans?: { address: string }[];
  path?: string;
  result?: unknown;
  errors: string[];
}

/** The program inside the namespace, driven line by line. */
class Driver {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #reader: ReadableStreamDefaultReader<string>;
  #buf = "";
  stderr: Promise<string>;

  constructor(ns: string, script: string) {
    this.#child = new Deno.Command("ip", {
      args: ["netns", "exec", ns, Deno.execPath(), "run", "-A", "--no-prompt", script],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#reader = this.#child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    this.stderr = new Response(this.#child.stderr).text();
  }

  async send(line: string): Promise<Reply> {
    await this.#writer.write(new TextEncoder().encode(line + "\n"));
    const deadline = Date.now() + 30_000;
    while (!this.#buf.includes("\n")) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const chunk = await Promise.race([
        this.#reader.read(),
        new Promise<null>((r) => (timer = setTimeout(() => r(null), deadline - Date.now()))),
      ]);
      clearTimeout(timer);
      if (chunk === null) throw new Error(`no reply to ${line} within 30 s`);
      if (chunk.done) {
        throw new Error(`program ended before replying to ${line}: ${await this.stderr}`);
      }
      this.#buf += chunk.value;
    }
    const nl = this.#buf.indexOf("\n");
    const reply = JSON.parse(this.#buf.slice(0, nl)) as Reply;
    this.#buf = this.#buf.slice(nl + 1);
    return reply;
  }

  async stop(): Promise<void> {
    const t = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }, 5000);
    try {
      await this.#writer.close();
    } catch {
      // already closed
    }
    await this.#child.status;
    await this.stderr.catch(() => "");
    await this.#reader.cancel().catch(() => {});
    clearTimeout(t);
  }
}

async function setText(lab: Lab, set: string): Promise<string> {
  const r = await lab.exec(lab.target, ["nft", "list", "set", "inet", "scanblocker", set]);
  return r.stdout + r.stderr;
}

const portState = (lab: Lab, port: number) => portStates(lab, lab.target4, [port]);

Deno.test("nftables backend: a commandPrefix keeps the nft -i path", () => {
  const fw = createFirewall("nftables", {
    isProtected: () => false,
    onError: () => {},
    maxBans: 10,
    commandPrefix: ["ip", "netns", "exec", "unused"],
  });
  assert.ok(fw instanceof NftablesFirewall);
  assert.equal(fw.path, "nft -i");
});

Deno.test({
  name: "nftables backend through libnftables inside a namespace",
  ignore: !enabled,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const lab = await createLab("fwlib");
    const script = await Deno.makeTempFile({ prefix: "sb-nftlib-", suffix: ".ts" });
    let driver: Driver | null = null;
    try {
      await Deno.writeTextFile(script, SCRIPT);
      driver = new Driver(lab.target, script);
      const d = driver;

      await t.step("init loads the library and installs the table", async () => {
        const r = await d.send("init");
        assert.equal(r.path, "netlink");
        assert.deepEqual(r.bans, []);
        assert.deepEqual(r.errors, []);
        assert.match(await setText(lab, "banned4"), /type ipv4_addr/);
      });

      await t.step("a ban lands in banned4 and drops the scanner", async () => {
        assert.equal(await portState(lab, 22), "closed");
        const r = await d.send(`ban ${lab.scanner4} 3600`);
        assert.equal(r.result, "banned", r.errors.join("\n"));
        assert.match(
          await setText(lab, "banned4"),
          new RegExp(lab.scanner4.replaceAll(".", "\\.")),
        );
        assert.equal(await portState(lab, 22), "filtered");
        assert.equal((await d.send(`ban ${lab.scanner6} 0`)).result, "banned");
        assert.match(await setText(lab, "banned6"), new RegExp(lab.scanner6));
      });

      await t.step("bans requested together all land", async () => {
        const r = await d.send("batch 300");
        const res = r.result as string[];
        assert.equal(res.length, 300);
        assert.ok(res.every((x) => x === "banned"), r.errors.join("\n"));
        const text = await setText(lab, "banned4");
        for (const a of ["10.77.0.0", "10.77.0.150", "10.77.1.43"]) assert.ok(text.includes(a), a);
      });

      await t.step("a table deleted underneath is reported and the next ban recovers", async () => {
        await lab.exec(lab.target, ["nft", "delete", "table", "inet", "scanblocker"]);
        const r = await d.send("ban 10.99.0.1 60");
        assert.equal(r.result, "failed");
        assert.ok(
          r.errors.some((e) => /^nft add element 10\.99\.0\.1: .*No such file/.test(e)),
          r.errors.join("\n"),
        );
        const r2 = await d.send("ban 10.99.0.2 60");
        assert.equal(r2.result, "banned", r2.errors.join("\n"));
        assert.match(await setText(lab, "banned4"), /10\.99\.0\.2/);
      });

      await t.step("unban and flush", async () => {
        assert.equal((await d.send("unban 10.99.0.2")).result, true);
        assert.doesNotMatch(await setText(lab, "banned4"), /10\.99\.0\.2/);
        assert.equal((await d.send("unban 10.99.0.2")).result, false);
        const r = await d.send("flush");
        assert.deepEqual(r.errors, []);
        const tables = await lab.exec(lab.target, ["nft", "list", "tables"]);
        assert.doesNotMatch(tables.stdout, /scanblocker/);
        assert.deepEqual((await d.send("quit")).errors, []);
      });
    } finally {
      await driver?.stop();
      await Deno.remove(script).catch(() => {});
      await lab.destroy();
    }
  },
});
