/**
 * config.json → {@link ModelSpec}. Only OPT for now (docs/DESIGN.md: OPT first,
 * LLaMA-family later). Defaults follow Hugging Face's `OPTConfig`.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

/** The shape and options of a model, as the engine and the library see it. */
export interface ModelSpec {
  /** Architecture family: "opt". */
  arch: "opt";
  numLayers: number;
  hiddenSize: number;
  numHeads: number;
  headDim: number;
  /** MLP inner size (`ffn_dim`). */
  ffnDim: number;
  /** Rows of the embedding and LM head; may exceed the tokenizer's size. */
  vocabSize: number;
  /** Positions the model knows (`max_position_embeddings`). */
  maxPositions: number;
  /** `word_embed_proj_dim`; differs from hiddenSize when project_in/out exist. */
  wordEmbedProjDim: number;
  /** true: layer norm before attention/MLP (opt-125m); false: after (opt-350m). */
  preLayerNorm: boolean;
  /** A final layer norm after the last layer (pre-LN models without `_remove_final_layer_norm`). */
  finalLayerNorm: boolean;
  /** Learned-position table row of position p is p + positionOffset (OPT: 2). */
  positionOffset: number;
  activation: "relu";
  tieWordEmbeddings: boolean;
  enableBias: boolean;
  layerNormAffine: boolean;
  bosTokenId: number;
  eosTokenId: number;
  padTokenId: number;
  /** `torch_dtype` from config.json, if any. */
  torchDtype: string | null;
}

function fail(dir: string, msg: string): never {
  throw new Error(`${join(dir, "config.json")}: ${msg}`);
}

function intField(dir: string, cfg: Record<string, unknown>, key: string, dflt?: number, min = 1): number {
  const v = cfg[key] ?? dflt;
  if (v === undefined) fail(dir, `missing required field "${key}"`);
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min) {
    fail(dir, `field "${key}" must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function boolField(dir: string, cfg: Record<string, unknown>, key: string, dflt: boolean): boolean {
  const v = cfg[key] ?? dflt;
  if (typeof v !== "boolean") fail(dir, `field "${key}" must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * Reads and validates `config.json` in a model folder.
 *
 * @example
 * const spec = readModelSpec("models/opt-125m");
 * spec.numLayers; // 12
 */
export function readModelSpec(dir: string): ModelSpec {
  const path = join(dir, "config.json");
  if (!existsSync(dir)) throw new Error(`model folder ${dir} does not exist`);
  if (!existsSync(path)) throw new Error(`no config.json in ${dir}: not a Hugging Face model folder`);
  let cfg: unknown;
  try {
    cfg = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    fail(dir, `not valid JSON (${(e as Error).message})`);
  }
  if (typeof cfg !== "object" || cfg === null || Array.isArray(cfg)) fail(dir, "must hold a JSON object");
  return specFromConfig(cfg as Record<string, unknown>, dir);
}

/** Validates a parsed config object; `dir` only names the source in errors. */
export function specFromConfig(cfg: Record<string, unknown>, dir = "."): ModelSpec {
  const type = cfg.model_type;
  if (type !== "opt") {
    fail(dir, `unsupported model_type ${JSON.stringify(type ?? null)} (skipdecode supports: "opt")`);
  }
  const act = cfg.activation_function ?? "relu";
  if (act !== "relu") fail(dir, `unsupported activation_function ${JSON.stringify(act)} (OPT uses "relu")`);
  const numLayers = intField(dir, cfg, "num_hidden_layers");
  const hiddenSize = intField(dir, cfg, "hidden_size");
  const numHeads = intField(dir, cfg, "num_attention_heads");
  if (hiddenSize % numHeads !== 0) {
    fail(dir, `hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`);
  }
  const preLayerNorm = boolField(dir, cfg, "do_layer_norm_before", true);
  const removeFinal = boolField(dir, cfg, "_remove_final_layer_norm", false);
  const bos = intField(dir, cfg, "bos_token_id", 2, 0);
  return {
    arch: "opt",
    numLayers,
    hiddenSize,
    numHeads,
    headDim: hiddenSize / numHeads,
    ffnDim: intField(dir, cfg, "ffn_dim"),
    vocabSize: intField(dir, cfg, "vocab_size"),
    maxPositions: intField(dir, cfg, "max_position_embeddings"),
    wordEmbedProjDim: intField(dir, cfg, "word_embed_proj_dim", hiddenSize),
    preLayerNorm,
    finalLayerNorm: preLayerNorm && !removeFinal,
    positionOffset: 2,
    activation: "relu",
    tieWordEmbeddings: boolField(dir, cfg, "tie_word_embeddings", true),
    enableBias: boolField(dir, cfg, "enable_bias", true),
    layerNormAffine: boolField(dir, cfg, "layer_norm_elementwise_affine", true),
    bosTokenId: bos,
    eosTokenId: intField(dir, cfg, "eos_token_id", 2, 0),
    padTokenId: intField(dir, cfg, "pad_token_id", 1, 0),
    torchDtype: typeof cfg.torch_dtype === "string" ? cfg.torch_dtype : null,
  };
}
