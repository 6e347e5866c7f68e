/**
 * Tokenizers in GGUF files, both ways: a GGUF file's `tokenizer.ggml.*`
 * metadata → a Hugging Face tokenizer.json that {@link SkipTokenizer} loads
 * ({@link tokenizerFromGguf}), and a model folder's tokenizer.json → that
 * metadata ({@link tokenizerToGguf}, for `skipdecode convert`). The rules are
 * llama.cpp's (src/llama-vocab.cpp), so a file tokenizes the same in both
 * engines; docs/gguf.md has the mapping in tables.
 *
 * `tokenizer.ggml.model = "gpt2"`: byte-level BPE. Tokens are byte-level
 * symbols (`Ġworld`), `tokenizer.ggml.merges` are "left right" in rank order,
 * and `tokenizer.ggml.pre` names the pre-tokenizer regex. Supported names:
 * the Llama 3 group (`llama-bpe`, `llama3`, …: Llama 3's regex, whole words
 * in the vocabulary skip the merges — `ignore_merges` — and a BOS by
 * default), the Qwen2 group (`qwen2`, …: Qwen2's regex, one digit per piece)
 * and the GPT-2 group (`gpt-2`, …: GPT-2's regex). Others are refused by name.
 *
 * `tokenizer.ggml.model = "llama"`: SentencePiece. llama.cpp prepends a
 * space (`add_space_prefix`, default true), writes spaces as `▁`, then
 * repeatedly merges the adjacent pair whose concatenation is the token with
 * the highest score; pieces left over that are not tokens become `<0xNN>`
 * byte tokens. The same algorithm as Hugging Face BPE over generated merges:
 * every split (a, b) of a token t, where a and b are tokens or single
 * characters, is a merge ranked by t's score (transformers builds its Llama
 * tokenizers from SentencePiece models this way). One difference remains:
 * between merges of equal score llama.cpp takes the leftmost, BPE the one
 * ranked first; both give the same tokens unless two equal-score merges
 * overlap (e.g. files whose scores are all equal, as llama.cpp's converter
 * writes for a tokenizer.json without tokenizer.model).
 *
 * Token types: NORMAL and BYTE tokens form the model's vocabulary; CONTROL
 * and USER_DEFINED tokens are added tokens (special for CONTROL), matched in
 * the text before the model runs (llama.cpp matches CONTROL tokens in text
 * only when asked to parse specials; skipdecode always does, for folders and
 * GGUF files alike); UNUSED tokens (the `[PAD123]` padding of an embedding
 * larger than the vocabulary) are left out.
 *
 * BOS/EOS: `tokenizer.ggml.bos_token_id` (SentencePiece default 1),
 * `add_bos_token` (default true for SentencePiece and the Llama 3 group,
 * false otherwise), `eos_token_id` (SentencePiece default 2). The ids that
 * end a generation are llama.cpp's end-of-generation set: EOS, `eot`, `eom`,
 * and the tokens named `<|eot_id|>`, `<|im_end|>`, `<|end|>`,
 * `<end_of_turn>`, `<|endoftext|>`, `<|eom_id|>`, `<|end_of_text|>`, `<EOT>`.
 * `tokenizer.chat_template` is the chat template.
 *
 * @module
 */
import { type GgufFile, GgufType } from "./gguf.ts";
import type { GgufWriteValue } from "./gguf-writer.ts";
import { SkipTokenizer } from "./tokenizer.ts";
import { addedToken as specialToken, bpeModel, byteLevel, sentencePieceDecoder, sentencePieceNormalizer, splitByteLevel } from "./tokenizer_json.ts";

/** `tokenizer.ggml.token_type` values (llama.h `llama_token_type`). */
export const TokenType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

/** Pre-tokenizer regexes as tokenizer.json writes them (the Oniguruma syntax @huggingface/tokenizers reads). */
const LLAMA3_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const GPT2_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/**
 * The `tokenizer.ggml.pre` names skipdecode reads, grouped as llama.cpp
 * groups them: each group's regexes split the text one after the other.
 */
const PRE_GROUPS = {
  llama3: { names: ["llama-bpe", "llama3", "llama-v3", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"], regexes: [LLAMA3_REGEX], ignoreMerges: true, addBos: true },
  llama3Like: { names: ["dbrx", "smaug-bpe"], regexes: [LLAMA3_REGEX], ignoreMerges: false, addBos: false },
  qwen2: { names: ["qwen2", "deepseek-r1-qwen", "megrez", "stablelm2"], regexes: [QWEN2_REGEX], ignoreMerges: false, addBos: false },
  gpt2: { names: ["gpt-2", "phi-2", "mpt", "olmo"], regexes: [GPT2_REGEX], ignoreMerges: false, addBos: false },
  // SmolLM, StarCoder: every digit alone, then GPT-2's regex
  starcoder: { names: ["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"], regexes: ["\\p{N}", GPT2_REGEX], ignoreMerges: false, addBos: false },
} as const;

/** Every pre-tokenizer name read, for error messages. */
const SUPPORTED_PRE = Object.values(PRE_GROUPS).flatMap((g) => g.names);

/** Tokens llama.cpp treats as ending a generation, by their text (llama-vocab.cpp). */
const EOG_NAMES = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<|end_of_text|>", "<EOT>"];

/** What {@link tokenizerFromGguf} finds in a file. */
export interface GgufTokenizer {
  /** The tokenizer, ready to use. */
  tokenizer: SkipTokenizer;
  /** tokenizer.json as rebuilt (for a second copy on another thread). */
  json: Record<string, unknown>;
  /** tokenizer_config.json as rebuilt. */
  config: Record<string, unknown>;
  /** Entries of `tokenizer.ggml.tokens`. */
  size: number;
  bosId: number | null;
  /** End-of-generation ids, EOS first. */
  eosIds: number[];
}

/** The special ids and end-of-generation set of a GGUF vocabulary (no tokenizer built). */
export interface GgufSpecialIds {
  bosId: number | null;
  eosIds: number[];
  addBos: boolean;
}

function byteToken(b: number): string {
  return `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`;
}

function addedToken(id: number, content: string, special: boolean) {
  return { ...specialToken(id, content), special };
}

/** The vocabulary part of the metadata, checked. */
function readVocab(f: GgufFile) {
  const fail = (msg: string): never => {
    throw new Error(`gguf: ${f.path}: ${msg}`);
  };
  const model = f.string("tokenizer.ggml.model");
  const tokens = f.strings("tokenizer.ggml.tokens");
  if (!tokens) fail(`metadata "tokenizer.ggml.tokens" is missing (tokenizer.ggml.model is "${model}")`);
  const n = tokens!.length;
  const types = f.numbers("tokenizer.ggml.token_type", [GgufType.INT32]);
  if (types && types.length < n) fail(`"tokenizer.ggml.token_type" has ${types.length} entries for ${n} tokens`);
  const scores = f.numbers("tokenizer.ggml.scores", [GgufType.FLOAT32, GgufType.INT32]);
  if (scores && scores.length < n) fail(`"tokenizer.ggml.scores" has ${scores.length} entries for ${n} tokens`);
  const list = tokens!.map((t, i) => (t === "" ? `[EMPTY_${i}]` : t));
  const typeOf = (i: number) => (types ? (types[i] as number) : TokenType.NORMAL);
  const seen = new Map<string, number>();
  list.forEach((t, i) => {
    const had = seen.get(t);
    if (had !== undefined) fail(`"tokenizer.ggml.tokens" holds ${JSON.stringify(t)} twice (ids ${had} and ${i})`);
    seen.set(t, i);
  });
  return { model, tokens: list, typeOf, score: (i: number) => (scores ? Number(scores[i]) : 0), ids: seen };
}

function specialIds(f: GgufFile, v: ReturnType<typeof readVocab>, addBosDefault: boolean): GgufSpecialIds {
  const n = v.tokens.length;
  const spm = v.model === "llama";
  const id = (key: string, dflt: number | null): number | null => {
    if (!f.get(key)) return dflt;
    return f.int(key, null, 0, n - 1);
  };
  const bosId = id("tokenizer.ggml.bos_token_id", spm ? 1 : null);
  const eos = id("tokenizer.ggml.eos_token_id", spm ? 2 : null);
  const addBos = f.get("tokenizer.ggml.add_bos_token") ? f.bool("tokenizer.ggml.add_bos_token") : addBosDefault;
  if (addBos && bosId === null) throw new Error(`gguf: ${f.path}: tokenizer.ggml.add_bos_token is true but the file names no tokenizer.ggml.bos_token_id`);
  const eog = new Set<number>();
  for (const key of ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"]) {
    const x = id(key, null);
    if (x !== null) eog.add(x);
  }
  for (const name of EOG_NAMES) {
    const x = v.ids.get(name);
    if (x !== undefined) eog.add(x);
  }
  let first = eos;
  if (first === null) {
    first = [...eog].sort((a, b) => a - b)[0] ?? null;
    if (first === null) throw new Error(`gguf: ${f.path}: metadata "tokenizer.ggml.eos_token_id" is missing and no token is named like an end of turn`);
  }
  eog.delete(first);
  return { bosId, eosIds: [first, ...[...eog].sort((a, b) => a - b)], addBos };
}

/** The pre-tokenizer group of a gpt2-model file, or an error naming what is supported. */
function preGroup(f: GgufFile) {
  const pre = f.string("tokenizer.ggml.pre", null);
  if (pre === null || pre === "" || pre === "default") {
    throw new Error(
      `gguf: ${f.path}: a "gpt2" tokenizer without tokenizer.ggml.pre (llama.cpp falls back to a generic pre-tokenizer and warns ` +
        `that quality degrades); skipdecode reads: ${SUPPORTED_PRE.join(", ")}`,
    );
  }
  const g = Object.values(PRE_GROUPS).find((x) => (x.names as readonly string[]).includes(pre));
  if (!g) throw new Error(`gguf: ${f.path}: tokenizer.ggml.pre "${pre}" is not supported (skipdecode reads: ${SUPPORTED_PRE.join(", ")})`);
  return g;
}

/**
 * Whether the file has a tokenizer at all (`tokenizer.ggml.model` present and not "none").
 *
 * @example
 * ggufHasTokenizer(GgufFile.open("model.gguf")); // true
 */
export function ggufHasTokenizer(f: GgufFile): boolean {
  const m = f.get("tokenizer.ggml.model") ? f.string("tokenizer.ggml.model") : null;
  return m !== null && m !== "none" && m !== "no_vocab";
}

/**
 * BOS and the end-of-generation ids of a GGUF vocabulary, as llama.cpp reads
 * them (see the module comment); the file must have a tokenizer.
 *
 * @example
 * ggufSpecialIds(f); // { bosId: 128000, eosIds: [128001, 128008, 128009], addBos: true }
 */
export function ggufSpecialIds(f: GgufFile): GgufSpecialIds {
  const v = readVocab(f);
  if (v.model !== "llama" && v.model !== "gpt2") throw new Error(`gguf: ${f.path}: tokenizer.ggml.model "${v.model}" is not supported (skipdecode reads "llama" and "gpt2")`);
  return specialIds(f, v, v.model === "llama" ? true : preGroup(f).addBos);
}

/**
 * The tokenizer of a GGUF file, rebuilt as a tokenizer.json (module comment),
 * or null when the file has none. Throws naming the key that is wrong.
 *
 * @example
 * const t = tokenizerFromGguf(GgufFile.open("model.gguf"));
 * t?.tokenizer.encode("Hello");
 */
export function tokenizerFromGguf(f: GgufFile): GgufTokenizer | null {
  if (!ggufHasTokenizer(f)) return null;
  const v = readVocab(f);
  let json: Record<string, unknown>;
  let ids: GgufSpecialIds;
  if (v.model === "gpt2") {
    const g = preGroup(f);
    ids = specialIds(f, v, g.addBos);
    const merges = f.strings("tokenizer.ggml.merges");
    if (!merges) throw new Error(`gguf: ${f.path}: a "gpt2" tokenizer needs "tokenizer.ggml.merges", which is missing`);
    const vocab: Record<string, number> = {};
    const added: ReturnType<typeof addedToken>[] = [];
    v.tokens.forEach((t, i) => {
      const ty = v.typeOf(i);
      if (ty === TokenType.UNUSED) return;
      if (ty === TokenType.CONTROL || ty === TokenType.USER_DEFINED) added.push(addedToken(i, t, ty === TokenType.CONTROL));
      else vocab[t] = i;
    });
    json = {
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: added,
      normalizer: null,
      pre_tokenizer: splitByteLevel(g.regexes),
      post_processor: null,
      decoder: byteLevel(),
      model: {
        ...bpeModel(vocab, []),
        ignore_merges: g.ignoreMerges,
        // llama.cpp splits "left right" at the first space after the first character
        merges: merges.map((m) => {
          const at = m.indexOf(" ", 1);
          return at < 0 ? [m, ""] : [m.slice(0, at), m.slice(at + 1)];
        }),
      },
    };
  } else if (v.model === "llama") {
    ids = specialIds(f, v, true);
    const prefix = f.get("tokenizer.ggml.add_space_prefix") ? f.bool("tokenizer.ggml.add_space_prefix") : true;
    const unk = f.get("tokenizer.ggml.unknown_token_id") ? f.int("tokenizer.ggml.unknown_token_id", null, 0, v.tokens.length - 1) : 0;
    const vocab: Record<string, number> = {};
    const added: ReturnType<typeof addedToken>[] = [];
    v.tokens.forEach((t, i) => {
      const ty = v.typeOf(i);
      if (ty === TokenType.UNUSED) return;
      vocab[t] = i;
      if (ty === TokenType.CONTROL || ty === TokenType.USER_DEFINED || ty === TokenType.UNKNOWN) added.push(addedToken(i, t, ty !== TokenType.USER_DEFINED));
    });
    json = {
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: added,
      normalizer: sentencePieceNormalizer(prefix),
      pre_tokenizer: null,
      post_processor: null,
      decoder: sentencePieceDecoder(prefix),
      model: {
        ...bpeModel(vocab, []),
        unk_token: vocab[v.tokens[unk]!] === undefined ? null : v.tokens[unk],
        fuse_unk: true,
        byte_fallback: true,
        merges: spmMerges(vocab, v.score),
      },
    };
  } else {
    throw new Error(`gguf: ${f.path}: tokenizer.ggml.model "${v.model}" is not supported (skipdecode reads "llama" and "gpt2")`);
  }
  const template = f.get("tokenizer.chat_template") ? f.string("tokenizer.chat_template") : null;
  const config: Record<string, unknown> = {
    bos_token: ids.bosId === null ? null : v.tokens[ids.bosId],
    eos_token: v.tokens[ids.eosIds[0]!],
    add_bos_token: ids.addBos,
    clean_up_tokenization_spaces: false,
    ...(template !== null ? { chat_template: template } : {}),
  };
  const tokenizer = SkipTokenizer.fromJson(json, config, { bos: "config", source: f.path });
  return { tokenizer, json, config, size: v.tokens.length, bosId: ids.bosId, eosIds: ids.eosIds };
}

/**
 * The merges that make BPE behave like SentencePiece's score-driven merging
 * (module comment): every split of a token into two tokens (or single
 * characters), ranked by the token's score, highest first; ties by id, then
 * by the longer left part.
 */
function spmMerges(vocab: Record<string, number>, score: (i: number) => number): string[][] {
  const single = (s: string) => s.length === 1 || (s.length === 2 && s.codePointAt(0)! > 0xffff);
  const known = (s: string) => vocab[s] !== undefined || single(s);
  const out: { l: string; r: string; score: number; id: number; k: number }[] = [];
  for (const t in vocab) {
    const id = vocab[t]!;
    // split points at code point boundaries, the longer left part first
    for (let k = t.length - 1; k >= 1; k--) {
      const c = t.charCodeAt(k);
      if (c >= 0xdc00 && c <= 0xdfff) continue; // inside a surrogate pair
      const l = t.slice(0, k);
      if (!known(l)) continue;
      const r = t.slice(k);
      if (known(r)) out.push({ l, r, score: score(id), id, k });
    }
  }
  out.sort((a, b) => b.score - a.score || a.id - b.id || b.k - a.k);
  return out.map((m) => [m.l, m.r]);
}

// ---------------------------------------------------------------------------
// folder tokenizer.json → GGUF metadata
// ---------------------------------------------------------------------------

/** What {@link tokenizerToGguf} needs besides tokenizer.json. */
export interface TokenizerToGgufInput {
  /** The folder's tokenizer.json, parsed. */
  json: Record<string, unknown>;
  /** The folder's tokenizer, loaded with the family's BOS rule. */
  tokenizer: SkipTokenizer;
  /** Rows of the embedding: the token list is padded with `[PADn]` to this length. */
  vocabRows: number;
  /** Every id that ends a generation (generation_config.json), EOS first. */
  eosIds: number[];
  /** Names the source in errors. */
  source: string;
}

/** A regex's group from the folder's pre-tokenizer, or an error. */
function folderPre(json: Record<string, unknown>, source: string): string {
  const pre = json.pre_tokenizer as Record<string, unknown> | null;
  const steps = pre?.type === "Sequence" ? (pre.pretokenizers as Record<string, unknown>[]) : pre ? [pre] : [];
  const split = steps.find((s) => s.type === "Split");
  const bl = steps.find((s) => s.type === "ByteLevel");
  if (split && bl && steps.length === 2) {
    const re = (split.pattern as { Regex?: string } | undefined)?.Regex;
    if (re === LLAMA3_REGEX) return "llama-bpe";
    if (re === QWEN2_REGEX) return "qwen2";
    throw new Error(`convert: ${source}: the pre-tokenizer's Split regex ${JSON.stringify(re)} is not one llama.cpp knows by name (skipdecode writes Llama 3's as "llama-bpe" and Qwen2's as "qwen2")`);
  }
  if (bl && steps.length === 1 && bl.use_regex !== false) {
    if (bl.add_prefix_space === true) throw new Error(`convert: ${source}: a ByteLevel pre-tokenizer with add_prefix_space has no llama.cpp equivalent`);
    return "gpt-2";
  }
  throw new Error(`convert: ${source}: the pre-tokenizer ${JSON.stringify(pre)?.slice(0, 200)} has no llama.cpp equivalent (skipdecode converts Llama 3, Qwen2 and GPT-2 byte-level BPE, and SentencePiece-style BPE with byte fallback)`);
}

/**
 * The `tokenizer.*` metadata for a folder's tokenizer: byte-level BPE →
 * `gpt2` with merges and the pre-tokenizer's name; SentencePiece-style BPE
 * with byte fallback → `llama` with scores (a token made by merge r scores
 * −r, so llama.cpp's highest-score-first merging follows the merge order),
 * types and `add_space_prefix`. BOS/EOS ids, `add_bos_token`, the second EOS
 * as `eot_token_id`, and the chat template. Throws, naming the file, for
 * tokenizers llama.cpp cannot express.
 *
 * @example
 * const kv = tokenizerToGguf({ json, tokenizer: await SkipTokenizer.load(dir, { bos: "config" }), vocabRows: spec.vocabSize, eosIds: spec.eosTokenIds, source: dir });
 */
export function tokenizerToGguf(inp: TokenizerToGgufInput): [string, GgufWriteValue][] {
  const { json, tokenizer: tok, vocabRows, source } = inp;
  const model = json.model as Record<string, unknown> | undefined;
  if (!model || model.type !== "BPE") throw new Error(`convert: ${source}: tokenizer model ${JSON.stringify(model?.type ?? null)} is not BPE; skipdecode converts BPE tokenizers`);
  const vocab = model.vocab as Record<string, number>;
  const added = (Array.isArray(json.added_tokens) ? json.added_tokens : []) as { id: number; content: string; special?: boolean }[];
  if (tok.vocabSize > vocabRows) throw new Error(`convert: ${source}: the tokenizer has ${tok.vocabSize} ids but the embedding only ${vocabRows} rows`);
  const tokens = Array.from({ length: vocabRows }, (_, i) => `[PAD${i}]`);
  const types = new Array<number>(vocabRows).fill(TokenType.UNUSED);
  for (const [t, id] of Object.entries(vocab)) {
    tokens[id] = t;
    types[id] = TokenType.NORMAL;
  }
  const addedIds = new Set<number>();
  for (const a of added) {
    tokens[a.id] = a.content;
    types[a.id] = a.special ? TokenType.CONTROL : TokenType.USER_DEFINED;
    addedIds.add(a.id);
  }
  const rawMerges = (model.merges ?? []) as (string | [string, string])[];
  const merges = rawMerges.map((m) => (Array.isArray(m) ? `${m[0]} ${m[1]}` : m));
  const kv: [string, GgufWriteValue][] = [];
  if (model.byte_fallback === true) {
    const scores = new Array<number>(vocabRows).fill(-1e9);
    merges.forEach((m, r) => {
      const id = vocab[m.replace(" ", "")];
      if (id !== undefined && scores[id] === -1e9) scores[id] = -r;
    });
    for (let b = 0; b < 256; b++) {
      const id = vocab[byteToken(b)];
      if (id !== undefined && !addedIds.has(id)) types[id] = TokenType.BYTE;
    }
    const unk = typeof model.unk_token === "string" ? vocab[model.unk_token] : undefined;
    if (unk !== undefined) types[unk] = TokenType.UNKNOWN;
    const norm = JSON.stringify(json.normalizer ?? null);
    kv.push(
      ["tokenizer.ggml.model", { type: "string", value: "llama" }],
      ["tokenizer.ggml.pre", { type: "string", value: "default" }],
      ["tokenizer.ggml.tokens", { type: "array", of: "string", value: tokens }],
      ["tokenizer.ggml.scores", { type: "array", of: "f32", value: scores }],
      ["tokenizer.ggml.token_type", { type: "array", of: "i32", value: types }],
      ["tokenizer.ggml.add_space_prefix", { type: "bool", value: norm.includes('"Prepend"') }],
    );
    if (unk !== undefined) kv.push(["tokenizer.ggml.unknown_token_id", { type: "u32", value: unk }]);
  } else {
    kv.push(
      ["tokenizer.ggml.model", { type: "string", value: "gpt2" }],
      ["tokenizer.ggml.pre", { type: "string", value: folderPre(json, source) }],
      ["tokenizer.ggml.tokens", { type: "array", of: "string", value: tokens }],
      ["tokenizer.ggml.token_type", { type: "array", of: "i32", value: types }],
      ["tokenizer.ggml.merges", { type: "array", of: "string", value: merges }],
    );
  }
  if (tok.bosId !== null) kv.push(["tokenizer.ggml.bos_token_id", { type: "u32", value: tok.bosId }]);
  kv.push(["tokenizer.ggml.eos_token_id", { type: "u32", value: tok.eosId }]);
  const eot = inp.eosIds.find((id) => id !== tok.eosId);
  if (eot !== undefined) kv.push(["tokenizer.ggml.eot_token_id", { type: "u32", value: eot }]);
  kv.push(["tokenizer.ggml.add_bos_token", { type: "bool", value: tok.addsBos }], ["tokenizer.ggml.add_eos_token", { type: "bool", value: false }]);
  if (tok.chatTemplate !== null) kv.push(["tokenizer.chat_template", { type: "string", value: tok.chatTemplate }]);
  return kv;
}
