/**
 * The import graph keeps the data flow of DESIGN.md: no import cycles
 * anywhere (from main.ts and from the capture worker, which main loads by
 * URL), and no module outside src/firewall/ names a concrete backend
 * (iptables, nftables, none): they reach a firewall through the factory and
 * the capability it offers (src/firewall/fastpath.ts).
 */
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);

interface InfoModule {
  specifier: string;
  dependencies?: { code?: { specifier?: string }; type?: { specifier?: string } }[];
}

/** Project-relative path → the project modules it imports (code and type imports). */
async function importGraph(entries: string[]): Promise<Map<string, string[]>> {
  const graph = new Map<string, string[]>();
  for (const entry of entries) {
    const o = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", new URL(entry, root).pathname],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    assert.equal(o.code, 0, new TextDecoder().decode(o.stderr));
    const info = JSON.parse(new TextDecoder().decode(o.stdout)) as { modules: InfoModule[] };
    const rel = (s: string) => s.startsWith(root.href) ? s.slice(root.href.length) : null;
    for (const m of info.modules) {
      const from = rel(m.specifier);
      if (!from) continue;
      const to = (m.dependencies ?? [])
        .flatMap((d) => [d.code?.specifier, d.type?.specifier])
        .filter((s): s is string => typeof s === "string")
        .map((s) => rel(s))
        .filter((s): s is string => s !== null);
      graph.set(from, [...new Set([...(graph.get(from) ?? []), ...to])]);
    }
  }
  return graph;
}

/** Every cycle found by a depth-first walk, as the path around it. */
function cycles(graph: Map<string, string[]>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (n: string) => {
    state.set(n, "open");
    stack.push(n);
    for (const m of graph.get(n) ?? []) {
      if (state.get(m) === "open") found.push([...stack.slice(stack.indexOf(m)), m]);
      else if (!state.has(m)) visit(m);
    }
    stack.pop();
    state.set(n, "done");
  };
  for (const n of graph.keys()) if (!state.has(n)) visit(n);
  return found;
}

const graph = await importGraph(["main.ts", "src/capture/worker.ts"]);

Deno.test("structure: the import graph of main.ts and the capture worker has no cycle", () => {
  assert.ok(graph.size > 20, `only ${graph.size} modules found`);
  assert.deepEqual(cycles(graph).map((c) => c.join(" → ")), []);
});

Deno.test("structure: only src/firewall/ imports a concrete firewall backend", () => {
  const concrete = ["src/firewall/iptables.ts", "src/firewall/nftables.ts", "src/firewall/none.ts"];
  const offenders: string[] = [];
  for (const [from, to] of graph) {
    if (from.startsWith("src/firewall/")) continue;
    for (const t of to) if (concrete.includes(t)) offenders.push(`${from} → ${t}`);
  }
  assert.deepEqual(offenders, []);
});

Deno.test("structure: the cycle finder finds a cycle (the check can fail)", () => {
  const g = new Map([["a", ["b"]], ["b", ["c"]], ["c", ["a"]], ["d", ["a"]]]);
  assert.deepEqual(cycles(g), [["a", "b", "c", "a"]]);
});

Deno.test("structure: main.ts is settings, the command and exit codes (under 200 lines)", async () => {
  const text = await Deno.readTextFile(new URL("main.ts", root));
  const lines = text.split("\n").length;
  assert.ok(lines < 200, `main.ts has ${lines} lines: the daemon's wiring belongs in src/run/`);
  // The run's wiring lives in src/run/, reached through one import.
  assert.deepEqual((graph.get("main.ts") ?? []).filter((m) => m.startsWith("src/run/")), [
    "src/run/daemon.ts",
  ]);
});
