/**
 * Tiny, deterministic, real tokenizers in the three styles the LLaMA family
 * ships, for tiny test checkpoints (lib/tiny/model.ts) and the tokenizer tests. Each
 * is a Hugging Face `tokenizer.json` plus the `tokenizer_config.json` that
 * goes with it, trained (BPE merges) on {@link TINY_CORPUS}:
 *
 *   llama3         byte-level BPE; a Split pre-tokenizer with Llama 3's regex,
 *                  then ByteLevel; the post-processor prepends
 *                  `<|begin_of_text|>`; EOS `<|end_of_text|>`, and the chat
 *                  tokens `<|eot_id|>`, `<|start_header_id|>`, `<|end_header_id|>`
 *   sentencepiece  Llama 2 / Mistral: BPE over characters with "▁" for spaces
 *                  (Prepend + Replace normalizer), byte fallback `<0x00>`..`<0xFF>`
 *                  for anything else, `<s>` prepended by the post-processor and
 *                  `add_bos_token: true`
 *   qwen2          byte-level BPE with Qwen2's regex; no BOS at all
 *                  (`bos_token: null`), EOS `<|endoftext|>`, chat `<|im_start|>`, `<|im_end|>`
 * Each tokenizer_config.json carries a chat template of its style
 * ({@link CHAT_TEMPLATES}: Llama 3 headers, Mistral's [INST], ChatML).
 */
import {
  type AddedTokenJson,
  addedToken,
  BYTE_TO_UNICODE,
  bpeModel,
  byteLevel,
  prependBosTemplate,
  sentencePieceDecoder,
  sentencePieceNormalizer,
  splitByteLevel,
} from "../checkpoint/tokenizer_json.ts";
import { TINY_CORPUS, trainWordMerges } from "./bpe.ts";

/** A tokenizer style of the LLaMA family. */
export type TokenizerStyle = "llama3" | "sentencepiece" | "qwen2";

/** What {@link buildStyledTokenizer} returns. */
export interface StyledTokenizer {
  /** tokenizer.json */
  json: Record<string, unknown>;
  /** tokenizer_config.json */
  config: Record<string, unknown>;
  /** Ids for config.json / generation_config.json. */
  bosId: number | null;
  eosId: number;
  /** Extra ids that end a chat turn (generation_config.json's eos list). */
  eosIds: number[];
  /** Number of ids: largest + 1. */
  size: number;
}

/** Chat templates in each style (shortened from the models' own, same output for plain messages). */
export const CHAT_TEMPLATES = {
  llama3:
    "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}",
  sentencepiece:
    "{{- bos_token }}{%- for message in messages %}{%- if message['role'] == 'user' %}{{- '[INST] ' + message['content'] + ' [/INST]' }}{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token }}{%- else %}{{- raise_exception('Only user and assistant roles are supported!') }}{%- endif %}{%- endfor %}",
  qwen2:
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}",
} as const;

const LLAMA3_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** Byte-level vocabulary (the 256 byte symbols, then merges) trained on the corpus. */
function byteLevelVocab(numMerges: number, split: string): { vocab: Record<string, number>; merges: string[] } {
  const vocab: Record<string, number> = {};
  BYTE_TO_UNICODE.forEach((s, i) => (vocab[s] = i));
  const counts = new Map<string, number>();
  const enc = new TextEncoder();
  for (const piece of TINY_CORPUS.match(new RegExp(split.replace("(?i:", "(?:"), "giu")) ?? []) {
    let w = "";
    for (const b of enc.encode(piece)) w += BYTE_TO_UNICODE[b];
    counts.set(w, (counts.get(w) ?? 0) + 1);
  }
  const merges = trainWordMerges(counts, numMerges, new Set(Object.keys(vocab)));
  let next = 256;
  for (const m of merges) vocab[m.replace(" ", "")] = next++;
  return { vocab, merges };
}

function byteLevelJson(split: string, vocab: Record<string, number>, merges: string[], added: AddedTokenJson[], post: Record<string, unknown>) {
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: splitByteLevel([split]),
    post_processor: post,
    decoder: byteLevel(true),
    model: { ...bpeModel(vocab, merges), ignore_merges: true },
  };
}

/**
 * A tiny tokenizer in `style` with `numMerges` merges.
 *
 * @example
 * const t = buildStyledTokenizer("sentencepiece", 100);
 * t.bosId; // 1 ("<s>")
 */
export function buildStyledTokenizer(style: TokenizerStyle, numMerges: number): StyledTokenizer {
  if (!Number.isInteger(numMerges) || numMerges < 0) {
    throw new Error(`buildStyledTokenizer: numMerges must be a non-negative integer, got ${numMerges}`);
  }
  if (style === "llama3") {
    const { vocab, merges } = byteLevelVocab(numMerges, LLAMA3_SPLIT);
    const base = 256 + merges.length;
    const names = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"];
    const added = names.map((n, i) => addedToken(base + i, n));
    const post = {
      type: "Sequence",
      processors: [
        { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
        prependBosTemplate("<|begin_of_text|>", base),
      ],
    };
    return {
      json: byteLevelJson(LLAMA3_SPLIT, vocab, merges, added, post),
      config: { bos_token: "<|begin_of_text|>", eos_token: "<|end_of_text|>", model_max_length: 131072, clean_up_tokenization_spaces: true, chat_template: CHAT_TEMPLATES.llama3 },
      bosId: base,
      eosId: base + 1,
      eosIds: [base + 1, base + 4],
      size: base + names.length,
    };
  }
  if (style === "qwen2") {
    const { vocab, merges } = byteLevelVocab(numMerges, QWEN2_SPLIT);
    const base = 256 + merges.length;
    const names = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    const added = names.map((n, i) => addedToken(base + i, n));
    const post = { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false };
    return {
      json: byteLevelJson(QWEN2_SPLIT, vocab, merges, added, post),
      config: { bos_token: null, eos_token: "<|endoftext|>", pad_token: "<|endoftext|>", model_max_length: 32768, clean_up_tokenization_spaces: false, chat_template: CHAT_TEMPLATES.qwen2 },
      bosId: null,
      eosId: base,
      eosIds: [base, base + 2],
      size: base + names.length,
    };
  }
  // sentencepiece: <unk> <s> </s>, 256 byte-fallback tokens, the corpus's characters (no newline), merges
  const vocab: Record<string, number> = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`] = 3 + b;
  const text = "▁" + TINY_CORPUS.replaceAll(" ", "▁");
  let next = 259;
  for (const c of [...new Set(Array.from(text))].filter((c) => c !== "\n").sort()) vocab[c] = next++;
  const counts = new Map<string, number>();
  for (const line of text.split("\n")) {
    for (const w of line.split(/(?=▁)/)) if (w) counts.set(w, (counts.get(w) ?? 0) + 1);
  }
  const merges = trainWordMerges(counts, numMerges, new Set(Object.keys(vocab)));
  for (const m of merges) vocab[m.replace(" ", "")] = next++;
  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: ["<unk>", "<s>", "</s>"].map((n, i) => addedToken(i, n)),
    normalizer: sentencePieceNormalizer(true),
    pre_tokenizer: null,
    post_processor: prependBosTemplate("<s>", 1),
    decoder: sentencePieceDecoder(true),
    model: { ...bpeModel(vocab, merges), unk_token: "<unk>", fuse_unk: true, byte_fallback: true },
  };
  return {
    json,
    config: { bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>", add_bos_token: true, add_eos_token: false, model_max_length: 32768, clean_up_tokenization_spaces: false, chat_template: CHAT_TEMPLATES.sentencepiece },
    bosId: 1,
    eosId: 2,
    eosIds: [2],
    size: next,
  };
}
