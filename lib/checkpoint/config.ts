/**
 * config.json → {@link ModelSpec}. A model family is data (docs/DESIGN.md,
 * skipdecode.h): `model_type` picks a family module (family.ts) that maps the
 * config to this spec, the weights to engine tensors, and the BOS/EOS rules.
 * Supported: "opt" (opt.ts); "llama", "mistral", "qwen2" (llama.ts).
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { familyOf } from "./family.ts";

/** Rotary position embeddings (rotate-half convention, as Hugging Face's LLaMA). */
export interface RopeSpec {
  /** `rope_theta`: base of the frequencies theta^(-2i/head_dim). */
  theta: number;
  /**
   * `rope_scaling`, when present: "linear" divides positions by factor; "llama3" rescales low frequencies;
   * "factors" divides frequency i by factors[i] (a GGUF file's `rope_freqs` tensor, llama.cpp's form of "llama3").
   */
  scaling:
    | null
    | { type: "linear"; factor: number }
    | { type: "llama3"; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number }
    | { type: "factors"; factors: number[] };
}

/** The shape and options of a model, as the engine and the library see it. */
export interface ModelSpec {
  /** `model_type`: "opt", "llama", "mistral" or "qwen2". */
  arch: "opt" | "llama" | "mistral" | "qwen2";
  numLayers: number;
  hiddenSize: number;
  numHeads: number;
  /** Key/value heads (grouped-query attention); numHeads when every head has its own. */
  numKvHeads: number;
  headDim: number;
  /** MLP inner size (`ffn_dim`, `intermediate_size`). */
  ffnDim: number;
  /** Rows of the embedding and LM head; may exceed the tokenizer's size. */
  vocabSize: number;
  /** Positions the model knows (`max_position_embeddings`). */
  maxPositions: number;
  /** `word_embed_proj_dim`; differs from hiddenSize when project_in/out exist. */
  wordEmbedProjDim: number;
  /** true: norm before attention/MLP (opt-125m, LLaMA); false: after (opt-350m). */
  preLayerNorm: boolean;
  /** A final norm after the last layer (pre-LN OPT without `_remove_final_layer_norm`, LLaMA's model.norm). */
  finalLayerNorm: boolean;
  /** Learned-position table row of position p is p + positionOffset (OPT: 2; 0 for rotary models). */
  positionOffset: number;
  /** "layernorm" (OPT) or "rmsnorm" (LLaMA family). */
  norm: "layernorm" | "rmsnorm";
  normEps: number;
  /** "learned" (OPT's table) or "rotary" (LLaMA family, see {@link rope}). */
  positions: "learned" | "rotary";
  rope: RopeSpec | null;
  /** "relu": down(relu(up x)) (OPT); "swiglu": down(silu(gate x) · up x) (LLaMA family). */
  mlp: "relu" | "swiglu";
  activation: "relu" | "silu";
  /** Which biases exist. */
  biases: { qkv: boolean; o: boolean; mlp: boolean; norm: boolean };
  /** Mistral's `sliding_window`: attention is exact only while the context fits it. */
  slidingWindow: number | null;
  tieWordEmbeddings: boolean;
  /** OPT: `enable_bias`, `layer_norm_elementwise_affine`. */
  enableBias: boolean;
  layerNormAffine: boolean;
  bosTokenId: number | null;
  /** The first of {@link eosTokenIds}. */
  eosTokenId: number;
  /** Every id that ends a generation (generation_config.json, else config.json). */
  eosTokenIds: number[];
  padTokenId: number | null;
  /** `torch_dtype` from config.json, if any. */
  torchDtype: string | null;
}

function readJson(path: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error(`${path}: must hold a JSON object`);
  return v as Record<string, unknown>;
}

/**
 * Reads and validates `config.json` (and `generation_config.json`, for the
 * EOS ids, when present) in a model folder.
 *
 * @example
 * const spec = readModelSpec("models/opt-125m");
 * spec.numLayers; // 12
 */
export function readModelSpec(dir: string): ModelSpec {
  const path = join(dir, "config.json");
  if (!existsSync(dir)) throw new Error(`model folder ${dir} does not exist`);
  if (!existsSync(path)) throw new Error(`no config.json in ${dir}: not a Hugging Face model folder`);
  const cfg = readJson(path);
  const gen = join(dir, "generation_config.json");
  return specFromConfig(cfg, dir, existsSync(gen) ? readJson(gen) : null);
}

/** Validates a parsed config object; `dir` only names the source in errors. */
export function specFromConfig(cfg: Record<string, unknown>, dir = ".", generation: Record<string, unknown> | null = null): ModelSpec {
  return familyOf(cfg.model_type, dir).spec(cfg, dir, generation);
}
