/**
 * A random LLaMA-family checkpoint (the family's tiny-model writer,
 * lib/tiny/model.ts): Hugging Face's LlamaForCausalLM tensor names, RMSNorm, rotary
 * positions (optional scaling), grouped-query attention, SwiGLU, Qwen2's
 * q/k/v biases, and a real tokenizer in the model type's style
 * (lib/tiny/tokenizers.ts: Llama 3 for llama, SentencePiece for
 * mistral, Qwen2 for qwen2) with its chat template and
 * generation_config.json's EOS list.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeSafetensors, type WriteTensor } from "../checkpoint/safetensors_write.ts";
import { buildStyledTokenizer } from "./tokenizers.ts";
import { intOpt } from "../options.ts";
import type { TinyCommon, TinyModelOptions } from "./options.ts";
import { Rng, SAFETENSORS_DTYPE, tensorAdder } from "./random.ts";

/** writeTinyModel's options that only the LLaMA family reads. */
export const LLAMA_TINY_OPTIONS = ["kvHeads", "headDim", "ropeTheta", "ropeScaling", "slidingWindow"] as const;

/** Writes the folder for `model_type` llama, mistral or qwen2; returns the config written. */
export function writeTinyLlama(dir: string, modelType: string, c: TinyCommon, o: TinyModelOptions): Record<string, unknown> {
  const where = "tiny-model";
  const family = modelType as "llama" | "mistral" | "qwen2";
  if (o.headDim === undefined && c.hidden % c.heads !== 0) {
    throw new Error(`${where}: hidden (${c.hidden}) must be a multiple of heads (${c.heads})`);
  }
  const kvHeads = intOpt(where, "kvHeads", o.kvHeads, 1, c.heads, c.heads);
  if (c.heads % kvHeads !== 0) throw new Error(`${where}: kvHeads (${kvHeads}) must divide heads (${c.heads})`);
  const headDim = intOpt(where, "headDim", o.headDim, 2, 1024, Math.floor(c.hidden / c.heads));
  if (headDim % 2) throw new Error(`${where}: headDim must be even (rotary pairs), got ${headDim}`);
  const t = {
    family,
    seed: c.seed,
    dtype: c.dtype,
    layers: c.layers,
    hidden: c.hidden,
    heads: c.heads,
    kvHeads,
    headDim,
    explicitHeadDim: o.headDim !== undefined,
    ffn: c.ffn ?? 3 * c.hidden,
    merges: c.merges,
    vocab: c.vocab ?? null,
    maxPositions: c.maxPositions,
    tied: c.tied,
    scale: c.scale,
    ropeTheta: o.ropeTheta ?? 10000,
    ropeScaling: o.ropeScaling ?? null,
    slidingWindow: o.slidingWindow ?? null,
  };
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
