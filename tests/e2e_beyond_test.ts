/**
 * Issue 7 end to end: stealth scans by real nmap, slow scans from a real
 * capture with stretched timestamps, psd mode, horizontal scans, the open-port
 * exemption and the lockout guard — in namespaces, with the real daemon.
 */
import assert from "node:assert/strict";
import { type Daemon, runMain, startDaemon } from "./daemon.ts";
import { canUseNetns, createLab, type Lab, must, nmap } from "./netns.ts";
import { parsePcap } from "./pcapfile.ts";

const root = await canUseNetns();
const opts = { ignore: !root, sanitizeOps: false, sanitizeResources: false };
const fixture = (name: string) => new URL(`./fixtures/${name}`, import.meta.url).pathname;

async function withDaemon(
  extra: string[],
  body: (lab: Lab, d: Daemon) => Promise<void>,
  before?: (lab: Lab) => Promise<void>,
): Promise<void> {
  const lab = await createLab("b7");
  let d: Daemon | null = null;
  try {
    if (before) await before(lab);
    d = startDaemon(lab.target, [
      "-i",
      lab.targetIf,
      "--firewall",
      "none",
      "--metrics-addr",
      "off",
      "--log-format",
      "json",
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

const events = (d: Daemon) =>
  d.stdout().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
const nmapScan = (lab: Lab, args: string[]) => nmap(lab, args, { seconds: 30, retries: 1 });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const [flag, type] of [["-sN", "null"], ["-sF", "fin"], ["-sX", "xmas"]] as const) {
  Deno.test({
    name: `nmap ${flag} (IPv4 and IPv6) is detected with scan type ${type}`,
    ...opts,
    fn: () =>
      withDaemon([], async (lab, d) => {
        for (
          const [v6, src, dst] of [[false, lab.scanner4, lab.target4], [
            true,
            lab.scanner6,
            lab.target6,
          ]] as const
        ) {
          const r = await nmapScan(lab, [...(v6 ? ["-6"] : []), flag, "-p", "21-30", dst]);
          assert.equal(r.code, 0, r.stderr);
          const scan = async () => {
            for (let i = 0; i < 100; i++) {
              const e = events(d).find((e) => e.event === "scan_detected" && e.src === src);
              if (e) return e;
              await sleep(50);
            }
            throw new Error(`no scan_detected for ${src}:\n${d.stdout()}\n${d.stderr()}`);
          };
          const e = await scan();
          assert.equal(e.scan_type, type);
          assert.equal(e.dst, dst);
        }
      }),
  });
}

/** Rewrites a capture with its packets `gapS` seconds apart (a -T0/-T1 pace). */
function stretch(src: string, dst: string, gapS: number): void {
  const bytes = Deno.readFileSync(src);
  const f = parsePcap(bytes);
  const out = new Uint8Array(bytes.length);
  out.set(bytes.subarray(0, 24));
  const v = new DataView(out.buffer);
  let at = 24;
  const t0 = f.records[0].tsSec;
  f.records.forEach((r, i) => {
    const rec = bytes.subarray(r.offset - 16, r.offset + r.caplen);
    out.set(rec, at);
    v.setUint32(at, t0 + i * gapS, true);
    v.setUint32(at + 4, 0, true);
    at += rec.length;
  });
  Deno.writeFileSync(dst, out.subarray(0, at));
}

Deno.test("slow scan: a real capture replayed at one packet every 30 s is caught by the long window only", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const file = `${dir}/slow.pcap`;
    stretch(fixture("eth.pcap"), file, 30);
    const r = await runMain(["-r", file, "--log-format", "json"]);
    assert.equal(r.code, 0, r.stderr);
    const ev = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
    const scans = ev.filter((e) => e.event === "scan_detected");
    assert.ok(scans.length >= 1, r.stdout.slice(-2000));
    assert.ok(scans.every((e) => e.rule === "slow"), JSON.stringify(scans));
    // Without the long window the same capture shows no scan at all.
    const off = await runMain(["-r", file, "--slow-ports", "0"]);
    assert.match(off.stdout, /, 0 scans/);
    // psd mode on the same captures: the fast original is a scan, the stretched one is not.
    const psdSlow = await runMain(["-r", file, "--detector", "psd", "--slow-ports", "0"]);
    assert.match(psdSlow.stdout, /, 0 scans/);
    const psdFast = await runMain([
      "-r",
      fixture("eth.pcap"),
      "--detector",
      "psd",
      "--log-format",
      "json",
    ]);
    assert.ok(psdFast.stdout.includes(`"rule":"psd"`), psdFast.stdout.slice(-1000));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test({
  name: "horizontal: a scan of two target addresses with 2 ports each is detected",
  ...opts,
  fn: async () => {
    let second = "";
    await withDaemon([], async (lab, d) => {
      const r = await nmapScan(lab, ["-sS", "-p", "22,80", lab.target4, second]);
      assert.equal(r.code, 0, r.stderr);
      await d.waitFor(new RegExp(`"event":"scan_detected"[^\\n]*"src":"${lab.scanner4}"`));
    }, async (lab) => {
      const base = lab.target4.split(".").slice(0, 3).join(".");
      second = `${base}.3`;
      await must([
        "ip",
        "netns",
        "exec",
        lab.target,
        "ip",
        "addr",
        "add",
        `${second}/24`,
        "dev",
        lab.targetIf,
      ]);
    });
  },
});

Deno.test({
  name: "four open services used by a client are not a scan; four closed ports probed are",
  ...opts,
  fn: () =>
    withDaemon([], async (lab, d) => {
      // Listeners on four ports of the target (ssh, smtp, web, https stand-ins).
      const server = new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          lab.target,
          Deno.execPath(),
          "eval",
          `for (const port of [22, 25, 80, 443]) { (async () => { for await (const c of Deno.listen({ port })) c.close(); })(); } setTimeout(() => Deno.exit(0), 20000);`,
        ],
        stdout: "null",
        stderr: "null",
      }).spawn();
      try {
        await sleep(2600); // the daemon re-reads the listening sockets every 2 s
        const client = await lab.exec(lab.scanner, [
          Deno.execPath(),
          "eval",
          `for (const port of [80, 443, 22, 25, 80, 443]) { (await Deno.connect({ hostname: "${lab.target4}", port })).close(); }`,
        ]);
        assert.equal(client.code, 0, client.stderr);
        await sleep(500);
        assert.equal(events(d).filter((e) => e.event === "scan_detected").length, 0, d.stdout());
        // Another source probing four closed ports is a scanner.
        const base = lab.scanner4.split(".").slice(0, 3).join(".");
        const prober = `${base}.77`;
        await lab.addScannerAddress(`${prober}/24`);
        const r = await nmapScan(lab, [
          "-sS",
          "-S",
          prober,
          "-e",
          lab.scannerIf,
          "-p",
          "1000-1003",
          lab.target4,
        ]);
        assert.equal(r.code, 0, r.stderr);
        await d.waitFor(new RegExp(`"event":"scan_detected"[^\\n]*"src":"${prober}"`));
      } finally {
        try {
          server.kill("SIGKILL");
        } catch { /* ended */ }
        await server.status;
      }
    }),
});

Deno.test({
  name: "a spoofed probe burst from the default gateway does not get the gateway banned",
  ...opts,
  fn: () =>
    withDaemon([], async (lab, d) => {
      assert.match(d.stderr(), new RegExp(`lockout guard[^\\n]*${lab.scanner4}`));
      // hping3 with the gateway as (spoofed) source, 20 ports, bounded.
      const r = await lab.exec(lab.scanner, [
        "timeout",
        "10",
        "hping3",
        "-q",
        "-S",
        "-a",
        lab.scanner4,
        "-p",
        "++2000",
        "-c",
        "20",
        "-i",
        "u2000",
        lab.target4,
      ]);
      assert.ok(r.code === 0 || r.code === 1, r.stderr);
      // At least 10 of its SYNs logged (waited for, not assumed after 500 ms).
      const seen = () =>
        events(d).filter((e) => e.event === "new_connection" && e.src === lab.scanner4).length;
      for (const end = Date.now() + 10_000; seen() < 10;) {
        assert.ok(Date.now() < end, d.stdout());
        await sleep(50);
      }
      await sleep(500); // and no scan line after them
      const ev = events(d);
      assert.equal(ev.filter((e) => e.event === "scan_detected").length, 0, d.stdout());
      assert.equal(ev.filter((e) => e.event === "banned").length, 0);
    }, async (lab) => {
      await must([
        "ip",
        "netns",
        "exec",
        lab.target,
        "ip",
        "route",
        "add",
        "default",
        "via",
        lab.scanner4,
      ]);
    }),
});
