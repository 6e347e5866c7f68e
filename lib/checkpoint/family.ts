/**
 * The registry of model families. A family is data: one module per family
 * (opt.ts, llama.ts) provides a {@link Family} (spec.ts) — config.json → spec,
 * the checkpoint's tensors → the engine's tensor roles, the BOS rule, the
 * ABI's family label, its tiny-model writer and its float64 reference — and
 * both engines run one generic block driven by the spec's descriptor (norm,
 * positions, MLP, KV heads, biases — skipdecode.h). Adding a family is one
 * module and its entry in FAMILIES (docs/families.md has the checklist).
 */
import { Bias, Cfg, Mlp, Norm, Positions } from "../engine/abi.ts";
import { configFail } from "./fields.ts";
import { llamaFamily } from "./llama.ts";
import { optFamily } from "./opt.ts";
import type { CheckpointTensors } from "./safetensors.ts";
import type { Family, ModelSpec } from "./spec.ts";
import type { WeightTensor } from "./weight.ts";

export type { Family } from "./spec.ts";
export type { WeightTensor } from "./weight.ts";

const FAMILIES: readonly Family[] = [optFamily, llamaFamily];

/** Every family, in registry order. */
export function allFamilies(): readonly Family[] {
  return FAMILIES;
}

/** The family that reads `model_type`, or an error listing the supported ones. */
export function familyOf(modelType: unknown, dir = "."): Family {
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
  cfg[Cfg.ARCH] = familyOf(spec.arch, ".").abiArch; // an unknown family is refused by name, never labelled as another
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
