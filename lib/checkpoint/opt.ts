/**
 * The OPT family (family.ts): config.json → spec with Hugging Face's
 * `OPTConfig` defaults, and the weights: Hugging Face tensor names mapped to
 * the engine's tensor roles, every shape and dtype checked. Names live under
 * `model.decoder.*` (OPTForCausalLM) or `decoder.*` (OPTModel); the LM head is
 * `lm_head.weight` or, when tied, the token embedding. BOS and EOS are `</s>`
 * (id 2) unless the config says otherwise.
 */
import { ARCH_OPT, DType, Role } from "../engine/abi.ts";
import { OPT_TINY_OPTIONS, writeTinyOpt } from "../tiny/opt.ts";
import type { Family, ModelSpec } from "./spec.ts";
import { lmHead, readWeight, type WeightTensor } from "./weight.ts";
import { boolField, type Config, configFail, idsField, intField } from "./fields.ts";
import { type CheckpointTensors } from "./safetensors.ts";
import { fromFloat32 } from "./half.ts";

/** config.json of an OPT model → spec. */
export function optSpec(cfg: Config, dir: string, generation: Config | null): ModelSpec {
  const act = cfg.activation_function ?? "relu";
  if (act !== "relu") configFail(dir, `unsupported activation_function ${JSON.stringify(act)} (OPT uses "relu")`);
  const numLayers = intField(dir, cfg, "num_hidden_layers");
  const hiddenSize = intField(dir, cfg, "hidden_size");
  const numHeads = intField(dir, cfg, "num_attention_heads");
  if (hiddenSize % numHeads !== 0) {
    configFail(dir, `hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`);
  }
  const preLayerNorm = boolField(dir, cfg, "do_layer_norm_before", true);
  const removeFinal = boolField(dir, cfg, "_remove_final_layer_norm", false);
  const enableBias = boolField(dir, cfg, "enable_bias", true);
  const eos = idsField(dir, generation ?? {}, "eos_token_id", idsField(dir, cfg, "eos_token_id", [2]));
  return {
    arch: "opt",
    numLayers,
    hiddenSize,
    numHeads,
    numKvHeads: numHeads,
    headDim: hiddenSize / numHeads,
    ffnDim: intField(dir, cfg, "ffn_dim"),
    vocabSize: intField(dir, cfg, "vocab_size"),
    maxPositions: intField(dir, cfg, "max_position_embeddings"),
    wordEmbedProjDim: intField(dir, cfg, "word_embed_proj_dim", hiddenSize),
    preLayerNorm,
    finalLayerNorm: preLayerNorm && !removeFinal,
    positionOffset: 2,
    norm: "layernorm",
    normEps: 1e-5,
    positions: "learned",
    rope: null,
    mlp: "relu",
    activation: "relu",
    // a missing bias or LN affine is loaded as zeros / ones (optWeights), so the engine sees every one
    biases: { qkv: true, o: true, mlp: true, norm: true },
    slidingWindow: null,
    tieWordEmbeddings: boolField(dir, cfg, "tie_word_embeddings", true),
    enableBias,
    layerNormAffine: boolField(dir, cfg, "layer_norm_elementwise_affine", true),
    bosTokenId: intField(dir, cfg, "bos_token_id", 2, 0),
    eosTokenId: eos[0]!,
    eosTokenIds: eos,
    padTokenId: intField(dir, cfg, "pad_token_id", 1, 0),
    torchDtype: typeof cfg.torch_dtype === "string" ? cfg.torch_dtype : null,
  };
}

/** Finds the prefix ("model.decoder." or "decoder.") the checkpoint uses. */
export function optPrefix(ckpt: CheckpointTensors): string {
  for (const p of ["model.decoder.", "decoder."]) if (ckpt.has(`${p}embed_tokens.weight`)) return p;
  throw new Error(
    `${ckpt.dir}: no OPT token embedding (looked for model.decoder.embed_tokens.weight and decoder.embed_tokens.weight)`,
  );
}

/**
 * Every tensor the engine needs, in load order, read from the checkpoint.
 * Throws naming the tensor when one is missing, has the wrong shape or an
 * unsupported dtype.
 */
export function* optWeights(spec: ModelSpec, ckpt: CheckpointTensors): Generator<WeightTensor> {
  const p = optPrefix(ckpt);
  const d = spec.hiddenSize;
  const e = spec.wordEmbedProjDim;

  const read = (name: string, role: number, layer: number, shape: number[]) => readWeight(ckpt, name, role, layer, shape);

  function filled(name: string, role: number, layer: number, n: number, value: number): WeightTensor {
    return { name, role, layer, shape: [n], dtype: DType.F32, data: fromFloat32(new Float32Array(n).fill(value), "F32") };
  }

  function bias(name: string, role: number, layer: number, n: number): WeightTensor {
    return spec.enableBias ? read(name, role, layer, [n]) : filled(`${name} (enable_bias=false: zeros)`, role, layer, n, 0);
  }

  function norm(name: string, roleW: number, roleB: number, layer: number): WeightTensor[] {
    if (!spec.layerNormAffine) {
      return [
        filled(`${name}.weight (not affine: ones)`, roleW, layer, d, 1),
        filled(`${name}.bias (not affine: zeros)`, roleB, layer, d, 0),
      ];
    }
    return [read(`${name}.weight`, roleW, layer, [d]), read(`${name}.bias`, roleB, layer, [d])];
  }

  const embed = read(`${p}embed_tokens.weight`, Role.EMBED_TOKENS, -1, [spec.vocabSize, e]);
  yield embed;
  yield read(`${p}embed_positions.weight`, Role.EMBED_POSITIONS, -1, [spec.maxPositions + spec.positionOffset, d]);
  if (e !== d) {
    yield read(`${p}project_in.weight`, Role.PROJECT_IN, -1, [d, e]);
    yield read(`${p}project_out.weight`, Role.PROJECT_OUT, -1, [e, d]);
  }
  if (spec.finalLayerNorm) yield* norm(`${p}final_layer_norm`, Role.FINAL_LN_W, Role.FINAL_LN_B, -1);
  yield lmHead(ckpt, embed, [spec.vocabSize, e], spec.tieWordEmbeddings);
  for (let l = 0; l < spec.numLayers; l++) {
    const q = `${p}layers.${l}.`;
    yield* norm(`${q}self_attn_layer_norm`, Role.ATTN_LN_W, Role.ATTN_LN_B, l);
    const proj: [string, number, number][] = [
      ["q_proj", Role.Q_W, Role.Q_B],
      ["k_proj", Role.K_W, Role.K_B],
      ["v_proj", Role.V_W, Role.V_B],
      ["out_proj", Role.O_W, Role.O_B],
    ];
    for (const [name, rw, rb] of proj) {
      yield read(`${q}self_attn.${name}.weight`, rw, l, [d, d]);
      yield bias(`${q}self_attn.${name}.bias`, rb, l, d);
    }
    yield* norm(`${q}final_layer_norm`, Role.MLP_LN_W, Role.MLP_LN_B, l);
    yield read(`${q}fc1.weight`, Role.FC1_W, l, [spec.ffnDim, d]);
    yield bias(`${q}fc1.bias`, Role.FC1_B, l, spec.ffnDim);
    yield read(`${q}fc2.weight`, Role.FC2_W, l, [d, spec.ffnDim]);
    yield bias(`${q}fc2.bias`, Role.FC2_B, l, d);
  }
}

export const optFamily: Family = {
  name: "OPT",
  modelTypes: ["opt"],
  abiArch: ARCH_OPT,
  spec: optSpec,
  weights: optWeights,
  bos: "always",
  // CUDA: parity with the CPU engine passed on an H200 (bench/RESULTS.md, 2026-11-29)
  cudaVerified: true,
  describe: (spec) => `OPT ${spec.preLayerNorm ? "pre" : "post"}-LN`,
  reference: "test/reference.ts",
  writeTiny: writeTinyOpt,
  tinyOptions: OPT_TINY_OPTIONS,
};
