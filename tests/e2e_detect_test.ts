/**
 * End to end, in network namespaces, with real nmap as the scanner and the
 * real daemon (deno run -P main.ts) capturing on the target's veth.
 */
import assert from "node:assert/strict";
import { type Daemon, startDaemon } from "./daemon.ts";
import { canUseNetns, createLab, type Lab, nmap } from "./netns.ts";

const root = await canUseNetns();
const opts = { ignore: !root, sanitizeOps: false, sanitizeResources: false };

const PORTS = "21,22,23,25,53,80,110,135,139,443,445,3389";

async function withDaemon(
  extra: string[],
  body: (lab: Lab, d: Daemon) => Promise<void>,
): Promise<void> {
  const lab = await createLab("det");
  let d: Daemon | null = null;
  try {
    d = startDaemon(lab.target, [
      "-i",
      lab.targetIf,
      "--firewall",
      "none",
      "--metrics-addr",
      "off",
      "--log-rate",
      "0",
      ...extra,
    ]);
    await d.waitFor(/Listening on: /, 20000);
    await body(lab, d);
  } finally {
    if (d) await d.stop();
    await lab.destroy();
  }
}

const count = (text: string, needle: string) =>
  text.split("\n").filter((l) => l.includes(needle)).length;
const settle = () => new Promise((r) => setTimeout(r, 400));

Deno.test({
  name: "nmap -sS -T3 of 12 ports: exactly one 'Port scan detected' line for the scanner",
  ...opts,
  fn: () =>
    withDaemon([], async (lab, d) => {
      const r = await nmap(lab, ["-sS", "-T3", "-p", PORTS, lab.target4], {
        seconds: 30,
        retries: 1,
      });
      assert.equal(r.code, 0, r.stderr);
      await d.waitFor(new RegExp(`Port scan detected: ${lab.scanner4} -> ${lab.target4}`));
      await settle();
      assert.equal(count(d.stdout(), `Port scan detected: ${lab.scanner4} -> ${lab.target4}`), 1);
      assert.equal(count(d.stdout(), "Port scan detected"), 1);
      assert.match(
        d.stdout(),
        new RegExp(`New connection: ${lab.scanner4.replaceAll(".", "\\.")}:\\d+ -> `),
      );
      // --firewall none bans nothing, and no line claims it did.
      assert.doesNotMatch(d.stdout(), /banned\.|already in disallowed list/);
    }),
});

Deno.test({
  name: "IPv6 nmap scan is detected",
  ...opts,
  fn: () =>
    withDaemon([], async (lab, d) => {
      const r = await nmap(lab, ["-6", "-sS", "-p", PORTS, lab.target6], {
        seconds: 30,
        retries: 1,
      });
      assert.equal(r.code, 0, r.stderr);
      await d.waitFor(new RegExp(`Port scan detected: ${lab.scanner6} -> ${lab.target6}`));
      assert.match(
        d.stdout(),
        new RegExp(`New connection: \\[${lab.scanner6}\\]:\\d+ -> \\[${lab.target6}\\]:`),
      );
    }),
});

/** A Deno one-liner run inside a namespace. */
const denoEval = (lab: Lab, ns: string, code: string) =>
  lab.exec(ns, [Deno.execPath(), "eval", code]);

Deno.test({
  name: "a client making 50 connections to one open port is not a scanner",
  ...opts,
  fn: () =>
    withDaemon(["--count-open-ports"], async (lab, d) => {
      // A server on the target, a client on the scanner side, both real TCP.
      const server = new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          lab.target,
          Deno.execPath(),
          "eval",
          `const l = Deno.listen({ port: 8080 }); const t = setTimeout(() => Deno.exit(0), 20000); for await (const c of l) c.close();`,
        ],
        stdout: "null",
        stderr: "null",
      }).spawn();
      try {
        // The listener is up when ss(8) lists it (a fixed 800 ms wait could be short).
        for (const end = Date.now() + 15_000;;) {
          const ss = await lab.exec(lab.target, ["ss", "-Htln", "sport = :8080"]);
          if (ss.stdout.includes(":8080")) break;
          assert.ok(Date.now() < end, "the listener on 8080 never came up");
          await new Promise((r) => setTimeout(r, 50));
        }
        const r = await denoEval(
          lab,
          lab.scanner,
          `let ok = 0; for (let i = 0; i < 50; i++) { try { const c = await Deno.connect({ hostname: "${lab.target4}", port: 8080 }); c.close(); ok++; } catch {} } console.log(ok);`,
        );
        assert.equal(r.stdout.trim(), "50", r.stderr);
        // Waited for, not assumed after a fixed settle: the 50 lines.
        for (const end = Date.now() + 10_000; count(d.stdout(), "New connection:") < 50;) {
          assert.ok(Date.now() < end, d.stdout());
          await new Promise((r) => setTimeout(r, 50));
        }
        await settle();
        assert.equal(count(d.stdout(), "Port scan detected"), 0, d.stdout());
      } finally {
        try {
          server.kill("SIGKILL");
        } catch { /* ended */ }
        await server.status;
      }
    }),
});

Deno.test({
  name: "this host's own outbound connections to 20 ports of a peer are not a scan by the peer",
  ...opts,
  fn: () =>
    withDaemon([], async (lab, d) => {
      const r = await denoEval(
        lab,
        lab.target,
        `for (let p = 1000; p < 1020; p++) { try { (await Deno.connect({ hostname: "${lab.scanner4}", port: p })).close(); } catch {} }`,
      );
      assert.equal(r.code, 0, r.stderr);
      // It is, however, a sign worth reporting about this host itself.
      await d.waitFor(/Outbound port scan detected: /);
      await settle();
      assert.equal(count(d.stdout(), "Port scan detected"), 0, d.stdout());
      assert.equal(count(d.stdout(), "New connection:"), 0, d.stdout());
      assert.equal(
        count(d.stdout(), `Outbound port scan detected: ${lab.target4} -> ${lab.scanner4}`),
        1,
        d.stdout(),
      );
    }),
});
