import assert from "node:assert/strict";
import { markListening, OpenPorts, parseListening } from "../src/openports.ts";
import { readSystemFile } from "../ffi/libc.ts";
import { markListeningPorts } from "../ffi/sockdiag.ts";

// Real /proc/net/tcp lines (trailing padding as the kernel writes it).
const TCP4 = [
  "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     ",
  "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 18212 1 0000000000000000 100 0 0 10 0                     ",
  "   1: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21011 1 0000000000000000 100 0 0 10 0                     ",
  "   2: 0200A8C0:0019 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21012 1 0000000000000000 100 0 0 10 0                     ",
  "   3: 0200A8C0:0016 6400A8C0:D431 01 00000000:00000000 02:000A7A1F 00000000     0        0 30111 4 0000000000000000 20 4 31 10 -1                    ",
  "   4: 0100007F:96E9 0100007F:ADB0 06 00000000:00000000 03:00000B3F 00000000     0        0 0 3 00000000fd19b426                                      ",
  "   5: 0200A8C0:C350 08080808:01BB 02 00000000:00000001 01:00000064 00000002     0        0 30200 1 0000000000000000 200 0 0 1 7                       ",
].join("\n") + "\n";

const TCP6 = [
  "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
  "   0: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 19999 1 0000000000000000 100 0 0 10 0",
  "   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 20000 1 0000000000000000 100 0 0 10 0",
  "   2: 0000000000000000FFFF00000100007F:B45F 0000000000000000FFFF00000100007F:E7A6 06 00000000:00000000 03:00000B40 00000000     0        0 0 3 000000004c056ce3",
  "   3: B80D0120000000000000000001000000:0016 B80D0120000000000000000002000000:E1A2 01 00000000:00000000 02:00000A3C 00000000     0        0 40404 2 0000000000000000 20 4 30 10 -1",
  " 10000: 00000000000000000000000000000000:FFFF 00000000000000000000000000000000:0000 0a 00000000:00000000 00:00000000 00000000     0        0 19998 1 0000000000000000 100 0 0 10 0",
].join("\n");

Deno.test("parseListening: IPv4 listeners only (any bound address), not connected sockets", () => {
  // 22 on 0.0.0.0, 631 on 127.0.0.1, 25 on 192.168.0.2; 22/established, TIME_WAIT, SYN_SENT skipped.
  assert.deepEqual(parseListening(TCP4), [22, 25, 631]);
});

Deno.test("parseListening: IPv6 listeners, lower-case state, wide sl column, no final newline", () => {
  assert.deepEqual(parseListening(TCP6), [443, 8080, 65535]);
});

Deno.test("parseListening: header only, empty and garbage give nothing", () => {
  assert.deepEqual(parseListening(TCP4.split("\n")[0]), []);
  assert.deepEqual(parseListening(""), []);
  assert.deepEqual(
    parseListening("junk\n0: zz:zz 0:0 0A\n1: 0:1FFFF 0:0 0A\n2: 0:50 0:0 0AB\n"),
    [],
  );
  const marks = new Uint8Array(65536);
  assert.equal(markListening(TCP4 + TCP6, marks), 6);
});

Deno.test("OpenPorts: a live listener is seen after refresh and gone after close (v4 and v6)", async () => {
  const open = new OpenPorts();
  const l4 = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const l6 = Deno.listen({ hostname: "::1", port: 0 });
  const p4 = (l4.addr as Deno.NetAddr).port, p6 = (l6.addr as Deno.NetAddr).port;
  let client: Deno.Conn | null = null, server: Deno.Conn | null = null;
  try {
    assert.ok(!open.has(p4) && !open.has(p6), "nothing before the first refresh");
    // A connected client's ephemeral port is not a listening port.
    client = await Deno.connect({ hostname: "127.0.0.1", port: p4 });
    server = await l4.accept();
    const ephemeral = (client.localAddr as Deno.NetAddr).port;
    open.refresh();
    assert.ok(open.has(p4), `v4 port ${p4}`);
    assert.ok(open.has(p6), `v6 port ${p6}`);
    assert.ok(!open.has(ephemeral), `client port ${ephemeral}`);
    assert.ok(open.list().includes(p4));
    assert.equal(open.refreshes, 1);
    assert.equal(open.source, "netlink", "asked over sock_diag, not /proc");
  } finally {
    client?.close();
    server?.close();
    l4.close();
    l6.close();
  }
  open.refresh();
  assert.ok(!open.has(p4), "v4 closed");
  assert.ok(!open.has(p6), "v6 closed");
  assert.ok(!open.has(-1) && !open.has(70000) && !open.has(1.5));
});

Deno.test("OpenPorts: start() keeps the table current through its timer; stop() ends it", async () => {
  const open = new OpenPorts(100);
  open.start();
  try {
    assert.equal(open.refreshes, 1, "start refreshes at once");
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (l.addr as Deno.NetAddr).port;
    try {
      const until = Date.now() + 5000;
      while (!open.has(port) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      assert.ok(open.has(port), "seen by a timer refresh");
    } finally {
      l.close();
    }
  } finally {
    open.stop();
  }
  const n = open.refreshes;
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(open.refreshes, n, "no refresh after stop");
});

Deno.test("sock_diag and /proc/net/tcp{,6} agree on the listening ports; /proc still works as the fallback", () => {
  const l4 = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const l6 = Deno.listen({ hostname: "::1", port: 0 });
  try {
    // Other processes on this machine open and close listeners: read both
    // ways until two reads in a row agree (a few tries).
    let netlink: number[] = [], proc: number[] = [];
    for (let i = 0; i < 5; i++) {
      const viaNetlink = new Uint8Array(65536);
      const n = markListeningPorts(viaNetlink);
      assert.equal(typeof n, "number", String(n));
      proc = parseListening(
        (readSystemFile("/proc/net/tcp") ?? "") + (readSystemFile("/proc/net/tcp6") ?? ""),
      );
      netlink = [];
      for (let p = 0; p < 65536; p++) if (viaNetlink[p]) netlink.push(p);
      if (netlink.join() === proc.join()) break;
    }
    assert.deepEqual(netlink, proc);
    assert.ok(netlink.includes((l4.addr as Deno.NetAddr).port));
    assert.ok(netlink.includes((l6.addr as Deno.NetAddr).port));
    const open = new OpenPorts();
    open.source = "proc";
    open.refresh();
    assert.equal(open.source, "proc");
    assert.ok(open.list().includes((l4.addr as Deno.NetAddr).port), "read from /proc");
  } finally {
    l4.close();
    l6.close();
  }
});
