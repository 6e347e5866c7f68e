/**
 * The docs cannot go stale: every fenced block of README.md and docs/*.md
 * marked runnable is run, against the embedded model, and must exit 0; an
 * output pasted as real output is compared with what the run prints, for
 * shape.
 *
 * Marking, in a block's info string:
 *   ```ts run            a TypeScript program; "skipdecode" (and "openai")
 *                        resolve to this checkout, as in an app
 *   ```sh run            bash from the repository root, with `skipdecode` on
 *                        PATH (package.json's bin)
 *   … run server         the same, while `skipdecode serve` runs the embedded
 *                        model; "localhost:8080" in the block means that server
 *   ```text output       the pasted output of the runnable block before it
 *   ```text output: CMD  the pasted output of CMD, run as a `sh run` block
 *                        (for commands shown in a block that is not run whole)
 *
 * "For shape": blank lines and lines starting with "warning:" (they depend on
 * the machine's load) are left out; then every pasted line must appear, in
 * order, among the printed ones (which may have more, such as progress
 * lines), compared as: a table row with its numbers as N; a JSON value (or an
 * SSE `data:` line's) as its keys and value types; a line starting with a
 * label ("prompt:", "[full]", "[24 tokens, …") by that label; any other line
 * as "text". Timings, sampled text and ids may differ; columns, fields and
 * the order of things may not.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { EMBEDDED_MODEL } from "../lib/index.ts";
import { cleanupTemp, tempDir } from "./helpers.ts";

const ROOT = resolve(import.meta.dir, "..");
const DOCS = ["README.md", ...readdirSync(join(ROOT, "docs")).filter((f) => f.endsWith(".md")).sort().map((f) => `docs/${f}`)];
const PKG = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { bin: Record<string, string> };

/** A fenced block: its file, first line (1-based), info string words and text. */
interface Block {
  file: string;
  line: number;
  lang: string;
  flags: string[];
  /** `text output: CMD` */
  command: string | null;
  body: string;
}

/** The fenced blocks of a markdown file. */
export function fencedBlocks(file: string, text: string): Block[] {
  const out: Block[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const open = lines[i]!.match(/^```(\S*)\s*(.*)$/);
    if (!open) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i]!); i++) body.push(lines[i]!);
    const info = open[2]!.trim();
    const command = info.match(/^output:\s*(.+)$/)?.[1] ?? null;
    out.push({ file, line: start + 1, lang: open[1]!, flags: command ? ["output"] : info.split(/\s+/).filter(Boolean), command, body: body.join("\n") });
  }
  return out;
}

const NUMBER = /-?\d[\d,]*(?:\.\d+)?(?:e[+-]?\d+)?/gi;

/** The shape of a JSON value: its keys and the types of its values (arrays by their first element). */
function jsonShape(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return `[${v.length ? jsonShape(v[0]) : ""}]`;
  if (typeof v === "object") {
    const entries = Object.entries(v as Record<string, unknown>);
    // token → logprob maps have the model's tokens as keys
    if (entries.length && entries.every(([, x]) => typeof x === "number")) return "{number map}";
    return `{${entries.sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, x]) => `${k}:${jsonShape(x)}`).join(",")}}`;
  }
  return typeof v;
}

/** One printed line's shape (module comment). */
export function lineShape(line: string): string {
  const l = line.trim();
  const data = l.match(/^data: (.*)$/);
  const body = data ? data[1]! : l;
  if (body.startsWith("{") || body.startsWith("[")) {
    try {
      return `${data ? "data " : ""}json ${jsonShape(JSON.parse(body))}`;
    } catch {
      // not JSON: a bracketed label below
    }
  }
  if (data) return `data ${body}`;
  if (l.startsWith("|")) return l.replace(NUMBER, "N");
  const first = l.split(/\s+/)[0]!;
  if (/:$/.test(first) || first.startsWith("[")) return first.replace(NUMBER, "N");
  return "text";
}

function shapes(text: string): string[] {
  return text
    .split("\n")
    .filter((l) => l.trim() !== "" && !/^\s*warning:/.test(l))
    .map(lineShape);
}

/** The pasted shapes that do not appear, in order, among the printed ones (empty: it matches). */
export function missingShapes(pasted: string, printed: string): string[] {
  const got = shapes(printed);
  let at = 0;
  const missing: string[] = [];
  for (const want of shapes(pasted)) {
    const k = got.indexOf(want, at);
    if (k < 0) missing.push(want);
    else at = k + 1;
  }
  return missing;
}

// ---- the environment a snippet runs in ----------------------------------------

let app = "";
let shimDir = "";
/** A scratch app whose node_modules has this checkout as "skipdecode", and a PATH dir with the command. */
function environment(): { app: string; path: string } {
  if (!app) {
    app = tempDir("skd-docs-");
    const nm = join(app, "node_modules");
    mkdirSync(nm);
    symlinkSync(ROOT, join(nm, "skipdecode"));
    symlinkSync(join(ROOT, "node_modules", "openai"), join(nm, "openai"));
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "docs-snippets", private: true, type: "module" }));
    shimDir = join(app, "bin");
    mkdirSync(shimDir);
    const shim = join(shimDir, "skipdecode");
    writeFileSync(shim, `#!/bin/sh\nexec "${process.execPath}" "${join(ROOT, PKG.bin.skipdecode!)}" "$@"\n`);
    chmodSync(shim, 0o755);
  }
  return { app, path: `${shimDir}:${process.env.PATH ?? ""}` };
}

let server: { proc: ReturnType<typeof Bun.spawn>; host: string } | null = null;
/** `skipdecode serve` on the embedded model, started once; its host:port. */
async function serverHost(): Promise<string> {
  if (server) return server.host;
  const proc = Bun.spawn([process.execPath, join(ROOT, PKG.bin.skipdecode!), "serve", "--model", EMBEDDED_MODEL, "--port", "0", "--quiet"], {
    stdout: "ignore",
    stderr: "pipe",
  });
  const reader = proc.stderr.getReader();
  let err = "";
  while (!/http:\/\/\S+/.test(err)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`skipdecode serve exited before listening:\n${err}`);
    err += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  server = { proc, host: err.match(/http:\/\/([^\s—/]+)/)![1]! };
  return server.host;
}

afterAll(async () => {
  if (server) {
    server.proc.kill("SIGTERM");
    await server.proc.exited;
  }
  cleanupTemp();
});

/** Runs a block; returns its exit code and its stdout and stderr, interleaved as written. */
async function runBlock(lang: string, body: string, withServer: boolean): Promise<{ code: number; out: string }> {
  const env = environment();
  let text = body;
  if (withServer) text = text.replaceAll("localhost:8080", await serverHost());
  let cmd: string[];
  if (lang === "ts") {
    const file = join(env.app, `snippet-${Math.random().toString(36).slice(2)}.ts`);
    writeFileSync(file, text);
    cmd = ["bash", "-c", `"${process.execPath}" "${file}" 2>&1`];
  } else if (lang === "sh") {
    cmd = ["bash", "-c", `set -eo pipefail\n{\n${text}\n} 2>&1`];
  } else {
    throw new Error(`a runnable block must be ts or sh, not ${JSON.stringify(lang)}`);
  }
  const p = Bun.spawn(cmd, { cwd: lang === "ts" ? env.app : ROOT, stdout: "pipe", stderr: "pipe", env: { ...process.env, PATH: env.path } });
  const [out, code] = await Promise.all([new Response(p.stdout).text(), p.exited]);
  return { code, out };
}

describe("runnable snippets in README.md and docs/", () => {
  const all = DOCS.flatMap((f) => fencedBlocks(f, readFileSync(join(ROOT, f), "utf8")));
  test("there are runnable blocks, and every output block belongs to one", () => {
    expect(all.filter((b) => b.flags.includes("run")).length).toBeGreaterThan(5);
    for (const [i, b] of all.entries()) {
      if (!b.flags.includes("output") || b.command) continue;
      const before = all.slice(0, i).reverse().find((x) => x.file === b.file && (x.flags.includes("run") || x.flags.includes("output")));
      expect(before?.flags.includes("run") ? "ok" : `${b.file}:${b.line}: an output block with no runnable block before it`).toBe("ok");
    }
  });

  for (const [i, b] of all.entries()) {
    const runs = b.flags.includes("run");
    const pastedFor = b.command !== null;
    if (!runs && !pastedFor) continue;
    const title = pastedFor ? `${b.file}:${b.line}: the output of \`${b.command}\` has the pasted shape` : `${b.file}:${b.line}: the ${b.lang} block runs`;
    test(title, async () => {
      const r = pastedFor ? await runBlock("sh", b.command!, false) : await runBlock(b.lang, b.body, b.flags.includes("server"));
      if (r.code !== 0) throw new Error(`${b.file}:${b.line} exited ${r.code}:\n${r.out}`);
      const pasted = pastedFor ? b : all.slice(i + 1).find((x) => x.file === b.file && (x.flags.includes("run") || x.flags.includes("output")));
      if (pasted && pasted.flags.includes("output") && (pastedFor || !pasted.command)) {
        const missing = missingShapes(pasted.body, r.out);
        if (missing.length) throw new Error(`${pasted.file}:${pasted.line}: pasted lines of these shapes were not printed:\n${missing.join("\n")}\n--- printed:\n${r.out}`);
      }
    }, 300_000);
  }
});

describe("the shape comparison", () => {
  test("numbers, sampled text and ids may differ; columns, fields and order may not", () => {
    const pasted = "| 2x | 6.11 | 930.5 (36–1316) | 1.96x |\n[full] the President\n{\"id\":\"a\",\"n\":[1,2]}";
    expect(missingShapes(pasted, "progress 10%\n| 2x | 6.00 | 1000.0 (900–1100) | 1.90x |\n[full] other text\n{\"n\":[3],\"id\":\"b\"}")).toEqual([]);
    expect(missingShapes(pasted, "| 2x | 6.00 | 1000.0 | 1.90x |\n[full] x\n{\"id\":\"b\",\"n\":[3]}")).toEqual(["| Nx | N | N (N–N) | Nx |"]);
    expect(missingShapes(pasted, "| 2x | 6.11 | 930.5 (36–1316) | 1.96x |\n[full] x\n{\"id\":\"b\"}")).toEqual(['json {id:string,n:[number]}']);
    expect(missingShapes("a\n[3x] b", "[3x] b\nwarning: busy\nline")).toEqual(["[Nx]"]);
  });
});
