/**
 * The `tokenizer.json` format (Hugging Face's), the subset we read and write:
 * its shapes, GPT-2's byte-to-unicode map and pre-tokenisation regex, OPT's
 * special tokens, and the builders of its sections. Shared by the loader
 * (tokenizer.ts, which turns a `vocab.json` + `merges.txt` pair into one) and
 * the tiny tokenizer writers (lib/tiny/bpe.ts, lib/tiny/tokenizers.ts).
 */


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
 * prependBosTemplate("</s>", 2); // prepends "</s>" (id 2)
 * ```
 */
export interface TemplateProcessingJson {
  type: "TemplateProcessing";
  single: TemplateItem[];
  pair: TemplateItem[];
  special_tokens: Record<string, { id: string; ids: number[]; tokens: string[] }>;
}

/**
 * A byte-level BPE `tokenizer.json` as written by lib/tiny/bpe.ts.
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
export const OPT_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"] as const;

/**
 * The GPT-2 pre-tokenisation regex (contractions, letters, numbers, other
 * symbols, each optionally led by one space; runs of whitespace).
 */
export const GPT2_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

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

export function byteLevel(addPrefixSpace = false): ByteLevelJson {
  return { type: "ByteLevel", add_prefix_space: addPrefixSpace, trim_offsets: true, use_regex: true };
}

/**
 * The pre-tokenizer of Llama 3- and Qwen2-style byte-level BPE: the text is
 * split by each regex in turn (the pieces kept apart), then its bytes are
 * mapped to characters without GPT-2's own regex.
 *
 * @example
 * ```ts
 * splitByteLevel(["\\p{N}{1,3}"]).pretokenizers.length; // 2: the Split, then the ByteLevel
 * ```
 */
export function splitByteLevel(regexes: readonly string[]) {
  const split = (re: string) => ({ type: "Split", pattern: { Regex: re }, behavior: "Isolated", invert: false });
  return { type: "Sequence", pretokenizers: [...regexes.map(split), { ...byteLevel(), use_regex: false }] };
}

export function addedToken(id: number, content: string): AddedTokenJson {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

/**
 * The normalizer of a SentencePiece model written as BPE: spaces become "▁",
 * and with `prependSpace` (SentencePiece's add_dummy_prefix) the text gets a
 * leading "▁".
 */
export function sentencePieceNormalizer(prependSpace: boolean) {
  return {
    type: "Sequence",
    normalizers: [...(prependSpace ? [{ type: "Prepend", prepend: "▁" }] : []), { type: "Replace", pattern: { String: " " }, content: "▁" }],
  };
}

/**
 * The decoder that undoes {@link sentencePieceNormalizer}: "▁" back to spaces,
 * byte tokens (`<0x41>`) back to bytes, and with `prependSpace` the leading
 * space the normalizer added stripped again.
 */
export function sentencePieceDecoder(prependSpace: boolean) {
  return {
    type: "Sequence",
    decoders: [
      { type: "Replace", pattern: { String: "▁" }, content: " " },
      { type: "ByteFallback" },
      { type: "Fuse" },
      ...(prependSpace ? [{ type: "Strip", content: " ", start: 1, stop: 0 }] : []),
    ],
  };
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
