/**
 * The LLaMA family's tokenizer styles (lib/tiny/tokenizers.ts),
 * loaded through @huggingface/tokenizers with the family's BOS rule:
 * Llama 3 (byte-level BPE, the post-processor adds <|begin_of_text|>),
 * Llama 2 / Mistral (SentencePiece-style BPE with byte fallback,
 * add_bos_token) and Qwen2 (byte-level BPE, no BOS); and the models that
 * carry them.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildStyledTokenizer, type TokenizerStyle } from "../lib/tiny/tokenizers.ts";
import { SkipTokenizer } from "../lib/checkpoint/tokenizer.ts";
import { SkipDecoder } from "../lib/index.ts";
import { OffThreadTokenizer } from "../lib/text/tokenizer_client.ts";
import { cleanupTemp, tempDir, tinyModel } from "./helpers.ts";

afterAll(cleanupTemp);

const TEXTS = [
  "Hello world",
  "The quick brown fox jumps over the lazy dog.",
  "It's 2026, and DON'T shout: 12345!",
  "line one\nline two\n\n  indented",
  "naïve café — 東京 🚀",
];

async function load(style: TokenizerStyle, edit?: (config: Record<string, unknown>) => void): Promise<SkipTokenizer> {
  const t = buildStyledTokenizer(style, 150);
  const dir = tempDir("skd-tok-");
  const config = { ...t.config };
  edit?.(config);
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(t.json));
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(config));
  return SkipTokenizer.load(dir, { bos: "config" });
}

describe("tokenizer styles of the LLaMA family", () => {
  for (const style of ["llama3", "sentencepiece", "qwen2"] as const) {
    test(`${style}: round-trips text, merges apply, ids stay in the vocabulary`, async () => {
      const t = buildStyledTokenizer(style, 150);
      const tok = await load(style);
      expect(tok.vocabSize).toBe(t.size);
      for (const text of TEXTS) {
        const ids = tok.encode(text, { addBos: false });
        expect(ids.every((i) => i >= 0 && i < t.size)).toBe(true);
        expect(tok.decode(ids)).toBe(text);
      }
      // merges learned on the corpus: a common phrase takes fewer ids than its bytes
      expect(tok.encode("The quick brown fox", { addBos: false }).length).toBeLessThan(12);
    });
  }

  test("llama3: the post-processor's <|begin_of_text|>, exactly once", async () => {
    const tok = await load("llama3");
    const bos = tok.tokenToId("<|begin_of_text|>")!;
    expect([tok.bosId, tok.postProcessorAddsBos, tok.addsBos]).toEqual([bos, true, true]);
    const raw = tok.encode("Hi there", { addBos: false });
    expect(tok.encode("Hi there")).toEqual([bos, ...raw]);
    expect(tok.encode("<|begin_of_text|>Hi there")).toEqual([bos, ...raw]);
    expect(tok.eosId).toBe(tok.tokenToId("<|end_of_text|>")!);
  });

  test("sentencepiece: <s> by add_bos_token, byte fallback for what the vocabulary lacks", async () => {
    const tok = await load("sentencepiece");
    expect([tok.bosId, tok.eosId, tok.addsBos]).toEqual([1, 2, true]);
    const ids = tok.encode("é\n", { addBos: false });
    const bytes = ["<0xC3>", "<0xA9>", "<0x0A>"].map((b) => tok.tokenToId(b)!);
    expect(ids.slice(-3)).toEqual(bytes);
    expect(tok.encode("a test")[0]).toBe(1);
    expect(tok.encode("a test").filter((i) => i === 1).length).toBe(1);
    // add_bos_token false: no BOS, though the template would add one
    const off = await load("sentencepiece", (c) => (c.add_bos_token = false));
    expect(off.encode("a test")).toEqual(off.encode("a test", { addBos: false }));
  });

  test("qwen2: no BOS at all (bos_token null), EOS <|endoftext|>", async () => {
    const tok = await load("qwen2");
    expect([tok.bosId, tok.addsBos]).toEqual([null, false]);
    expect(tok.encode("Hello")).toEqual(tok.encode("Hello", { addBos: false }));
    expect(tok.eosId).toBe(tok.tokenToId("<|endoftext|>")!);
  });

  test("a bos_token missing from the vocabulary is an error naming the file", async () => {
    await expect(load("llama3", (c) => (c.bos_token = "<|nope|>"))).rejects.toThrow(/tokenizer_config\.json: bos_token "<\|nope\|>" is not in the vocabulary/);
    await expect(load("llama3", (c) => (c.add_bos_token = "yes"))).rejects.toThrow(/add_bos_token must be true or false, got "yes"/);
  });

  test("tiny models of each family carry their style: prompts start with the family's BOS, never two", async () => {
    const cases = [
      ["llama", "<|begin_of_text|>"],
      ["mistral", "<s>"],
      ["qwen2", null],
    ] as const;
    for (const [family, bosToken] of cases) {
      using dec = await SkipDecoder.load(tinyModel({ family, seed: 40, layers: 1 }), { backend: "cpu" });
      const tok = dec.tokenizer!;
      const r = await dec.generate("Hello world", { maxNewTokens: 2, ignoreEos: true });
      if (bosToken === null) {
        expect(r.promptTokens).toEqual(tok.encode("Hello world", { addBos: false }));
      } else {
        const bos = tok.tokenToId(bosToken)!;
        expect(r.promptTokens[0]).toBe(bos);
        expect(r.promptTokens.filter((i) => i === bos).length).toBe(1);
      }
      expect(dec.spec.eosTokenIds.length).toBeGreaterThanOrEqual(1);
    }
  });

  test("the tokenizer thread (long texts) follows the family's BOS rule too", async () => {
    const text = "The quick brown fox jumps over the lazy dog. ".repeat(1000); // > 32 KiB: encoded on the thread
    for (const family of ["llama", "qwen2"] as const) {
      using dec = await SkipDecoder.load(tinyModel({ family, seed: 41, layers: 1 }), { backend: "cpu" });
      const off = new OffThreadTokenizer(dec.dir, dec.tokenizer!);
      try {
        expect(await off.encode(text, true)).toEqual(dec.tokenizer!.encode(text));
      } finally {
        off.close();
      }
    }
  });
});
