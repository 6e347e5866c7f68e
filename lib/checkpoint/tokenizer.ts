/**
 * Loading a model folder's tokenizer (the format itself is tokenizer_json.ts;
 * the tiny trainer that writes test tokenizers is lib/tiny/bpe.ts).
 *
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
import { addedToken, bpeModel, byteLevel, OPT_SPECIALS, type TokenizerJson } from "./tokenizer_json.ts";

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
