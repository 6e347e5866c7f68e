/**
 * Validation of a `tokenizer.json` before @huggingface/tokenizers sees it, so
 * a broken or hostile file is refused at load, by name, instead of loading
 * silently and tokenising garbage (or hanging the first request in a loop up
 * to an absurd id). Every check is one pass over the file's own entries:
 * loading is linear in the file's size, never in the largest id.
 *
 * The rules:
 * - `model.type` is one that @huggingface/tokenizers implements (BPE,
 *   WordPiece, Unigram), and so are the types of the normalizer,
 *   pre-tokenizer, post-processor and decoder, nested Sequences included;
 *   anything else is refused by its name and place.
 * - The vocabulary is not empty. BPE and WordPiece ids are integers in
 *   `0..bound-1` and unique, where the bound is the number of vocabulary
 *   entries plus the number of added tokens (so ids are dense, or have at
 *   most as many holes as there are added tokens); Unigram ids are the
 *   entries' positions. A BPE merge names two vocabulary tokens; `unk_token`
 *   is one.
 * - `added_tokens` have non-empty contents and ids under the same bound,
 *   unique among themselves; one whose id the vocabulary gives to another
 *   token is refused.
 * - Post-processors name only tokens that exist, with their right ids.
 *
 * The model's own vocabulary size (config.json) is checked by the decoder.
 */

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/** The component types @huggingface/tokenizers 0.2 builds (its create_* factories), and the key of a Sequence's parts. */
const KINDS = {
  normalizer: {
    types: ["BertNormalizer", "Precompiled", "Sequence", "Replace", "NFC", "NFD", "NFKC", "NFKD", "Strip", "StripAccents", "Lowercase", "Prepend"],
    parts: "normalizers",
  },
  pre_tokenizer: {
    types: ["BertPreTokenizer", "Sequence", "Whitespace", "WhitespaceSplit", "Metaspace", "ByteLevel", "Split", "Punctuation", "Digits", "Replace", "FixedLength"],
    parts: "pretokenizers",
  },
  post_processor: { types: ["TemplateProcessing", "ByteLevel", "BertProcessing", "RobertaProcessing", "Sequence"], parts: "processors" },
  decoder: { types: ["ByteLevel", "WordPiece", "Metaspace", "BPEDecoder", "CTC", "Sequence", "Replace", "Fuse", "Strip", "ByteFallback"], parts: "decoders" },
} as const;

/** Model types @huggingface/tokenizers implements. */
export const MODEL_TYPES = ["BPE", "WordPiece", "Unigram"] as const;

/** What a valid file tells the loader. */
export interface TokenizerFacts {
  /** Largest id + 1. */
  vocabSize: number;
  /** The longest token string (vocabulary or added), in UTF-8 bytes (at least 1). */
  maxTokenBytes: number;
}

/**
 * Checks a parsed tokenizer.json (module comment) and returns its size
 * facts; throws `tokenizer: <path>: …` naming what is wrong.
 *
 * @example
 * const { vocabSize } = checkTokenizerJson(JSON.parse(text), "models/opt-125m/tokenizer.json");
 */
export function checkTokenizerJson(json: Json, path: string): TokenizerFacts {
  const fail = (msg: string): never => {
    throw new Error(`tokenizer: ${path}: ${msg}`);
  };
  const show = (v: unknown) => JSON.stringify(v)?.slice(0, 80) ?? String(v);
  for (const [key, kind] of Object.entries(KINDS)) checkComponent(json[key], key, kind.types, kind.parts, fail);

  const model = json.model;
  if (!isObject(model) || model.vocab === undefined) fail("has no model.vocab object");
  const m = model as Json;
  if (!MODEL_TYPES.includes(m.type as never)) {
    fail(`model.type ${show(m.type)} is not supported (supported: ${MODEL_TYPES.join(", ")})`);
  }
  const added = json.added_tokens ?? [];
  if (!Array.isArray(added)) fail("added_tokens must be a list");
  const addedList = added as unknown[];

  // token → id, over the vocabulary and then the added tokens
  const ids = new Map<string, number>();
  const byId = new Map<number, string>();
  let maxId = -1;
  let maxBytes = 1;
  const note = (token: string, id: number) => {
    ids.set(token, id);
    byId.set(id, token);
    if (id > maxId) maxId = id;
    maxBytes = Math.max(maxBytes, Buffer.byteLength(token));
  };
  if (m.type === "Unigram") {
    if (!Array.isArray(m.vocab)) fail("model.vocab of a Unigram model must be a list of [token, score]");
    const vocab = m.vocab as unknown[];
    if (vocab.length === 0) fail("model.vocab is empty");
    vocab.forEach((e, i) => {
      if (!Array.isArray(e) || e.length !== 2 || typeof e[0] !== "string" || typeof e[1] !== "number" || !Number.isFinite(e[1])) {
        fail(`model.vocab[${i}] must be [token, score], got ${show(e)}`);
      }
      note((e as [string, number])[0], i);
    });
  } else {
    if (!isObject(m.vocab)) fail("model.vocab must be an object of token → id");
    const entries = Object.entries(m.vocab as Json);
    if (entries.length === 0) fail("model.vocab is empty");
    const bound = entries.length + addedList.length;
    for (const [token, id] of entries) {
      if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= bound) {
        fail(`model.vocab: token ${show(token)} has id ${show(id)}; ids must be integers in 0..${bound - 1} (entries + added tokens)`);
      }
      const other = byId.get(id as number);
      if (other !== undefined) fail(`model.vocab: id ${id} is given to both ${show(other)} and ${show(token)}`);
      note(token, id as number);
    }
    if (m.unk_token != null && !(typeof m.unk_token === "string" && ids.has(m.unk_token))) {
      fail(`model.unk_token ${show(m.unk_token)} is not in model.vocab`);
    }
    if (m.type === "BPE") checkMerges(m.merges, ids, fail, show);
  }

  const bound = (m.type === "Unigram" ? (m.vocab as unknown[]).length : Object.keys(m.vocab as Json).length) + addedList.length;
  const addedIds = new Set<number>();
  addedList.forEach((t, i) => {
    if (!isObject(t) || typeof t.content !== "string" || t.content === "") fail(`added_tokens[${i}] needs a non-empty string content`);
    const { id, content } = t as { id: unknown; content: string };
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= bound) {
      fail(`added_tokens[${i}] (${show(content)}) has id ${show(id)}; ids must be integers in 0..${bound - 1} (entries + added tokens)`);
    }
    if (addedIds.has(id as number)) fail(`added_tokens: id ${id} is given twice (the second is ${show(content)})`);
    addedIds.add(id as number);
    const inVocab = byId.get(id as number);
    if (inVocab !== undefined && inVocab !== content && ids.get(inVocab) === id) {
      fail(`added_tokens[${i}] ${show(content)} has id ${id}, which model.vocab gives to ${show(inVocab)}`);
    }
    note(content, id as number);
  });

  checkPostProcessor(json.post_processor, "post_processor", ids, fail, show);
  return { vocabSize: maxId + 1, maxTokenBytes: maxBytes };
}

/** A normalizer / pre-tokenizer / post-processor / decoder: null, or a known type (Sequences recursively). */
function checkComponent(v: unknown, where: string, types: readonly string[], parts: string, fail: (msg: string) => never): void {
  if (v === null || v === undefined) return;
  if (!isObject(v)) fail(`${where} must be an object or null`);
  const type = (v as Json).type;
  if (!types.includes(type as string)) fail(`${where}.type ${JSON.stringify(type)} is not supported (supported: ${types.join(", ")})`);
  if (type !== "Sequence") return;
  const list = (v as Json)[parts];
  if (!Array.isArray(list)) fail(`${where} is a Sequence without a ${parts} list`);
  (list as unknown[]).forEach((p, i) => checkComponent(p, `${where}.${parts}[${i}]`, types, parts, fail));
}

/** BPE merges: "left right" strings or [left, right] pairs of vocabulary tokens. */
function checkMerges(merges: unknown, ids: Map<string, number>, fail: (msg: string) => never, show: (v: unknown) => string): void {
  if (merges === undefined) return;
  if (!Array.isArray(merges)) fail("model.merges must be a list");
  (merges as unknown[]).forEach((mg, i) => {
    let pair: unknown[] | null = null;
    if (typeof mg === "string") {
      const at = mg.indexOf(" ");
      pair = at > 0 ? [mg.slice(0, at), mg.slice(at + 1)] : null;
    } else if (Array.isArray(mg) && mg.length === 2) {
      pair = mg;
    }
    if (!pair || pair.some((p) => typeof p !== "string" || p === "")) fail(`model.merges[${i}] must be "left right" or [left, right], got ${show(mg)}`);
    for (const p of pair as string[]) if (!ids.has(p)) fail(`model.merges[${i}] ${show(mg)}: token ${show(p)} is not in model.vocab`);
  });
}

/** Post-processors may only name tokens that exist, with the ids they have. */
function checkPostProcessor(v: unknown, where: string, ids: Map<string, number>, fail: (msg: string) => never, show: (v: unknown) => string): void {
  if (!isObject(v)) return;
  const named = (token: unknown, id: unknown, at: string) => {
    if (typeof token !== "string" || ids.get(token) === undefined) fail(`${at} names token ${show(token)}, which is not in the vocabulary`);
    if (ids.get(token as string) !== id) fail(`${at} gives ${show(token)} the id ${show(id)}; the vocabulary gives it ${ids.get(token as string)}`);
  };
  switch (v.type) {
    case "Sequence":
      (v.processors as unknown[]).forEach((p, i) => checkPostProcessor(p, `${where}.processors[${i}]`, ids, fail, show));
      return;
    case "BertProcessing":
    case "RobertaProcessing":
      for (const key of ["sep", "cls"]) {
        const pair = v[key];
        if (!Array.isArray(pair) || pair.length !== 2) fail(`${where}.${key} must be [token, id]`);
        named((pair as unknown[])[0], (pair as unknown[])[1], `${where}.${key}`);
      }
      return;
    case "TemplateProcessing": {
      const specials = v.special_tokens ?? {};
      if (!isObject(specials)) fail(`${where}.special_tokens must be an object`);
      for (const [name, s] of Object.entries(specials as Json)) {
        const at = `${where}.special_tokens[${show(name)}]`;
        if (!isObject(s) || !Array.isArray(s.ids) || !Array.isArray(s.tokens) || s.ids.length !== s.tokens.length) {
          fail(`${at} must be { id, ids: [...], tokens: [...] } with as many ids as tokens`);
        }
        const t = s as { ids: unknown[]; tokens: unknown[] };
        t.tokens.forEach((token, i) => named(token, t.ids[i], at));
      }
      for (const part of ["single", "pair"]) {
        const items = v[part];
        if (items === undefined) continue;
        if (!Array.isArray(items)) fail(`${where}.${part} must be a list`);
        for (const item of items as unknown[]) {
          const sp = isObject(item) && isObject(item.SpecialToken) ? item.SpecialToken.id : undefined;
          if (sp !== undefined && !Object.hasOwn(specials as Json, sp as string)) {
            fail(`${where}.${part} uses the special token ${show(sp)}, which special_tokens does not define`);
          }
        }
      }
      return;
    }
  }
}
