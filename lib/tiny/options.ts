/**
 * The options of writeTinyModel (lib/tiny/model.ts), their defaults, and the shared
 * ones validated, as each family's writer (lib/tiny/opt.ts, lib/tiny/llama.ts)
 * receives them.
 */

/** Options of {@link writeTinyModel}; defaults in {@link TINY_DEFAULTS}. */
export interface TinyModelOptions {
  seed?: number;
  /** `model_type` (default "opt"). llama/mistral/qwen2: RMSNorm, rotary, SwiGLU, GQA; qwen2 adds q/k/v biases. */
  family?: "opt" | "llama" | "mistral" | "qwen2";
  /** LLaMA family: key/value heads (default heads). */
  kvHeads?: number;
  /** LLaMA family: head size, written as `head_dim` when given (default hidden / heads). */
  headDim?: number;
  /** LLaMA family: `rope_theta` (default 10000). */
  ropeTheta?: number;
  /** LLaMA family: `rope_scaling` (default none). */
  ropeScaling?: { type: "linear"; factor: number } | { type: "llama3"; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number };
  /** Mistral: `sliding_window` (default null). */
  slidingWindow?: number;
  /** "pre": layer norm before each block (opt-125m); "post": after (opt-350m, no final LN). */
  variant?: "pre" | "post";
  dtype?: "float32" | "float16" | "bfloat16";
  layers?: number;
  hidden?: number;
  heads?: number;
  /** MLP size (default 4 × hidden). */
  ffn?: number;
  /** word_embed_proj_dim; != hidden adds project_in/project_out (default hidden). */
  embedDim?: number;
  /** BPE merges of the tokenizer: it has 4 + 256 + merges ids. */
  merges?: number;
  /** Embedding rows (default: the tokenizer's size rounded up to a multiple of 64). */
  vocab?: number;
  maxPositions?: number;
  /** Tie the LM head to the token embedding (no lm_head.weight). Off by default:
   * a random model with a tied head mostly repeats its input token. */
  tiedHead?: boolean;
  /** Tensor name prefix: "model.decoder." (OPTForCausalLM) or "decoder." (OPTModel). */
  prefix?: "model.decoder." | "decoder.";
  /** Standard deviation of the random weights. */
  scale?: number;
}

/** Defaults of {@link TinyModelOptions}. */
export const TINY_DEFAULTS = {
  seed: 0,
  family: "opt",
  variant: "pre",
  dtype: "float32",
  layers: 4,
  hidden: 64,
  heads: 4,
  merges: 100,
  maxPositions: 256,
  tiedHead: false,
  prefix: "model.decoder.",
  scale: 0.15,
} as const;

/** The options every family shares, validated by writeTinyModel. */
export interface TinyCommon {
  seed: number;
  dtype: "float32" | "float16" | "bfloat16";
  layers: number;
  hidden: number;
  heads: number;
  /** MLP size as given; undefined: the family's default. */
  ffn: number | undefined;
  /** BPE merges of the tokenizer. */
  merges: number;
  /** Embedding rows as given (at least 260 + merges); undefined: the tokenizer's size rounded up to a multiple of 64. */
  vocab: number | undefined;
  maxPositions: number;
  /** Tie the LM head to the token embedding. */
  tied: boolean;
  /** Standard deviation of the random weights. */
  scale: number;
}
