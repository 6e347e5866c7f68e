/**
 * Deterministic random checkpoints for tests, demos and benchmarks — OPT, or
 * a LLaMA-family model (llama, mistral, qwen2): config.json,
 * model.safetensors and a real tokenizer.json trained on a small corpus —
 * OPT's byte-level BPE with `</s>`; for llama a Llama 3-style, for mistral a
 * SentencePiece-style (Llama 2 / Mistral) and for qwen2 a Qwen2-style one
 * (checkpoint/tiny-tokenizers.ts), with generation_config.json's EOS list.
 * The same options always write the same bytes.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildTinyTokenizerJson } from "./checkpoint/tokenizer.ts";
import { buildStyledTokenizer } from "./checkpoint/tiny-tokenizers.ts";
import { fromFloat32, writeSafetensors, type WriteTensor } from "./checkpoint/safetensors.ts";
import { checkKeys, choiceOpt, intOpt } from "./options.ts";

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

const SAFETENSORS_DTYPE = { float32: "F32", float16: "F16", bfloat16: "BF16" } as const;

/** A small, fast, seeded PRNG (mulberry32) with a Box–Muller normal. */
export class Rng {
  #s: number;
  #spare: number | null = null;
  constructor(seed: number) {
    this.#s = (seed ^ 0x9e3779b9) >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Standard normal. */
  normal(): number {
    if (this.#spare !== null) {
      const s = this.#spare;
      this.#spare = null;
      return s;
    }
    const u = Math.max(this.next(), 1e-12);
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.#spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
}

/** add(name, shape, gen): a tensor of `gen()` values, stored as `st`, appended to `tensors`. */
function tensorAdder(tensors: WriteTensor[], st: "F32" | "F16" | "BF16") {
  return (name: string, shape: number[], gen: () => number): void => {
    const n = shape.reduce((a, b) => a * b, 1);
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) v[i] = gen();
    tensors.push({ name, dtype: st, shape, data: fromFloat32(v, st) });
  };
}

/**
 * Writes a random OPT model folder. Returns the config written.
 *
 * @example
 * writeTinyModel("/tmp/tiny", { seed: 1, variant: "post", dtype: "bfloat16", layers: 3 });
 */
export function writeTinyModel(dir: string, opts?: TinyModelOptions): Record<string, unknown> {
  const where = "tiny-model";
  const o = checkKeys(
    where,
    opts,
    Object.keys(TINY_DEFAULTS).concat(["ffn", "embedDim", "vocab", "kvHeads", "headDim", "ropeTheta", "ropeScaling", "slidingWindow"]),
  );
  const seed = intOpt(where, "seed", o.seed, 0, 2 ** 31 - 1, TINY_DEFAULTS.seed);
  const family = choiceOpt(where, "family", o.family, ["opt", "llama", "mistral", "qwen2"] as const, TINY_DEFAULTS.family);
  const variant = choiceOpt(where, "variant", o.variant, ["pre", "post"] as const, TINY_DEFAULTS.variant);
  const dtype = choiceOpt(where, "dtype", o.dtype, ["float32", "float16", "bfloat16"] as const, TINY_DEFAULTS.dtype);
  const layers = intOpt(where, "layers", o.layers, 1, 256, TINY_DEFAULTS.layers);
  const heads = intOpt(where, "heads", o.heads, 1, 256, TINY_DEFAULTS.heads);
  const hidden = intOpt(where, "hidden", o.hidden, 1, 16384, TINY_DEFAULTS.hidden);
  if (o.headDim === undefined && hidden % heads !== 0) {
    throw new Error(`${where}: hidden (${hidden}) must be a multiple of heads (${heads})`);
  }
  const ffn = intOpt(where, "ffn", o.ffn, 1, 65536, 4 * hidden);
  const embedDim = intOpt(where, "embedDim", o.embedDim, 1, 16384, hidden);
  const merges = intOpt(where, "merges", o.merges, 0, 5000, TINY_DEFAULTS.merges);
  const tokSize = 260 + merges;
  const vocab = intOpt(where, "vocab", o.vocab, tokSize, 1 << 20, Math.ceil(tokSize / 64) * 64);
  const maxPositions = intOpt(where, "maxPositions", o.maxPositions, 1, 1 << 16, TINY_DEFAULTS.maxPositions);
  const tied = o.tiedHead ?? TINY_DEFAULTS.tiedHead;
  const prefix = choiceOpt(where, "prefix", o.prefix, ["model.decoder.", "decoder."] as const, TINY_DEFAULTS.prefix);
  const scale = o.scale ?? TINY_DEFAULTS.scale;

  if (family !== "opt") {
    if (o.variant !== undefined || o.embedDim !== undefined || o.prefix !== undefined) {
      throw new Error(`${where}: variant, embedDim and prefix are OPT options (family is ${family})`);
    }
    const kvHeads = intOpt(where, "kvHeads", o.kvHeads, 1, heads, heads);
    if (heads % kvHeads !== 0) throw new Error(`${where}: kvHeads (${kvHeads}) must divide heads (${heads})`);
    const headDim = intOpt(where, "headDim", o.headDim, 2, 1024, Math.floor(hidden / heads));
    if (headDim % 2) throw new Error(`${where}: headDim must be even (rotary pairs), got ${headDim}`);
    return writeTinyLlama(dir, {
      family, seed, dtype, layers, hidden, heads, kvHeads, headDim, ffn: intOpt(where, "ffn", o.ffn, 1, 65536, 3 * hidden),
      merges, vocab: o.vocab === undefined ? null : vocab, maxPositions, tied, scale,
      ropeTheta: o.ropeTheta ?? 10000, ropeScaling: o.ropeScaling ?? null, slidingWindow: o.slidingWindow ?? null,
      explicitHeadDim: o.headDim !== undefined,
    });
  }
  for (const k of ["kvHeads", "headDim", "ropeTheta", "ropeScaling", "slidingWindow"] as const) {
    if (o[k] !== undefined) throw new Error(`${where}: ${k} is a LLaMA-family option (family is opt)`);
  }
  const rng = new Rng(seed);
  const st = SAFETENSORS_DTYPE[dtype];
  const tensors: WriteTensor[] = [];
  const add = tensorAdder(tensors, st);
  const w = (fanIn: number) => () => (rng.normal() * scale * 8) / Math.sqrt(fanIn);
  const small = () => rng.normal() * scale * 0.2;
  const gain = () => 1 + rng.normal() * 0.1;
  const p = prefix;

  add(`${p}embed_tokens.weight`, [vocab, embedDim], () => rng.normal() * scale * 4);
  add(`${p}embed_positions.weight`, [maxPositions + 2, hidden], () => rng.normal() * scale * 2);
  if (embedDim !== hidden) {
    add(`${p}project_in.weight`, [hidden, embedDim], w(embedDim));
    add(`${p}project_out.weight`, [embedDim, hidden], w(hidden));
  }
  if (variant === "pre") {
    add(`${p}final_layer_norm.weight`, [hidden], gain);
    add(`${p}final_layer_norm.bias`, [hidden], small);
  }
  for (let l = 0; l < layers; l++) {
    const q = `${p}layers.${l}.`;
    add(`${q}self_attn_layer_norm.weight`, [hidden], gain);
    add(`${q}self_attn_layer_norm.bias`, [hidden], small);
    for (const proj of ["q_proj", "k_proj", "v_proj", "out_proj"]) {
      add(`${q}self_attn.${proj}.weight`, [hidden, hidden], w(hidden));
      add(`${q}self_attn.${proj}.bias`, [hidden], small);
    }
    add(`${q}final_layer_norm.weight`, [hidden], gain);
    add(`${q}final_layer_norm.bias`, [hidden], small);
    add(`${q}fc1.weight`, [ffn, hidden], w(hidden));
    add(`${q}fc1.bias`, [ffn], small);
    add(`${q}fc2.weight`, [hidden, ffn], w(ffn));
    add(`${q}fc2.bias`, [hidden], small);
  }
  if (!tied) add("lm_head.weight", [vocab, embedDim], () => rng.normal() * scale * 4);

  const config = {
    architectures: ["OPTForCausalLM"],
    model_type: "opt",
    num_hidden_layers: layers,
    hidden_size: hidden,
    num_attention_heads: heads,
    ffn_dim: ffn,
    vocab_size: vocab,
    max_position_embeddings: maxPositions,
    word_embed_proj_dim: embedDim,
    do_layer_norm_before: variant === "pre",
    _remove_final_layer_norm: false,
    activation_function: "relu",
    enable_bias: true,
    layer_norm_elementwise_affine: true,
    tie_word_embeddings: tied,
    bos_token_id: 2,
    eos_token_id: 2,
    pad_token_id: 1,
    torch_dtype: dtype,
    skipdecode_tiny: { seed, variant, merges },
  };
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "config.json"), JSON.stringify(config, null, 2) + "\n");
  writeSafetensors(join(dir, "model.safetensors"), tensors, { format: "pt" });
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(buildTinyTokenizerJson({ numMerges: merges })));
  writeFileSync(
    join(dir, "tokenizer_config.json"),
    JSON.stringify({ tokenizer_class: "GPT2Tokenizer", bos_token: "</s>", eos_token: "</s>", unk_token: "<unk>", pad_token: "<pad>", add_bos_token: true, model_max_length: maxPositions }, null, 2) + "\n",
  );
  return config;
}

interface TinyLlama {
  family: "llama" | "mistral" | "qwen2";
  seed: number;
  dtype: "float32" | "float16" | "bfloat16";
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  explicitHeadDim: boolean;
  ffn: number;
  merges: number;
  /** null: the tokenizer's size rounded up to a multiple of 64 */
  vocab: number | null;
  maxPositions: number;
  tied: boolean;
  scale: number;
  ropeTheta: number;
  ropeScaling: TinyModelOptions["ropeScaling"] | null;
  slidingWindow: number | null;
}

/** A random LLaMA-family folder (Hugging Face's LlamaForCausalLM names). */
function writeTinyLlama(dir: string, t: TinyLlama): Record<string, unknown> {
  const style = ({ llama: "llama3", mistral: "sentencepiece", qwen2: "qwen2" } as const)[t.family];
  const tk = buildStyledTokenizer(style, t.merges);
  const vocab = t.vocab ?? Math.ceil(tk.size / 64) * 64;
  if (vocab < tk.size) throw new Error(`tiny-model: vocab (${vocab}) must be at least the tokenizer's ${tk.size} ids`);
  const rng = new Rng(t.seed);
  const st = SAFETENSORS_DTYPE[t.dtype];
  const tensors: WriteTensor[] = [];
  const add = tensorAdder(tensors, st);
  const w = (fanIn: number) => () => (rng.normal() * t.scale * 8) / Math.sqrt(fanIn);
  const small = () => rng.normal() * t.scale * 0.2;
  const gain = () => 1 + rng.normal() * 0.1;
  const d = t.hidden, qd = t.heads * t.headDim, kd = t.kvHeads * t.headDim;
  const qkvBias = t.family === "qwen2";
  add("model.embed_tokens.weight", [vocab, d], () => rng.normal() * t.scale * 4);
  add("model.norm.weight", [d], gain);
  for (let l = 0; l < t.layers; l++) {
    const q = `model.layers.${l}.`;
    add(`${q}input_layernorm.weight`, [d], gain);
    for (const [name, rows] of [["q_proj", qd], ["k_proj", kd], ["v_proj", kd]] as const) {
      add(`${q}self_attn.${name}.weight`, [rows, d], w(d));
      if (qkvBias) add(`${q}self_attn.${name}.bias`, [rows], small);
    }
    add(`${q}self_attn.o_proj.weight`, [d, qd], w(qd));
    add(`${q}post_attention_layernorm.weight`, [d], gain);
    add(`${q}mlp.gate_proj.weight`, [t.ffn, d], w(d));
    add(`${q}mlp.up_proj.weight`, [t.ffn, d], w(d));
    add(`${q}mlp.down_proj.weight`, [d, t.ffn], w(t.ffn));
  }
  if (!t.tied) add("lm_head.weight", [vocab, d], () => rng.normal() * t.scale * 4);
  const s = t.ropeScaling;
  const config: Record<string, unknown> = {
    architectures: [{ llama: "LlamaForCausalLM", mistral: "MistralForCausalLM", qwen2: "Qwen2ForCausalLM" }[t.family]],
    model_type: t.family,
    num_hidden_layers: t.layers,
    hidden_size: d,
    intermediate_size: t.ffn,
    num_attention_heads: t.heads,
    num_key_value_heads: t.kvHeads,
    ...(t.explicitHeadDim ? { head_dim: t.headDim } : {}),
    hidden_act: "silu",
    vocab_size: vocab,
    max_position_embeddings: t.maxPositions,
    rms_norm_eps: 1e-6,
    rope_theta: t.ropeTheta,
    rope_scaling: !s
      ? null
      : s.type === "linear"
        ? { rope_type: "linear", factor: s.factor }
        : {
            rope_type: "llama3",
            factor: s.factor,
            low_freq_factor: s.lowFreqFactor,
            high_freq_factor: s.highFreqFactor,
            original_max_position_embeddings: s.originalMaxPositions,
          },
    ...(t.family === "mistral" ? { sliding_window: t.slidingWindow } : {}),
    tie_word_embeddings: t.tied,
    bos_token_id: tk.bosId,
    eos_token_id: tk.eosId,
    torch_dtype: t.dtype,
    skipdecode_tiny: { seed: t.seed, merges: t.merges },
  };
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "config.json"), JSON.stringify(config, null, 2) + "\n");
  writeSafetensors(join(dir, "model.safetensors"), tensors, { format: "pt" });
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(tk.json));
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(tk.config, null, 2) + "\n");
  writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ bos_token_id: tk.bosId, eos_token_id: tk.eosIds }, null, 2) + "\n");
  return config;
}
