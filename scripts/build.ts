#!/usr/bin/env bun
/**
 * Builds the native libraries:
 *   build/libskipdecode_cpu.so   from cuda/cpu/*.c   with gcc (always)
 *   build/libskipdecode_cuda.so  from cuda/gpu/*.cu  with nvcc (where nvcc exists)
 *
 * Runs as `bun run build` (both), as `skipdecode build` (both; `--cuda`: the
 * CUDA library), and as `bun install`'s postinstall (--postinstall): there the
 * CUDA library (minutes of nvcc) is built only where it can run — a GPU driver
 * is present — or when SKIPDECODE_BUILD_CUDA=1 asks for it (.ci/run sets it, so
 * CI compiles every kernel); otherwise one line says it was left out, and it
 * is built on first CUDA use (lib/engine/build.ts) or by `skipdecode build --cuda`.
 * Flags:
 *   --cpu-only     skip the CUDA library
 *   --cuda-only    skip the CPU library
 *   --postinstall  the install-time rule above for CUDA
 *   --verbose      print the compiler command lines
 * Output goes to $SKIPDECODE_LIB_DIR when set, else build/. A compiler failure
 * prints the compiler's output and exits non-zero.
 */
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { gpuDriver } from "../lib/engine/build.ts";

const root = resolve(import.meta.dir, "..");
const build = process.env.SKIPDECODE_LIB_DIR ?? join(root, "build");
const FLAGS = ["--cpu-only", "--cuda-only", "--postinstall", "--verbose"];
const args = new Set(process.argv.slice(2));
for (const a of args) {
  if (!FLAGS.includes(a)) {
    console.error(`build: unknown flag ${a} (expected ${FLAGS.join(", ")})`);
    process.exit(2);
  }
}
if (args.has("--cpu-only") && args.has("--cuda-only")) {
  console.error("build: --cpu-only and --cuda-only exclude each other");
  process.exit(2);
}
const verbose = args.has("--verbose");
mkdirSync(build, { recursive: true });

function sources(dir: string, ext: string): string[] {
  const d = join(root, dir);
  if (!existsSync(d)) return [];
  return readdirSync(d).filter((f) => f.endsWith(ext)).sort().map((f) => join(d, f));
}

/**
 * Runs a compiler whose command ends with `-o OUTPUT`: it writes a temporary
 * file that is renamed onto OUTPUT only on success, so a library that another
 * process is loading is never half-written.
 */
function run(label: string, cmd: string[]): boolean {
  const out = cmd.at(-1)!;
  const tmp = `${out}.tmp-${process.pid}`;
  cmd = [...cmd.slice(0, -1), tmp];
  if (verbose) console.log(cmd.join(" "));
  const t0 = performance.now();
  const p = Bun.spawnSync(cmd, { cwd: root, stdout: "pipe", stderr: "pipe" });
  const text = (p.stdout.toString() + p.stderr.toString()).trim();
  if (p.exitCode !== 0) {
    rmSync(tmp, { force: true });
    console.error(`build: ${label} failed (exit ${p.exitCode}):\n${text}`);
    return false;
  }
  renameSync(tmp, out);
  if (text) console.log(text);
  console.log(`build: ${label} ok (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  return true;
}

function which(tool: string): string | null {
  const p = Bun.spawnSync(["sh", "-c", `command -v ${tool}`], { stdout: "pipe" });
  return p.exitCode === 0 ? p.stdout.toString().trim() : null;
}

let ok = true;

// CPU: portable x86-64/aarch64 code; hot kernels pick SIMD variants at run time
// (cuda/cpu/ops.c picks them), so no -march=native here.
const cpu = [
  "gcc", "-O3", "-std=c11", "-fPIC", "-shared", "-pthread", "-fopenmp-simd",
  "-fno-math-errno", "-fno-trapping-math",
  "-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-Wno-unused-parameter",
  "-fvisibility=hidden", "-I", join(root, "cuda/include"), "-I", join(root, "cuda/common"),
  ...sources("cuda/cpu", ".c"),
  "-lm", "-o", join(build, "libskipdecode_cpu.so"),
];
if (!args.has("--cuda-only")) ok = run("libskipdecode_cpu.so (gcc)", cpu) && ok;

let cuda = !args.has("--cpu-only");
if (cuda && args.has("--postinstall") && !gpuDriver() && process.env.SKIPDECODE_BUILD_CUDA !== "1") {
  console.log(
    "build: no GPU driver here, so libskipdecode_cuda.so is not built (SKIPDECODE_BUILD_CUDA=1 bun install, or skipdecode build --cuda, builds it)",
  );
  cuda = false;
}
if (cuda) {
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
