/**
 * CUDA backend parity with the CPU engine. Runs only where a GPU answers;
 * elsewhere every test is reported as skipped (the no-device behaviour is
 * tested in load.test.ts). The native harness cuda/dev/parity.c checks the
 * same at the C ABI, op by op.
 *
 * Tolerances (fp16/bf16 weights and activations, fp32 accumulation, vs the
 * CPU's fp32 arithmetic on the same weights): max |Δlogit| ≤ 2e-2 × max|logit|
 * for fp16, 5e-2 for bf16. Greedy tokens over 32 steps: identical to the
 * CPU's up to the first near-tie (a step whose CPU top-2 logit margin is within
 * that tolerance, where 16-bit rounding may pick the other token), and under
 * teacher forcing every CUDA argmax is the CPU's token or such a near-tie;
 * a CUDA batch and each of its sequences alone give identical tokens.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { SkipDecoder, SkipPolicy } from "../lib/index.ts";
import { libraryPath, NativeBackend } from "../lib/engine/native.ts";
import type { TinyModelOptions } from "../lib/tiny/model.ts";
import type { GenerateResult } from "../lib/index.ts";
import { stepByStep } from "./family-checks.ts";
import { cleanupTemp, decaying, maxDiff, tinyModel } from "./helpers.ts";

afterAll(cleanupTemp);

function gpuPresent(): boolean {
  if (!existsSync(libraryPath("cuda"))) return false;
  try {
    return NativeBackend.get("cuda").available();
  } catch {
    return false;
  }
}
const GPU = gpuPresent();
if (!GPU) console.warn("test/cuda.test.ts: skipped: no CUDA device here");

const MODELS: [string, TinyModelOptions, "float16" | "bfloat16", number][] = [
  ["pre-LN", { seed: 51, layers: 4 }, "float16", 2e-2],
  ["post-LN with project_in/out", { seed: 52, variant: "post", hidden: 64, embedDim: 32 }, "float16", 2e-2],
  ["odd shapes: hidden 52, one head", { seed: 53, hidden: 52, heads: 1, ffn: 100, layers: 3 }, "bfloat16", 5e-2],
  ["llama: GQA 4:2, rotary, SwiGLU", { family: "llama", seed: 54, layers: 3, kvHeads: 2 }, "float16", 2e-2],
  ["qwen2: q/k/v biases, head_dim 24, one KV head, tied", { family: "qwen2", seed: 55, layers: 2, kvHeads: 1, headDim: 24, tiedHead: true }, "bfloat16", 5e-2],
];
const IDS = [2, 17, 250, 31, 8, 99, 300, 5, 77, 140, 12, 260, 44];

/** Largest and second-largest value of row r of a [rows, V] logits array. */
function top2(x: Float32Array, V: number, r: number): { arg: number; margin: number } {
  let a = -Infinity;
  let b = -Infinity;
  let arg = -1;
  for (let j = r * V; j < (r + 1) * V; j++) {
    const v = x[j]!;
    if (v > a) {
      b = a;
      a = v;
      arg = j - r * V;
    } else if (v > b) b = v;
  }
  return { arg, margin: a - b };
}

/**
 * Tie-aware greedy comparison of a CUDA generation with the CPU's (same prompt,
 * policy and warm-up). Teacher-forced over the CPU's tokens, with the budgets
 * the generation used, every CUDA argmax must be the CPU's token unless the
 * CPU's top-2 margin there is within tol × max|logit|; and the free-running
 * CUDA tokens may leave the CPU's only at such a near-tie.
 */
async function expectGreedyMatch(
  cpu: SkipDecoder,
  gpu: SkipDecoder,
  want: GenerateResult,
  got: GenerateResult,
  warmupLayers: number,
  tol: number,
): Promise<void> {
  const L = cpu.spec.numLayers;
  const V = cpu.spec.vocabSize;
  const ids = [...want.promptTokens, ...want.tokens];
  const budgets = [...want.promptTokens.map(() => L), ...want.budgets];
  const a = await cpu.forward(ids, { budgets, warmupLayers });
  const b = await gpu.forward(ids, { budgets, warmupLayers });
  let scale = 0;
  for (const v of a) scale = Math.max(scale, Math.abs(v));
  const p0 = want.promptTokens.length - 1; // row p0 + j predicts generated token j
  const nearTie = (j: number) => top2(a, V, p0 + j).margin <= tol * scale;
  for (let j = 0; j < want.tokens.length; j++) {
    expect(top2(a, V, p0 + j).arg).toBe(want.tokens[j]!); // the CPU's own greedy chain
    const g = top2(b, V, p0 + j).arg;
    if (g !== want.tokens[j]) expect({ step: j, cudaArgmax: g, nearTie: nearTie(j) }).toEqual({ step: j, cudaArgmax: g, nearTie: true });
  }
  const k = got.tokens.findIndex((t, j) => t !== want.tokens[j]);
  if (k >= 0) expect({ firstDivergence: k, nearTie: nearTie(k) }).toEqual({ firstDivergence: k, nearTie: true });
  else expect(got.tokens).toEqual(want.tokens);
}

describe.skipIf(!GPU)(`CUDA matches the CPU engine${GPU ? "" : " (skipped: no CUDA device here)"}`, () => {
  for (const [name, model, dtype, tol] of MODELS) {
    test(`${name}: logits under mixed budgets within ${tol} × max|logit| (${dtype})`, async () => {
      const dir = tinyModel({ ...model, dtype });
      using cpu = await SkipDecoder.load(dir, { backend: "cpu", dtype: "float32" });
      using gpu = await SkipDecoder.load(dir, { backend: "cuda", dtype });
      const L = cpu.spec.numLayers;
      for (const w of [0, 1, 2].filter((x) => x <= L)) {
        const budgets = decaying(IDS.length, 4, L, Math.max(1, w));
        const a = await cpu.forward(IDS, { budgets, warmupLayers: w });
        const { diff, scale, at } = maxDiff(await gpu.forward(IDS, { budgets, warmupLayers: w }), a, cpu.spec.vocabSize);
        if (diff > tol * scale) console.error(`${name}, warm-up ${w}: max |Δ| ${diff} (scale ${scale}) at ${at}`);
        expect(diff).toBeLessThanOrEqual(tol * scale);
      }
    });

    test(`${name}: greedy tokens over 32 steps match the CPU's (tie-aware); batched == alone`, async () => {
      const dir = tinyModel({ ...model, dtype });
      using cpu = await SkipDecoder.load(dir, { backend: "cpu", dtype: "float32", maxBatch: 4 });
      using gpu = await SkipDecoder.load(dir, { backend: "cuda", dtype, maxBatch: 4 });
      const L = cpu.spec.numLayers;
      const policy = SkipPolicy.linear({ numLayers: L, maxLayers: L, minLayers: 1, span: 32 });
      const prompts = ["The quick brown fox", "Hello", "a b c d e f g"];
      const opts = { maxNewTokens: 32, policy, ignoreEos: true };
      const want = await cpu.generateBatch(prompts, opts);
      const got = await gpu.generateBatch(prompts, opts);
      for (let i = 0; i < prompts.length; i++) {
        await expectGreedyMatch(cpu, gpu, want[i]!, got[i]!, policy.warmupLayers, tol);
        // up to 32 rows a step, every CUDA GEMM computes each row alike
        expect((await gpu.generate(prompts[i]!, opts)).tokens).toEqual(got[i]!.tokens);
      }
    });

    test(`${name}: token-by-token decoding through the KV cache equals forward`, async () => {
      const dir = tinyModel({ ...model, dtype });
      using gpu = await SkipDecoder.load(dir, { backend: "cuda", dtype });
      const budgets = decaying(IDS.length, 3, gpu.spec.numLayers, 1);
      const whole = await gpu.forward(IDS, { budgets });
      const { diff, scale } = maxDiff(stepByStep(gpu, IDS, budgets), whole, gpu.spec.vocabSize);
      // one row per step and many rows per step may take different GEMM paths
      expect(diff).toBeLessThanOrEqual(tol * scale);
    });
  }
});
