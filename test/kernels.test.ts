/**
 * Every CPU matmul kernel this machine runs passes the engine and generation
 * suites: the default run uses the best kernel; this file re-runs those
 * suites in child processes with SKIPDECODE_CPU_KERNEL forcing each other
 * kernel (the portable reference always; AVX2 where AVX-512 is the default).
 */
import { describe, expect, test } from "bun:test";
import { resolve } from "node:path";
import { NativeBackend } from "../lib/engine/native.ts";

const best = /(\w+) kernels$/.exec(NativeBackend.get("cpu").deviceName())?.[1] ?? "portable";
const others = ["portable", ...(best === "avx512" ? ["avx2"] : [])];
const root = resolve(import.meta.dir, "..");

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
      const p = Bun.spawnSync(["bun", "test", "--timeout", "120000", "test/engine.test.ts", "test/generate.test.ts"], {
        cwd: root,
        env,
        stdout: "pipe",
        stderr: "pipe",
      });
      const out = p.stderr.toString();
      if (p.exitCode !== 0) console.error(out.slice(-4000));
      expect(p.exitCode).toBe(0);
      expect(out).toMatch(/ 0 fail/);
      expect(Number(/ (\d+) pass/.exec(out)?.[1])).toBeGreaterThan(20);
    }, 600_000); // two whole suites in a child process, on the slowest kernel, maybe on a busy machine
  }
});
