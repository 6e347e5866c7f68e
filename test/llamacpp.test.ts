/**
 * An independent implementation of the LLaMA block checks ours: llama.cpp
 * (node-llama-cpp, the bench peer) runs the same tiny random weights written
 * as GGUF by bench/gguf.ts, and its greedy tokens must equal the CPU engine's
 * (fp32 weights, full depth). Covers GQA, head_dim != hidden / heads and a
 * tied head. Reported as skipped, with the reason, where node-llama-cpp does
 * not load.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { writeGguf } from "../bench/gguf.ts";
import { readModelSpec } from "../lib/checkpoint/config.ts";
import { SkipDecoder } from "../lib/index.ts";
import type { TinyModelOptions } from "../lib/tiny/model.ts";
import { cleanupTemp, tempDir, tinyModel } from "./helpers.ts";

afterAll(cleanupTemp);

let lib: typeof import("node-llama-cpp") | null = null;
let why = "";
try {
  lib = await import("node-llama-cpp");
} catch (e) {
  why = (e as Error).message;
  console.warn(`test/llamacpp.test.ts: skipped: node-llama-cpp does not load here (${why})`);
}

const CASES: [string, TinyModelOptions][] = [
  ["GQA 4:2", { family: "llama", seed: 70, layers: 2, heads: 4, kvHeads: 2, dtype: "float32" }],
  ["head_dim 24, one KV head, tied head", { family: "llama", seed: 71, layers: 2, heads: 4, kvHeads: 1, headDim: 24, tiedHead: true, dtype: "float32" }],
];

describe.skipIf(!lib)(`llama.cpp agrees with the CPU engine${why ? ` (skipped: ${why})` : ""}`, () => {
  for (const [name, model] of CASES) {
    test(`${name}: 24 greedy tokens equal`, async () => {
      const dir = tinyModel(model);
      const gguf = join(tempDir(), "m.gguf");
      writeGguf(dir, readModelSpec(dir), gguf);
      const llama = await lib!.getLlama({ gpu: false, logLevel: lib!.LlamaLogLevel.error });
      const m = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
      const ctx = await m.createContext({ contextSize: 64, threads: 2, batchSize: 16 });
      try {
        const prompt = [1, 17, 250, 31, 8, 99, 300, 5];
        const theirs: number[] = [];
        for await (const t of ctx.getSequence().evaluate(prompt as never, { temperature: 0 })) {
          theirs.push(t);
          if (theirs.length >= 24) break;
        }
        using dec = await SkipDecoder.load(dir, { backend: "cpu", dtype: "float32" });
        expect((await dec.generate(prompt, { maxNewTokens: 24, ignoreEos: true })).tokens).toEqual(theirs);
      } finally {
        await ctx.dispose();
        await m.dispose();
      }
    });
  }
});
