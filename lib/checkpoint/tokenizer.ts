/**
 * Tokenizers for OPT-style (GPT-2) byte-level BPE models.
 *
 * - {@link buildTinyTokenizerJson} trains a small, deterministic, real byte-level
 *   BPE `tokenizer.json` (Hugging Face format) for tiny test checkpoints.
 * - {@link SkipTokenizer} loads a model folder's tokenizer: `tokenizer.json`
 *   (+ `tokenizer_config.json`), or the `vocab.json` + `merges.txt` pair that the
 *   facebook/opt-* repositories ship, through `@huggingface/tokenizers`.
 * - {@link StreamDecoder} turns a stream of ids into text pieces that never split
 *   a UTF-8 character.
 *
 * BOS rules, chosen by the model family (family.ts):
 * - "always" (OPT prepends `</s>`, id 2, to every prompt): `bos_token` from
 *   `tokenizer_config.json`, else from `special_tokens_map.json`, else the token
 *   `</s>`, else `<|endoftext|>` (GPT-2), else loading fails.
 * - "config" (the LLaMA family): the model has a BOS only if `bos_token` names
 *   one (Qwen2's is null), and adds it when `add_bos_token` says so or, when
 *   that key is absent, when the tokenizer's own post-processor adds it
 *   (Llama 3's template prepends `<|begin_of_text|>`; Llama 2 and Mistral set
 *   `add_bos_token: true`).
 * `eos_token` is found like the first rule. When a BOS is added it comes from
 * the post-processor if that adds one, else we prepend it; a prompt never
 * starts with two BOS ids.
 *
 * @module
 */

import { existsSync, statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { MAX_TEMPLATE_BYTES } from "../text/bounded_template.ts";
import { ChatTemplate } from "../text/chat.ts";
import { checkTokenizerJson } from "./tokenizer_check.ts";

// ---------------------------------------------------------------------------
// tokenizer.json shapes (the subset we write and read)
// ---------------------------------------------------------------------------

/**
 * One entry of `tokenizer.json`'s `added_tokens`.
 *
 * @example
 * ```ts
 * const t: AddedTokenJson = { id: 2, content: "</s>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
 * ```
 */
export interface AddedTokenJson {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

/**
 * The ByteLevel component, as pre-tokenizer, decoder or post-processor.
 *
 * @example
 * ```ts
 * const pre: ByteLevelJson = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
 * ```
 */
export interface ByteLevelJson {
  type: "ByteLevel";
  add_prefix_space: boolean;
  trim_offsets: boolean;
  use_regex: boolean;
}

type TemplateItem =
  | { SpecialToken: { id: string; type_id: number } }
  | { Sequence: { id: "A" | "B"; type_id: number } };

/**
 * A `TemplateProcessing` post-processor.
 *
 * @example
 * ```ts
 * buildTinyTokenizerJson({ numMerges: 0 }).post_processor; // prepends "</s>" (id 2)
 * ```
 */
export interface TemplateProcessingJson {
  type: "TemplateProcessing";
  single: TemplateItem[];
  pair: TemplateItem[];
  special_tokens: Record<string, { id: string; ids: number[]; tokens: string[] }>;
}

/**
 * A byte-level BPE `tokenizer.json` as written by {@link buildTinyTokenizerJson}.
 *
 * @example
 * ```ts
 * const json: TokenizerJson = buildTinyTokenizerJson({ numMerges: 10 });
 * json.model.merges.length; // 10
 * ```
 */
export interface TokenizerJson {
  version: "1.0";
  truncation: null;
  padding: null;
  added_tokens: AddedTokenJson[];
  normalizer: null;
  pre_tokenizer: ByteLevelJson;
  post_processor: TemplateProcessingJson | ByteLevelJson;
  decoder: ByteLevelJson;
  model: {
    type: "BPE";
    dropout: null;
    unk_token: string | null;
    continuing_subword_prefix: null;
    end_of_word_suffix: null;
    fuse_unk: boolean;
    byte_fallback: boolean;
    vocab: Record<string, number>;
    /** `"left right"`, highest priority first. */
    merges: string[];
  };
}

/** OPT's special tokens, in id order. */
const OPT_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"] as const;

/**
 * The GPT-2 pre-tokenisation regex (contractions, letters, numbers, other
 * symbols, each optionally led by one space; runs of whitespace).
 */
const GPT2_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/**
 * GPT-2's reversible byte → printable-unicode map: bytes that are printable
 * Latin-1 map to themselves, the other 68 map to U+0100.. in byte order.
 */
export const BYTE_TO_UNICODE: readonly string[] = (() => {
  const keep = new Set<number>();
  for (let b = 0x21; b <= 0x7e; b++) keep.add(b);
  for (let b = 0xa1; b <= 0xac; b++) keep.add(b);
  for (let b = 0xae; b <= 0xff; b++) keep.add(b);
  const out: string[] = new Array<string>(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    out[b] = String.fromCodePoint(keep.has(b) ? b : 256 + n++);
  }
  return out;
})();

/** The BPE model section of a byte-level tokenizer.json. */
export function bpeModel(vocab: Record<string, number>, merges: string[]): TokenizerJson["model"] {
  return {
    type: "BPE",
    dropout: null,
    unk_token: null,
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: false,
    byte_fallback: false,
    vocab,
    merges,
  };
}

function byteLevel(addPrefixSpace = false): ByteLevelJson {
  return { type: "ByteLevel", add_prefix_space: addPrefixSpace, trim_offsets: true, use_regex: true };
}

export function addedToken(id: number, content: string): AddedTokenJson {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

/** A post-processor that prepends `bos` to single sequences (and to each of a pair). */
export function prependBosTemplate(bos: string, bosId: number): TemplateProcessingJson {
  const special: TemplateItem = { SpecialToken: { id: bos, type_id: 0 } };
  return {
    type: "TemplateProcessing",
    single: [special, { Sequence: { id: "A", type_id: 0 } }],
    pair: [special, { Sequence: { id: "A", type_id: 0 } }, special, { Sequence: { id: "B", type_id: 1 } }],
    special_tokens: { [bos]: { id: bos, ids: [bosId], tokens: [bos] } },
  };
}

// ---------------------------------------------------------------------------
// Tiny BPE trainer
// ---------------------------------------------------------------------------

/**
 * The built-in training text of {@link buildTinyTokenizerJson}: plain English
 * prose, enough for 1,031 merges.
 *
 * @example
 * ```ts
 * buildTinyTokenizerJson({ numMerges: 100, corpus: TINY_CORPUS + "more text" });
 * ```
 */
export const TINY_CORPUS = `The quick brown fox jumps over the lazy dog. The dog did not move; it was asleep in the warm afternoon sun, and the fox was already far away across the field.

Language models read text as a sequence of tokens. A tokenizer splits the text into pieces, and each piece has a number. The model sees only the numbers, predicts the next one, and the tokenizer turns the numbers back into text. Byte-level tokenizers start from the 256 possible bytes, so every string can be written down, even one with emoji or letters from another alphabet.

When a model generates a long answer, most of the work is spent in the layers of the network. Some tokens are easy to predict and some are hard. Skipping layers for the easy tokens saves time, but the keys and values of earlier tokens must still be there when a later token looks back at them. If every token computes the top layers, and later tokens compute fewer layers than earlier ones, nothing is ever missing.

It was a cold morning in the small town by the river. People walked to work with their hands in their pockets, talking about the weather, the price of bread, and the news from the city. Children ran to school, and the baker opened his shop at seven o'clock, as he had done every day for thirty years.

Researchers measure the speed of a system in tokens per second and compare it with the quality of the text it writes. They often report the mean and the spread over several runs, because a single number can hide a slow start or a noisy machine. Good experiments are repeated, written down carefully, and shared with others.

"Where are you going?" she asked. "I'm going home," he said, "but I'll be back tomorrow, and we'll finish the work then." They'd waited all week for the results; now the numbers were finally in, and they were better than anyone had expected: 12 percent faster, 3 times cheaper, and just as accurate as before.

The library has many books about history, science, music and art. Students come in the evening to study, to write their papers, and sometimes just to sit quietly and think. The old librarian knows where every book is, and she is always happy to help someone find what they are looking for.

Mountains rise above the valley, covered with snow through the winter and with green grass and yellow flowers in the summer. Farmers bring their cattle up the slopes in June and down again in September. Hikers follow narrow paths between the rocks, drink from cold streams, and sleep in wooden huts under a sky full of stars.

Computers store numbers in binary, as long strings of zeros and ones. A processor fetches instructions from memory, decodes them, executes them, and writes the results back. Graphics cards run thousands of small threads together, which makes them well suited to multiplying large matrices, the central operation of neural networks.

My grandmother kept a garden behind her kitchen. She grew tomatoes, beans, potatoes, onions, carrots, lettuce, strawberries and raspberries, and every autumn she made jam, pickles and soup for the long months ahead. We helped her dig, plant, water and weed, and in exchange she told us stories about her childhood during the war.

Medicine has changed enormously during the last century. Vaccines protect millions of people from diseases that once killed children everywhere; antibiotics cure infections quickly; surgeons replace hearts, kidneys, hips and knees. Yet doctors still listen, examine, question and doubt, because each patient is different and the body remains mysterious.

Ships cross the ocean carrying containers of clothing, furniture, electronics, fruit, coffee, machinery and toys. Sailors watch the weather, check the engines, and navigate by satellite, though every officer still learns to use a compass and a chart. Storms can delay a voyage by days, and harbours are busy, noisy, crowded places.
`;

/** Compare two strings by UTF-16 code units (locale-independent, deterministic). */
function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** An adjacent symbol pair, its weighted count and the words that hold it. */
interface PairStat {
  left: string;
  right: string;
  count: number;
  words: Set<number>;
}

/**
 * Learn `numMerges` byte-level BPE merges from `corpus`. Each step merges the
 * most frequent adjacent pair (ties: smallest left symbol, then smallest right
 * symbol, by code units) whose concatenation is not yet a token, so every
 * merge adds exactly one new token. Pair counts are updated incrementally:
 * only the words holding the merged pair are recounted.
 */
function trainMerges(corpus: string, numMerges: number, known: Set<string>): string[] {
  // Unique pre-tokenised words (as byte-level symbols) with their counts.
  const counts = new Map<string, number>();
  const encoder = new TextEncoder();
  for (const piece of corpus.match(GPT2_PATTERN) ?? []) {
    let word = "";
    for (const byte of encoder.encode(piece)) word += BYTE_TO_UNICODE[byte];
    counts.set(word, (counts.get(word) ?? 0) + 1);
  }
  return trainWordMerges(counts, numMerges, known);
}

/**
 * The BPE merge loop of {@link trainMerges} over given words: each key of
 * `counts` is a word whose code points are its initial symbols (no symbol may
 * contain a space), each value its frequency. Returns `"left right"` merges,
 * most frequent first; every merge adds exactly one new token to `known`.
 */
export function trainWordMerges(counts: Map<string, number>, numMerges: number, known: Set<string>): string[] {
  const words: string[][] = [];
  const freqs: number[] = [];
  for (const [word, freq] of counts) {
    words.push(Array.from(word));
    freqs.push(freq);
  }

  // Key "left right": a byte-level symbol never contains a space.
  const pairs = new Map<string, PairStat>();
  const addPairs = (w: number, sign: 1 | -1): void => {
    const syms = words[w]!;
    for (let i = 0; i + 1 < syms.length; i++) {
      const left = syms[i]!;
      const right = syms[i + 1]!;
      const key = `${left} ${right}`;
      let stat = pairs.get(key);
      if (stat === undefined) {
        stat = { left, right, count: 0, words: new Set() };
        pairs.set(key, stat);
      }
      stat.count += sign * freqs[w]!;
      if (sign > 0) stat.words.add(w);
    }
  };
  for (let w = 0; w < words.length; w++) addPairs(w, 1);

  const merges: string[] = [];
  while (merges.length < numMerges) {
    let best: PairStat | null = null;
    for (const stat of pairs.values()) {
      if (stat.count <= 0 || known.has(stat.left + stat.right)) continue;
      if (
        best === null ||
        stat.count > best.count ||
        (stat.count === best.count && (cmp(stat.left, best.left) || cmp(stat.right, best.right)) < 0)
      ) {
        best = stat;
      }
    }
    if (best === null) {
      throw new Error(
        `buildTinyTokenizerJson: numMerges ${numMerges} is more than this corpus allows (${merges.length})`,
      );
    }
    const { left, right } = best;
    const merged = left + right;
    merges.push(`${left} ${right}`);
    known.add(merged);
    // Re-count only the words that hold the pair, merging left to right.
    for (const w of [...best.words]) {
      const syms = words[w]!;
      addPairs(w, -1);
      const out: string[] = [];
      for (let i = 0; i < syms.length; i++) {
        if (i + 1 < syms.length && syms[i] === left && syms[i + 1] === right) {
          out.push(merged);
          i++;
        } else {
          out.push(syms[i]!);
        }
      }
      words[w] = out;
      addPairs(w, 1);
    }
  }
  return merges;
}

/**
 * Build a deterministic, real byte-level BPE `tokenizer.json` (Hugging Face
 * format) for tiny test models: ids 0..3 are OPT's specials `<s>`, `<pad>`,
 * `</s>`, `<unk>` (special added tokens), ids 4..259 the 256 GPT-2 byte
 * symbols in code-point order, then one token per merge learned on `corpus`
 * (default {@link TINY_CORPUS}). ByteLevel pre-tokenizer (no prefix space) and
 * decoder, BPE model, and a TemplateProcessing post-processor that prepends
 * `</s>` (id 2) like OPT. The vocabulary has `260 + numMerges` tokens.
 *
 * Throws if `numMerges` is not a non-negative integer or exceeds what the
 * corpus can teach (1,031 for the built-in corpus).
 *
 * @example
 * ```ts
 * const json = buildTinyTokenizerJson({ numMerges: 252 }); // 512 tokens
 * await Bun.write(`${dir}/tokenizer.json`, JSON.stringify(json));
 * const tok = await SkipTokenizer.load(dir);
 * tok.encode("Hello"); // [2, ...]
 * ```
 */
export function buildTinyTokenizerJson(opts: { numMerges: number; corpus?: string }): TokenizerJson {
  const { numMerges, corpus = TINY_CORPUS } = opts;
  if (!Number.isInteger(numMerges) || numMerges < 0) {
    throw new Error(`buildTinyTokenizerJson: numMerges must be a non-negative integer, got ${numMerges}`);
  }
  const vocab: Record<string, number> = {};
  let next = 0;
  for (const s of OPT_SPECIALS) vocab[s] = next++;
  const symbols = [...BYTE_TO_UNICODE].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
  for (const s of symbols) vocab[s] = next++;

  const merges = trainMerges(corpus, numMerges, new Set(Object.keys(vocab)));
  for (const m of merges) vocab[m.replace(" ", "")] = next++;

  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: OPT_SPECIALS.map((s, i) => addedToken(i, s)),
    normalizer: null,
    pre_tokenizer: byteLevel(false),
    post_processor: prependBosTemplate("</s>", 2),
    decoder: byteLevel(true),
    model: bpeModel(vocab, merges),
  };
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

type JsonObject = Record<string, unknown>;

function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

async function readJsonObject(path: string): Promise<JsonObject> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw new Error(`tokenizer: cannot read ${path}: ${(e as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new Error(`tokenizer: malformed JSON in ${path}: ${(e as Error).message}`);
  }
  if (!isObject(value)) throw new Error(`tokenizer: ${path} must hold a JSON object`);
  return value;
}

function isFile(path: string): boolean {
  return existsSync(path) && statSync(path).isFile();
}

/** A special token as HF configs store it: a string or `{ content: string, ... }`. */
function specialContent(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (isObject(v) && typeof v.content === "string") return v.content;
  return undefined;
}

/** Parse `vocab.json` into a token → id map, checking every id: unique integers in 0..entries-1. */
function parseVocab(obj: JsonObject, path: string): Record<string, number> {
  const vocab: Record<string, number> = {};
  const entries = Object.entries(obj);
  const seen = new Map<number, string>();
  for (const [token, id] of entries) {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= entries.length) {
      throw new Error(`tokenizer: malformed ${path}: token ${JSON.stringify(token)} has id ${JSON.stringify(id)} (ids are 0..${entries.length - 1})`);
    }
    const other = seen.get(id);
    if (other !== undefined) throw new Error(`tokenizer: malformed ${path}: id ${id} is given to both ${JSON.stringify(other)} and ${JSON.stringify(token)}`);
    seen.set(id, token);
    vocab[token] = id;
  }
  if (entries.length === 0) throw new Error(`tokenizer: malformed ${path}: empty vocabulary`);
  return vocab;
}

/** Parse `merges.txt` (`#version` header skipped), checking every token against the vocab. */
function parseMerges(text: string, path: string, vocab: Record<string, number>): string[] {
  const merges: string[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === "" || (i === 0 && line.startsWith("#version"))) continue;
    const parts = line.split(" ");
    const [a, b] = parts;
    if (parts.length !== 2 || !a || !b) {
      throw new Error(`tokenizer: malformed ${path} line ${i + 1}: expected "left right", got ${JSON.stringify(line)}`);
    }
    for (const t of [a, b, a + b]) {
      if (!Object.hasOwn(vocab, t)) {
        throw new Error(`tokenizer: malformed ${path} line ${i + 1}: token ${JSON.stringify(t)} is not in vocab.json`);
      }
    }
    merges.push(line);
  }
  return merges;
}

/**
 * The tokenizer.json equivalent of a GPT-2-style `vocab.json` + `merges.txt`
 * pair: ByteLevel pre-tokenizer and decoder, BPE model, and as special added
 * tokens OPT's specials, `<|endoftext|>` and the config's special tokens,
 * each where the vocabulary has it. No BOS post-processor: we prepend BOS.
 */
function jsonFromVocabMerges(
  vocab: Record<string, number>,
  merges: string[],
  config: JsonObject,
): TokenizerJson {
  const specials = new Set<string>([...OPT_SPECIALS, "<|endoftext|>"]);
  for (const key of ["bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"]) {
    const s = specialContent(config[key]);
    if (s !== undefined) specials.add(s);
  }
  const added = [...specials]
    .filter((s) => Object.hasOwn(vocab, s))
    .map((s) => addedToken(vocab[s]!, s))
    .sort((x, y) => x.id - y.id);
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: byteLevel(config.add_prefix_space === true),
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: byteLevel(true),
    model: bpeModel(vocab, merges),
  };
}

// ---------------------------------------------------------------------------
// SkipTokenizer
// ---------------------------------------------------------------------------

/**
 * Options of {@link SkipTokenizer.encode}.
 *
 * @example
 * ```ts
 * tok.encode("Hi", { addBos: false });
 * ```
 */
export interface EncodeOptions {
  /** Start the ids with exactly one BOS where the model adds one (default true). */
  addBos?: boolean;
}

/** Options of {@link SkipTokenizer.load}. */
export interface TokenizerLoadOptions {
  /** The BOS rule (module comment): "always" (OPT, the default) or "config" (LLaMA family). */
  bos?: "always" | "config";
}

/**
 * Options of {@link SkipTokenizer.decode} and {@link StreamDecoder}.
 *
 * @example
 * ```ts
 * tok.decode(ids, { skipSpecialTokens: false });
 * ```
 */
export interface DecodeOptions {
  /** Drop special tokens such as `</s>` from the text (default true). */
  skipSpecialTokens?: boolean;
}

/**
 * A model folder's tokenizer: byte-level BPE through `@huggingface/tokenizers`,
 * with OPT's BOS handling.
 *
 * @example
 * ```ts
 * const tok = await SkipTokenizer.load("models/opt-125m");
 * const ids = tok.encode("Hello world"); // [2, 31414, 232]
 * tok.decode(ids);                       // "Hello world"
 * ```
 */
export class SkipTokenizer {
  /** The model's BOS id (OPT: 2, `</s>`), or null when it has none (Qwen2). */
  readonly bosId: number | null;
  /** Id that ends a generation (OPT: 2, `</s>`). */
  readonly eosId: number;
  /** Number of ids the tokenizer can produce: largest id + 1. */
  readonly vocabSize: number;
  /** Whether the tokenizer's own post-processor prepends the BOS. */
  readonly postProcessorAddsBos: boolean;
  /** Whether prompts start with the BOS (the family's rule; see the module comment). */
  readonly addsBos: boolean;
  /** The Jinja chat template (`chat_template.jinja`, else tokenizer_config.json's `chat_template`), or null. */
  readonly chatTemplate: string | null;
  /** The BOS rule it was loaded with (a second copy, on another thread, loads with the same). */
  readonly bosRule: "always" | "config";
  readonly #tok: Tokenizer;

  private constructor(
    tok: Tokenizer,
    bosRule: "always" | "config",
    bosId: number | null,
    eosId: number,
    vocabSize: number,
    addBosSetting: boolean | null,
    chatTemplate: string | null,
    maxTokenBytes: number,
  ) {
    this.#tok = tok;
    this.maxTokenBytes = maxTokenBytes;
    this.bosRule = bosRule;
    this.bosId = bosId;
    this.eosId = eosId;
    this.vocabSize = vocabSize;
    this.chatTemplate = chatTemplate;
    const probe = "a";
    const plain = tok.encode(probe, { add_special_tokens: false }).ids;
    const withSpecials = tok.encode(probe, { add_special_tokens: true }).ids;
    this.postProcessorAddsBos = bosId !== null && withSpecials[0] === bosId && plain[0] !== bosId;
    this.addsBos = bosId !== null && (addBosSetting ?? this.postProcessorAddsBos);
  }

  /**
   * Load the tokenizer of a model folder: `tokenizer.json` (with
   * `tokenizer_config.json` when present), else `vocab.json` + `merges.txt`
   * (GPT-2 byte-level BPE, as facebook/opt-* ship). `special_tokens_map.json`
   * is read when present. See the module comment for the BOS/EOS rule.
   *
   * @throws Error naming the folder when no tokenizer files are there, or the
   *   file when one is malformed.
   * @example
   * ```ts
   * const tok = await SkipTokenizer.load("models/opt-125m");
   * tok.bosId; // 2
   * ```
   */
  static async load(dir: string, opts: TokenizerLoadOptions = {}): Promise<SkipTokenizer> {
    const tokenizerPath = join(dir, "tokenizer.json");
    const vocabPath = join(dir, "vocab.json");
    const mergesPath = join(dir, "merges.txt");
    const configPath = join(dir, "tokenizer_config.json");
    const mapPath = join(dir, "special_tokens_map.json");

    const config = isFile(configPath) ? await readJsonObject(configPath) : {};
    const specialMap = isFile(mapPath) ? await readJsonObject(mapPath) : {};

    let json: JsonObject;
    let source: string;
    if (isFile(tokenizerPath)) {
      source = tokenizerPath;
      json = await readJsonObject(tokenizerPath);
      // tokenizers.js wants these keys present; HF files always have them.
      json = { added_tokens: [], normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, ...json };
    } else if (isFile(vocabPath) && isFile(mergesPath)) {
      source = `${vocabPath} + ${mergesPath}`;
      const vocab = parseVocab(await readJsonObject(vocabPath), vocabPath);
      const merges = parseMerges(await readFile(mergesPath, "utf8"), mergesPath, vocab);
      const cfg = { ...specialMap, ...config };
      json = jsonFromVocabMerges(vocab, merges, cfg) as unknown as JsonObject;
    } else {
      throw new Error(
        `tokenizer: no tokenizer in ${dir}: looked for tokenizer.json, or vocab.json + merges.txt`,
      );
    }
    // ids, types and tokens checked before the library sees them (tokenizer_check.ts)
    const { vocabSize, maxTokenBytes } = checkTokenizerJson(json, source);

    let tok: Tokenizer;
    try {
      tok = new Tokenizer(json, config);
    } catch (e) {
      throw new Error(`tokenizer: cannot build a tokenizer from ${source}: ${(e as Error).message}`);
    }

    const pick = (key: "bos_token" | "eos_token"): number => {
      for (const [obj, path] of [
        [config, configPath],
        [specialMap, mapPath],
      ] as const) {
        const content = specialContent(obj[key]);
        if (content === undefined) continue;
        const id = tok.token_to_id(content);
        if (id === undefined) {
          throw new Error(`tokenizer: ${path}: ${key} ${JSON.stringify(content)} is not in the vocabulary`);
        }
        return id;
      }
      for (const fallback of ["</s>", "<|endoftext|>"]) {
        const id = tok.token_to_id(fallback);
        if (id !== undefined) return id;
      }
      throw new Error(`tokenizer: ${dir}: no ${key} configured and neither </s> nor <|endoftext|> in the vocabulary`);
    };
    const rule = opts.bos ?? "always";
    const template = await readChatTemplate(dir, config, configPath);
    if (rule === "always") return new SkipTokenizer(tok, rule, pick("bos_token"), pick("eos_token"), vocabSize, true, template, maxTokenBytes);
    // "config": a BOS only where bos_token names one; added per add_bos_token, else the post-processor
    let bosId: number | null = null;
    for (const [obj, path] of [
      [config, configPath],
      [specialMap, mapPath],
    ] as const) {
      if (!("bos_token" in obj)) continue;
      const content = specialContent(obj.bos_token);
      if (content !== undefined) {
        const id = tok.token_to_id(content);
        if (id === undefined) throw new Error(`tokenizer: ${path}: bos_token ${JSON.stringify(content)} is not in the vocabulary`);
        bosId = id;
      }
      break;
    }
    const addBos = config.add_bos_token;
    if (addBos !== undefined && typeof addBos !== "boolean") {
      throw new Error(`tokenizer: ${configPath}: add_bos_token must be true or false, got ${JSON.stringify(addBos)}`);
    }
    return new SkipTokenizer(tok, rule, bosId, pick("eos_token"), vocabSize, addBos ?? null, template, maxTokenBytes);
  }

  /**
   * Encode text to ids. With `addBos` (default true) the ids start with
   * exactly one BOS: the post-processor's, else ours, never two. With
   * `addBos: false` no BOS is added (raw ids).
   *
   * @example
   * ```ts
   * tok.encode("Hi");                    // [2, 30086]
   * tok.encode("Hi", { addBos: false }); // [30086]
   * ```
   */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const bos = this.bosId;
    if (!(opts.addBos ?? true) || !this.addsBos || bos === null) return this.#tok.encode(text, { add_special_tokens: false }).ids;
    const ids = this.#tok.encode(text, { add_special_tokens: this.postProcessorAddsBos }).ids;
    if (ids[0] !== bos) ids.unshift(bos);
    else if (this.postProcessorAddsBos && ids[1] === bos) ids.shift(); // text began with BOS itself
    return ids;
  }

  /**
   * Decode ids to text (`clean_up_tokenization_spaces` is always off). Ids
   * without a token (e.g. the padding rows of an OPT embedding beyond the
   * tokenizer's vocabulary) decode to nothing, as in Hugging Face tokenizers.
   *
   * @throws Error when an id is not a non-negative integer.
   * @example
   * ```ts
   * tok.decode([2, 31414, 232]);                               // "Hello world"
   * tok.decode([2, 31414], { skipSpecialTokens: false });      // "</s>Hello"
   * ```
   */
  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    const known: number[] = [];
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0) throw new Error(`tokenizer: decode: bad token id ${id}`);
      if (id < this.vocabSize && this.#tok.id_to_token(id) !== undefined) known.push(id);
    }
    if (known.length === 0) return "";
    return this.#tok.decode(known, {
      skip_special_tokens: opts.skipSpecialTokens ?? true,
      clean_up_tokenization_spaces: false,
    });
  }

  /**
   * An upper bound on the bytes of text one token covers: the longest token
   * string, in UTF-8 bytes (a byte-level symbol stands for one byte and takes
   * one or two). So a text of `b` UTF-8 bytes has at least
   * `ceil(b / maxTokenBytes)` tokens — enough to refuse a prompt far over the
   * context without spending seconds tokenising it. Found at load, in the
   * same pass that checks the file.
   *
   * @example
   * ```ts
   * Math.ceil(Buffer.byteLength(text) / tok.maxTokenBytes); // a lower bound on tok.encode(text).length
   * ```
   */
  readonly maxTokenBytes: number;

  /**
   * The token string of an id (byte-level symbols, e.g. `"Ġworld"`), or
   * undefined when the id has none.
   *
   * @example
   * ```ts
   * tok.idToToken(2); // "</s>"
   * ```
   */
  idToToken(id: number): string | undefined {
    return this.#tok.id_to_token(id);
  }

  /**
   * The id of a token string, or undefined when it is not in the vocabulary.
   *
   * @example
   * ```ts
   * tok.tokenToId("</s>"); // 2
   * ```
   */
  tokenToId(token: string): number | undefined {
    return this.#tok.token_to_id(token);
  }
}

/**
 * The chat template of a model folder: `chat_template.jinja` when present (as
 * transformers saves it), else `chat_template` of tokenizer_config.json — a
 * string, or a list of `{ name, template }` whose "default" entry is used.
 */
async function readChatTemplate(dir: string, config: JsonObject, configPath: string): Promise<string | null> {
  const file = join(dir, "chat_template.jinja");
  if (isFile(file)) {
    // bounded before it is read whole; parsed now, so a broken template is refused at load (lib/text/chat.ts)
    if (statSync(file).size > MAX_TEMPLATE_BYTES) {
      throw new Error(`tokenizer: ${file}: the chat template is ${statSync(file).size} bytes; at most ${MAX_TEMPLATE_BYTES} are accepted`);
    }
    return parsed(await readFile(file, "utf8"), file);
  }
  const t = config.chat_template;
  if (t === undefined || t === null) return null;
  if (typeof t === "string") return parsed(t, configPath);
  if (Array.isArray(t)) {
    const named = t.find((x) => typeof x === "object" && x !== null && (x as JsonObject).name === "default") as JsonObject | undefined;
    if (named && typeof named.template === "string") return parsed(named.template, configPath);
  }
  throw new Error(`tokenizer: ${configPath}: chat_template must be a string or a list with a "default" entry`);
}

/** `source` once it parses as a chat template; else the parser's error, naming `path`. */
function parsed(source: string, path: string): string {
  new ChatTemplate(source, `tokenizer: ${path}`);
  return source;
}

// ---------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------

/**
 * Incremental detokenizer for streaming generation. Each `push(id)` returns
 * the text that this id completes; text is held back while it would end in an
 * incomplete UTF-8 character (U+FFFD at the end). The pieces of all `push`
 * calls and a final `flush()` concatenate to `tok.decode(allIds)`.
 *
 * Rather than decoding every id so far on each push, it decodes a window that
 * starts at the last emitted boundary (the text-generation-inference scheme:
 * emit `decode(window + id)` minus `decode(window)`), which gives the same text
 * for byte-level tokenizers at constant cost per token.
 *
 * @example
 * ```ts
 * const sd = new StreamDecoder(tok);
 * let text = "";
 * for (const id of ids) text += sd.push(id);
 * text += sd.flush(); // text === tok.decode(ids)
 * ```
 */
export class StreamDecoder {
  readonly #tok: SkipTokenizer;
  readonly #skipSpecialTokens: boolean;
  readonly #ids: number[] = [];
  /** Start of the decode window: ids before it are emitted and final. */
  #prefixOffset = 0;
  /** End of what has been emitted. */
  #readOffset = 0;

  /**
   * @param tok the tokenizer to decode with
   * @param opts `skipSpecialTokens` as in {@link SkipTokenizer.decode} (default true)
   */
  constructor(tok: SkipTokenizer, opts: DecodeOptions = {}) {
    this.#tok = tok;
    this.#skipSpecialTokens = opts.skipSpecialTokens ?? true;
  }

  /** Every id pushed so far. */
  get ids(): readonly number[] {
    return this.#ids;
  }

  /**
   * Add one id; returns the newly completed text (possibly "").
   *
   * @example
   * ```ts
   * sd.push(id); // "" while a character is still split across tokens
   * ```
   */
  push(id: number): string {
    this.#ids.push(id);
    const piece = this.#pending();
    if (piece === "" || piece.endsWith("\uFFFD")) return "";
    this.#prefixOffset = this.#readOffset;
    this.#readOffset = this.#ids.length;
    return piece;
  }

  /**
   * Emit whatever is held back (an incomplete character decodes as U+FFFD).
   *
   * @example
   * ```ts
   * const rest = sd.flush();
   * ```
   */
  flush(): string {
    const piece = this.#pending();
    this.#prefixOffset = this.#readOffset = this.#ids.length;
    return piece;
  }

  /** Text of ids[readOffset..] not emitted yet. */
  #pending(): string {
    const opts = { skipSpecialTokens: this.#skipSpecialTokens };
    const prefix = this.#tok.decode(this.#ids.slice(this.#prefixOffset, this.#readOffset), opts);
    const full = this.#tok.decode(this.#ids.slice(this.#prefixOffset), opts);
    return full.length > prefix.length ? full.slice(prefix.length) : "";
  }
}
