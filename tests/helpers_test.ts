/**
 * Helper programs are found only in root-owned directories nobody else can
 * write (src/firewall/helpers.ts), and the caller check for firewall changes
 * (src/privilege.ts): pure logic, tested with a fake file system and
 * hand-made credentials. The attacks themselves run in nonroot_test.ts.
 */
import assert from "node:assert/strict";
import {
  type FileFacts,
  HELPER_DIRS,
  type HelperFs,
  resolveHelper,
  trustedArgv,
} from "../src/firewall/helpers.ts";
import { firewallRefusal } from "../src/privilege.ts";
import { isElevated } from "../ffi/libc.ts";

type Node = { kind: "dir" | "file" | "link"; uid?: number; mode?: number; target?: string };

/** A fake tree: path → node; every directory root-owned 0755 unless said otherwise. */
function fakeFs(tree: Record<string, Node>): HelperFs {
  return {
    lstat(path: string): FileFacts | null {
      const n = tree[path];
      if (!n) return null;
      return {
        isFile: n.kind === "file",
        isDirectory: n.kind === "dir",
        isSymlink: n.kind === "link",
        uid: n.uid ?? 0,
        mode: n.mode ?? (n.kind === "link" ? 0o777 : 0o755),
      };
    },
    readLink(path: string): string {
      const t = tree[path]?.target;
      if (t === undefined) throw new Error(`not a link: ${path}`);
      return t;
    },
  };
}

const BASE: Record<string, Node> = {
  "/": { kind: "dir" },
  "/usr": { kind: "dir" },
  "/usr/sbin": { kind: "dir" },
  "/usr/bin": { kind: "dir" },
  "/sbin": { kind: "link", target: "usr/sbin" },
  "/bin": { kind: "link", target: "usr/bin" },
  "/etc": { kind: "dir" },
  "/etc/alternatives": { kind: "dir" },
  "/usr/sbin/xtables-nft-multi": { kind: "file" },
  "/usr/sbin/iptables-nft": { kind: "link", target: "xtables-nft-multi" },
  "/etc/alternatives/iptables": { kind: "link", target: "/usr/sbin/iptables-nft" },
  "/usr/sbin/iptables": { kind: "link", target: "/etc/alternatives/iptables" },
  "/usr/bin/stdbuf": { kind: "file" },
};

Deno.test("resolveHelper: Debian's alternatives chain resolves to /usr/sbin/iptables", () => {
  assert.deepEqual(resolveHelper("iptables", fakeFs(BASE)), { path: "/usr/sbin/iptables" });
  assert.deepEqual(resolveHelper("stdbuf", fakeFs(BASE)), { path: "/usr/bin/stdbuf" });
});

Deno.test("resolveHelper: never a name with a slash, never a missing program", () => {
  for (const n of ["../tmp/iptables", "/tmp/iptables", "", "-x", "a b"]) {
    assert.ok("error" in resolveHelper(n, fakeFs(BASE)), n);
  }
  const r = resolveHelper("nft", fakeFs(BASE));
  assert.ok(
    "error" in r && /nft: not found in \/usr\/sbin, \/sbin, \/usr\/bin, \/bin/.test(r.error),
  );
});

Deno.test("resolveHelper: refuses files and directories others could have written", () => {
  const cases: [string, Record<string, Node>, RegExp][] = [
    [
      "file not root's",
      { "/usr/sbin/xtables-nft-multi": { kind: "file", uid: 1000 } },
      /not owned by root/,
    ],
    [
      "world-writable file",
      { "/usr/sbin/xtables-nft-multi": { kind: "file", mode: 0o757 } },
      /writable by group or others/,
    ],
    [
      "group-writable directory",
      { "/usr/sbin": { kind: "dir", mode: 0o775 } },
      /\/usr\/sbin is writable/,
    ],
    // The link in /etc/alternatives could be swapped by whoever owns that directory.
    [
      "link in a user's directory",
      { "/etc/alternatives": { kind: "dir", uid: 1000 } },
      /\/etc\/alternatives/,
    ],
    [
      "not executable",
      { "/usr/sbin/xtables-nft-multi": { kind: "file", mode: 0o644 } },
      /not executable/,
    ],
    ["/ writable", { "/": { kind: "dir", mode: 0o777 } }, /^iptables.*\/ is writable/],
  ];
  for (const [what, change, re] of cases) {
    const r = resolveHelper("iptables", fakeFs({ ...BASE, ...change }));
    assert.ok("error" in r, what);
    assert.match(r.error, re, what);
  }
  // An untrusted first match is skipped, a trusted one further down used.
  const r = resolveHelper(
    "stdbuf",
    fakeFs({ ...BASE, "/usr/sbin/stdbuf": { kind: "file", uid: 1000 } }),
  );
  assert.deepEqual(r, { path: "/usr/bin/stdbuf" });
});

Deno.test("resolveHelper: a symbolic-link loop ends", () => {
  const r = resolveHelper(
    "nft",
    fakeFs({ ...BASE, "/usr/sbin/nft": { kind: "link", target: "/usr/sbin/nft" } }),
  );
  assert.ok("error" in r && /too many symbolic links/.test(r.error));
});

Deno.test("trustedArgv: argv[0] and the program stdbuf runs become absolute paths", () => {
  const argv = trustedArgv(["stdbuf", "-oL", "iptables-restore", "--noflush"]);
  assert.match(argv[0], /^\/(usr\/)?bin\/stdbuf$/);
  assert.match(argv[2], /^\/(usr\/)?s?bin\/iptables-restore$/);
  assert.deepEqual(argv.slice(3), ["--noflush"]);
  // A prefix with a path is used as given (tests run helpers in a namespace).
  assert.deepEqual(trustedArgv(["/x/y", "iptables"]), ["/x/y", "iptables"]);
  assert.throws(() => trustedArgv(["no-such-helper-here"]), /not found in/);
});

const nobody = { uid: 65534, gids: [65534], secureExec: true, effective: 0x3000n };

Deno.test("isElevated: capabilities gained at exec, or held by a user other than root", () => {
  assert.equal(isElevated(nobody), true);
  assert.equal(isElevated({ ...nobody, secureExec: false }), true, "ambient, not root");
  assert.equal(isElevated({ ...nobody, secureExec: false, effective: 0n }), false);
  assert.equal(isElevated({ uid: 0, gids: [0], secureExec: false, effective: 0x1ffn }), false);
  assert.equal(isElevated({ uid: 0, gids: [0], secureExec: true, effective: 0x1ffn }), true);
});

Deno.test("firewallRefusal: root, handed-down capabilities and the file's group may; others not", () => {
  const rootOwned = { path: "/usr/local/bin/scanblocker", uid: 0, gid: 0 };
  assert.equal(firewallRefusal("scanblocker flush", { ...nobody, uid: 0 }, rootOwned), null);
  assert.equal(
    firewallRefusal("scanblocker flush", { ...nobody, secureExec: false }, rootOwned),
    null,
  );
  const why = firewallRefusal("scanblocker flush", nobody, rootOwned);
  assert.match(why ?? "", /^refused: `scanblocker flush` changes the firewall and uid 65534/);
  assert.match(why ?? "", /chgrp GROUP \/usr\/local\/bin\/scanblocker/);
  // The operator's group: members may, others may not.
  const grouped = { ...rootOwned, gid: 1234 };
  assert.equal(firewallRefusal("scanblocker", { ...nobody, gids: [65534, 1234] }, grouped), null);
  assert.match(firewallRefusal("scanblocker", nobody, grouped) ?? "", /gid 1234/);
  // A group on a file the caller owns proves nothing.
  const userOwned = { ...grouped, uid: 65534 };
  assert.notEqual(firewallRefusal("scanblocker", { ...nobody, gids: [1234] }, userOwned), null);
  // Unknown AT_SECURE (no getauxval) counts as gained.
  assert.notEqual(firewallRefusal("scanblocker", { ...nobody, secureExec: null }, rootOwned), null);
  assert.notEqual(firewallRefusal("scanblocker", nobody, null), null);
});

Deno.test("deno.json: run permissions name helpers by absolute path, in every helper directory", async () => {
  const json = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  const run: string[] = json.permissions.default.run;
  const names = new Set<string>();
  for (const entry of run) {
    // A bare name is resolved through the caller's PATH when Deno starts: never.
    assert.ok(entry.startsWith("/"), `bare program name in deno.json: ${entry}`);
    const at = entry.lastIndexOf("/");
    assert.ok(HELPER_DIRS.includes(entry.slice(0, at)), entry);
    names.add(entry.slice(at + 1));
  }
  for (const n of ["iptables", "iptables-restore", "ip6tables", "nft", "stdbuf"]) {
    assert.ok(names.has(n), n);
  }
  for (const n of names) {
    for (const d of HELPER_DIRS) assert.ok(run.includes(`${d}/${n}`), `${d}/${n} missing`);
  }
});
