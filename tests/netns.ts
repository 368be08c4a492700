/**
 * A two-host lab in network namespaces for tests and benchmarks that capture,
 * scan or change a firewall. Every lab has names unique to this run, is
 * created by the test itself and removed afterwards; nothing here touches the
 * machine's own namespace beyond creating and deleting the namespaces.
 *
 *   [ns "scanner"] veth s0 10.X.Y.1/24, fdXX::1/64  <->  veth t0 10.X.Y.2/24, fdXX::2/64 [ns "target"]
 */

/** Result of a command run to completion. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

const dec = new TextDecoder();

/** Runs a command to completion and returns its output; never throws for a non-zero exit. */
export async function run(cmd: string[], opts: { stdin?: string } = {}): Promise<RunResult> {
  const c = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    stdout: "piped",
    stderr: "piped",
    stdin: opts.stdin !== undefined ? "piped" : "null",
  });
  const p = c.spawn();
  if (opts.stdin !== undefined) {
    const w = p.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin));
    await w.close();
  }
  const o = await p.output();
  return { code: o.code, stdout: dec.decode(o.stdout), stderr: dec.decode(o.stderr) };
}

/** Runs a command and throws with its stderr when it fails. */
export async function must(cmd: string[]): Promise<string> {
  const r = await run(cmd);
  if (r.code !== 0) throw new Error(`${cmd.join(" ")} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** A pair of namespaces joined by a veth pair, with IPv4 and IPv6 addresses. */
export interface Lab {
  /** Namespace of the scanning/peer host. */
  scanner: string;
  /** Namespace of the protected host (where scanblocker runs). */
  target: string;
  /** Interface names inside each namespace. */
  scannerIf: string;
  targetIf: string;
  scanner4: string;
  target4: string;
  scanner6: string;
  target6: string;
  /** Runs a command inside a namespace. */
  exec(ns: string, cmd: string[]): Promise<RunResult>;
  /** argv prefix that runs a command inside a namespace (for Deno.Command). */
  prefix(ns: string): string[];
  /** Adds another address to the scanner side (for multi-source tests). */
  addScannerAddress(cidr: string): Promise<void>;
  /** Deletes both namespaces. Safe to call twice. */
  destroy(): Promise<void>;
}

/** `s` as a literal inside a RegExp (addresses, rule text). */
export const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

let counter = 0;

/** True when this process can create network namespaces (root or CAP_SYS_ADMIN + ip installed). */
export async function canUseNetns(): Promise<boolean> {
  try {
    const r = await run(["ip", "netns", "list"]);
    return r.code === 0 && Deno.uid() === 0;
  } catch {
    return false;
  }
}

/** Creates a fresh lab; call `destroy()` in a finally block. */
export async function createLab(tag = "lab"): Promise<Lab> {
  const id = `${Deno.pid % 100000}${(counter++).toString(36)}${
    Math.floor(Math.random() * 36 ** 3).toString(36)
  }`;
  const scanner = `sb-${tag}-s-${id}`;
  const target = `sb-${tag}-t-${id}`;
  // Subnet bytes derived from the id so parallel labs do not share addresses.
  const x = 100 + (Deno.pid % 100), y = (counter * 7 + Math.floor(Math.random() * 250)) % 250;
  const scanner4 = `10.${x}.${y}.1`, target4 = `10.${x}.${y}.2`;
  // The second group is never 0: "fd94:0::1" is not how tools print fd94::1 (a test failed on it).
  const p6 = `fd${(x % 256).toString(16).padStart(2, "0")}:${(y + 1).toString(16)}::`;
  const scanner6 = `${p6}1`, target6 = `${p6}2`;
  const vs = `sbs${id}`.slice(0, 15), vt = `sbt${id}`.slice(0, 15);
  const lab: Lab = {
    scanner,
    target,
    scannerIf: "s0",
    targetIf: "t0",
    scanner4,
    target4,
    scanner6,
    target6,
    exec: (ns, cmd) => run(["ip", "netns", "exec", ns, ...cmd]),
    prefix: (ns) => ["ip", "netns", "exec", ns],
    addScannerAddress: async (cidr) => {
      await must(["ip", "netns", "exec", scanner, "ip", "addr", "add", cidr, "dev", "s0"]);
    },
    destroy: async () => {
      await run(["ip", "netns", "del", scanner]);
      await run(["ip", "netns", "del", target]);
    },
  };
  try {
    await must(["ip", "netns", "add", scanner]);
    await must(["ip", "netns", "add", target]);
    await must(["ip", "link", "add", vs, "type", "veth", "peer", "name", vt]);
    await must(["ip", "link", "set", vs, "netns", scanner]);
    await must(["ip", "link", "set", vt, "netns", target]);
    for (
      const [ns, from, to, a4, a6] of [
        [scanner, vs, "s0", scanner4, scanner6],
        [target, vt, "t0", target4, target6],
      ]
    ) {
      const e = (cmd: string[]) => must(["ip", "netns", "exec", ns, ...cmd]);
      await e(["ip", "link", "set", from, "name", to]);
      await e(["ip", "link", "set", "lo", "up"]);
      await e(["ip", "addr", "add", `${a4}/24`, "dev", to]);
      await e(["ip", "-6", "addr", "add", `${a6}/64`, "dev", to, "nodad"]);
      await e(["ip", "link", "set", to, "up"]);
    }
  } catch (e) {
    await lab.destroy();
    throw e;
  }
  return lab;
}

/**
 * Runs nmap from the lab's scanner namespace the way every test wants it:
 * numeric, no host discovery, bounded in time (`timeout`) and in retries.
 */
export function nmap(
  lab: Lab,
  args: string[],
  opts: { seconds?: number; retries?: number } = {},
): Promise<RunResult> {
  return lab.exec(lab.scanner, [
    "timeout",
    String(opts.seconds ?? 20),
    "nmap",
    "-n",
    "-Pn",
    "--max-retries",
    String(opts.retries ?? 0),
    ...args,
  ]);
}

/**
 * nmap's SYN-scan state word ("open", "closed", "filtered") for each of
 * `ports` of `addr`, seen from the scanner namespace, joined with commas.
 */
export async function portStates(lab: Lab, addr: string, ports: number[]): Promise<string> {
  const r = await nmap(lab, [
    ...(addr.includes(":") ? ["-6"] : []),
    "-sS",
    "-p",
    ports.join(","),
    "--host-timeout",
    "5s",
    addr,
  ]);
  const states = ports.map((p) => new RegExp(`^${p}/tcp\\s+(\\S+)`, "m").exec(r.stdout)?.[1]);
  if (states.every((s) => s)) return states.join(",");
  // A banned IPv6 source also loses neighbour discovery: nmap then finds no host.
  if (/0 hosts up/.test(r.stdout)) return ports.map(() => "filtered").join(",");
  return `unknown: ${r.stdout}${r.stderr}`;
}

/**
 * HTTP status codes of `urls` fetched in turn by curl from the scanner
 * namespace, a new connection (a new SYN) for each; the run's output for
 * messages.
 */
export async function curlCodes(
  lab: Lab,
  urls: string[],
): Promise<{ codes: string[]; out: string }> {
  const r = await lab.exec(lab.scanner, [
    "timeout",
    "60",
    "curl",
    "-s",
    "-o",
    "/dev/null",
    "-w",
    "%{http_code}\\n",
    "--max-time",
    "3",
    "-H",
    "Connection: close",
    ...urls,
  ]);
  // A body may precede a status code (-o names only the first URL's output).
  const codes = r.stdout.trim().split("\n").map((l) => l.slice(-3));
  return { codes, out: r.stdout + r.stderr };
}

/** A web server on port 80 of namespace `ns` ("ok" to every request), gone after 120 s at most. */
export function webServerIn(ns: string): Deno.ChildProcess {
  return new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      ns,
      Deno.execPath(),
      "eval",
      `Deno.serve({ port: 80, hostname: "0.0.0.0", onListen() {} }, () => new Response("ok"));` +
      ` setTimeout(() => Deno.exit(0), 120000);`,
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
}
