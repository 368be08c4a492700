/**
 * The man page and the bash completion are generated from the option table
 * that prints --help (src/cli_docs.ts, `deno task man`): the committed files
 * must be exactly what the generator writes, groff must read the page without
 * a warning, and real bash must complete with the script.
 */
import assert from "node:assert/strict";
import { bashCompletion, COMPLETION_PATH, MAN_PAGE_PATH, manPage } from "../src/cli_docs.ts";
import { OPTIONS } from "../src/config.ts";
import { run } from "./netns.ts";

const root = new URL("..", import.meta.url).pathname;

Deno.test("man page and completion: the committed files are the generator's output", async () => {
  const stale = "is stale: run `deno task man` and commit the result";
  assert.equal(
    await Deno.readTextFile(`${root}${MAN_PAGE_PATH}`),
    manPage(),
    `${MAN_PAGE_PATH} ${stale}`,
  );
  assert.equal(
    await Deno.readTextFile(`${root}${COMPLETION_PATH}`),
    bashCompletion(),
    `${COMPLETION_PATH} ${stale}`,
  );
});

Deno.test("man page: every option and variable, and groff reads it without a warning", async () => {
  const page = manPage();
  for (const o of OPTIONS) {
    assert.ok(page.includes(`\\fB\\-\\-${o.long}\\fR`), o.long);
    if (o.env) assert.ok(page.includes(o.env), o.env);
  }
  const g = await run(["groff", "-man", "-Tutf8", "-ww", "-z", `${root}${MAN_PAGE_PATH}`]);
  assert.equal(g.code, 0, g.stderr);
  assert.equal(g.stderr, "");
  // The page as man(1) would show it, without man-db: groff's own terminal output, plain.
  const text = await run([
    "groff",
    "-man",
    "-Tutf8",
    "-P-cbou",
    "-rLL=100n",
    `${root}${MAN_PAGE_PATH}`,
  ]);
  assert.match(text.stdout, /--ban-time SECONDS\n\s+how long a ban lasts/);
  assert.match(text.stdout, /scanblocker status \[--json\]/);
});

/** COMPREPLY of the completion function for the words typed so far (the last one being completed). */
async function complete(words: string[]): Promise<string[]> {
  const script = [
    `source ${root}${COMPLETION_PATH}`,
    `COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")})`,
    `COMP_CWORD=${words.length - 1}`,
    "_scanblocker",
    'printf "%s\\n" "${COMPREPLY[@]}"',
  ].join("\n");
  const r = await run(["bash", "-c", script]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.split("\n").filter(Boolean);
}

Deno.test("bash completion: subcommands, flags, and the values a flag lists", async () => {
  assert.deepEqual(await complete(["scanblocker", "st"]), ["status"]);
  assert.deepEqual((await complete(["scanblocker", ""])).sort(), [
    "bans",
    "config",
    "flush",
    "status",
    "unban",
  ]);
  assert.deepEqual(await complete(["scanblocker", "--ban"]), ["--ban-time"]);
  const all = await complete(["scanblocker", "--"]);
  for (const o of OPTIONS) assert.ok(all.includes(`--${o.long}`), o.long);
  assert.deepEqual(await complete(["scanblocker", "--firewall", "n"]), ["nftables", "none"]);
  assert.deepEqual(await complete(["scanblocker", "--log-format", ""]), ["text", "json"]);
  assert.ok((await complete(["scanblocker", "-i", "l"])).includes("lo"));
  assert.ok(
    (await complete(["scanblocker", "--config", `${root}deno.js`])).includes(`${root}deno.json`),
  );
  assert.deepEqual(await complete(["scanblocker", "--ports", ""]), []);
});
