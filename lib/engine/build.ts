/**
 * Builds a missing native library on first use. A package installed as a
 * dependency may have had its postinstall build blocked (Bun runs no install
 * script of an untrusted dependency) or, on a machine without a GPU driver,
 * skipped the CUDA library on purpose (scripts/build.ts). The first
 * `SkipDecoder.load` then runs scripts/build.ts for just that library, printing
 * one progress line to stderr; a lock (a directory made atomically next to
 * the library) keeps concurrent first loads, in threads or processes, from
 * building twice: the others wait for the one that builds.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import { dirname, join, resolve } from "node:path";

/** The one command that builds the libraries from an app that depends on this package. */
export const BUILD_COMMAND = "bunx skipdecode build";

/**
 * Whether an NVIDIA driver is loaded, so a CUDA library could run here: the
 * kernel module's /proc/driver/nvidia/version exists (also inside containers
 * run with the NVIDIA runtime, which mounts it). The one rule for the install
 * (scripts/build.ts), the first-use build and `backend: "auto"`; an installed
 * nvidia-smi alone does not count, since without the module nothing runs.
 */
export function gpuDriver(): boolean {
  return existsSync("/proc/driver/nvidia/version");
}

/** A lock older than this, or held by a process that is gone, is stale. */
const STALE_MS = 10 * 60_000;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Takes the lock (true), or returns false when another live builder holds it. */
function tryLock(lock: string): boolean {
  try {
    mkdirSync(lock);
    writeFileSync(join(lock, "pid"), String(process.pid));
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
  }
  let pid = NaN;
  try {
    pid = Number(readFileSync(join(lock, "pid"), "utf8"));
  } catch {
    // the holder has not written its pid yet: live unless the lock is old
  }
  let age = 0;
  try {
    age = Date.now() - statSync(lock).mtimeMs;
  } catch {
    return tryLock(lock); // released meanwhile
  }
  if ((Number.isInteger(pid) && pid !== process.pid && !alive(pid)) || age > STALE_MS) {
    rmSync(lock, { recursive: true, force: true });
    return tryLock(lock);
  }
  return false;
}

/** One progress line on stderr, written at once (this may run on the engine thread, whose stream writes are relayed later). */
function say(line: string): void {
  writeSync(2, `${line}\n`);
}

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Makes sure `path` (a backend's library) exists, building it with
 * scripts/build.ts when it does not. Throws with the compiler's output and
 * {@link BUILD_COMMAND} when the build fails.
 *
 * @example
 * ensureLibrary("cpu", "/app/node_modules/skipdecode/build/libskipdecode_cpu.so");
 */
export function ensureLibrary(backend: "cpu" | "cuda", path: string): void {
  if (existsSync(path)) return;
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true });
  const lock = join(dir, `.building-${backend}`);
  let said = false;
  while (!tryLock(lock)) {
    if (!said) {
      say(`skipdecode: waiting for another process to build ${path}`);
      said = true;
    }
    sleep(200);
    if (existsSync(path)) return;
  }
  try {
    if (existsSync(path)) return; // built while we waited for the lock
    const what = backend === "cpu" ? "the CPU library (gcc, ~5 s)" : "the CUDA library (nvcc, ~25 s)";
    say(`skipdecode: first use: building ${what} into ${dir} ...`);
    const script = resolve(import.meta.dir, "..", "..", "scripts", "build.ts");
    const p = Bun.spawnSync([process.execPath, script, backend === "cpu" ? "--cpu-only" : "--cuda-only"], {
      env: { ...process.env, SKIPDECODE_LIB_DIR: dir },
      stdout: "pipe",
      stderr: "pipe",
    });
    if (p.exitCode !== 0 || !existsSync(path)) {
      const out = (p.stdout.toString() + p.stderr.toString()).trim();
      throw new Error(`skipdecode: ${path} is missing and building it failed:\n${out}\nFix the cause, then build it with \`${BUILD_COMMAND}\``);
    }
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}
