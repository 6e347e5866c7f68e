/** Test helpers: tiny models in temp folders and logit comparisons. */
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SafetensorsFile } from "../lib/checkpoint/safetensors.ts";
import { writeSafetensors } from "../lib/checkpoint/safetensors_write.ts";
import { writeTinyModel, type TinyModelOptions } from "../lib/tiny/model.ts";

const made: string[] = [];
const cache = new Map<string, string>();

/** A tiny model folder for these options (made once per test process). */
export function tinyModel(opts: TinyModelOptions = {}): string {
  const key = JSON.stringify(opts);
  const have = cache.get(key);
  if (have) return have;
  const dir = mkdtempSync(join(tmpdir(), "skd-tiny-"));
  made.push(dir);
  writeTinyModel(dir, opts);
  cache.set(key, dir);
  return dir;
}

/** A fresh temp folder, removed by cleanupTemp(). */
export function tempDir(prefix = "skd-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

export function cleanupTemp(): void {
  for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
  cache.clear();
}

/**
 * max |a - ref| over two logit tables, and max |ref| (the reference's scale):
 * `ref` as the float64 references give it (a row per position) or as another
 * engine's flat [positions × vocab] logits.
 */
export function maxDiff(a: Float32Array, ref: Float64Array[] | Float32Array, vocab: number): { diff: number; scale: number; at: string } {
  const rows = ref instanceof Float32Array ? Array.from({ length: ref.length / vocab }, (_, t) => ref.subarray(t * vocab, (t + 1) * vocab)) : ref;
  let diff = 0;
  let scale = 0;
  let at = "";
  rows.forEach((row, t) => {
    for (let i = 0; i < vocab; i++) {
      const d = Math.abs(a[t * vocab + i]! - row[i]!);
      if (d > diff) {
        diff = d;
        at = `position ${t}, logit ${i}: got ${a[t * vocab + i]}, reference ${row[i]}`;
      }
      scale = Math.max(scale, Math.abs(row[i]!));
    }
  });
  return { diff, scale, at };
}

/** Index of the largest value of row t. */
export function argmax(logits: ArrayLike<number>, t: number, vocab: number): number {
  let best = 0;
  for (let i = 1; i < vocab; i++) if (logits[t * vocab + i]! > logits[t * vocab + best]!) best = i;
  return best;
}

/** Budgets that decay linearly from L to `min` over n positions after `prompt` full ones. */
export function decaying(n: number, prompt: number, L: number, min: number): number[] {
  return Array.from({ length: n }, (_, t) => {
    if (t < prompt) return L;
    const i = t - prompt;
    return Math.max(min, Math.round(L - ((L - min) * i) / Math.max(1, n - prompt - 1)));
  });
}

/**
 * A 2 ms interval timer that records how often it fired and its longest gap:
 * whether the event loop kept running while something else worked.
 */
export function timerProbe(): { stop(): { ticks: number; worst: number } } {
  let ticks = 0;
  let last = performance.now();
  let worst = 0;
  const iv = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
    ticks++;
  }, 2);
  return {
    stop() {
      clearInterval(iv);
      return { ticks, worst };
    },
  };
}

/** Copies a model folder, letting `edit` change config.json and drop tensors. */
export function variantOf(
  src: string,
  edit: { config?: (c: Record<string, unknown>) => void; drop?: string[]; reshape?: string; poke?: { name: string; at: number; value: number }[] },
): string {
  const dir = tempDir("skd-variant-");
  for (const f of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
    if (existsSync(join(src, f))) copyFileSync(join(src, f), join(dir, f));
  }
  const cfg = JSON.parse(readFileSync(join(src, "config.json"), "utf8"));
  edit.config?.(cfg);
  writeFileSync(join(dir, "config.json"), JSON.stringify(cfg));
  const st = SafetensorsFile.open(join(src, "model.safetensors"));
  const tensors = [...st.tensors.values()]
    .filter((t) => !edit.drop?.includes(t.name))
    .map((t) => {
      let shape = t.shape;
      if (t.name === edit.reshape) shape = [t.shape[1]!, t.shape[0]!];
      let data = st.read(t.name);
      for (const p of edit.poke ?? []) {
        if (p.name !== t.name) continue;
        if (t.dtype !== "F32") throw new Error("poke: F32 tensors only");
        data = data.slice();
        new DataView(data.buffer, data.byteOffset).setFloat32(p.at * 4, p.value, true);
      }
      return { name: t.name, dtype: t.dtype, shape, data };
    });
  st.close();
  writeSafetensors(join(dir, "model.safetensors"), tensors);
  return dir;
}

const CLI = join(import.meta.dir, "..", "bin", "skipdecode.ts");

/**
 * `skipdecode serve --model dir --port 0 …args` in a child process: resolves
 * once it listens, with its URL and a promise of its whole stderr (settled
 * when it exits).
 */
export async function serveProcess(dir: string, args: string[]): Promise<{ p: ReturnType<typeof Bun.spawn>; url: string; stderr: () => Promise<string> }> {
  const p = Bun.spawn(["bun", CLI, "serve", "--model", dir, "--port", "0", ...args], { stdout: "pipe", stderr: "pipe" });
  const reader = (p.stderr as ReadableStream<Uint8Array>).getReader();
  let err = "";
  while (!/http:\/\/\S+/.test(err)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`serve exited early: ${err}`);
    err += new TextDecoder().decode(value);
  }
  const url = err.match(/http:\/\/[^\s—]+/)![0];
  const rest = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return err;
      err += new TextDecoder().decode(value);
    }
  })();
  return { p, url, stderr: () => rest };
}
