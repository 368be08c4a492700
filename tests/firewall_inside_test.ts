/**
 * The backends' in-process paths: a small Deno program runs *inside* the
 * lab's target namespace (no commandPrefix), so nftables loads libnftables
 * and bans over netlink, and iptables appends its rules over netlink. The
 * test drives it over stdin, one command per line, and checks with `nft` /
 * `iptables` in the namespace that bans land exactly as the tools write
 * them, really drop the scanner, survive a batch, and that a table or chain
 * deleted underneath is reported through onError and the next ban recovers.
 */
import assert from "node:assert/strict";
import { canUseNetns, createLab, esc, type Lab, portStates, run } from "./netns.ts";
import { createFirewall } from "../src/firewall/firewall.ts";
import { NftablesFirewall } from "../src/firewall/nftables.ts";
import { NETLINK_MAX_RULES } from "../src/firewall/iptables.ts";

const enabled = await canUseNetns();

const firewallUrl = new URL("../src/firewall/firewall.ts", import.meta.url).href;

/** The program run inside the namespace (backend in argv): one JSON line back per command line. */
const SCRIPT = `
import { createFirewall } from ${JSON.stringify(firewallUrl)};
const errors = [];
const fw = createFirewall(Deno.args[0], {
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
    const path = () => typeof fw.path === "function" ? fw.path(4) + "/" + fw.path(6) : fw.path;
    if (cmd === "init") { const bans = await fw.init(); out({ bans, path: path() }); }
    else if (cmd === "ban") out({ result: await fw.ban(args[0], Number(args[1])) });
    else if (cmd === "now") out({ result: fw.banNow(args[0], Number(args[1])), path: path() });
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

  constructor(ns: string, script: string, backend: string) {
    this.#child = new Deno.Command("ip", {
      args: ["netns", "exec", ns, Deno.execPath(), "run", "-A", "--no-prompt", script, backend],
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

/** A test whose steps drive `backend` inside a fresh lab's target namespace. */
function insideTest(
  name: string,
  backend: "nftables" | "iptables-rules" | "ipset",
  steps: (t: Deno.TestContext, lab: Lab, d: Driver) => Promise<void>,
): void {
  Deno.test({
    name,
    ignore: !enabled,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn(t) {
      const lab = await createLab(`fw${backend.slice(0, 3)}`);
      const script = await Deno.makeTempFile({ prefix: "sb-inside-", suffix: ".ts" });
      let driver: Driver | null = null;
      try {
        await Deno.writeTextFile(script, SCRIPT);
        driver = new Driver(lab.target, script, backend);
        await steps(t, lab, driver);
      } finally {
        await driver?.stop();
        await Deno.remove(script).catch(() => {});
        await lab.destroy();
      }
    },
  });
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

insideTest(
  "nftables backend through libnftables inside a namespace",
  "nftables",
  async (t, lab, d) => {
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
  },
);

/** `iptables -S SCANBLOCKER` (or ip6tables) in the lab's target namespace. */
async function chainText(lab: Lab, tool = "iptables"): Promise<string> {
  const r = await lab.exec(lab.target, [tool, "-S", "SCANBLOCKER"]);
  return r.stdout + r.stderr;
}

insideTest(
  "iptables backend (one rule per ban) over netlink inside a namespace",
  "iptables-rules",
  async (t, lab, d) => {
    await t.step("init sets up the netlink path for both families", async () => {
      const r = await d.send("init");
      assert.equal(r.path, "netlink/netlink");
      assert.deepEqual(r.bans, []);
      assert.deepEqual(r.errors, []);
      // The template and probe rules were flushed again.
      const sync = await lab.exec(lab.target, ["iptables", "-S", "SCANBLOCKER-SYNC"]);
      assert.equal(sync.stdout.trim(), "-N SCANBLOCKER-SYNC");
    });

    await t.step("a ban on the calling thread is iptables' own rule and drops", async () => {
      assert.equal(await portState(lab, 22), "closed");
      const before = Math.floor(Date.now() / 1000) + 3600;
      const r = await d.send(`now ${lab.scanner4} 3600`);
      assert.equal(r.result, "banned", r.errors.join("\n"));
      const m = new RegExp(
        `^-A SCANBLOCKER -s ${
          esc(lab.scanner4)
        }/32 -m comment --comment "scanblocker expires=(\\d+)" -j DROP$`,
        "m",
      ).exec(await chainText(lab));
      assert.ok(m, await chainText(lab));
      assert.ok(Math.abs(Number(m[1]) - before) <= 1, m[1]);
      assert.equal(await portState(lab, 22), "filtered");
      assert.equal((await d.send(`now ${lab.scanner6} 0`)).result, "banned");
      assert.match(
        await chainText(lab, "ip6tables"),
        new RegExp(
          `-s ${esc(lab.scanner6)}/128 -m comment --comment "scanblocker expires=never" -j DROP`,
        ),
      );
      assert.equal((await d.send(`now ${lab.scanner4} 3600`)).result, "already");
    });

    await t.step("iptables-restore removes a rule added over netlink", async () => {
      assert.equal((await d.send(`unban ${lab.scanner4}`)).result, true);
      assert.doesNotMatch(await chainText(lab), new RegExp(esc(lab.scanner4)));
      assert.equal(await portState(lab, 22), "closed");
    });

    await t.step("a chain deleted underneath: reported, handed to iptables-restore", async () => {
      for (
        const c of [["-D", "INPUT", "-j", "SCANBLOCKER"], ["-F", "SCANBLOCKER"], [
          "-X",
          "SCANBLOCKER",
        ]]
      ) {
        await lab.exec(lab.target, ["iptables", ...c]);
      }
      const r = await d.send("now 10.99.0.1 60");
      assert.equal(r.result, null);
      assert.equal(r.path, "iptables-restore/netlink");
      assert.ok(
        r.errors.some((e) =>
          /^iptables \(netlink\) -A SCANBLOCKER 10\.99\.0\.1: .*No such file/.test(e)
        ),
        r.errors.join("\n"),
      );
      const r2 = await d.send("ban 10.99.0.1 60");
      assert.equal(r2.result, "banned", r2.errors.join("\n"));
      assert.match(await chainText(lab), /-s 10\.99\.0\.1\/32 /);
      // The chain is back, and so is the netlink path.
      const r3 = await d.send("now 10.99.0.3 60");
      assert.equal(r3.result, "banned", r3.errors.join("\n"));
      assert.equal(r3.path, "netlink/netlink");
      assert.match(await chainText(lab), /-s 10\.99\.0\.3\/32 /);
    });

    await t.step(`past ${NETLINK_MAX_RULES} bans, bans go through iptables-restore`, async () => {
      const exp = Math.floor(Date.now() / 1000) + 3600;
      const body = Array.from(
        { length: NETLINK_MAX_RULES },
        (_, i) =>
          `-A SCANBLOCKER -s 10.77.${i >> 8}.${
            i & 255
          }/32 -m comment --comment "scanblocker expires=${exp}" -j DROP`,
      );
      const w = await run(["ip", "netns", "exec", lab.target, "iptables-restore", "--noflush"], {
        stdin: `*filter\n${body.join("\n")}\nCOMMIT\n`,
      });
      assert.equal(w.code, 0, w.stderr);
      const r = await d.send("init"); // a restart: reads them back, netlink path set up again
      assert.equal(r.path, "netlink/netlink");
      assert.ok((r.bans?.length ?? 0) > NETLINK_MAX_RULES, String(r.bans?.length));
      assert.equal((await d.send("now 10.98.0.1 60")).result, null);
      assert.equal((await d.send("ban 10.98.0.1 60")).result, "banned");
      assert.match(await chainText(lab), /-s 10\.98\.0\.1\/32 /);
    });

    await t.step("flush leaves nothing installed", async () => {
      const r = await d.send("flush");
      assert.deepEqual(r.errors, []);
      const left = (await lab.exec(lab.target, ["iptables", "-S"])).stdout +
        (await lab.exec(lab.target, ["ip6tables", "-S"])).stdout;
      assert.doesNotMatch(left, /SCANBLOCKER/);
      assert.deepEqual((await d.send("quit")).errors, []);
    });
  },
);

/** The ipset sets' elements, as `ipset save` lists them in the lab's target namespace. */
async function ipsetText(lab: Lab): Promise<string> {
  const r = await lab.exec(lab.target, ["ipset", "save"]);
  return r.stdout + r.stderr;
}

insideTest("ipset backend over netlink inside a namespace", "ipset", async (t, lab, d) => {
  await t.step("init moves iptables-backend rules into the sets, one rule per family", async () => {
    // A ban as the iptables backend writes it, from before the switch.
    const exp = Math.floor(Date.now() / 1000) + 3600;
    const w = await run(["ip", "netns", "exec", lab.target, "iptables-restore", "--noflush"], {
      stdin: `*filter\n:SCANBLOCKER - [0:0]\n-A SCANBLOCKER -s 10.66.0.1/32 -m comment ` +
        `--comment "scanblocker expires=${exp}" -j DROP\nCOMMIT\n`,
    });
    assert.equal(w.code, 0, w.stderr);
    const r = await d.send("init");
    assert.equal(r.path, "netlink");
    assert.deepEqual(r.errors, []);
    assert.deepEqual(r.bans?.map((b) => b.address), ["10.66.0.1"]);
    assert.match(await ipsetText(lab), /^add scanblocker4 10\.66\.0\.1 timeout \d+$/m);
    assert.equal(
      (await chainText(lab)).trim(),
      "-N SCANBLOCKER\n-A SCANBLOCKER -m set --match-set scanblocker4 src -j DROP\n" +
        "-A SCANBLOCKER -m set --match-set scanblocker4net src -j DROP",
    );
    assert.match(await chainText(lab, "ip6tables"), /--match-set scanblocker6 src -j DROP/);
  });

  await t.step("a ban lands in the set and drops the scanner", async () => {
    assert.equal(await portState(lab, 22), "closed");
    const r = await d.send(`now ${lab.scanner4} 3600`);
    assert.equal(r.result, "banned", r.errors.join("\n"));
    assert.match(
      await ipsetText(lab),
      new RegExp(`^add scanblocker4 ${esc(lab.scanner4)} timeout`, "m"),
    );
    assert.equal(await portState(lab, 22), "filtered");
    assert.equal((await d.send(`ban ${lab.scanner6} 0`)).result, "banned");
    assert.match(await ipsetText(lab), new RegExp(`^add scanblocker6 ${esc(lab.scanner6)}`, "m"));
    const res = (await d.send("batch 300")).result as string[];
    assert.ok(res.every((x) => x === "banned"), String(res));
    assert.match(await ipsetText(lab), /^add scanblocker4 10\.77\.1\.43 timeout/m);
    // A block goes over netlink too, into the hash:net set with its prefix length.
    const block = await d.send("now 10.88.0.0/24 3600");
    assert.equal(block.result, "banned", block.errors.join("\n"));
    assert.match(await ipsetText(lab), /^add scanblocker4net 10\.88\.0\.0\/24 timeout \d+$/m);
    assert.equal((await d.send("now 2001:db8:42::/48 0")).result, "banned");
    assert.match(await ipsetText(lab), /^add scanblocker6net 2001:db8:42::\/48 timeout 0$/m);
  });

  await t.step("unban and flush", async () => {
    assert.equal((await d.send(`unban ${lab.scanner4}`)).result, true);
    assert.doesNotMatch(await ipsetText(lab), new RegExp(`${esc(lab.scanner4)} `));
    assert.equal(await portState(lab, 22), "closed");
    const r = await d.send("flush");
    assert.deepEqual(r.errors, []);
    assert.equal((await ipsetText(lab)).trim(), "");
    assert.doesNotMatch((await lab.exec(lab.target, ["iptables", "-S"])).stdout, /SCANBLOCKER/);
    assert.deepEqual((await d.send("quit")).errors, []);
  });
});
