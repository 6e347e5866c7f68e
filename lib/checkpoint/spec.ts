/**
 * The types a model family fills in: {@link ModelSpec}, the shape and options
 * of a model as the engine and the library see it, and {@link Family}, what a
 * family module (opt.ts, llama.ts; registered in family.ts) provides. They
 * live apart from config.ts and family.ts so that the family modules and the
 * registry import them without importing each other (docs/families.md).
 */
import type { TinyCommon, TinyModelOptions } from "../tiny/options.ts";
import type { CheckpointTensors } from "./safetensors.ts";
import type { WeightTensor } from "./weight.ts";

/** Rotary position embeddings (rotate-half convention, as Hugging Face's LLaMA). */
export interface RopeSpec {
  /** `rope_theta`: base of the frequencies theta^(-2i/head_dim). */
  theta: number;
  /** `rope_scaling`, when present: "linear" divides positions by factor; "llama3" rescales low frequencies. */
  scaling:
    | null
    | { type: "linear"; factor: number }
    | { type: "llama3"; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number };
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

/** What a family module provides: everything family-specific, so the rest of the code holds no per-family switch. */
export interface Family {
  /** The family's name in messages ("OPT", "LLaMA family"). */
  name: string;
  /** `model_type` values it reads. */
  modelTypes: readonly string[];
  /** The ABI's family label for the engine config (skipdecode.h skd_arch: SKD_ARCH_OPT, SKD_ARCH_LLAMA). */
  abiArch: number;
  /** config.json (and generation_config.json, when present) → spec; throws naming the field. */
  spec(cfg: Record<string, unknown>, dir: string, generation: Record<string, unknown> | null): ModelSpec;
  /** Every tensor the engine needs, in load order; throws naming a missing or misshapen tensor. */
  weights(spec: ModelSpec, ckpt: CheckpointTensors): Generator<WeightTensor>;
  /** The tokenizer's BOS rule (tokenizer.ts): OPT "always" prepends one; "config" follows tokenizer_config.json. */
  bos: "always" | "config";
  /**
   * Whether this family's block has passed the CUDA parity checks on a GPU
   * (docs/cuda.md). When false, a load on the CUDA backend says so on stderr.
   */
  cudaVerified: boolean;
  /** A few words on a model of the family for messages: "OPT pre-LN", "qwen2, 2 KV heads". */
  describe(spec: ModelSpec): string;
  /** The float64 reference of its block (a path under test/), the specification the engines are checked against. */
  reference: string;
  /** Writes a deterministic random checkpoint of the family (lib/tiny/model.ts has checked the shared options). */
  writeTiny(dir: string, modelType: string, common: TinyCommon, opts: TinyModelOptions): Record<string, unknown>;
  /** The family-specific options of writeTinyModel it reads (the others are refused for it). */
  tinyOptions: readonly string[];
}
