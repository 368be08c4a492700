/**
 * The --lapi-* options: off by default, secrets only from files, every bad
 * value one ConfigError line naming the option.
 */
import assert from "node:assert/strict";
import { ConfigError, parseConfig, usage } from "../src/config.ts";

const bad = (argv: string[], env: Record<string, string> = {}): string => {
  try {
    parseConfig(argv, env);
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${e}`);
    assert.ok(!e.message.includes("\n"), "one line");
    return e.message;
  }
  throw new Error(`accepted ${argv.join(" ")} ${JSON.stringify(env)}`);
};

Deno.test("fleet: off by default; --help lists every --lapi option with its variable", () => {
  assert.equal(parseConfig([], {}).fleet, null);
  const help = usage();
  for (
    const [o, e] of [
      ["lapi-url", "SB_LAPI_URL"],
      ["lapi-machine", "SB_LAPI_MACHINE"],
      ["lapi-password-file", "SB_LAPI_PASSWORD_FILE"],
      ["lapi-key-file", "SB_LAPI_KEY_FILE"],
      ["lapi-poll", "SB_LAPI_POLL"],
      ["lapi-origins", "SB_LAPI_ORIGINS"],
      ["lapi-ca", "SB_LAPI_CA"],
      ["lapi-client-cert", "SB_LAPI_CLIENT_CERT"],
      ["lapi-client-key", "SB_LAPI_CLIENT_KEY"],
    ]
  ) assert.match(help, new RegExp(`--${o} .*\\[${e}\\]`));
  assert.match(help, /--lapi-poll SECONDS .*\(default: 1\)/);
});

Deno.test("fleet: secrets from files; flags and variables; defaults", () => {
  const dir = Deno.makeTempDirSync();
  try {
    Deno.writeTextFileSync(`${dir}/pw`, "s3cret\n");
    Deno.writeTextFileSync(`${dir}/key`, "  0123abcd \n");
    const c = parseConfig(
      ["--lapi-url", "http://10.0.0.1:8080/", "--lapi-password-file", `${dir}/pw`],
      {
        SB_LAPI_KEY_FILE: `${dir}/key`,
        SB_LAPI_MACHINE: "host-a",
        SB_LAPI_ORIGINS: "scanblocker, cscli",
      },
    ).fleet!;
    assert.equal(c.url, "http://10.0.0.1:8080");
    assert.equal(c.password, "s3cret");
    assert.equal(c.apiKey, "0123abcd");
    assert.equal(c.machine, "host-a");
    assert.equal(c.pollMs, 1000);
    assert.deepEqual(c.origins, ["scanblocker", "cscli"]);
    assert.equal(c.caPem, null);
    const pullOnly = parseConfig([], {
      SB_LAPI_URL: "https://lapi.example:8080",
      SB_LAPI_KEY_FILE: `${dir}/key`,
      SB_LAPI_POLL: "0.1",
    }).fleet!;
    assert.equal(pullOnly.password, null);
    assert.equal(pullOnly.pollMs, 100);
    assert.equal(pullOnly.origins, null);
    assert.equal(pullOnly.machine, Deno.hostname());

    const pw = ["--lapi-password-file", `${dir}/pw`];
    assert.match(bad(["--lapi-url", "ftp://x", ...pw]), /invalid --lapi-url "ftp:\/\/x"/);
    assert.match(bad(["--lapi-url", "lapi:8080", ...pw]), /invalid --lapi-url/);
    assert.match(bad(["--lapi-url", "http://u:p@x:8080", ...pw]), /no credentials in the URL/);
    assert.match(
      bad(["--lapi-url", "http://x:8080"]),
      /needs --lapi-password-file .* and\/or --lapi-key-file/,
    );
    assert.match(bad(["--lapi-key-file", `${dir}/key`]), /--lapi-key-file needs --lapi-url/);
    // Variables may wait in an env file while the fleet is off, but a bad one is an error.
    assert.equal(
      parseConfig([], { SB_LAPI_POLL: "5", SB_LAPI_KEY_FILE: `${dir}/key` }).fleet,
      null,
    );
    assert.match(
      bad([], { SB_LAPI_KEY_FILE: `${dir}/nope` }),
      /invalid SB_LAPI_KEY_FILE ".*nope": no such file/,
    );
    assert.match(
      bad(["--lapi-url", "http://x", "--lapi-password-file", `${dir}/nope`]),
      /invalid --lapi-password-file ".*nope": no such file/,
    );
    Deno.writeTextFileSync(`${dir}/empty`, "\n");
    assert.match(
      bad(["--lapi-url", "http://x", "--lapi-key-file", `${dir}/empty`]),
      /the file is empty/,
    );
    assert.match(
      bad(["--lapi-url", "http://x", ...pw, "--lapi-poll", "0"]),
      /invalid --lapi-poll "0"/,
    );
    assert.match(bad(["--lapi-url", "http://x", ...pw, "--lapi-poll", "0.01"]), /0\.05 to 3600/);
    assert.match(
      bad(["--lapi-url", "http://x", ...pw, "--lapi-client-cert", `${dir}/pw`]),
      /go together/,
    );
    assert.match(
      bad(["--lapi-url", "http://x", ...pw, "--lapi-machine", "a b"]),
      /invalid --lapi-machine/,
    );
    assert.match(
      bad(["--lapi-url", "http://x", ...pw, "--lapi-origins", ","]),
      /invalid --lapi-origins/,
    );
    // The secret itself never appears in an error.
    assert.doesNotMatch(bad(["--lapi-url", "bad", ...pw]), /s3cret/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test({
  name: "fleet: -r never talks to a LAPI, even with --lapi-url set",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const { runMain } = await import("./daemon.ts");
    const dir = Deno.makeTempDirSync();
    // A listener standing in for the LAPI: it only counts connections.
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    let connections = 0;
    (async () => {
      for await (const c of listener) {
        connections++;
        c.close();
      }
    })();
    try {
      Deno.writeTextFileSync(`${dir}/pw`, "x\n");
      const r = await runMain([
        "-r",
        new URL("./fixtures/eth.pcap", import.meta.url).pathname,
        "--lapi-url",
        `http://127.0.0.1:${listener.addr.port}`,
        "--lapi-password-file",
        `${dir}/pw`,
        "--lapi-key-file",
        `${dir}/pw`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /fleet: --lapi-url is ignored with -r/);
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(connections, 0);
    } finally {
      listener.close();
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test("fleet: a CA, client certificate or key that is not PEM is refused at start-up, the option named", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    Deno.writeTextFileSync(`${dir}/pw`, "x\n");
    Deno.writeTextFileSync(`${dir}/junk`, "not a certificate\n");
    const ssl = await new Deno.Command("openssl", {
      args: [
        ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"],
        ...["-keyout", `${dir}/key.pem`, "-out", `${dir}/cert.pem`, "-days", "1"],
        ...["-subj", "/CN=sb test client"],
      ],
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(ssl.code, 0, new TextDecoder().decode(ssl.stderr));
    const base = ["--lapi-url", "https://127.0.0.1:8080", "--lapi-password-file", `${dir}/pw`];
    const pair = (cert: string, key: string) => [
      ...base,
      "--lapi-client-cert",
      `${dir}/${cert}`,
      "--lapi-client-key",
      `${dir}/${key}`,
    ];
    // Deno reads the PEM only when the client is built: before this check,
    // after the start-up lines (fatal, exit 1, restarted in a loop by systemd).
    assert.match(
      bad(pair("junk", "key.pem")),
      /invalid --lapi-client-cert and --lapi-client-key: No certificates found/,
    );
    assert.match(
      bad(pair("cert.pem", "junk")),
      /invalid --lapi-client-cert and --lapi-client-key: No keys found/,
    );
    assert.match(
      bad([...base, "--lapi-ca", `${dir}/junk`]),
      /invalid --lapi-ca: no PEM certificate/,
    );
    const ok = parseConfig([...pair("cert.pem", "key.pem"), "--lapi-ca", `${dir}/cert.pem`], {})
      .fleet!;
    assert.match(ok.clientCertPem!, /BEGIN CERTIFICATE/);
    assert.match(ok.caPem!, /BEGIN CERTIFICATE/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
