/**
 * Model families. A family is data: one module per family (opt.ts, llama.ts)
 * maps `config.json` to a {@link ModelSpec}, the checkpoint's tensors to the
 * engine's tensor roles, and says which BOS/EOS ids apply; both engines run
 * one generic block driven by the spec's descriptor (norm, positions, MLP,
 * KV heads, biases — skipdecode.h). Adding a family is one module here, its
 * entry in FAMILIES, and a float64 reference of its block in test/
 * (reference.ts for OPT, reference-llama.ts for the LLaMA family).
 */
import { ARCH_LLAMA, ARCH_OPT, Bias, Cfg, Mlp, Norm, Positions } from "../native.ts";
import type { ModelSpec } from "./config.ts";
import { configFail } from "./fields.ts";
import { llamaFamily } from "./llama.ts";
import { optFamily } from "./opt.ts";
import type { CheckpointTensors } from "./safetensors.ts";
import type { WeightTensor } from "./weight.ts";

export type { WeightTensor } from "./weight.ts";

/** What a family module provides. */
export interface Family {
  /** The family's name in messages ("OPT", "LLaMA family"). */
  name: string;
  /** `model_type` values it reads. */
  modelTypes: readonly string[];
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
}

const FAMILIES: readonly Family[] = [optFamily, llamaFamily];

/** The family that reads `model_type`, or an error listing the supported ones. */
export function familyOf(modelType: unknown, dir: string): Family {
  const f = FAMILIES.find((x) => typeof modelType === "string" && x.modelTypes.includes(modelType));
  if (f) return f;
  const known = FAMILIES.flatMap((x) => x.modelTypes).map((t) => JSON.stringify(t)).join(", ");
  configFail(dir, `unsupported model_type ${JSON.stringify(modelType ?? null)} (skipdecode supports: ${known})`);
}

/** The tensors of a checkpoint, through its family. */
export function familyWeights(spec: ModelSpec, ckpt: CheckpointTensors): Generator<WeightTensor> {
  return familyOf(spec.arch, ckpt.dir).weights(spec, ckpt);
}

/** The model's slots of skd_engine_create's config (the caller adds limits and threads). */
export function modelConfig(spec: ModelSpec): number[] {
  const cfg = new Array<number>(Cfg.COUNT).fill(0);
  cfg[Cfg.ARCH] = spec.arch === "opt" ? ARCH_OPT : ARCH_LLAMA;
  cfg[Cfg.NUM_LAYERS] = spec.numLayers;
  cfg[Cfg.HIDDEN] = spec.hiddenSize;
  cfg[Cfg.NUM_HEADS] = spec.numHeads;
  cfg[Cfg.FFN] = spec.ffnDim;
  cfg[Cfg.VOCAB] = spec.vocabSize;
  cfg[Cfg.MAX_POSITIONS] = spec.maxPositions;
  cfg[Cfg.EMBED_DIM] = spec.wordEmbedProjDim;
  cfg[Cfg.PRE_LN] = spec.preLayerNorm ? 1 : 0;
  cfg[Cfg.FINAL_LN] = spec.finalLayerNorm ? 1 : 0;
  cfg[Cfg.POS_OFFSET] = spec.positionOffset;
  cfg[Cfg.NORM] = spec.norm === "rmsnorm" ? Norm.RMS : Norm.LAYER;
  cfg[Cfg.POSITIONS] = spec.positions === "rotary" ? Positions.ROTARY : Positions.LEARNED;
  cfg[Cfg.MLP] = spec.mlp === "swiglu" ? Mlp.SWIGLU : Mlp.RELU;
  cfg[Cfg.NUM_KV_HEADS] = spec.numKvHeads;
  cfg[Cfg.HEAD_DIM] = spec.headDim;
  const b = spec.biases;
  cfg[Cfg.NO_BIAS] = (b.qkv ? 0 : Bias.QKV) | (b.o ? 0 : Bias.O) | (b.mlp ? 0 : Bias.MLP) | (b.norm ? 0 : Bias.NORM);
  cfg[Cfg.NORM_EPS_E12] = Math.max(1, Math.round(spec.normEps * 1e12));
  return cfg;
}
