#!/usr/bin/env bun
/**
 * Builds the native libraries:
 *   build/libskipdecode_cpu.so   from cuda/cpu/*.c   with gcc (always)
 *   build/libskipdecode_cuda.so  from cuda/gpu/*.cu  with nvcc (where nvcc exists)
 *
 * Runs as `bun install`'s postinstall and as `bun run build`. Flags:
 *   --cpu-only   skip the CUDA library
 *   --verbose    print the compiler command lines
 * A compiler failure prints the compiler's output and exits non-zero.
 */
import { mkdirSync, readdirSync, existsSync } from "node:fs";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dir, "..");
const build = join(root, "build");
const args = new Set(process.argv.slice(2));
for (const a of args) {
  if (a !== "--cpu-only" && a !== "--verbose") {
    console.error(`build: unknown flag ${a} (expected --cpu-only, --verbose)`);
    process.exit(2);
  }
}
const verbose = args.has("--verbose");
mkdirSync(build, { recursive: true });

function sources(dir: string, ext: string): string[] {
  const d = join(root, dir);
  if (!existsSync(d)) return [];
  return readdirSync(d).filter((f) => f.endsWith(ext)).sort().map((f) => join(d, f));
}

function run(label: string, cmd: string[]): boolean {
  if (verbose) console.log(cmd.join(" "));
  const t0 = performance.now();
  const p = Bun.spawnSync(cmd, { cwd: root, stdout: "pipe", stderr: "pipe" });
  const out = (p.stdout.toString() + p.stderr.toString()).trim();
  if (p.exitCode !== 0) {
    console.error(`build: ${label} failed (exit ${p.exitCode}):\n${out}`);
    return false;
  }
  if (out) console.log(out);
  console.log(`build: ${label} ok (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  return true;
}

function which(tool: string): string | null {
  const p = Bun.spawnSync(["sh", "-c", `command -v ${tool}`], { stdout: "pipe" });
  return p.exitCode === 0 ? p.stdout.toString().trim() : null;
}

let ok = true;

// CPU: portable x86-64/aarch64 code; hot kernels pick SIMD variants at run time
// (see cuda/cpu/simd.h), so no -march=native here.
const cpu = [
  "gcc", "-O3", "-std=c11", "-fPIC", "-shared", "-pthread", "-fopenmp-simd",
  "-fno-math-errno", "-fno-trapping-math",
  "-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-Wno-unused-parameter",
  "-fvisibility=hidden", "-I", join(root, "cuda/include"), "-I", join(root, "cuda/common"),
  ...sources("cuda/cpu", ".c"),
  "-o", join(build, "libskipdecode_cpu.so"), "-lm",
];
ok = run("libskipdecode_cpu.so (gcc)", cpu) && ok;

if (!args.has("--cpu-only")) {
  const nvcc = which("nvcc");
  if (!nvcc) {
    console.log("build: nvcc not found, skipping libskipdecode_cuda.so (the CPU backend still works)");
  } else {
    const gpu = [
      nvcc, "-O3", "-std=c++17", "-shared", "--threads", "0", "-Xcompiler", "-fPIC,-fvisibility=hidden,-Wall",
      "--expt-relaxed-constexpr", "-Werror", "all-warnings",
      "-gencode", "arch=compute_80,code=sm_80",
      "-gencode", "arch=compute_90,code=sm_90",
      "-gencode", "arch=compute_90,code=compute_90",
      "-I", join(root, "cuda/include"), "-I", join(root, "cuda/common"),
      ...sources("cuda/gpu", ".cu"),
      "-o", join(build, "libskipdecode_cuda.so"),
    ];
    ok = run("libskipdecode_cuda.so (nvcc)", gpu) && ok;
  }
}
process.exit(ok ? 0 : 1);
