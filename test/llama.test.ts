/**
 * The LLaMA family (llama, mistral, qwen2) on the CPU engine against the
 * float64 reference (test/reference-llama.ts): RMSNorm, rotary positions with
 * and without scaling, grouped-query attention, head_dim != hidden / heads,
 * tied and untied heads, Qwen2's q/k/v biases, under mixed decaying budgets
 * and warm-ups 0-2; decoding through the KV cache; config errors.
 *
 * Tolerances: F32 weights loaded as F32 within 1e-4 × max|logit| (fp32
 * arithmetic, as for OPT); 16-bit files (F16/BF16 kept as loaded, widened
 * exactly) within the same bound, since the reference reads the same 16-bit
 * values; an F32 file stored in 16 bits (the CPU's "auto") within 1e-2.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { readModelSpec } from "../lib/checkpoint/config.ts";
import { ropeInvFreq } from "../lib/checkpoint/llama.ts";
import { SkipDecoder } from "../lib/index.ts";
import type { TinyModelOptions } from "../lib/tiny/model.ts";
import { cleanupTemp, decaying, tinyModel, variantOf } from "./helpers.ts";
import { referenceMatrix, stepByStep } from "./family-checks.ts";
import { referenceInvFreq } from "./reference-llama.ts";

afterAll(cleanupTemp);

const TOL = 1e-4;
const IDS = [2, 17, 250, 31, 8, 99, 300, 5, 77, 140, 12, 260, 44, 7, 190];

const CASES: [string, TinyModelOptions][] = [
  ["llama, GQA 4:2, untied, F32", { family: "llama", seed: 21, heads: 4, kvHeads: 2 }],
  ["llama, tied, head_dim 24 != 64/4, one KV head, linear rope scaling", { family: "llama", seed: 22, heads: 4, kvHeads: 1, headDim: 24, tiedHead: true, ropeScaling: { type: "linear", factor: 2 } }],
  ["llama 3 style: llama3 rope scaling, theta 500000, F16", { family: "llama", seed: 23, dtype: "float16", heads: 4, kvHeads: 2, ropeTheta: 500000, ropeScaling: { type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 64 } }],
  ["mistral, GQA 8:2, sliding window >= context, BF16", { family: "mistral", seed: 24, dtype: "bfloat16", hidden: 64, heads: 8, kvHeads: 2, slidingWindow: 256 }],
  ["qwen2, q/k/v biases, tied, GQA 4:2", { family: "qwen2", seed: 25, heads: 4, kvHeads: 2, tiedHead: true }],
  ["odd: one layer, one head, hidden 36, ffn 70", { family: "llama", seed: 26, layers: 1, heads: 1, hidden: 36, ffn: 70 }],
];

referenceMatrix("LLaMA family on the CPU engine matches the float64 reference", CASES, { ids: IDS, prompt: 5, tol: TOL });

describe("LLaMA family: the KV cache and batching", () => {
  test("token-by-token decoding through the GQA KV cache equals forward, bit for bit", async () => {
    const dir = tinyModel(CASES[1]![1]);
    using dec = await SkipDecoder.load(dir, { backend: "cpu", dtype: "float32" });
    const budgets = decaying(IDS.length, 4, dec.spec.numLayers, 1);
    const whole = await dec.forward(IDS, { budgets });
    expect(Array.from(stepByStep(dec, IDS, budgets))).toEqual(Array.from(whole));
  });

  test("greedy generation runs and batches like running alone", async () => {
    const dir = tinyModel(CASES[4]![1]);
    using dec = await SkipDecoder.load(dir, { backend: "cpu", maxBatch: 3 });
    const opts = { maxNewTokens: 12, speedup: 2, ignoreEos: true };
    const prompts = ["The quick brown fox", "Hello", "a b c"];
    const batch = await dec.generateBatch(prompts, opts);
    for (let i = 0; i < prompts.length; i++) {
      expect(batch[i]!.tokens.length).toBe(12);
      expect((await dec.generate(prompts[i]!, opts)).tokens).toEqual(batch[i]!.tokens);
    }
  });
});

describe("LLaMA-family configs", () => {
  test("rotary frequencies: the library's equal the reference's for every scaling", () => {
    for (const [, model] of CASES.slice(0, 3)) {
      const spec = readModelSpec(tinyModel(model));
      const lib = ropeInvFreq(spec.headDim, spec.rope!);
      const ref = referenceInvFreq(spec);
      expect(lib.length).toBe(ref.length);
      lib.forEach((v, i) => expect(Math.abs(v - ref[i]!)).toBeLessThanOrEqual(1e-7 * ref[i]!));
    }
  });

  test("the spec: GQA, head_dim, biases, norms, EOS lists from generation_config.json", () => {
    const q = readModelSpec(tinyModel(CASES[4]![1]));
    expect([q.arch, q.numKvHeads, q.norm, q.positions, q.mlp]).toEqual(["qwen2", 2, "rmsnorm", "rotary", "swiglu"]);
    expect(q.biases).toEqual({ qkv: true, o: false, mlp: false, norm: false });
    const l = readModelSpec(tinyModel(CASES[1]![1]));
    expect([l.headDim, l.numKvHeads, l.tieWordEmbeddings]).toEqual([24, 1, true]);
    const dir = tinyModel({ family: "llama", seed: 30, layers: 1 });
    writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ eos_token_id: [2, 7, 9] }));
    const g = readModelSpec(dir);
    expect([g.eosTokenId, g.eosTokenIds]).toEqual([2, [2, 7, 9]]);
  });

  test("generation stops at any of the EOS ids (generation_config.json lists several)", async () => {
    const dir = tinyModel({ family: "llama", seed: 34, layers: 2 });
    const free = await (async () => {
      using dec = await SkipDecoder.load(dir, { backend: "cpu" });
      return (await dec.generate("Hello", { maxNewTokens: 8, ignoreEos: true })).tokens;
    })();
    const stopAt = free.findIndex((t, i) => i >= 2 && t !== 2 && free.indexOf(t) === i);
    expect(stopAt).toBeGreaterThan(0);
    writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ eos_token_id: [2, free[stopAt]] }));
    using dec = await SkipDecoder.load(dir, { backend: "cpu" });
    const r = await dec.generate("Hello", { maxNewTokens: 8 });
    expect(r.finishReason).toBe("stop");
    expect(r.tokens).toEqual(free.slice(0, stopAt));
  });

  const withConfig = (base: TinyModelOptions, edit: (c: Record<string, unknown>) => void) => variantOf(tinyModel(base), { config: edit });

  test("bad configs are refused with the field named", async () => {
    const base: TinyModelOptions = { family: "llama", seed: 31, layers: 1 };
    const yarn = withConfig(base, (c) => (c.rope_scaling = { rope_type: "yarn", factor: 4 }));
    await expect(SkipDecoder.load(yarn)).rejects.toThrow(/unsupported rope_scaling type "yarn" \(skipdecode supports "linear" and "llama3"\)/);
    const kv = withConfig(base, (c) => (c.num_key_value_heads = 3));
    await expect(SkipDecoder.load(kv)).rejects.toThrow(/num_key_value_heads 3 does not divide num_attention_heads 4/);
    const act = withConfig(base, (c) => (c.hidden_act = "gelu"));
    await expect(SkipDecoder.load(act)).rejects.toThrow(/unsupported hidden_act "gelu"/);
    const factor = withConfig(base, (c) => (c.rope_scaling = { rope_type: "linear" }));
    await expect(SkipDecoder.load(factor)).rejects.toThrow(/rope_scaling\.factor must be a number > 0/);
  });

  test("a sliding window is exact while the context fits it: a longer maxSeqLen is refused", async () => {
    const dir = tinyModel({ family: "mistral", seed: 32, layers: 1, slidingWindow: 32 });
    await expect(SkipDecoder.load(dir, { backend: "cpu", maxSeqLen: 64 })).rejects.toThrow(/maxSeqLen 64 exceeds the model's sliding_window of 32/);
    using dec = await SkipDecoder.load(dir, { backend: "cpu" });
    expect(dec.options.maxSeqLen).toBe(32);
  });

  test("a missing tensor and a wrong shape name the tensor", async () => {
    const dir = withConfig({ family: "llama", seed: 33, layers: 1 }, (c) => (c.num_key_value_heads = 2));
    await expect(SkipDecoder.load(dir, { backend: "cpu" })).rejects.toThrow(/k_proj\.weight has shape \[64, 64\], expected \[32, 64\]/);
  });
});
