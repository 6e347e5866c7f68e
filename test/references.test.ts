/**
 * No stale references: across the repository's markdown and source files
 * (what git tracks, plus new files it does not ignore),
 *
 * - every relative markdown link points at a file that exists, and a
 *   `#section` of a markdown file at a heading it has;
 * - every path-like mention of a source or doc file (`lib/engine/native.ts`,
 *   `cuda/gpu/step.cu`, `../docs/api.md`, in prose, comments or code) names a
 *   file that exists, relative to the repository root or to the mentioning
 *   file — unless git ignores it (generated outputs). Data files (`.json`,
 *   weights) are left out: examples name a user's model folders;
 * - no issue numbers and no session notes ("issue #11", "(#9)",
 *   "TODO from session …", "the next session"). train/ is exempt from the
 *   session rule only: there a "session" is a stretch of training between
 *   `--resume`s, a term of the recipe.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "..");

function git(args: string[]): string {
  const p = Bun.spawnSync(["git", ...args], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  if (p.exitCode !== 0) throw new Error(`git ${args.join(" ")} failed: ${p.stderr.toString()}`);
  return p.stdout.toString();
}

const SOURCE = /\.(md|ts|js|c|h|cu|cuh|py|sh)$|^\.ci\/run$/;
const FILES = git(["ls-files", "--cached", "--others", "--exclude-standard"])
  .split("\n")
  .filter((f) => f && SOURCE.test(f) && existsSync(join(ROOT, f)));

/** Paths among `paths` that git ignores (generated outputs). */
function ignored(paths: string[]): Set<string> {
  if (!paths.length) return new Set();
  const p = Bun.spawnSync(["git", "check-ignore", "--no-index", "--stdin"], { cwd: ROOT, stdin: Buffer.from(paths.join("\n") + "\n"), stdout: "pipe" });
  return new Set(p.stdout.toString().split("\n").filter(Boolean));
}

/** GitHub's anchor for a heading. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/`/g, "")
    .replace(/[^\p{L}\p{N} _-]/gu, "")
    .replace(/ /g, "-");
}

function anchors(mdFile: string): Set<string> {
  const out = new Set<string>();
  let fence = false;
  for (const line of readFileSync(mdFile, "utf8").split("\n")) {
    if (/^```/.test(line)) fence = !fence;
    const h = !fence && line.match(/^#{1,6}\s+(.*)$/);
    if (h) out.add(slug(h[1]!));
  }
  return out;
}

/** Where a mention resolves: the root first, then the mentioning file's folder; null when neither exists. */
function resolveMention(file: string, mention: string): string | null {
  // the package's own name, as an app imports it ("skipdecode/server/openai.ts")
  if (mention.startsWith("skipdecode/")) mention = mention.slice("skipdecode/".length);
  for (const base of [ROOT, dirname(join(ROOT, file))]) {
    const p = resolve(base, mention);
    if (existsSync(p)) return p;
  }
  return null;
}

// not after "<" (#include <sys/mman.h>), "/" or ":" (absolute paths, URLs), "$" or "{" (templates)
const PATH = /(?<![\w@./:~$%{}<-])((?:\.\.?\/)*(?:[\w.-]+\/)+[\w.-]*\w\.(?:ts|js|c|h|cu|cuh|py|sh|md))(?![\w/-])/g;
const LINK = /\[[^\]]*\]\(([^)\s]+)\)/g;

describe("references in docs and code", () => {
  test("relative markdown links point at files and headings that exist", () => {
    const broken: string[] = [];
    for (const f of FILES.filter((x) => x.endsWith(".md"))) {
      const text = readFileSync(join(ROOT, f), "utf8");
      for (const m of text.matchAll(LINK)) {
        const target = m[1]!;
        if (/^(https?:|mailto:)/.test(target)) continue;
        const [path, hash] = target.split("#") as [string, string | undefined];
        const abs = path === "" ? join(ROOT, f) : resolve(dirname(join(ROOT, f)), path);
        if (!existsSync(abs)) {
          broken.push(`${f}: link to ${target}: no such file`);
          continue;
        }
        if (hash && abs.endsWith(".md") && !anchors(abs).has(hash)) broken.push(`${f}: link to ${target}: no heading #${hash} in ${relative(ROOT, abs)}`);
      }
    }
    expect(broken).toEqual([]);
  });

  test("every path mentioned in docs, comments and code exists (or is a git-ignored output)", () => {
    const missing: { at: string; mention: string; rel: string }[] = [];
    // test/layers.test.ts builds a made-up tree to check the import checker with
    for (const f of FILES.filter((x) => x !== "test/layers.test.ts")) {
      const lines = readFileSync(join(ROOT, f), "utf8").split("\n");
      lines.forEach((line, i) => {
        for (const m of line.matchAll(PATH)) {
          const mention = m[1]!;
          if (resolveMention(f, mention)) continue;
          missing.push({ at: `${f}:${i + 1}`, mention, rel: relative(ROOT, resolve(ROOT, mention)) });
        }
      });
    }
    const skip = ignored(missing.map((x) => x.rel));
    const stale = missing.filter((x) => !skip.has(x.rel)).map((x) => `${x.at}: ${x.mention}`);
    expect(stale).toEqual([]);
  });

  test("no issue numbers or session notes", () => {
    const ISSUE = /\bissues? ?#?\d+\b|\(#\d+\)|\bPRs? ?#\d+|\bpull request #?\d+/i;
    const SESSION = /TODO\W*(?:from )?session|\bsession notes?\b|\b(?:this|that|the next|the previous|the last|a later|an earlier|later) session\b|\bsession \d+\b/i;
    const found: string[] = [];
    for (const f of FILES.filter((x) => x !== "test/references.test.ts")) {
      readFileSync(join(ROOT, f), "utf8")
        .split("\n")
        .forEach((line, i) => {
          if (ISSUE.test(line) || (!f.startsWith("train/") && SESSION.test(line))) found.push(`${f}:${i + 1}: ${line.trim().slice(0, 120)}`);
        });
    }
    expect(found).toEqual([]);
  });

  test("the scan sees the tree", () => {
    expect(FILES).toContain("README.md");
    expect(FILES).toContain("lib/index.ts");
    expect(FILES.some((f) => f.startsWith("docs/"))).toBe(true);
    expect(statSync(join(ROOT, "docs")).isDirectory()).toBe(true);
  });
});
