/**
 * A random OPT checkpoint (the OPT family's tiny-model writer, lib/tiny/model.ts):
 * Hugging Face's OPTForCausalLM tensor names under `model.decoder.` (or
 * `decoder.`), pre- or post-LN, optional project_in/out, and a real
 * byte-level BPE tokenizer with `</s>` prepended, trained on a small corpus.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeSafetensors, type WriteTensor } from "../checkpoint/safetensors_write.ts";
import { buildTinyTokenizerJson } from "./bpe.ts";
import { choiceOpt, intOpt } from "../options.ts";
import { TINY_DEFAULTS, type TinyCommon, type TinyModelOptions } from "./options.ts";
import { Rng, SAFETENSORS_DTYPE, tensorAdder } from "./random.ts";

/** writeTinyModel's options that only OPT reads. */
export const OPT_TINY_OPTIONS = ["variant", "embedDim", "prefix"] as const;

/** Writes the folder; returns the config written. */
export function writeTinyOpt(dir: string, _modelType: string, c: TinyCommon, o: TinyModelOptions): Record<string, unknown> {
  const where = "tiny-model";
  const { seed, dtype, layers, hidden, heads, merges, maxPositions, tied, scale } = c;
  if (hidden % heads !== 0) throw new Error(`${where}: hidden (${hidden}) must be a multiple of heads (${heads})`);
  const variant = choiceOpt(where, "variant", o.variant, ["pre", "post"] as const, TINY_DEFAULTS.variant);
  const ffn = c.ffn ?? 4 * hidden;
  const embedDim = intOpt(where, "embedDim", o.embedDim, 1, 16384, hidden);
  const vocab = c.vocab ?? Math.ceil((260 + merges) / 64) * 64;
  const prefix = choiceOpt(where, "prefix", o.prefix, ["model.decoder.", "decoder."] as const, TINY_DEFAULTS.prefix);
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
