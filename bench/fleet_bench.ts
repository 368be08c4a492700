/**
 * Fleet figures (issue 16), in namespaces around a real CrowdSec LAPI
 * (Debian crowdsec 1.4.6, LAPI only): hosts A and B run the real daemon
 * joined to it, S scans.
 *  - fan-out: A's ban element in A's kernel → the element in B's kernel, both
 *    seen by `nft monitor` in this process (one clock), over 20 scanners
 *    spaced at random within a poll interval, at the default interval and at
 *    100 ms;
 *  - 10,000 decisions imported with cscli, then B started: its first pull →
 *    all 10,000 elements in B's kernel;
 *  - CPU of an idle daemon joined at the default interval, and the same
 *    daemon without a fleet, over 30 s (/proc/PID/stat).
 * Prints figures; never passes or fails on time.
 */
import { DEFAULT_LAPI_POLL_SECONDS } from "../src/config.ts";
import { type Daemon, startDaemon } from "../tests/daemon.ts";
import { createStar, type Star, type StarHost } from "../tests/fleet_lab.ts";
import { type Lapi, startLapi } from "../tests/lapi.ts";
import { run } from "../tests/netns.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * (s.length - 1) + 0.5))] : NaN;
}

/** `nft monitor` inside a namespace: time each address first appears in an add-element event. */
function monitor(ns: string) {
  const seen = new Map<string, number>();
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", ns, "nft", "monitor", "elements"],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  let count = 0;
  (async () => {
    const dec = new TextDecoder();
    let buf = "";
    for await (const chunk of child.stdout) {
      const now = performance.now();
      buf += dec.decode(chunk, { stream: true });
      const lines = buf.split("\n");
      buf = lines.pop()!;
      for (const l of lines) {
        if (!l.startsWith("add element")) continue;
        for (const m of l.matchAll(/(\d+\.\d+\.\d+\.\d+)/g)) {
          if (!seen.has(m[1])) {
            seen.set(m[1], now);
            count++;
          }
        }
      }
    }
  })();
  return {
    seen,
    count: () => count,
    stop: async () => {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
    },
  };
}

function daemonFor(
  h: StarHost,
  o: { url: string; machine: string; pw: string; key: string; poll: number; port: number },
): Daemon {
  return startDaemon(h.ns, [
    "-i",
    h.ifname,
    "--firewall",
    "nftables",
    "--metrics-addr",
    `127.0.0.1:${o.port}`,
    "--lapi-url",
    o.url,
    "--lapi-machine",
    o.machine,
    "--lapi-password-file",
    o.pw,
    "--lapi-key-file",
    o.key,
    "--lapi-poll",
    String(o.poll),
  ]);
}

async function flushSets(star: Star, ns: string) {
  await star.exec(ns, ["nft", "flush", "set", "inet", "scanblocker", "banned4"]);
}

/** Fan-out over 20 fresh scanners at one poll interval. */
async function fanOut(
  star: Star,
  lapi: Lapi,
  files: { pwA: string; keyA: string; pwB: string; keyB: string },
  poll: number,
  firstHost: number,
): Promise<void> {
  const { s, a, b } = star.hosts;
  const A = daemonFor(a, {
    url: lapi.url,
    machine: "host-a",
    pw: files.pwA,
    key: files.keyA,
    poll,
    port: 9201,
  });
  const B = daemonFor(b, {
    url: lapi.url,
    machine: "host-b",
    pw: files.pwB,
    key: files.keyB,
    poll,
    port: 9202,
  });
  const monA = monitor(a.ns), monB = monitor(b.ns);
  const lat: number[] = [];
  try {
    await A.waitFor(/Listening on: e0/, 30_000);
    await B.waitFor(/Listening on: e0/, 30_000);
    await sleep(1500);
    for (let i = 0; i < 20; i++) {
      const src = star.gw4.replace(/\.254$/, `.${firstHost + i}`);
      await star.addAddress("s", src);
      // Random phase against B's polling.
      await sleep(Math.random() * poll * 1000);
      await star.exec(s.ns, [
        "timeout",
        "10",
        "nmap",
        "-n",
        "-Pn",
        "--max-retries",
        "0",
        "-sS",
        "-S",
        src,
        "-e",
        s.ifname,
        "-p",
        "5000-5009",
        a.v4,
      ]);
      const until = performance.now() + poll * 1000 + 10_000;
      while (performance.now() < until && !monB.seen.has(src)) await sleep(5);
      const ta = monA.seen.get(src), tb = monB.seen.get(src);
      if (ta !== undefined && tb !== undefined) lat.push(tb - ta);
      else console.log(`  scanner ${src}: ${ta === undefined ? "not banned on A" : "never on B"}`);
    }
  } finally {
    await monA.stop();
    await monB.stop();
    await A.stop();
    await B.stop();
  }
  const pollMs = poll * 1000;
  console.log(
    `fan-out at --lapi-poll ${poll}s over ${lat.length} scanners (A's element → B's element): ` +
      `p50 ${quantile(lat, 0.5).toFixed(0)} ms, p99 ${quantile(lat, 0.99).toFixed(0)} ms, ` +
      `min ${Math.min(...lat).toFixed(0)}, max ${Math.max(...lat).toFixed(0)} ` +
      `(goal p50 ≤ ${(pollMs / 2 + 20).toFixed(0)} ms, p99 ≤ ${(pollMs + 50).toFixed(0)} ms)`,
  );
}

/** 10,000 decisions waiting in the LAPI; B starts: first pull → all in B's kernel. */
async function startupBatch(
  star: Star,
  lapi: Lapi,
  files: { pwB: string; keyB: string },
): Promise<void> {
  const { b } = star.hosts;
  const list = [];
  for (let i = 0; i < 10_000; i++) {
    list.push({ duration: "4h", scope: "ip", type: "ban", value: `198.18.${i >> 8}.${i & 255}` });
  }
  const file = `${lapi.dir}/import.json`;
  await Deno.writeTextFile(file, JSON.stringify(list));
  const t0 = performance.now();
  await lapi.cscliOk(["decisions", "import", "-i", file]);
  console.log(`(cscli decisions import of 10,000: ${(performance.now() - t0).toFixed(0)} ms)`);
  await flushSets(star, b.ns);
  // A fresh bouncer key: its first pull is a startup pull with everything.
  const key = `${lapi.dir}/key-b2`;
  await Deno.writeTextFile(key, await lapi.addBouncer("host-b-startup"));
  const mon = monitor(b.ns);
  await sleep(300);
  const B = daemonFor(b, {
    url: lapi.url,
    machine: "host-b",
    pw: files.pwB,
    key,
    poll: 1,
    port: 9203,
  });
  try {
    await B.waitFor(/fleet: LAPI .* as machine/, 30_000);
    const tStart = performance.now();
    const until = tStart + 60_000;
    while (performance.now() < until && mon.count() < 10_000) await sleep(5);
    const r = await star.exec(b.ns, ["nft", "list", "set", "inet", "scanblocker", "banned4"]);
    const inSet = (r.stdout.match(/198\.18\./g) ?? []).length;
    if (mon.count() < 10_000) console.log(B.stderr());
    const last = Math.max(...[...mon.seen.values()]);
    const first = Math.min(...[...mon.seen.values()]);
    console.log(
      `10,000 decisions at start: fleet start line → all ${mon.count()} (set holds ${inSet}) in B's kernel ${
        (last - tStart).toFixed(0)
      } ms (first element at ${(first - tStart).toFixed(0)} ms; goal < 1000 ms)`,
    );
  } finally {
    await mon.stop();
    await B.stop();
  }
  // Clean the LAPI for what follows.
  await lapi.cscliOk(["decisions", "delete", "--all"]);
}

/** CPU share of one core used by a process over `seconds`. */
async function cpuShare(pid: number, seconds: number): Promise<number> {
  const ticks = async () => {
    const st = await Deno.readTextFile(`/proc/${pid}/stat`);
    const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
    return Number(f[11]) + Number(f[12]); // utime + stime
  };
  const a = await ticks();
  await sleep(seconds * 1000);
  return (await ticks() - a) / 100 / seconds;
}

async function daemonPid(marker: string): Promise<number> {
  const r = await run(["pgrep", "-n", "-f", marker]);
  return Number(r.stdout.trim().split("\n").pop());
}

async function idleCpu(star: Star, lapi: Lapi, files: { pwB: string; keyB: string }) {
  const { b } = star.hosts;
  const poll = DEFAULT_LAPI_POLL_SECONDS;
  for (const joined of [true, false]) {
    const port = joined ? 9204 : 9205;
    const args = [
      "-i",
      b.ifname,
      "--firewall",
      "nftables",
      "--metrics-addr",
      `127.0.0.1:${port}`,
      ...(joined
        ? [
          "--lapi-url",
          lapi.url,
          "--lapi-machine",
          "host-b",
          "--lapi-password-file",
          files.pwB,
          "--lapi-key-file",
          files.keyB,
          "--lapi-poll",
          String(poll),
        ]
        : []),
    ];
    const B = startDaemon(b.ns, args);
    try {
      await B.waitFor(/Listening on: e0/, 30_000);
      await sleep(5000);
      const pid = await daemonPid(`main.ts .*--metrics-addr 127.0.0.1:${port}`);
      const share = await cpuShare(pid, 30);
      console.log(
        `idle daemon ${joined ? `joined (--lapi-poll ${poll}s)` : "without a fleet"}: ` +
          `${(share * 100).toFixed(2)}% of a core over 30 s (goal < 1% joined)`,
      );
    } finally {
      await B.stop();
    }
  }
}

if (import.meta.main) {
  console.log(`load average at start: ${Deno.loadavg().map((x) => x.toFixed(2)).join(" ")}`);
  const star = await createStar("fb", { s: 1, a: 11, b: 12 });
  let lapi: Lapi | null = null;
  try {
    lapi = await startLapi({ ns: star.hub, host: star.gw4, port: 8080 });
    const f = async (name: string, text: string) => {
      await Deno.writeTextFile(`${lapi!.dir}/${name}`, text + "\n", { mode: 0o600 });
      return `${lapi!.dir}/${name}`;
    };
    const files = {
      pwA: await f("pw-a", await lapi.addMachine("host-a")),
      pwB: await f("pw-b", await lapi.addMachine("host-b")),
      keyA: await f("key-a", await lapi.addBouncer("host-a")),
      keyB: await f("key-b", await lapi.addBouncer("host-b")),
    };
    const which = Deno.args;
    const want = (x: string) => which.length === 0 || which.includes(x);
    if (want("fanout")) {
      await fanOut(star, lapi, files, 0.1, 100);
      await fanOut(star, lapi, files, DEFAULT_LAPI_POLL_SECONDS, 130);
    }
    if (want("startup")) await startupBatch(star, lapi, files);
    if (want("cpu")) await idleCpu(star, lapi, files);
  } finally {
    await lapi?.destroy();
    await star.destroy();
  }
  console.log(`load average at end: ${Deno.loadavg().map((x) => x.toFixed(2)).join(" ")}`);
}
