/**
 * A GGUF (v3) writer for the llama.cpp peer of `bench llamacpp`: a LLaMA-family
 * safetensors folder (F16/BF16/F32) becomes the same weights in llama.cpp's
 * format, so both engines run identical numbers.
 *
 * Layout (ggml's gguf.md): magic "GGUF", version 3, tensor count, key/value
 * count; key/values (typed); tensor infos (name, dims with the fastest-varying
 * first, ggml type, offset into the data); padding to `general.alignment`
 * (32); the tensor data, each tensor aligned.
 *
 * Names and layout follow llama.cpp's convert_hf_to_gguf.py for LlamaModel:
 * token_embd, output_norm, output, blk.N.{attn_norm, attn_q, attn_k, attn_v,
 * attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}; 1-D norm weights in F32;
 * q and k rows permuted from Hugging Face's rotate-half order to llama.cpp's
 * interleaved rotary pairs (row 2i ← i, 2i+1 ← i + head_dim/2, per head).
 * The vocabulary is a SentencePiece-style placeholder (`<unk>`, `<s>`, `</s>`,
 * the 256 byte tokens, then "▁t<N>") of the model's vocab_size: the bench
 * feeds token ids, never text.
 */
import { closeSync, openSync, writeSync } from "node:fs";
import type { ModelSpec } from "../lib/checkpoint/config.ts";
import { CheckpointTensors } from "../lib/checkpoint/safetensors.ts";
import { toFloat32 } from "../lib/checkpoint/half.ts";

enum T {
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
}
const GGML_F32 = 0;
const GGML_F16 = 1;
const GGML_BF16 = 30;
const ALIGN = 32;

class Out {
  chunks: Uint8Array[] = [];
  size = 0;
  #push(b: Uint8Array) {
    this.chunks.push(b);
    this.size += b.length;
  }
  u32(v: number) {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v, true);
    this.#push(b);
  }
  i32(v: number) {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setInt32(0, v, true);
    this.#push(b);
  }
  u64(v: number) {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
    this.#push(b);
  }
  f32(v: number) {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.#push(b);
  }
  str(s: string) {
    const b = new TextEncoder().encode(s);
    this.u64(b.length);
    this.#push(b);
  }
  bytes(b: Uint8Array) {
    this.#push(b);
  }
}

type Value =
  | { t: T.U32; v: number }
  | { t: T.F32; v: number }
  | { t: T.STRING; v: string }
  | { t: T.BOOL; v: boolean }
  | { t: T.ARRAY; of: T.STRING | T.F32 | T.I32; v: (string | number)[] };

function writeValue(o: Out, val: Value) {
  o.u32(val.t);
  switch (val.t) {
    case T.U32:
      return o.u32(val.v);
    case T.F32:
      return o.f32(val.v);
    case T.BOOL:
      return o.bytes(new Uint8Array([val.v ? 1 : 0]));
    case T.STRING:
      return o.str(val.v);
    case T.ARRAY:
      o.u32(val.of);
      o.u64(val.v.length);
      for (const x of val.v) {
        if (val.of === T.STRING) o.str(x as string);
        else if (val.of === T.F32) o.f32(x as number);
        else o.i32(x as number);
      }
  }
}

interface Tensor {
  name: string;
  dims: number[]; // fastest-varying first
  type: number;
  data: Uint8Array;
}

/** q/k rows from rotate-half to interleaved pairs, per head (convert_hf_to_gguf's permute). */
function permuteRows(data: Uint8Array, rows: number, cols: number, heads: number, elemBytes: number): Uint8Array {
  const hd = rows / heads, half = hd / 2, rowBytes = cols * elemBytes;
  const out = new Uint8Array(data.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const src = h * hd + j * half + i, dst = h * hd + 2 * i + j;
        out.set(data.subarray(src * rowBytes, (src + 1) * rowBytes), dst * rowBytes);
      }
    }
  }
  return out;
}

/**
 * Writes `path` from the LLaMA-family model in `dir` (its spec given).
 * Matrices keep their dtype (F16 or BF16); F32 matrices and all vectors are
 * written as F32.
 *
 * @example
 * writeGguf(dir, readModelSpec(dir), "/tmp/model.gguf");
 */
export function writeGguf(dir: string, spec: ModelSpec, path: string): void {
  if (spec.positions !== "rotary" || spec.mlp !== "swiglu") throw new Error(`writeGguf: ${dir} is not a LLaMA-family model`);
  const ckpt = CheckpointTensors.open(dir);
  try {
    const tensors: Tensor[] = [];
    const add = (gguf: string, hf: string, permuteHeads = 0) => {
      const info = ckpt.info(hf);
      let data = ckpt.read(hf);
      let type = info.dtype === "F16" ? GGML_F16 : info.dtype === "BF16" ? GGML_BF16 : GGML_F32;
      if (info.shape.length === 1 && type !== GGML_F32) {
        data = new Uint8Array(toFloat32(data, info.dtype).buffer);
        type = GGML_F32;
      }
      if (permuteHeads) data = permuteRows(data, info.shape[0]!, info.shape[1]!, permuteHeads, type === GGML_F32 ? 4 : 2);
      tensors.push({ name: gguf, dims: [...info.shape].reverse(), type, data });
    };
    add("token_embd.weight", "model.embed_tokens.weight");
    add("output_norm.weight", "model.norm.weight");
    add("output.weight", ckpt.has("lm_head.weight") ? "lm_head.weight" : "model.embed_tokens.weight");
    for (let l = 0; l < spec.numLayers; l++) {
      const p = `model.layers.${l}.`;
      add(`blk.${l}.attn_norm.weight`, `${p}input_layernorm.weight`);
      add(`blk.${l}.attn_q.weight`, `${p}self_attn.q_proj.weight`, spec.numHeads);
      add(`blk.${l}.attn_k.weight`, `${p}self_attn.k_proj.weight`, spec.numKvHeads);
      add(`blk.${l}.attn_v.weight`, `${p}self_attn.v_proj.weight`);
      add(`blk.${l}.attn_output.weight`, `${p}self_attn.o_proj.weight`);
      add(`blk.${l}.ffn_norm.weight`, `${p}post_attention_layernorm.weight`);
      add(`blk.${l}.ffn_gate.weight`, `${p}mlp.gate_proj.weight`);
      add(`blk.${l}.ffn_up.weight`, `${p}mlp.up_proj.weight`);
      add(`blk.${l}.ffn_down.weight`, `${p}mlp.down_proj.weight`);
    }
    const V = spec.vocabSize;
    const tokens: string[] = ["<unk>", "<s>", "</s>"];
    const types: number[] = [2, 3, 3];
    for (let b = 0; b < 256; b++) {
      tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
      types.push(6);
    }
    while (tokens.length < V) {
      tokens.push(`▁t${tokens.length}`);
      types.push(1);
    }
    const kv: [string, Value][] = [
      ["general.architecture", { t: T.STRING, v: "llama" }],
      ["general.name", { t: T.STRING, v: "skipdecode bench model" }],
      ["general.alignment", { t: T.U32, v: ALIGN }],
      ["general.file_type", { t: T.U32, v: 1 }],
      ["llama.context_length", { t: T.U32, v: spec.maxPositions }],
      ["llama.embedding_length", { t: T.U32, v: spec.hiddenSize }],
      ["llama.block_count", { t: T.U32, v: spec.numLayers }],
      ["llama.feed_forward_length", { t: T.U32, v: spec.ffnDim }],
      ["llama.attention.head_count", { t: T.U32, v: spec.numHeads }],
      ["llama.attention.head_count_kv", { t: T.U32, v: spec.numKvHeads }],
      ["llama.attention.key_length", { t: T.U32, v: spec.headDim }],
      ["llama.attention.value_length", { t: T.U32, v: spec.headDim }],
      ["llama.rope.dimension_count", { t: T.U32, v: spec.headDim }],
      ["llama.rope.freq_base", { t: T.F32, v: spec.rope!.theta }],
      ["llama.attention.layer_norm_rms_epsilon", { t: T.F32, v: spec.normEps }],
      ["llama.vocab_size", { t: T.U32, v: V }],
      ["tokenizer.ggml.model", { t: T.STRING, v: "llama" }],
      ["tokenizer.ggml.tokens", { t: T.ARRAY, of: T.STRING, v: tokens }],
      ["tokenizer.ggml.scores", { t: T.ARRAY, of: T.F32, v: tokens.map((_, i) => -i) }],
      ["tokenizer.ggml.token_type", { t: T.ARRAY, of: T.I32, v: types }],
      ["tokenizer.ggml.unknown_token_id", { t: T.U32, v: 0 }],
      ["tokenizer.ggml.bos_token_id", { t: T.U32, v: 1 }],
      ["tokenizer.ggml.eos_token_id", { t: T.U32, v: 2 }],
      ["tokenizer.ggml.add_bos_token", { t: T.BOOL, v: false }],
    ];
    const head = new Out();
    head.bytes(new TextEncoder().encode("GGUF"));
    head.u32(3);
    head.u64(tensors.length);
    head.u64(kv.length);
    for (const [k, v] of kv) {
      head.str(k);
      writeValue(head, v);
    }
    let offset = 0;
    const offsets: number[] = [];
    for (const t of tensors) {
      head.str(t.name);
      head.u32(t.dims.length);
      for (const d of t.dims) head.u64(d);
      head.u32(t.type);
      head.u64(offset);
      offsets.push(offset);
      offset += Math.ceil(t.data.length / ALIGN) * ALIGN;
    }
    const fd = openSync(path, "w");
    try {
      for (const c of head.chunks) writeSync(fd, c);
      const pad = (n: number) => (n % ALIGN ? writeSync(fd, new Uint8Array(ALIGN - (n % ALIGN))) : 0);
      pad(head.size);
      for (const t of tensors) {
        writeSync(fd, t.data);
        pad(t.data.length);
      }
    } finally {
      closeSync(fd);
    }
  } finally {
    ckpt.close();
  }
}
