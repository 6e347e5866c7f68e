/**
 * The LLaMA family (family.ts): `model_type` "llama" (Llama 2/3, SmolLM),
 * "mistral" and "qwen2". One block: RMSNorm, rotary positions in Hugging
 * Face's rotate-half convention (`rope_theta`; `rope_scaling` types "linear"
 * and "llama3"), grouped-query attention (`num_key_value_heads`), SwiGLU MLP,
 * `head_dim` from the config when given, no biases except where the config
 * says (`attention_bias`, `mlp_bias`; Qwen2 always has q/k/v biases).
 *
 * Weights: `model.embed_tokens`, `model.layers.N.{input_layernorm,
 * self_attn.{q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj}`,
 * `model.norm`, `lm_head` (or the embedding when tied). The rotary
 * frequencies, scaling folded in, are computed here and handed to the engine
 * as one more tensor.
 *
 * Sliding window (Mistral, Qwen2 with `use_sliding_window`): attention is
 * exact while a sequence fits in the window; SkipDecoder.load refuses a
 * maxSeqLen beyond it and defaults to at most the window.
 *
 * EOS: generation_config.json's `eos_token_id` (an id or a list: Llama 3
 * lists several), else config.json's. BOS: as tokenizer_config.json says
 * (tokenizer.ts, rule "config"): Llama 3's post-processor adds
 * `<|begin_of_text|>`, Llama 2 and Mistral set `add_bos_token`, Qwen2 has none.
 */
import { ARCH_LLAMA, DType, Role } from "../engine/abi.ts";
import { LLAMA_TINY_OPTIONS, writeTinyLlama } from "../tiny/llama.ts";
import type { Family, ModelSpec, RopeSpec } from "./spec.ts";
import { lmHead, readWeight, type WeightTensor } from "./weight.ts";
import { boolField, type Config, configFail, idsField, intField, posField } from "./fields.ts";
import { type CheckpointTensors } from "./safetensors.ts";
import { fromFloat32 } from "./half.ts";

const MODEL_TYPES = ["llama", "mistral", "qwen2"] as const;
type LlamaType = (typeof MODEL_TYPES)[number];

function ropeSpec(cfg: Config, dir: string): RopeSpec {
  // transformers 4.x: rope_theta + rope_scaling; 5.x may put both in rope_parameters
  const params = (cfg.rope_scaling ?? cfg.rope_parameters ?? null) as Config | null;
  if (params !== null && (typeof params !== "object" || Array.isArray(params))) {
    configFail(dir, `field "rope_scaling" must be an object or null, got ${JSON.stringify(params)}`);
  }
  const theta = posField(dir, { rope_theta: cfg.rope_theta ?? params?.rope_theta }, "rope_theta", 10000);
  const type = params ? (params.rope_type ?? params.type ?? "default") : "default";
  if (type === "default") return { theta, scaling: null };
  const where = cfg.rope_scaling !== undefined ? "rope_scaling" : "rope_parameters";
  const num = (key: string, dflt?: number): number => {
    const v = params![key] ?? dflt;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      configFail(dir, `${where}.${key} must be a number > 0, got ${JSON.stringify(v ?? null)}`);
    }
    return v;
  };
  if (type === "linear") return { theta, scaling: { type: "linear", factor: num("factor") } };
  if (type === "llama3") {
    const s = {
      type: "llama3" as const,
      factor: num("factor"),
      lowFreqFactor: num("low_freq_factor"),
      highFreqFactor: num("high_freq_factor"),
      originalMaxPositions: num("original_max_position_embeddings"),
    };
    if (s.highFreqFactor <= s.lowFreqFactor) {
      configFail(dir, `${where}: high_freq_factor (${s.highFreqFactor}) must exceed low_freq_factor (${s.lowFreqFactor})`);
    }
    return { theta, scaling: s };
  }
  configFail(dir, `unsupported ${where} type ${JSON.stringify(type)} (skipdecode supports "linear" and "llama3")`);
}

/**
 * The rotary frequency of each pair of dims (i, i + headDim/2), scaling
 * folded in: inv_freq[i] = theta^(-2i/headDim), divided by the factor for
 * "linear"; "llama3" divides the low frequencies by the factor, keeps the high
 * ones and blends in between (Hugging Face's `_compute_llama3_parameters`).
 *
 * @example
 * ropeInvFreq(4, { theta: 10000, scaling: null }); // Float32Array [1, 0.01]
 */
export function ropeInvFreq(headDim: number, rope: RopeSpec): Float32Array {
  const half = headDim / 2;
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    let f = 1 / rope.theta ** ((2 * i) / headDim);
    const s = rope.scaling;
    if (s?.type === "linear") f /= s.factor;
    else if (s?.type === "llama3") {
      const lowWavelen = s.originalMaxPositions / s.lowFreqFactor;
      const highWavelen = s.originalMaxPositions / s.highFreqFactor;
      const wavelen = (2 * Math.PI) / f;
      if (wavelen > lowWavelen) f /= s.factor;
      else if (wavelen >= highWavelen) {
        const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        f = (1 - smooth) * (f / s.factor) + smooth * f;
      }
    }
    out[i] = f;
  }
  return out;
}

/** config.json of a llama / mistral / qwen2 model → spec. */
export function llamaSpec(cfg: Config, dir: string, generation: Config | null): ModelSpec {
  const arch = cfg.model_type as LlamaType;
  const act = cfg.hidden_act ?? "silu";
  if (act !== "silu") configFail(dir, `unsupported hidden_act ${JSON.stringify(act)} (the LLaMA family uses "silu")`);
  const hiddenSize = intField(dir, cfg, "hidden_size");
  const numHeads = intField(dir, cfg, "num_attention_heads");
  const numKvHeads = intField(dir, cfg, "num_key_value_heads", numHeads);
  if (numHeads % numKvHeads !== 0) {
    configFail(dir, `num_key_value_heads ${numKvHeads} does not divide num_attention_heads ${numHeads}`);
  }
  if (cfg.head_dim === undefined && hiddenSize % numHeads !== 0) {
    configFail(dir, `hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads} and head_dim is not given`);
  }
  const headDim = intField(dir, cfg, "head_dim", hiddenSize / numHeads);
  if (headDim % 2 !== 0) configFail(dir, `head_dim ${headDim} must be even for rotary positions`);
  const attnBias = boolField(dir, cfg, "attention_bias", false);
  const useWindow = arch === "mistral" || (arch === "qwen2" && boolField(dir, cfg, "use_sliding_window", false));
  const window = useWindow && cfg.sliding_window !== null && cfg.sliding_window !== undefined
    ? intField(dir, cfg, "sliding_window")
    : null;
  const eos = idsField(dir, generation ?? {}, "eos_token_id", idsField(dir, cfg, "eos_token_id", [2]));
  const bos = cfg.bos_token_id === null || cfg.bos_token_id === undefined ? null : intField(dir, cfg, "bos_token_id", 1, 0);
  return {
    arch,
    numLayers: intField(dir, cfg, "num_hidden_layers"),
    hiddenSize,
    numHeads,
    numKvHeads,
    headDim,
    ffnDim: intField(dir, cfg, "intermediate_size"),
    vocabSize: intField(dir, cfg, "vocab_size"),
    maxPositions: intField(dir, cfg, "max_position_embeddings", 2048),
    wordEmbedProjDim: hiddenSize,
    preLayerNorm: true,
    finalLayerNorm: true,
    positionOffset: 0,
    norm: "rmsnorm",
    normEps: posField(dir, cfg, "rms_norm_eps", 1e-6),
    positions: "rotary",
    rope: ropeSpec(cfg, dir),
    mlp: "swiglu",
    activation: "silu",
    biases: { qkv: arch === "qwen2" || attnBias, o: attnBias, mlp: boolField(dir, cfg, "mlp_bias", false), norm: false },
    slidingWindow: window,
    tieWordEmbeddings: boolField(dir, cfg, "tie_word_embeddings", false),
    enableBias: false,
    layerNormAffine: true,
    bosTokenId: bos,
    eosTokenId: eos[0]!,
    eosTokenIds: eos,
    padTokenId: typeof cfg.pad_token_id === "number" ? cfg.pad_token_id : null,
    torchDtype: typeof cfg.torch_dtype === "string" ? cfg.torch_dtype : null,
  };
}

/** Every tensor the engine needs, in load order. */
export function* llamaWeights(spec: ModelSpec, ckpt: CheckpointTensors): Generator<WeightTensor> {
  const d = spec.hiddenSize, f = spec.ffnDim, qd = spec.numHeads * spec.headDim, kd = spec.numKvHeads * spec.headDim;
  const p = ckpt.has("model.embed_tokens.weight") ? "model." : "";
  if (!ckpt.has(`${p}embed_tokens.weight`)) {
    throw new Error(`${ckpt.dir}: no token embedding (looked for model.embed_tokens.weight and embed_tokens.weight)`);
  }
  const read = (name: string, role: number, layer: number, shape: number[]) => readWeight(ckpt, name, role, layer, shape);
  const embed = read(`${p}embed_tokens.weight`, Role.EMBED_TOKENS, -1, [spec.vocabSize, d]);
  yield embed;
  const inv = ropeInvFreq(spec.headDim, spec.rope!);
  yield {
    name: `rotary inv_freq (rope_theta ${spec.rope!.theta}${spec.rope!.scaling ? `, ${spec.rope!.scaling.type} scaling` : ""})`,
    role: Role.ROPE_INV_FREQ,
    layer: -1,
    shape: [inv.length],
    dtype: DType.F32,
    data: fromFloat32(inv, "F32"),
    exact: true,
  };
  yield read(`${p}norm.weight`, Role.FINAL_LN_W, -1, [d]);
  yield lmHead(ckpt, embed, [spec.vocabSize, d], spec.tieWordEmbeddings);
  const b = spec.biases;
  for (let l = 0; l < spec.numLayers; l++) {
    const q = `${p}layers.${l}.`;
    yield read(`${q}input_layernorm.weight`, Role.ATTN_LN_W, l, [d]);
    const proj: [string, number, number, number, number, boolean][] = [
      ["q_proj", Role.Q_W, Role.Q_B, qd, d, b.qkv],
      ["k_proj", Role.K_W, Role.K_B, kd, d, b.qkv],
      ["v_proj", Role.V_W, Role.V_B, kd, d, b.qkv],
      ["o_proj", Role.O_W, Role.O_B, d, qd, b.o],
    ];
    for (const [name, rw, rb, rows, cols, hasBias] of proj) {
      yield read(`${q}self_attn.${name}.weight`, rw, l, [rows, cols]);
      if (hasBias) yield read(`${q}self_attn.${name}.bias`, rb, l, [rows]);
    }
    yield read(`${q}post_attention_layernorm.weight`, Role.MLP_LN_W, l, [d]);
    const mlp: [string, number, number, number, number][] = [
      ["gate_proj", Role.GATE_W, Role.GATE_B, f, d],
      ["up_proj", Role.FC1_W, Role.FC1_B, f, d],
      ["down_proj", Role.FC2_W, Role.FC2_B, d, f],
    ];
    for (const [name, rw, rb, rows, cols] of mlp) {
      yield read(`${q}mlp.${name}.weight`, rw, l, [rows, cols]);
      if (b.mlp) yield read(`${q}mlp.${name}.bias`, rb, l, [rows]);
    }
  }
}

export const llamaFamily: Family = {
  name: "LLaMA",
  modelTypes: MODEL_TYPES,
  abiArch: ARCH_LLAMA,
  spec: llamaSpec,
  weights: llamaWeights,
  bos: "config",
  // CUDA: the block (RMSNorm, rotary, SwiGLU, GQA) compiles but has never run on a GPU (docs/cuda.md)
  cudaVerified: false,
  describe: (spec) => `${spec.arch}, ${spec.numKvHeads} KV heads`,
  reference: "test/reference-llama.ts",
  writeTiny: writeTinyLlama,
  tinyOptions: LLAMA_TINY_OPTIONS,
};
