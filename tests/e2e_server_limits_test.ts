/**
 * The metrics server under idle connections, end to end in a namespace: the
 * daemon runs with 1,024 file descriptors at most, a helper opens 2,000
 * connections to its metrics port and sends nothing. The daemon must stay
 * up, keep banning a real nmap scan, close the idle connections itself, and
 * answer /healthz once they are gone. (Before: connections never timed out,
 * Deno.serve's accept loop threw EMFILE and the whole daemon exited.)
 */
import assert from "node:assert/strict";
import { type Daemon, spawnDaemon } from "./daemon.ts";
import { canUseNetns, createLab, esc, nmap } from "./netns.ts";

const root = await canUseNetns();
const main = new URL("../main.ts", import.meta.url).pathname;

/**
 * Opens N idle connections to 127.0.0.1:PORT (each given 2 s to connect),
 * prints how many opened, then after SECONDS prints how many the server has
 * closed (EOF or reset), closes the rest and exits.
 */
const HOLDER = `
const [port, n, seconds] = Deno.args.map(Number);
const conns = [];
const connect = () => Promise.race([
  Deno.connect({ hostname: "127.0.0.1", port }).catch(() => null),
  new Promise((r) => setTimeout(() => r(null), 2000)),
]);
for (let i = 0; i < n; i += 50) {
  const got = await Promise.all(Array.from({ length: Math.min(50, n - i) }, connect));
  for (const c of got) if (c) conns.push(c);
}
console.log(JSON.stringify({ opened: conns.length }));
let closed = 0;
const buf = new Uint8Array(64);
await Promise.all(conns.map(async (c) => {
  const r = await Promise.race([
    c.read(buf).then((x) => x === null ? "eof" : "data", () => "eof"),
    new Promise((r) => setTimeout(() => r("open"), seconds * 1000)),
  ]);
  if (r === "eof") closed++;
}));
console.log(JSON.stringify({ closed }));
for (const c of conns) { try { c.close(); } catch { /* closed */ } }
Deno.exit(0);
`;

Deno.test({
  name:
    "metrics server: 2,000 idle connections under ulimit -n 1024 stop neither bans nor /healthz",
  ignore: !root,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const lab = await createLab("idle");
    const holderFile = await Deno.makeTempFile({ prefix: "sb-idle-", suffix: ".ts" });
    const port = 20000 + Math.floor(Math.random() * 30000);
    let d: Daemon | null = null;
    try {
      await Deno.writeTextFile(holderFile, HOLDER);
      d = spawnDaemon([
        "ip",
        "netns",
        "exec",
        lab.target,
        "prlimit",
        "--nofile=1024:1024",
        Deno.execPath(),
        "run",
        "-P",
        "--quiet",
        main,
        "-i",
        lab.targetIf,
        "--firewall",
        "nftables",
        "--metrics-addr",
        `127.0.0.1:${port}`,
        "--lockout-guard",
        "off",
      ]);
      await d.waitFor(/Listening on: /, 20000);
      const holder = new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          lab.target,
          Deno.execPath(),
          "run",
          "-A",
          "--no-prompt",
          holderFile,
          String(port),
          "2000",
          "12",
        ],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const out = holder.output();
      // While the connections are being held: the daemon lives and bans.
      await new Promise((r) => setTimeout(r, 4000));
      assert.equal(await d.exited(0), null, `daemon exited:\n${d.stderr()}`);
      const scan = await nmap(lab, ["-sS", "-p", "1-40", lab.target4]);
      assert.equal(scan.code, 0, scan.stderr);
      await d.waitFor(new RegExp(`IP ${esc(lab.scanner4)} banned\\.`), 10000);
      const o = await out;
      const lines = new TextDecoder().decode(o.stdout).trim().split("\n").map((l) => JSON.parse(l));
      const opened = lines[0]?.opened as number, closed = lines[1]?.closed as number;
      console.log(`idle connections: ${opened} opened, ${closed} closed by the server within 12 s`);
      assert.ok(opened >= 1000, `only ${opened} connections opened`);
      assert.ok(closed >= opened * 0.9, `${closed} of ${opened} closed by the server`);
      assert.equal(await d.exited(0), null, `daemon exited:\n${d.stderr()}`);
      // Once they are gone, /healthz answers.
      let health = "";
      for (let i = 0; i < 20 && !/"status":"ok"/.test(health); i++) {
        const r = await lab.exec(lab.target, [
          "curl",
          "-s",
          "-m",
          "2",
          `http://127.0.0.1:${port}/healthz`,
        ]);
        health = r.stdout;
        if (!/"status":"ok"/.test(health)) await new Promise((r) => setTimeout(r, 500));
      }
      assert.match(health, /"status":"ok"/);
      assert.equal(await d.stop(), 0, d.stderr());
    } finally {
      if (d) await d.stop();
      await Deno.remove(holderFile).catch(() => {});
      await lab.destroy();
    }
  },
});
