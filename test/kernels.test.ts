/**
 * Every CPU matmul kernel this machine runs passes the engine, generation
 * and KV-cache suites (the attention over the KV cache follows the kernel
 * choice too): the default run uses the best kernel; this file re-runs those
 * suites in child processes with SKIPDECODE_CPU_KERNEL forcing each other
 * kernel (the portable reference always; AVX2 where AVX-512 is the default).
 * The quantized kernels follow the same switch (quant.h); their engine-level
 * tests (test/quant.test.ts: logits against the reference, batch invariance)
 * run per forced kernel too (on a CPU with AVX-VNNI, the avx2 choice runs its
 * avx2-vnni variant), and, where the CPU has AVX-512, once more with
 * SKIPDECODE_CPU_QUANT_AVX512=1, which turns on the AVX-512 quantized kernels
 * (correct, but slower than the AVX2 ones where they have run: cuda/cpu/quant.h).
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { NativeBackend } from "../lib/engine/native.ts";

const best = /(\w+) kernels$/.exec(NativeBackend.get("cpu").deviceName())?.[1] ?? "portable";
const others = ["portable", ...(best === "avx512" ? ["avx2"] : [])];
const root = resolve(import.meta.dir, "..");
const flags = (() => {
  try {
    return readFileSync("/proc/cpuinfo", "utf8");
  } catch {
    return "";
  }
})();
const optInQuant = /\bavx512bw\b/.test(flags);

/** Runs test files in a child with `env` added; returns the summary (stderr). */
function suite(env: Record<string, string>, files: string[], filter?: string): { code: number; out: string } {
  const p = Bun.spawnSync(["bun", "test", "--timeout", "120000", ...files, ...(filter ? ["-t", filter] : [])], {
    cwd: root,
    env: { ...process.env, ...env },
    stdout: "pipe",
    stderr: "pipe",
  });
  const out = p.stderr.toString();
  if (p.exitCode !== 0) console.error(out.slice(-4000));
  return { code: p.exitCode ?? 1, out };
}

const QUANT_ENGINE_TESTS = "float64 reference|batch invariance";

describe("CPU kernels", () => {
  test("the device name says which kernel runs", () => {
    expect(["portable", "avx2", "avx512"]).toContain(best);
  });

  for (const kernel of others) {
    test(`${kernel}: the engine and generation suites pass`, () => {
      const env = { ...process.env, SKIPDECODE_CPU_KERNEL: kernel };
      const name = Bun.spawnSync(["bun", "-e", 'import { NativeBackend } from "./lib/engine/native.ts"; console.log(NativeBackend.get("cpu").deviceName())'], {
        cwd: root,
        env,
        stdout: "pipe",
      });
      expect(name.stdout.toString().trim()).toEndWith(`${kernel} kernels`);
      const { code, out } = suite({ SKIPDECODE_CPU_KERNEL: kernel }, ["test/engine.test.ts", "test/generate.test.ts", "test/kv.test.ts"]);
      expect(code).toBe(0);
      expect(out).toMatch(/ 0 fail/);
      expect(Number(/ (\d+) pass/.exec(out)?.[1])).toBeGreaterThan(20);
    }, 600_000); // two child suites: past 120 s on the loaded 2-core machine

    test(`${kernel}: the quantized models' engine tests pass`, () => {
      const { code, out } = suite({ SKIPDECODE_CPU_KERNEL: kernel }, ["test/quant.test.ts"], QUANT_ENGINE_TESTS);
      expect(code).toBe(0);
      expect(Number(/ (\d+) pass/.exec(out)?.[1])).toBeGreaterThan(10);
    }, 600_000); // a child test run
  }

  test.skipIf(!optInQuant)("SKIPDECODE_CPU_QUANT_AVX512=1: the opt-in AVX-512 quantized kernels pass the quantized models' engine tests", () => {
    const { code, out } = suite({ SKIPDECODE_CPU_QUANT_AVX512: "1" }, ["test/quant.test.ts"], QUANT_ENGINE_TESTS);
    expect(code).toBe(0);
    expect(Number(/ (\d+) pass/.exec(out)?.[1])).toBeGreaterThan(10);
  }, 600_000);
});
