/** The `skipdecode` command, run as a user would: a child process. */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { SkipDecoder } from "../lib/index.ts";
import { cleanupTemp, tempDir } from "./helpers.ts";

afterAll(cleanupTemp);

const CLI = resolve(import.meta.dir, "../lib/cli.ts");

function run(...args: string[]): { code: number; stdout: string; stderr: string } {
  const p = Bun.spawnSync(["bun", CLI, ...args], { stdout: "pipe", stderr: "pipe" });
  return { code: p.exitCode ?? -1, stdout: p.stdout.toString(), stderr: p.stderr.toString() };
}

describe("skipdecode CLI", () => {
  test("tiny-model writes a loadable, deterministic checkpoint", () => {
    const a = tempDir();
    const b = tempDir();
    const r = run("tiny-model", a, "--seed", "3", "--variant", "post", "--dtype", "bfloat16", "--layers", "2", "--hidden", "40", "--heads", "2");
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/post-LN, 2 layers, hidden 40, 2 heads/);
    for (const f of ["config.json", "model.safetensors", "tokenizer.json"]) expect(existsSync(join(a, f))).toBe(true);
    run("tiny-model", b, "--seed", "3", "--variant", "post", "--dtype", "bfloat16", "--layers", "2", "--hidden", "40", "--heads", "2");
    for (const f of ["config.json", "model.safetensors", "tokenizer.json"]) {
      expect(Buffer.compare(readFileSync(join(a, f)), readFileSync(join(b, f)))).toBe(0);
    }
  });

  test("logits prints one row per position, equal to the library's forward", async () => {
    const dir = tempDir();
    expect(run("tiny-model", dir, "--layers", "3").code).toBe(0);
    const r = run("logits", "--model", dir, "--ids", "2,5,9", "--budgets", "3,3,2", "--warmup", "1", "--backend", "cpu");
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { logits: number[][] };
    expect(out.logits.length).toBe(3);
    using dec = await SkipDecoder.load(dir, { backend: "cpu" });
    expect(out.logits[0]!.length).toBe(dec.spec.vocabSize);
    const want = await dec.forward([2, 5, 9], { budgets: [3, 3, 2], warmupLayers: 1 });
    expect(out.logits.flat()).toEqual(Array.from(want));
  });

  test("usage errors exit 2 with a message; failures exit 1", () => {
    const dir = tempDir();
    const cases: [string[], RegExp][] = [
      [[], /usage:/],
      [["frobnicate"], /unknown command "frobnicate"/],
      [["tiny-model"], /expected 1 positional argument/],
      [["tiny-model", dir, "--bogus"], /Unknown option '--bogus'/],
      [["tiny-model", dir, "--layers"], /argument missing|requires a value|--layers/],
      [["tiny-model", dir, "--layers", "x"], /--layers must be an integer, got "x"/],
      [["tiny-model", dir, "--hidden", "50", "--heads", "4"], /hidden \(50\) must be a multiple of heads \(4\)/],
      [["tiny-model", dir, "--variant", "middle"], /variant must be one of "pre", "post"/],
      [["logits", "--ids", "1,2"], /--model DIR is required/],
      [["logits", "--model", dir], /--ids is required/],
      [["logits", "--model", dir, "--ids", "1,,2"], /--ids must be a comma-separated list/],
      [["logits", "--model", dir, "--ids", "1", "--backend", "tpu"], /--backend must be auto, cpu or cuda/],
    ];
    for (const [args, re] of cases) {
      const r = run(...args);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(re);
    }
    const missing = run("logits", "--model", join(dir, "nope"), "--ids", "2");
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/does not exist/);
  });
});
