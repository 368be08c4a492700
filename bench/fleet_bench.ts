/**
 * Fleet figures (issue 16), in namespaces around a real CrowdSec LAPI
 * (Debian crowdsec 1.4.6, LAPI only): hosts A and B run the real daemon
 * joined to it, S scans.
 *  - fan-out: A's ban element in A's kernel → the element in B's kernel, both
 *    seen by `nft monitor` in this process (one clock), over 20 scanners, at
 *    the default interval and at 100 ms, RUNS times each (every latency
 *    printed). The scanners come one after another: each starts a random
 *    0.5 to 1.5 intervals (plus SB_BENCH_GAP seconds, default 0) after the
 *    previous nmap ended, never looking at B, so where each ban falls against
 *    B's pulls is independent of them (uniform: the 20-scanner p50 of a fixed
 *    grid moves by about ±110 ms at 1 s by chance). Before, each scanner
 *    started a chosen fraction of the interval after B got the previous one:
 *    tied to B's pulls, which a B that changes its pace after a ban would see.
 *    The mean spacing is the same as then (about one interval plus nmap's
 *    time). SB_BENCH_GAP=11 spaces them beyond B's campaign hold (10 s at
 *    1 s): every ban is then the first of its campaign. tcpdump on the LAPI's
 *    bridge splits each latency into
 *    A (ban → POST on the wire), the LAPI's write (POST → its answer), the
 *    wait for B's next pull, the LAPI's read (B's GET → answer) and B
 *    (answer → element in its kernel);
 *  - 10,000 decisions imported with cscli, then B started: its first pull →
 *    all 10,000 elements in B's kernel;
 *  - CPU of an idle daemon joined at the default interval, and the same
 *    daemon without a fleet, in turns, RUNS times each, 30 s each after 5 s
 *    of rest: utime+stime of the process (all its threads, per thread
 *    printed) plus the child processes it reaped meanwhile (cutime+cstime:
 *    `nft -j`), from /proc/PID/stat.
 * Prints figures; never passes or fails on time.
 *
 *   deno run -A bench/fleet_bench.ts [fanout|startup|cpu|cpu-held]
 *     (SB_BENCH_RUNS=3, SB_BENCH_POLLS=0.1,1, SB_BENCH_GAP=0)
 *
 * cpu-held (only when named): the idle CPU again while B's set holds the
 * 10,000 elements of the startup case.
 */
import { DEFAULT_LAPI_POLL_SECONDS } from "../src/config.ts";
import { type Daemon, startDaemon } from "../tests/daemon.ts";
import { createStar, type Star, type StarHost } from "../tests/fleet_lab.ts";
import { type Lapi, startLapi } from "../tests/lapi.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
// At most 5 a poll interval: every fan-out run takes 20 scanner addresses of the /24.
const RUNS = Math.max(1, Math.min(5, Number(Deno.env.get("SB_BENCH_RUNS") ?? 3)));
/** Seconds added to the spacing of the fan-out's scanners (see the module comment). */
const GAP_S = Math.max(0, Number(Deno.env.get("SB_BENCH_GAP") ?? 0));
const load = () => Deno.loadavg().map((x) => x.toFixed(2)).join(" ");
const median = (xs: number[]) => quantile(xs, 0.5);

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * (s.length - 1) + 0.5))] : NaN;
}

/** `nft monitor` inside a namespace: time each address first appears in an add-element event. */
function monitor(ns: string, only?: RegExp) {
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
          if (!seen.has(m[1]) && (!only || only.test(m[1]))) {
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

/** HTTP segments carrying data on the LAPI's bridge (tcpdump in the hub), with their wall time. */
function wire(hub: string) {
  const seen: { t: number; from: string; to: string; len: number }[] = [];
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", hub, "tcpdump", "-i", "br0", "-tt", "-n", "-l", "-q"].concat(
      "tcp port 8080 and (tcp[tcpflags] & tcp-push != 0)",
    ),
    stdout: "piped",
    stderr: "null",
  }).spawn();
  (async () => {
    const dec = new TextDecoder();
    let buf = "";
    for await (const chunk of child.stdout) {
      buf += dec.decode(chunk, { stream: true });
      const lines = buf.split("\n");
      buf = lines.pop()!;
      for (const l of lines) {
        const m = l.match(
          /^(\d+\.\d+) IP (\d+\.\d+\.\d+\.\d+)\.\d+ > (\d+\.\d+\.\d+\.\d+)\.\d+: tcp (\d+)/,
        );
        if (m) seen.push({ t: Number(m[1]) * 1000, from: m[2], to: m[3], len: Number(m[4]) });
      }
    }
  })();
  return {
    /**
     * A's ban at `ta` and B's element at `tb` (performance.now()) split at
     * A's POST (the first segment from A over 400 bytes; its GETs are about
     * 200), the LAPI's answer to it, B's GET that brought the decision (the
     * first answer to B after that over 250 bytes; an empty stream is about
     * 160, one decision about 300) and that answer; null when the capture
     * does not show them.
     */
    split(ta: number, tb: number, a: string, b: string): number[] | null {
      const ea = performance.timeOrigin + ta, eb = performance.timeOrigin + tb;
      const post = seen.find((x) => x.t >= ea - 1 && x.from === a && x.len > 400);
      const posted = post && seen.find((x) => x.t >= post.t && x.to === a);
      const got = posted &&
        seen.find((x) => x.t >= posted.t && x.to === b && x.len > 250 && x.t <= eb + 1);
      const get = got && seen.filter((x) => x.t <= got.t && x.from === b).pop();
      if (!post || !posted || !got || !get || get.t < posted.t) return null;
      return [post.t - ea, posted.t - post.t, get.t - posted.t, got.t - get.t, eb - got.t];
    },
    stop: async () => {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
    },
  };
}

/** Fan-out over 20 fresh scanners at one poll interval; returns the latencies, ms. */
async function fanOut(
  star: Star,
  lapi: Lapi,
  files: { pwA: string; keyA: string; pwB: string; keyB: string },
  poll: number,
  firstHost: number,
  label: string,
): Promise<number[]> {
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
  const monA = monitor(a.ns), monB = monitor(b.ns), tap = wire(star.hub);
  const lat: number[] = [];
  const parts: number[][] = [];
  const loadAtStart = load();
  const srcs: string[] = [];
  const nmapMs: number[] = [];
  try {
    await A.waitFor(/Listening on: e0/, 30_000);
    await B.waitFor(/Listening on: e0/, 30_000);
    await sleep(1500);
    for (let i = 0; i < 20; i++) {
      const src = star.gw4.replace(/\.254$/, `.${firstHost + i}`);
      srcs.push(src);
      await star.addAddress("s", src);
      // Independent of B (see the module comment).
      await sleep((0.5 + Math.random()) * poll * 1000 + GAP_S * 1000);
      const t0 = performance.now();
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
      nmapMs.push(performance.now() - t0);
    }
    const until = performance.now() + poll * 1000 + 10_000;
    while (performance.now() < until && srcs.some((x) => !monB.seen.has(x))) await sleep(5);
    await sleep(50); // tcpdump's lines
    for (const src of srcs) {
      const ta = monA.seen.get(src), tb = monB.seen.get(src);
      if (ta !== undefined && tb !== undefined) {
        lat.push(tb - ta);
        const split = tap.split(ta, tb, a.v4, b.v4);
        if (split) parts.push(split);
        // Where an outlier's time went.
        if (tb - ta > poll * 1000 + 20) {
          console.log(
            `  slow: ${src} ${(tb - ta).toFixed(0)} ms, split ${
              split ? split.map((x) => x.toFixed(1)).join(" / ") : "not in the capture"
            }`,
          );
        }
      } else {
        console.log(`  scanner ${src}: ${ta === undefined ? "not banned on A" : "never on B"}`);
      }
    }
  } finally {
    await tap.stop();
    await monA.stop();
    await monB.stop();
    await A.stop();
    await B.stop();
  }
  // The daemons' fleet lines beyond the start-up one (LAPI down/back, decisions a full pull found).
  for (const [name, d] of [["A", A], ["B", B]] as const) {
    for (const l of d.stderr().split("\n")) {
      if (/fleet: /.test(l) && !/fleet: LAPI \S+ as /.test(l)) console.log(`  ${name}: ${l}`);
    }
  }
  const pollMs = poll * 1000;
  const stage = (k: number) => median(parts.map((p) => p[k])).toFixed(1);
  console.log(
    `fan-out ${label} at --lapi-poll ${poll}s over ${lat.length} scanners (A's element → B's element), ` +
      `load ${loadAtStart}: p50 ${median(lat).toFixed(0)} ms, p99 ${
        quantile(lat, 0.99).toFixed(0)
      } ms ` +
      `(goal p50 ≤ ${(pollMs / 2 + 20).toFixed(0)} ms, p99 ≤ ${(pollMs + 50).toFixed(0)} ms)\n` +
      `  every scanner in order, ms: ${lat.map((x) => x.toFixed(0)).join(" ")} ` +
      `(nmap ${median(nmapMs).toFixed(0)} ms each, median; gap ${GAP_S} s more)\n` +
      `  medians over the ${parts.length} the capture splits: A ${stage(0)}, LAPI write ${
        stage(1)
      }, ` +
      `wait for B's pull ${stage(2)}, LAPI read ${stage(3)}, B ${stage(4)}`,
  );
  return lat;
}

/** RUNS fan-out runs at one interval, then the figures of all of them together. */
async function fanOutRuns(
  star: Star,
  lapi: Lapi,
  files: { pwA: string; keyA: string; pwB: string; keyB: string },
  poll: number,
  firstHost: number,
): Promise<void> {
  const all: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    all.push(...await fanOut(star, lapi, files, poll, firstHost + 20 * r, `run ${r + 1}/${RUNS}`));
  }
  console.log(
    `fan-out at --lapi-poll ${poll}s, all ${all.length} scanners: p50 ${
      median(all).toFixed(0)
    } ms, ` +
      `p99 ${quantile(all, 0.99).toFixed(0)} ms, max ${Math.max(...all).toFixed(0)} ms`,
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
  await lapi.cscliOk(["decisions", "delete", "--all"]);
  const t0 = performance.now();
  await lapi.cscliOk(["decisions", "import", "-i", file]);
  console.log(`(cscli decisions import of 10,000: ${(performance.now() - t0).toFixed(0)} ms)`);
  await flushSets(star, b.ns);
  // A fresh bouncer key: its first pull is a startup pull with everything.
  const key = `${lapi.dir}/key-b2`;
  await Deno.writeTextFile(key, await lapi.addBouncer("host-b-startup"));
  // The LAPI's own share: one startup pull of the same set with another fresh key.
  const probeKey = await lapi.addBouncer("probe-startup");
  const curl = await star.exec(b.ns, [
    "curl",
    "-s",
    "-o",
    "/dev/null",
    "-w",
    "%{time_starttransfer} %{time_total}",
    "-H",
    `X-Api-Key: ${probeKey}`,
    `${lapi.url}/v1/decisions/stream?startup=true`,
  ]);
  const [ttfb, total] = curl.stdout.split(" ").map((x) => Number(x) * 1000);
  console.log(
    `(the LAPI alone, curl: first byte ${ttfb.toFixed(0)} ms, whole answer ${total.toFixed(0)} ms)`,
  );
  const mon = monitor(b.ns, /^198\.18\./);
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

/** Clock ticks (1/100 s) of a process: its own (all threads) and its reaped children's, and per thread. */
async function ticks(pid: number) {
  const fields = (st: string) => st.slice(st.lastIndexOf(")") + 2).split(" ");
  const f = fields(await Deno.readTextFile(`/proc/${pid}/stat`));
  const threads = new Map<string, number>();
  for await (const e of Deno.readDir(`/proc/${pid}/task`)) {
    try {
      const st = await Deno.readTextFile(`/proc/${pid}/task/${e.name}/stat`);
      const name = st.slice(st.indexOf("(") + 1, st.lastIndexOf(")"));
      const t = fields(st);
      threads.set(`${name}[${e.name}]`, Number(t[11]) + Number(t[12]));
    } catch { /* ended */ }
  }
  return {
    self: Number(f[11]) + Number(f[12]),
    children: Number(f[13]) + Number(f[14]),
    threads,
  };
}

/** CPU of the daemon `pid` over `seconds`, as shares of one core, with the threads that used any. */
async function cpuShare(pid: number, seconds: number) {
  const a = await ticks(pid);
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const z = await ticks(pid);
  const s = (performance.now() - t0) / 1000;
  const busy = [...z.threads].map(([k, v]) => [k, v - (a.threads.get(k) ?? 0)] as const)
    .filter(([, d]) => d > 0).map(([k, d]) => `${k} ${(d / s).toFixed(2)}%`);
  return {
    self: (z.self - a.self) / 100 / s,
    children: (z.children - a.children) / 100 / s,
    threads: busy.join(", "),
  };
}

/** The backend of the idle-CPU runs: the daemon's default unless SB_BENCH_FIREWALL names one. */
const IDLE_FIREWALL = Deno.env.get("SB_BENCH_FIREWALL") ?? "iptables";

async function idleCpu(
  star: Star,
  lapi: Lapi,
  files: { pwB: string; keyB: string },
  label = "",
) {
  const { b } = star.hosts;
  const poll = DEFAULT_LAPI_POLL_SECONDS;
  const seconds = 30;
  const shares: Record<string, number[]> = { joined: [], alone: [] };
  for (let r = 0; r < RUNS; r++) {
    for (const joined of [true, false]) {
      const port = joined ? 9204 : 9205;
      const args = [
        "-i",
        b.ifname,
        "--firewall",
        IDLE_FIREWALL,
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
        const loadAt = load();
        const c = await cpuShare(B.pid, seconds);
        const total = c.self + c.children;
        shares[joined ? "joined" : "alone"].push(total);
        console.log(
          `idle daemon${label} (--firewall ${IDLE_FIREWALL}) ${
            joined ? `joined (--lapi-poll ${poll}s)` : "without a fleet"
          }, run ${r + 1}/${RUNS}, load ${loadAt}: ${
            (total * 100).toFixed(2)
          }% of a core over ${seconds} s ` +
            `(itself ${(c.self * 100).toFixed(2)}%, child processes ${
              (c.children * 100).toFixed(2)
            }%; threads: ${c.threads || "none"}) (goal < 1% joined)`,
        );
      } finally {
        await B.stop();
      }
    }
  }
  const pct = (xs: number[]) => xs.map((x) => (x * 100).toFixed(2)).join(", ");
  console.log(
    `idle daemon${label}, every run: joined ${pct(shares.joined)}% (median ${
      (median(shares.joined) * 100).toFixed(2)
    }), without a fleet ${pct(shares.alone)}% (median ${(median(shares.alone) * 100).toFixed(2)})`,
  );
}

if (import.meta.main) {
  console.log(`load average at start: ${load()}`);
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
      // SB_BENCH_POLLS=1 (a comma list) runs only those intervals.
      const polls = (Deno.env.get("SB_BENCH_POLLS") ?? `0.1,${DEFAULT_LAPI_POLL_SECONDS}`)
        .split(",").map(Number);
      // Every run takes 20 scanner addresses of the /24, from .20 up to .239.
      if (polls.length * RUNS > 11) {
        throw new Error(
          `SB_BENCH_POLLS × SB_BENCH_RUNS: at most 11 fan-out runs (${polls.length} × ${RUNS})`,
        );
      }
      for (const [i, poll] of polls.entries()) {
        await fanOutRuns(star, lapi, files, poll, 20 + 20 * RUNS * i);
      }
    }
    if (want("startup")) await startupBatch(star, lapi, files);
    if (want("cpu")) {
      // No bans held (the startup case leaves 10,000 elements in B's set).
      await flushSets(star, star.hosts.b.ns);
      await idleCpu(star, lapi, files);
    }
    if (Deno.args.includes("cpu-held")) {
      // The same while B's set holds the 10,000 elements of the startup case.
      await startupBatch(star, lapi, files);
      await idleCpu(star, lapi, files, " holding 10,000 bans");
    }
  } finally {
    await lapi?.destroy();
    await star.destroy();
  }
  console.log(`load average at end: ${load()}`);
}
