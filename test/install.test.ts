/**
 * Installed as a dependency: an app whose node_modules holds a copy of the
 * package without its build/ (as after `bun add` of a git or file: dependency
 * whose postinstall Bun blocked) imports "skipdecode" and generates. The first
 * load builds the CPU library with one progress line; two apps starting at once
 * build it once (a lock); the CUDA library is not built on a machine without a
 * GPU driver.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { gpuDriver } from "../lib/engine/build.ts";
import { cleanupTemp, tempDir, tinyModel } from "./helpers.ts";

afterAll(cleanupTemp);

const ROOT = resolve(import.meta.dir, "..");

describe("installing as a dependency", () => {
  test("an app imports skipdecode and generates; the first load builds the library once", async () => {
    const app = tempDir("skd-app-");
    const pkg = join(app, "node_modules", "skipdecode");
    mkdirSync(pkg, { recursive: true });
    for (const f of ["package.json", "lib", "server", "scripts", "cuda"]) cpSync(join(ROOT, f), join(pkg, f), { recursive: true });
    expect(existsSync(join(pkg, "build"))).toBe(false);
    // the package's own dependencies (package.json's), as the install would have put them
    const deps = Object.keys((JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { dependencies: Record<string, string> }).dependencies);
    for (const d of deps) {
      mkdirSync(dirname(join(app, "node_modules", d)), { recursive: true });
      symlinkSync(join(ROOT, "node_modules", d), join(app, "node_modules", d));
    }
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", type: "module", dependencies: { skipdecode: "file:../skipdecode" } }));
    writeFileSync(
      join(app, "index.ts"),
      `import { SkipDecoder } from "skipdecode";
       using dec = await SkipDecoder.load(process.argv[2]!, { backend: ${gpuDriver() ? '"cpu"' : '"auto"'} });
       const r = await dec.generate("Hello", { maxNewTokens: 4, ignoreEos: true });
       console.log(dec.backend, r.tokens.length);`,
    );
    const model = tinyModel({ seed: 4, layers: 2, hidden: 32, heads: 2 });
    const start = () => Bun.spawn(["bun", "index.ts", model], { cwd: app, stdout: "pipe", stderr: "pipe", env: { ...process.env, SKIPDECODE_LIB_DIR: undefined } });
    const a = start();
    const b = start();
    const [codeA, codeB] = await Promise.all([a.exited, b.exited]);
    const outs = await Promise.all([a, b].map((p) => new Response(p.stdout).text()));
    const errs = (await Promise.all([a, b].map((p) => new Response(p.stderr).text()))).join("");
    expect(errs).not.toMatch(/error|fail/i);
    expect([codeA, codeB]).toEqual([0, 0]);
    expect(outs).toEqual(["cpu 4\n", "cpu 4\n"]);
    // one build, one progress line (the other app waited for it)
    expect(errs.match(/first use: building the CPU library/g)?.length).toBe(1);
    expect(errs).toContain(`skipdecode: first use: building the CPU library (gcc, ~5 s) into ${join(pkg, "build")} ...\n`);
    expect(existsSync(join(pkg, "build", "libskipdecode_cpu.so"))).toBe(true);
    expect(existsSync(join(pkg, "build", ".building-cpu"))).toBe(false);
    if (!gpuDriver()) expect(existsSync(join(pkg, "build", "libskipdecode_cuda.so"))).toBe(false);
    // later loads find it and say nothing
    const again = Bun.spawnSync(["bun", "index.ts", model], { cwd: app, stdout: "pipe", stderr: "pipe", env: { ...process.env, SKIPDECODE_LIB_DIR: undefined } });
    expect(again.stderr.toString()).toBe("");
    expect(again.stdout.toString()).toBe("cpu 4\n");
  }, 120_000);
});
