/**
 * Shared pieces of the benchmark scripts: machine description, statistics,
 * markdown tables, JSON output and the cached random models they run on.
 */
import type { ModelSpec } from "../lib/checkpoint/config.ts";
import { Role } from "../lib/engine/abi.ts";
import type { NativeBackend } from "../lib/engine/native.ts";
import type { LoadSummary } from "../lib/engine/weights.ts";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { writeTinyModel, type TinyModelOptions } from "../lib/tiny/model.ts";

export const ROOT = resolve(import.meta.dir, "..");

/** The machine a table ran on, in one line. */
export function machine(): string {
  const c = cpus();
  return `${c[0]?.model.trim() ?? "unknown CPU"}, ${c.length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, ${process.platform}/${process.arch}, Bun ${Bun.version}`;
}

export function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Sample standard deviation (0 for one sample). */
export function stddev(xs: number[]): number {
  if (xs.length < 2) return 0;
  const mu = xs.reduce((a, b) => a + b, 0) / xs.length;
  return Math.sqrt(xs.reduce((a, b) => a + (b - mu) ** 2, 0) / (xs.length - 1));
}

/** "123.4 ± 5.6" */
export function pm(xs: number[], digits = 1): string {
  return `${median(xs).toFixed(digits)} ± ${stddev(xs).toFixed(digits)}`;
}

/** Prints a markdown table. */
export function table(head: string[], rows: (string | number)[][], align?: ("l" | "r")[]): void {
  const a = align ?? head.map((_, i) => (i === 0 ? "l" : "r"));
  console.log(`| ${head.join(" | ")} |`);
  console.log(`|${a.map((x) => (x === "r" ? "---:" : "---")).join("|")}|`);
  for (const r of rows) console.log(`| ${r.join(" | ")} |`);
}

export function writeJson(path: string, data: unknown): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, JSON.stringify(data, null, 2) + "\n");
  console.log(`\nwrote ${path}`);
}

/** Model shapes the benchmarks run (random weights, made once and cached in .cache/bench). */
export const SHAPES: Record<string, TinyModelOptions> = {
  "opt-125m": { layers: 12, hidden: 768, heads: 12, ffn: 3072, vocab: 50272, maxPositions: 2048, variant: "pre" },
  "opt-350m": { layers: 24, hidden: 1024, heads: 16, ffn: 4096, embedDim: 512, vocab: 50272, maxPositions: 2048, variant: "post" },
  "opt-1.3b": { layers: 24, hidden: 2048, heads: 32, ffn: 8192, vocab: 50272, maxPositions: 2048, variant: "pre" },
  // LLaMA-shaped: ~125M and ~390M parameters, GQA 3:1 and 4:1, vocab 32000
  "llama-110m": { family: "llama", layers: 12, hidden: 768, heads: 12, kvHeads: 4, ffn: 2048, vocab: 32000, maxPositions: 2048 },
  "llama-400m": { family: "llama", layers: 24, hidden: 1024, heads: 16, kvHeads: 4, ffn: 3584, vocab: 32000, maxPositions: 2048 },
  // Qwen2.5-0.5B's layers (hidden 896, ffn 4864, 14 heads / 2 KV heads; vocab cut to 32000): rows of 896 are no
  // multiple of 256, so its Q4_K_M files are mostly Q5_0, as llama.cpp writes them
  "qwen2-500m": { family: "qwen2", layers: 24, hidden: 896, heads: 14, kvHeads: 2, ffn: 4864, vocab: 32000, maxPositions: 2048 },
  tiny: { layers: 4, hidden: 64, heads: 4 },
  // smoke runs of the quantized and llama.cpp benches: rows whole K-quant blocks, seconds to write and convert
  "llama-tiny": { family: "llama", layers: 4, hidden: 256, heads: 4, kvHeads: 2, ffn: 512, merges: 300, maxPositions: 512 },
};

/**
 * The roofline the runs compare with, in GB/s: `passes` plain reads in a row
 * over `bytes` (skd_membw_passes; 512 MiB: ~0.7 s at 20 GB/s). `sustained` is their
 * bytes over their total time, `best` the fastest pass. A decode's tokens/s
 * averages a few seconds of steps, so its share of the bandwidth is taken of
 * the sustained rate; on a quiet machine the two agree, while on a cloud VM
 * shared with others single passes spread by almost 2x (12-22 GB/s on the
 * 2-core EPYC VM) and the best pass is a lucky 25 ms no long run gets. The
 * benches print the share of the best pass beside it.
 */
export function readBandwidth(
  native: NativeBackend,
  threads: number,
  passes = 24,
  bytes = 512 * 2 ** 20,
): { sustained: number; best: number; passes: number[] } {
  const rates = native.membwPasses(bytes, threads, passes);
  return { sustained: rates.length / rates.reduce((a, r) => a + 1 / r, 0), best: Math.max(...rates), passes: rates };
}

/** "min–max" of xs, one decimal. */
export function range(xs: number[]): string {
  return `${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)}`;
}

/** Bytes of one layer's matrices, and of what every step reads whatever its budget (LM head, project_in/out). */
export function weightBytes(s: ModelSpec, elemBytes: number): { layer: number; step: number } {
  const d = s.hiddenSize, qd = s.numHeads * s.headDim, kd = s.numKvHeads * s.headDim;
  const mlp = (s.mlp === "swiglu" ? 3 : 2) * d * s.ffnDim;
  const e = s.wordEmbedProjDim;
  return {
    layer: (qd * d + 2 * kd * d + d * qd + mlp) * elemBytes,
    step: (s.vocabSize * e + (e !== d ? 2 * d * e : 0)) * elemBytes,
  };
}

/**
 * The same split from what a load actually stored (dec.loadSummary), so each
 * format's block sizes count: the mean bytes of a layer's matrices, and the
 * LM head and project_in/out.
 */
export function storedBytes(summary: LoadSummary, numLayers: number): { layer: number; step: number } {
  const layerRoles: number[] = [Role.Q_W, Role.K_W, Role.V_W, Role.O_W, Role.FC1_W, Role.FC2_W, Role.GATE_W];
  const stepRoles: number[] = [Role.LM_HEAD, Role.PROJECT_IN, Role.PROJECT_OUT];
  let layer = 0;
  let step = 0;
  for (const t of summary.tensors) {
    if (layerRoles.includes(t.role)) layer += t.bytes;
    else if (stepRoles.includes(t.role)) step += t.bytes;
  }
  return { layer: layer / numLayers, step };
}

/** Folder of a cached random model of a named shape (writes it on first use). */
export function shapeModel(name: string, dtype: "float16" | "bfloat16" | "float32"): string {
  const shape = SHAPES[name];
  if (!shape) throw new Error(`unknown model shape "${name}" (known: ${Object.keys(SHAPES).join(", ")})`);
  const dir = join(ROOT, ".cache", "bench", `${name}-${dtype}`);
  if (!existsSync(join(dir, "model.safetensors"))) {
    const t0 = performance.now();
    process.stderr.write(`making a random ${name}-shaped model (${dtype}) in ${dir} ... `);
    writeTinyModel(dir, { ...shape, seed: 1, dtype, scale: 0.05 });
    process.stderr.write(`${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  }
  return dir;
}

/** Parses flags (strict) or exits 2 with the usage. */
export function flags<T extends Record<string, { type: "string" | "boolean"; default?: string | boolean }>>(
  usage: string,
  options: T,
): { [K in keyof T]: T[K]["type"] extends "boolean" ? boolean : string } {
  try {
    const { values } = parseArgs({ args: process.argv.slice(2), options, strict: true, allowPositionals: false });
    if ((values as Record<string, unknown>).help) {
      console.log(usage);
      process.exit(0);
    }
    return values as never;
  } catch (e) {
    console.error(`${(e as Error).message}\n\n${usage}`);
    process.exit(2);
  }
}

/** Comma-separated numbers, or exit 2. */
export function numList(flag: string, v: string, usage: string): number[] {
  const out = v.split(",").map((x) => Number(x.trim()));
  if (out.some((x) => !Number.isFinite(x) || x <= 0)) {
    console.error(`--${flag} must be a comma-separated list of positive numbers, got "${v}"\n\n${usage}`);
    process.exit(2);
  }
  return out;
}
