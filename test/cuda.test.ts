/**
 * CUDA backend parity with the CPU engine. Runs only where a GPU answers;
 * elsewhere every test is reported as skipped (the no-device behaviour is
 * tested in load.test.ts). The native harness cuda/dev/parity.c checks the
 * same at the C ABI, op by op.
 *
 * Tolerances (fp16/bf16 weights and activations, fp32 accumulation, vs the
 * CPU's fp32 arithmetic on the same weights): max |Δlogit| ≤ 2e-2 × max|logit|
 * for fp16, 5e-2 for bf16; greedy tokens identical over 32 steps.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { SkipDecoder, SkipPolicy } from "../lib/index.ts";
import { libraryPath, NativeBackend, Row, ROW_WANT_LOGITS } from "../lib/native.ts";
import type { TinyModelOptions } from "../lib/tiny.ts";
import { cleanupTemp, decaying, tinyModel } from "./helpers.ts";

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

const MODELS: [string, TinyModelOptions, "float16" | "bfloat16", number][] = [
  ["pre-LN", { seed: 51, layers: 4 }, "float16", 2e-2],
  ["post-LN with project_in/out", { seed: 52, variant: "post", hidden: 64, embedDim: 32 }, "float16", 2e-2],
  ["odd shapes: hidden 52, one head", { seed: 53, hidden: 52, heads: 1, ffn: 100, layers: 3 }, "bfloat16", 5e-2],
];
const IDS = [2, 17, 250, 31, 8, 99, 300, 5, 77, 140, 12, 260, 44];

describe.skipIf(!GPU)("CUDA matches the CPU engine", () => {
  for (const [name, model, dtype, tol] of MODELS) {
    test(`${name}: logits under mixed budgets within ${tol} × max|logit| (${dtype})`, async () => {
      const dir = tinyModel({ ...model, dtype });
      using cpu = await SkipDecoder.load(dir, { backend: "cpu", dtype: "float32" });
      using gpu = await SkipDecoder.load(dir, { backend: "cuda", dtype });
      const L = cpu.spec.numLayers;
      for (const w of [0, 1, 2].filter((x) => x <= L)) {
        const budgets = decaying(IDS.length, 4, L, Math.max(1, w));
        const a = await cpu.forward(IDS, { budgets, warmupLayers: w });
        const b = await gpu.forward(IDS, { budgets, warmupLayers: w });
        let diff = 0;
        let scale = 0;
        for (let i = 0; i < a.length; i++) {
          diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
          scale = Math.max(scale, Math.abs(a[i]!));
        }
        expect(diff).toBeLessThanOrEqual(tol * scale);
      }
    });

    test(`${name}: greedy tokens identical over 32 steps, batched and alone`, async () => {
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
        expect(got[i]!.tokens).toEqual(want[i]!.tokens);
        expect((await gpu.generate(prompts[i]!, opts)).tokens).toEqual(want[i]!.tokens);
      }
    });

    test(`${name}: token-by-token decoding through the KV cache equals forward`, async () => {
      const dir = tinyModel({ ...model, dtype });
      using gpu = await SkipDecoder.load(dir, { backend: "cuda", dtype });
      const L = gpu.spec.numLayers;
      const V = gpu.spec.vocabSize;
      const budgets = decaying(IDS.length, 3, L, 1);
      const whole = await gpu.forward(IDS, { budgets });
      const slot = gpu.acquireSlot();
      try {
        const got = new Float32Array(IDS.length * V);
        for (let t = 0; t < IDS.length; t++) {
          const row = new Int32Array(Row.FIELDS);
          row.set([IDS[t]!, t, slot, budgets[t]!, 1, ROW_WANT_LOGITS]);
          gpu.stepRows(row, 1, got.subarray(t * V, (t + 1) * V));
        }
        let diff = 0;
        let scale = 0;
        for (let i = 0; i < got.length; i++) {
          diff = Math.max(diff, Math.abs(got[i]! - whole[i]!));
          scale = Math.max(scale, Math.abs(whole[i]!));
        }
        // one row per step and many rows per step may take different GEMM paths
        expect(diff).toBeLessThanOrEqual(tol * scale);
      } finally {
        gpu.releaseSlot(slot);
      }
    });
  }
});

test.skipIf(GPU)("no GPU here: the CUDA parity tests above are skipped", () => {
  expect(GPU).toBe(false);
});
