/** Loading: config.json, tensor names and shapes, options, lifecycle, backends. */
import { afterAll, describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SkipDecoder } from "../lib/index.ts";
import { chooseBackend, libraryPath, NativeBackend } from "../lib/engine/native.ts";
import { cleanupTemp, tempDir, tinyModel, variantOf } from "./helpers.ts";

afterAll(cleanupTemp);

describe("checkpoint errors name the problem", () => {
  const base = () => tinyModel({ seed: 21, layers: 2 });

  test("missing folder, missing config.json, bad JSON", async () => {
    await expect(SkipDecoder.load("/nonexistent/model")).rejects.toThrow(/does not exist/);
    const empty = tempDir();
    await expect(SkipDecoder.load(empty)).rejects.toThrow(/no config\.json in/);
    writeFileSync(join(empty, "config.json"), "{ nope");
    await expect(SkipDecoder.load(empty)).rejects.toThrow(/config\.json: not valid JSON/);
  });

  test("unsupported model_type and bad fields", async () => {
    const neox = variantOf(base(), { config: (c) => (c.model_type = "gpt_neox") });
    await expect(SkipDecoder.load(neox)).rejects.toThrow(/unsupported model_type "gpt_neox" \(skipdecode supports: "opt", "llama", "mistral", "qwen2"\)/);
    const gelu = variantOf(base(), { config: (c) => (c.activation_function = "gelu") });
    await expect(SkipDecoder.load(gelu)).rejects.toThrow(/unsupported activation_function "gelu"/);
    const heads = variantOf(base(), { config: (c) => (c.num_attention_heads = 5) });
    await expect(SkipDecoder.load(heads)).rejects.toThrow(/not a multiple of num_attention_heads 5/);
    const noLayers = variantOf(base(), { config: (c) => delete c.num_hidden_layers });
    await expect(SkipDecoder.load(noLayers)).rejects.toThrow(/missing required field "num_hidden_layers"/);
  });

  test("a missing tensor, a wrong shape, a config that disagrees with the weights", async () => {
    const missing = variantOf(base(), { drop: ["model.decoder.layers.1.fc1.weight"] });
    await expect(SkipDecoder.load(missing)).rejects.toThrow(/missing tensor model\.decoder\.layers\.1\.fc1\.weight/);
    const shape = variantOf(base(), { reshape: "model.decoder.layers.0.fc2.weight" });
    await expect(SkipDecoder.load(shape)).rejects.toThrow(/fc2\.weight has shape \[256, 64\], expected \[64, 256\]/);
    const layers = variantOf(base(), { config: (c) => (c.num_hidden_layers = 3) });
    await expect(SkipDecoder.load(layers)).rejects.toThrow(/missing tensor model\.decoder\.layers\.2\./);
    const untied = variantOf(base(), { config: (c) => (c.tie_word_embeddings = false), drop: ["lm_head.weight"] });
    await expect(SkipDecoder.load(untied)).rejects.toThrow(/missing tensor lm_head\.weight/);
  });

  test("a folder with only pytorch_model.bin is told to convert", async () => {
    const dir = tempDir();
    copyFileSync(join(base(), "config.json"), join(dir, "config.json"));
    writeFileSync(join(dir, "pytorch_model.bin"), "not really");
    await expect(SkipDecoder.load(dir)).rejects.toThrow(/only PyTorch pickle weights.*Convert them to safetensors/);
  });
});

describe("weights are checked at load", () => {
  test("a NaN or Inf weight is refused, naming the tensor; checkWeights: false loads it anyway", async () => {
    const src = tinyModel({ seed: 31, layers: 2, hidden: 32, heads: 2 });
    const fc1 = "model.decoder.layers.1.fc1.weight";
    const nan = variantOf(src, { poke: [{ name: fc1, at: 7, value: NaN }, { name: fc1, at: 9, value: Infinity }] });
    await expect(SkipDecoder.load(nan, { backend: "cpu" })).rejects.toThrow(
      `${nan}: tensor ${fc1} has 2 non-finite values (the first, at element 7, is NaN); the checkpoint is damaged (checkWeights: false loads it anyway)`,
    );
    const inf = variantOf(src, { poke: [{ name: "model.decoder.embed_tokens.weight", at: 100, value: -Infinity }] });
    await expect(SkipDecoder.load(inf, { backend: "cpu", dtype: "float32" })).rejects.toThrow(
      /tensor model\.decoder\.embed_tokens\.weight has 1 non-finite value \(the first, at element 100, is -Infinity\)/,
    );
    const dec = await SkipDecoder.load(nan, { backend: "cpu", checkWeights: false });
    dec.close();
    await expect(SkipDecoder.load(src, { backend: "cpu", checkWeights: "yes" as never })).rejects.toThrow(/checkWeights must be true or false, got "yes"/);
  });

  test("a value that overflows the dtype asked for is refused; auto picks bfloat16 for it", async () => {
    const src = tinyModel({ seed: 31, layers: 2, hidden: 32, heads: 2 });
    const big = variantOf(src, { poke: [{ name: "model.decoder.layers.0.fc2.weight", at: 3, value: 1e6 }] });
    await expect(SkipDecoder.load(big, { backend: "cpu", dtype: "float16" })).rejects.toThrow(
      /tensor model\.decoder\.layers\.0\.fc2\.weight does not fit F16: 1 value overflows to Infinity \(the first at element 3\)/,
    );
    using dec = await SkipDecoder.load(big, { backend: "cpu" });
    expect(dec.weightBytes).toBeGreaterThan(0);
  });
});

describe("options and lifecycle", () => {
  test("unknown and out-of-range options throw", async () => {
    const dir = tinyModel({ seed: 22, layers: 2 });
    await expect(SkipDecoder.load(dir, { bogus: 1 } as never)).rejects.toThrow(/unknown option "bogus"/);
    await expect(SkipDecoder.load(dir, { backend: "tpu" } as never)).rejects.toThrow(/backend must be one of/);
    await expect(SkipDecoder.load(dir, { maxSeqLen: 100000 })).rejects.toThrow(/maxSeqLen must be an integer in 1\.\.256/);
    using dec = await SkipDecoder.load(dir, { backend: "cpu", maxSeqLen: 8 });
    await expect(dec.forward([])).rejects.toThrow(/ids is empty/);
    await expect(dec.forward([2, 99999])).rejects.toThrow(/ids\[1\] = 99999 is not a token id/);
    await expect(dec.forward([2, 3, 4, 5, 6, 7, 8, 9, 10])).rejects.toThrow(/exceed the context of 8/);
    await expect(dec.forward([2, 3], { budgets: [2] })).rejects.toThrow(/budgets has 1 entries for 2 ids/);
    await expect(dec.forward([2, 3], { budgets: [2, 0] })).rejects.toThrow(/budgets\[1\] must be an integer in 1\.\.2/);
    await expect(dec.forward([2, 3], { warmupLayers: 3 })).rejects.toThrow(/warmupLayers must be an integer in 0\.\.2/);
    await expect(dec.forward([2, 3], { budgets: [2, 1], warmupLayers: 2 })).rejects.toThrow(/budgets\[1\] must be an integer in 2\.\.2/);
    await expect(dec.forward([2, 3], { topK: 1 } as never)).rejects.toThrow(/unknown option "topK"/);
  });

  test("close is idempotent and use after close throws", async () => {
    const dir = tinyModel({ seed: 22, layers: 2 });
    const dec = await SkipDecoder.load(dir, { backend: "cpu" });
    expect(dec.spec).toMatchObject({ arch: "opt", numLayers: 2, hiddenSize: 64, numHeads: 4, vocabSize: 384 });
    expect(dec.weightBytes).toBeGreaterThan(0);
    dec.close();
    dec.close();
    await expect(dec.forward([2, 3])).rejects.toThrow(/the decoder is closed/);
    expect(() => dec.weightBytes).toThrow(/closed/);
  });

  test("weights can be stored in another dtype and give nearly the same logits", async () => {
    const dir = tinyModel({ seed: 23, layers: 2 });
    using a = await SkipDecoder.load(dir, { backend: "cpu", dtype: "float32" });
    using b = await SkipDecoder.load(dir, { backend: "cpu", dtype: "bfloat16" });
    expect(b.weightBytes).toBe(a.weightBytes / 2);
    const x = await a.forward([2, 10, 20, 30]);
    const y = await b.forward([2, 10, 20, 30]);
    let diff = 0;
    let scale = 0;
    for (let i = 0; i < x.length; i++) {
      diff = Math.max(diff, Math.abs(x[i]! - y[i]!));
      scale = Math.max(scale, Math.abs(x[i]!));
    }
    expect(diff).toBeGreaterThan(0); // really converted
    expect(diff).toBeLessThan(0.05 * scale); // bf16 keeps 8 bits of mantissa
  });
});

describe("backends", () => {
  test("the CPU library loads and describes its device", () => {
    const cpu = NativeBackend.get("cpu");
    expect(cpu.deviceCount()).toBe(1);
    expect(cpu.deviceName().length).toBeGreaterThan(0);
  });

  const haveCuda = existsSync(libraryPath("cuda"));
  const gpu = haveCuda && NativeBackend.get("cuda").available();

  test.skipIf(!haveCuda || gpu)("without a GPU the CUDA library loads, says no CUDA device, and auto falls back to CPU", async () => {
    const cuda = NativeBackend.get("cuda");
    expect(() => cuda.deviceCount()).toThrow(/no CUDA device.*SKD_ERR_NO_DEVICE/);
    expect(chooseBackend("auto").name).toBe("cpu");
    const dir = tinyModel({ seed: 22, layers: 2 });
    await expect(SkipDecoder.load(dir, { backend: "cuda" })).rejects.toThrow(/no CUDA device/);
    using dec = await SkipDecoder.load(dir, { backend: "auto" });
    expect(dec.backend).toBe("cpu");
  });
});
