/**
 * A real CrowdSec Local API for tests and benchmarks: Debian's `crowdsec`
 * started LAPI-only (`-no-cs -no-capi`) with a private configuration (its own
 * SQLite file, port, credentials and log in a temporary directory), either on
 * loopback here or inside a test namespace; `cscli` runs against the same
 * configuration. Nothing touches /etc/crowdsec or the packaged database.
 */
import { run, type RunResult } from "./netns.ts";

/** A running LAPI and the means to administer it. */
export interface Lapi {
  /** Base URL clients use, e.g. http://127.0.0.1:18234 */
  url: string;
  /** The private directory (config, database, logs). */
  dir: string;
  /** Runs cscli with the private configuration (inside the namespace when there is one). */
  cscli(args: string[]): Promise<RunResult>;
  /** Like cscli() but throws with its output when it fails; returns stdout. */
  cscliOk(args: string[]): Promise<string>;
  /** Adds a validated machine and returns its password. */
  addMachine(name: string): Promise<string>;
  /** Adds a bouncer and returns its API key. */
  addBouncer(name: string): Promise<string>;
  /** Every active decision (`cscli decisions list -a -o json`), flattened. */
  decisions(): Promise<
    {
      id: number;
      origin: string;
      scope: string;
      value: string;
      duration: string;
      scenario: string;
    }[]
  >;
  /** SIGTERM and wait; the database stays, so start() brings the same LAPI back. */
  stop(): Promise<void>;
  /** Starts (again) and waits until it answers. */
  start(): Promise<void>;
  /** Stops it and removes the directory. */
  destroy(): Promise<void>;
  /** The LAPI's own log so far. */
  log(): Promise<string>;
}

/** True when Debian's crowdsec (LAPI and cscli) is installed here. */
export async function haveCrowdsec(): Promise<boolean> {
  try {
    const r = await run(["sh", "-c", "command -v crowdsec && command -v cscli"]);
    return r.code === 0;
  } catch {
    return false;
  }
}

/** True when crowdsec-firewall-bouncer is installed here. */
export async function haveFirewallBouncer(): Promise<boolean> {
  const r = await run(["sh", "-c", "command -v crowdsec-firewall-bouncer"]);
  return r.code === 0;
}

let seq = 0;

/**
 * Starts a private LAPI listening on `host:port` (port 0 picks one in
 * 20000-59999), inside namespace `ns` when given.
 */
export async function startLapi(
  opts: { ns?: string; host?: string; port?: number; tls?: boolean } = {},
): Promise<Lapi> {
  const host = opts.host ?? "127.0.0.1";
  const port = opts.port || 20000 + ((Deno.pid * 7 + seq++ * 131 + Date.now()) % 40000);
  const dir = await Deno.makeTempDir({ prefix: "sb-lapi-" });
  const url = `${opts.tls ? "https" : "http"}://${host.includes(":") ? `[${host}]` : host}:${port}`;
  if (opts.tls) await makeCertificates(dir, host);
  const cfg = `${dir}/config.yaml`;
  await Deno.writeTextFile(
    cfg,
    `common:
  daemonize: false
  log_media: file
  log_level: info
  log_dir: ${dir}/
  working_dir: .
config_paths:
  config_dir: ${dir}/
  data_dir: ${dir}/data/
  simulation_path: /etc/crowdsec/simulation.yaml
  hub_dir: /var/lib/crowdsec/hub/
  index_path: /var/lib/crowdsec/hub/.index.json
  notification_dir: ${dir}/notifications/
  plugin_dir: /usr/lib/crowdsec/plugins/
crowdsec_service:
  acquisition_path: ${dir}/acquis.yaml
cscli:
  output: human
  color: "no"
  hub_branch: master
db_config:
  log_level: info
  type: sqlite
  db_path: ${dir}/data/crowdsec.db
  use_wal: true
plugin_config:
  user: nobody
  group: nogroup
api:
  client:
    insecure_skip_verify: ${opts.tls ? "true" : "false"}
    credentials_path: ${dir}/local_api_credentials.yaml
  server:
    log_level: info
    listen_uri: ${host.includes(":") ? `[${host}]` : host}:${port}
    profiles_path: /etc/crowdsec/profiles.yaml
${
      opts.tls
        ? `    tls:\n      cert_file: ${dir}/server.pem\n      key_file: ${dir}/server.key\n`
        : ""
    }    trusted_ips:
      - 127.0.0.1
      - ::1
prometheus:
  enabled: false
  level: full
`,
  );
  await Deno.mkdir(`${dir}/data`);
  await Deno.mkdir(`${dir}/notifications`);
  await Deno.writeTextFile(`${dir}/acquis.yaml`, "");
  const inNs = (cmd: string[]) => (opts.ns ? ["ip", "netns", "exec", opts.ns, ...cmd] : cmd);
  const cscli = (args: string[]) => run(inNs(["cscli", "-c", cfg, ...args]));
  const cscliOk = async (args: string[]) => {
    const r = await cscli(args);
    if (r.code !== 0) throw new Error(`cscli ${args.join(" ")} failed: ${r.stdout}${r.stderr}`);
    return r.stdout;
  };
  let child: Deno.ChildProcess | null = null;
  const start = async () => {
    child = new Deno.Command(inNs(["crowdsec"])[0], {
      args: [...inNs(["crowdsec"]).slice(1), "-c", cfg, "-no-cs", "-no-capi"],
      stdout: "null",
      stderr: "null",
      stdin: "null",
    }).spawn();
    const until = Date.now() + 30_000;
    while (Date.now() < until) {
      const r = await run(inNs([
        "curl",
        "-s",
        "-k",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "1",
        `${url}/v1/decisions`,
      ]));
      if (/^[1-5]\d\d$/.test(r.stdout) && r.stdout !== "000") return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`LAPI on ${url} did not answer within 30 s:\n${await log()}`);
  };
  const stop = async () => {
    const c = child;
    child = null;
    if (!c) return;
    try {
      c.kill("SIGTERM");
    } catch { /* gone */ }
    const t = setTimeout(() => {
      try {
        c.kill("SIGKILL");
      } catch { /* gone */ }
    }, 5000);
    await c.status;
    clearTimeout(t);
  };
  const log = async () => {
    try {
      return await Deno.readTextFile(`${dir}/crowdsec_api.log`) +
        await Deno.readTextFile(`${dir}/crowdsec.log`).catch(() => "");
    } catch {
      return "(no log)";
    }
  };
  const lapi: Lapi = {
    url,
    dir,
    cscli,
    cscliOk,
    addMachine: async (name) => {
      const password = `pw-${name}-${crypto.randomUUID()}`;
      await cscliOk([
        "machines",
        "add",
        name,
        "--password",
        password,
        "-f",
        `${dir}/m-${name}.yaml`,
      ]);
      return password;
    },
    addBouncer: async (name) => (await cscliOk(["bouncers", "add", name, "-o", "raw"])).trim(),
    decisions: async () => {
      const out = await cscliOk(["decisions", "list", "-a", "-o", "json"]);
      const alerts = JSON.parse(out.trim() || "null") as
        | {
          decisions?: {
            id: number;
            origin: string;
            scope: string;
            value: string;
            duration: string;
            scenario: string;
          }[];
        }[]
        | null;
      return (alerts ?? []).flatMap((a) => a.decisions ?? []);
    },
    start,
    stop,
    destroy: async () => {
      await stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
    log,
  };
  try {
    // cscli's own machine, so `cscli decisions list/add` can log in to this LAPI.
    await cscliOk([
      "machines",
      "add",
      "cscli-admin",
      "--auto",
      "-f",
      `${dir}/local_api_credentials.yaml`,
      "--url",
      url,
    ]);
    await start();
  } catch (e) {
    await lapi.destroy();
    throw e;
  }
  return lapi;
}

/**
 * A test CA (dir/ca.pem) and a server certificate for `host` signed by it
 * (dir/server.pem, dir/server.key), made with openssl.
 */
async function makeCertificates(dir: string, host: string): Promise<void> {
  const ssl = async (args: string[]) => {
    const r = await run(["openssl", ...args]);
    if (r.code !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
  };
  await ssl([
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    `${dir}/ca.key`,
    "-out",
    `${dir}/ca.pem`,
    "-days",
    "1",
    "-subj",
    "/CN=sb test CA",
  ]);
  await ssl([
    "req",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    `${dir}/server.key`,
    "-out",
    `${dir}/server.csr`,
    "-subj",
    `/CN=${host}`,
  ]);
  await Deno.writeTextFile(`${dir}/ext.cnf`, `subjectAltName=IP:${host}\n`);
  await ssl([
    "x509",
    "-req",
    "-in",
    `${dir}/server.csr`,
    "-CA",
    `${dir}/ca.pem`,
    "-CAkey",
    `${dir}/ca.key`,
    "-CAcreateserial",
    "-out",
    `${dir}/server.pem`,
    "-days",
    "1",
    "-extfile",
    `${dir}/ext.cnf`,
  ]);
}

/** A running crowdsec-firewall-bouncer. */
export interface FirewallBouncer {
  stop(): Promise<void>;
  log(): Promise<string>;
}

/**
 * Starts Debian's crowdsec-firewall-bouncer (nftables mode, not daemonized,
 * so stopping it leaves its table) inside `ns`, polling `url` with `apiKey`
 * every `frequency` (a Go duration such as "200ms"); files go to `dir`.
 */
export async function startFirewallBouncer(
  ns: string,
  o: { url: string; apiKey: string; frequency: string; dir: string },
): Promise<FirewallBouncer> {
  const cfg = `${o.dir}/bouncer-${ns}.yaml`;
  await Deno.writeTextFile(
    cfg,
    `mode: nftables
pid_dir: ${o.dir}/
update_frequency: ${o.frequency}
daemonize: false
log_mode: file
log_dir: ${o.dir}/
log_level: info
api_url: ${o.url}/
api_key: ${o.apiKey}
insecure_skip_verify: false
disable_ipv6: false
deny_action: DROP
deny_log: false
supported_decisions_types:
  - ban
blacklists_ipv4: crowdsec-blacklists
blacklists_ipv6: crowdsec6-blacklists
nftables:
  ipv4:
    enabled: true
    set-only: false
    table: crowdsec
    chain: crowdsec-chain
  ipv6:
    enabled: true
    set-only: false
    table: crowdsec6
    chain: crowdsec6-chain
prometheus:
  enabled: false
  listen_addr: 127.0.0.1
  listen_port: 60601
`,
  );
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", ns, "crowdsec-firewall-bouncer", "-c", cfg],
    stdout: "null",
    stderr: "null",
    stdin: "null",
  }).spawn();
  const log = () =>
    Deno.readTextFile(`${o.dir}/crowdsec-firewall-bouncer.log`).catch(() => "(no log)");
  // Ready once its table exists.
  const until = Date.now() + 20_000;
  while (Date.now() < until) {
    const r = await run(["ip", "netns", "exec", ns, "nft", "list", "table", "ip", "crowdsec"]);
    if (r.code === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    log,
    stop: async () => {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      const t = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }, 5000);
      await child.status;
      clearTimeout(t);
    },
  };
}
