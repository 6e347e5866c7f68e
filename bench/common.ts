/**
 * Shared pieces of the benchmark scripts: machine description, statistics,
 * markdown tables, JSON output and the cached random models they run on.
 */
import type { ModelSpec } from "../lib/checkpoint/config.ts";
import type { NativeBackend } from "../lib/engine/native.ts";
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
  tiny: { layers: 4, hidden: 64, heads: 4 },
};

/** The roofline the runs compare with: median of 3 read-bandwidth passes over 512 MiB (GB/s). */
export function readBandwidth(native: NativeBackend, threads: number): number {
  return median([0, 1, 2].map(() => native.membw(512 * 2 ** 20, threads, 5).readGBs));
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
