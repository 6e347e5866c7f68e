/**
 * The package as an app gets it: `bun pm pack`'s tarball, added to a scratch
 * app with `bun add`, brings skipdecode and its runtime dependencies only —
 * none of the devDependencies (the benchmark peer node-llama-cpp, vega, the
 * training corpus, typescript) — and only the files an app needs (package.json
 * "files": no tests, benchmarks or training recipe), the embedded model
 * included, whose path the package exports; `bunx skipdecode` runs the
 * package's command.
 *
 * It needs the npm registry for the dependencies (CI reaches it); without it
 * the test is reported skipped with the reason.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { cleanupTemp, tempDir } from "./helpers.ts";

afterAll(cleanupTemp);

const ROOT = resolve(import.meta.dir, "..");
const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
  version: string;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};

async function registryReachable(): Promise<string> {
  try {
    const r = await fetch("https://registry.npmjs.org/hono", { method: "HEAD", signal: AbortSignal.timeout(5000) });
    return r.ok ? "" : `the npm registry answered ${r.status}`;
  } catch (e) {
    return `the npm registry is not reachable (${(e as Error).message})`;
  }
}
const offline = await registryReachable();
if (offline) console.warn(`test/pack.test.ts: skipped: ${offline}`);

/** Packages installed in node_modules (scoped ones as @scope/name). */
function installed(nodeModules: string): string[] {
  const out: string[] = [];
  for (const d of readdirSync(nodeModules)) {
    if (d.startsWith(".")) continue;
    if (d.startsWith("@")) for (const s of readdirSync(join(nodeModules, d))) out.push(`${d}/${s}`);
    else out.push(d);
  }
  return out.sort();
}

describe.skipIf(!!offline)(`the packed package${offline ? ` (skipped: ${offline})` : ""}`, () => {
  test("installs with its runtime dependencies only, ships no tests or benchmarks, and exports the embedded model", () => {
    const out = tempDir("skd-pack-");
    const pack = Bun.spawnSync(["bun", "pm", "pack", "--destination", out, "--quiet"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
    expect(pack.exitCode).toBe(0);
    const tarball = join(out, `skipdecode-${pkg.version}.tgz`);
    expect(existsSync(tarball)).toBe(true);

    const app = tempDir("skd-packapp-");
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
    const add = Bun.spawnSync(["bun", "add", tarball], { cwd: app, stdout: "pipe", stderr: "pipe" });
    expect(add.stderr.toString()).not.toMatch(/error/i);
    expect(add.exitCode).toBe(0);

    const nm = join(app, "node_modules");
    const names = installed(nm);
    for (const dev of Object.keys(pkg.devDependencies)) expect(names).not.toContain(dev);
    for (const dep of Object.keys(pkg.dependencies)) expect(names).toContain(dep);
    // skipdecode and its five dependencies: none of those pulls another package today
    expect(names.length).toBeLessThanOrEqual(1 + Object.keys(pkg.dependencies).length + 4);

    const root = join(nm, "skipdecode");
    for (const shipped of ["bin/skipdecode.ts", "lib/index.ts", "server/app.ts", "scripts/build.ts", "cuda/include/skipdecode.h", "models/brown-opt-12l/config.json", "models/brown-llama-12l/model.safetensors"]) {
      expect(existsSync(join(root, shipped))).toBe(true);
    }
    for (const left of ["test", "bench", "train", "examples", "bun.lock"]) expect(existsSync(join(root, left))).toBe(false);

    writeFileSync(
      join(app, "index.ts"),
      `import { existsSync } from "node:fs";
       import { EMBEDDED_MODEL } from "skipdecode";
       console.log(EMBEDDED_MODEL, existsSync(EMBEDDED_MODEL + "/model.safetensors"));`,
    );
    const run = Bun.spawnSync(["bun", "index.ts"], { cwd: app, stdout: "pipe", stderr: "pipe" });
    expect(run.stderr.toString()).toBe("");
    expect(run.stdout.toString()).toBe(`${join(root, "models", "brown-opt-12l")} true\n`);
    // the package's command, as an app runs it
    const bunx = Bun.spawnSync(["bunx", "skipdecode", "--version"], { cwd: app, stdout: "pipe", stderr: "pipe" });
    expect(bunx.stdout.toString()).toMatch(/^skipdecode \S+ \(native ABI \d+\)\n$/);
  }, 120_000);
});
