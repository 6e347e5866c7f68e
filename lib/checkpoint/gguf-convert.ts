/**
 * `skipdecode convert DIR out.gguf --type f16|q8_0|q4_0|q4_k_m`: a LLaMA-family
 * model folder (llama, mistral, qwen2) → one GGUF file that llama.cpp opens
 * and `SkipDecoder.load` reads back, so a user hands the same file to both.
 *
 * What is written follows llama.cpp's convert_hf_to_gguf.py: architecture
 * `llama` for llama and mistral (their q/k rows permuted to llama.cpp's
 * interleaved rotary pairs), `qwen2` for qwen2 (no permutation); the
 * hyper-parameters under `<arch>.*`; Llama 3 rope scaling as a `rope_freqs`
 * tensor, linear scaling as `rope.scaling.*`; the tokenizer from the folder's
 * tokenizer.json (gguf-tokenizer.ts); tensor names token_embd, output_norm,
 * output (absent when tied), blk.N.*. 1-D tensors (norms, biases) are F32 in
 * every type, as llama.cpp writes them. OPT is refused: llama.cpp has no OPT
 * architecture (quantize an OPT folder on load instead).
 *
 * Types: f32, f16, bf16 store every matrix in that type; q8_0, q4_0 and
 * q4_k_m quantize the matrices by the rule of quant-plan.ts (llama-quantize's
 * mixes: Q4_K_M keeps the output and some attn_v/ffn_down in Q6_K; K-quants
 * need rows that are multiples of 256 and fall back otherwise, Q4_K to Q5_0
 * and Q6_K to Q8_0, and a matrix whose rows are not whole 32-blocks stays
 * F16; every fallback is in the report). The blocks are ggml's, written by
 * the engine library's quantizer (skd_quantize). Tensors are read, converted
 * and written one at a time, so converting needs memory for one tensor, not
 * the model.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { type ModelSpec, readModelSpec } from "./config.ts";
import { GgmlType, ggmlTypeName } from "./gguf.ts";
import { tokenizerToGguf } from "./gguf-tokenizer.ts";
import { type GgufWriteTensor, type GgufWriteValue, writeGgufFile } from "./gguf-writer.ts";
import { ggmlTypeOf } from "./gguf-model.ts";
import { planTensor, STORAGE_DTYPE } from "./quant-plan.ts";
import { fromFloat32, toFloat32 } from "./half.ts";
import { CheckpointTensors, type SafetensorsDtype } from "./safetensors.ts";
import { SkipTokenizer } from "./tokenizer.ts";
import { Role } from "../engine/abi.ts";
import { NativeBackend } from "../engine/native.ts";

/** File types `convert` writes. */
export const CONVERT_TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m"] as const;
export type ConvertType = (typeof CONVERT_TYPES)[number];

/** llama.h `llama_ftype` of each type (general.file_type). */
const FILE_TYPE: Record<ConvertType, number> = { f32: 0, f16: 1, bf16: 32, q8_0: 7, q4_0: 2, q4_k_m: 15 };

/** What {@link convertToGguf} wrote. */
export interface ConvertReport {
  path: string;
  type: ConvertType;
  /** GGUF architecture written. */
  arch: "llama" | "qwen2";
  /** Every tensor with its ggml type name. */
  tensors: { name: string; shape: number[]; type: string }[];
  /** Tensors stored in another type than asked, and why. */
  fellBack: { name: string; type: string; why: string }[];
  bytes: number;
}

/** Options of {@link convertToGguf}. */
export interface ConvertOptions {
  /** Default "f16". */
  type?: ConvertType;
  /** general.name (default: the folder's name). */
  name?: string;
}

/** q/k rows from rotate-half to llama.cpp's interleaved pairs, per head (convert_hf_to_gguf's permute). */
function permuteRows(data: Uint8Array, rows: number, rowBytes: number, heads: number): Uint8Array {
  const hd = rows / heads;
  const half = hd / 2;
  const out = new Uint8Array(data.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const src = h * hd + j * half + i;
        const dst = h * hd + 2 * i + j;
        out.set(data.subarray(src * rowBytes, (src + 1) * rowBytes), dst * rowBytes);
      }
    }
  }
  return out;
}

/** The per-pair rotary divisors llama.cpp wants for Llama 3 scaling (convert_hf_to_gguf's rope_freqs). */
function llama3Factors(spec: ModelSpec): Float32Array {
  const s = spec.rope!.scaling;
  if (s?.type !== "llama3") throw new Error("llama3Factors: not llama3 scaling");
  const d = spec.headDim;
  const out = new Float32Array(d / 2);
  const low = s.originalMaxPositions / s.lowFreqFactor;
  const high = s.originalMaxPositions / s.highFreqFactor;
  for (let i = 0; i < d / 2; i++) {
    const freq = 1 / spec.rope!.theta ** ((2 * i) / d);
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < high) out[i] = 1;
    else if (wavelen > low) out[i] = s.factor;
    else {
      const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      out[i] = 1 / ((1 - smooth) / s.factor + smooth);
    }
  }
  return out;
}

/**
 * Converts the model folder `dir` into the GGUF file `out` (module comment).
 * Throws, naming the folder, for models llama.cpp cannot run and for
 * tokenizers it cannot express; nothing is left at `out` on failure.
 *
 * @example
 * const r = await convertToGguf("models/tiny-llama", "/tmp/tiny-f16.gguf", { type: "f16" });
 * r.tensors.length;
 */
export async function convertToGguf(dir: string, out: string, opts: ConvertOptions = {}): Promise<ConvertReport> {
  const type = opts.type ?? "f16";
  if (!(CONVERT_TYPES as readonly string[]).includes(type)) throw new Error(`convert: unknown type "${type}" (supported: ${CONVERT_TYPES.join(", ")})`);
  const spec = readModelSpec(dir);
  if (spec.arch === "opt") {
    throw new Error(
      `convert: ${dir} is an OPT model, and llama.cpp has no OPT architecture: no GGUF of it would open there. ` +
        `To run it quantized, load the folder with a quantized dtype instead (SkipDecoder.load(dir, { dtype: "q8_0" }))`,
    );
  }
  const arch = spec.arch === "qwen2" ? "qwen2" : "llama";
  if (arch === "qwen2" && spec.headDim * spec.numHeads !== spec.hiddenSize) {
    throw new Error(`convert: ${dir}: llama.cpp's qwen2 needs head_dim × heads = hidden_size (${spec.headDim} × ${spec.numHeads} != ${spec.hiddenSize})`);
  }
  if (spec.biases.o && arch === "qwen2") throw new Error(`convert: ${dir}: llama.cpp's qwen2 has no attention output bias`);
  const tjPath = join(dir, "tokenizer.json");
  let tjText: string;
  try {
    tjText = readFileSync(tjPath, "utf8");
  } catch {
    throw new Error(`convert: ${dir} has no tokenizer.json; a GGUF file carries its vocabulary, and llama.cpp refuses one without`);
  }
  let tj: Record<string, unknown>;
  try {
    tj = JSON.parse(tjText) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`convert: ${tjPath} is not valid JSON (${(e as Error).message})`);
  }
  const tok = await SkipTokenizer.load(dir, { bos: "config" });
  const tokKv = tokenizerToGguf({ json: tj, tokenizer: tok, vocabRows: spec.vocabSize, eosIds: spec.eosTokenIds, source: tjPath });

  const a = arch;
  const kv: [string, GgufWriteValue][] = [
    ["general.architecture", { type: "string", value: a }],
    ["general.name", { type: "string", value: opts.name ?? basename(resolve(dir)) }],
    ["general.file_type", { type: "u32", value: FILE_TYPE[type] }],
    [`${a}.vocab_size`, { type: "u32", value: spec.vocabSize }],
    [`${a}.context_length`, { type: "u32", value: spec.maxPositions }],
    [`${a}.embedding_length`, { type: "u32", value: spec.hiddenSize }],
    [`${a}.block_count`, { type: "u32", value: spec.numLayers }],
    [`${a}.feed_forward_length`, { type: "u32", value: spec.ffnDim }],
    [`${a}.attention.head_count`, { type: "u32", value: spec.numHeads }],
    [`${a}.attention.head_count_kv`, { type: "u32", value: spec.numKvHeads }],
    [`${a}.attention.key_length`, { type: "u32", value: spec.headDim }],
    [`${a}.attention.value_length`, { type: "u32", value: spec.headDim }],
    [`${a}.rope.dimension_count`, { type: "u32", value: spec.headDim }],
    [`${a}.rope.freq_base`, { type: "f32", value: spec.rope!.theta }],
    [`${a}.attention.layer_norm_rms_epsilon`, { type: "f32", value: spec.normEps }],
  ];
  const scaling = spec.rope!.scaling;
  if (scaling?.type === "linear") {
    kv.push([`${a}.rope.scaling.type`, { type: "string", value: "linear" }], [`${a}.rope.scaling.factor`, { type: "f32", value: scaling.factor }]);
  }
  if (spec.slidingWindow !== null) kv.push([`${a}.attention.sliding_window`, { type: "u32", value: spec.slidingWindow }]);
  const quant = type === "q8_0" || type === "q4_0" || type === "q4_k_m" ? type : null;
  if (quant) kv.push(["general.quantization_version", { type: "u32", value: 2 }]);
  kv.push(...tokKv);

  const ckpt = CheckpointTensors.open(dir);
  try {
    const p = ckpt.has("model.embed_tokens.weight") ? "model." : "";
    const tensors: GgufWriteTensor[] = [];
    const report: ConvertReport = { path: out, type, arch, tensors: [], fellBack: [], bytes: 0 };
    const d = spec.hiddenSize, ff = spec.ffnDim, qd = spec.numHeads * spec.headDim, kd = spec.numKvHeads * spec.headDim;
    const permute = arch === "llama";
    const tied = !ckpt.has("lm_head.weight");
    const native = quant ? NativeBackend.get("cpu") : null;
    const add = (gguf: string, hf: string, shape: number[], role: number, layer: number, heads?: number) => {
      if (!ckpt.has(hf)) throw new Error(`convert: ${dir}: missing tensor ${hf}`);
      const info = ckpt.info(hf);
      if (info.shape.length !== shape.length || info.shape.some((v, i) => v !== shape[i])) {
        throw new Error(`convert: ${info.file}: tensor ${hf} has shape [${info.shape.join(", ")}], expected [${shape.join(", ")}] from config.json`);
      }
      if (!["F32", "F16", "BF16"].includes(info.dtype)) throw new Error(`convert: ${info.file}: tensor ${hf} has dtype ${info.dtype}; convert reads F32, F16 and BF16`);
      const matrix = shape.length === 2;
      const plan = quant ? planTensor(quant, { role, layer, numLayers: spec.numLayers, shape, tied }) : null;
      const q = plan && plan.type !== "float" ? STORAGE_DTYPE[plan.type] : null;
      // what is not quantized: vectors F32, matrices in the type asked (F16 in a quantized file, as llama.cpp)
      const gtype = q !== null ? ggmlTypeOf(q) : !matrix || type === "f32" ? GgmlType.F32 : type === "bf16" ? GgmlType.BF16 : GgmlType.F16;
      const target: SafetensorsDtype = gtype === GgmlType.F32 ? "F32" : gtype === GgmlType.BF16 ? "BF16" : "F16";
      const cols = matrix ? shape[1]! : 1;
      tensors.push({
        name: gguf,
        shape,
        type: gtype,
        data: () => {
          let bytes = ckpt.read(hf);
          if (q !== null) {
            const f32 = toFloat32(bytes, info.dtype);
            const rows = heads ? permuteRows(new Uint8Array(f32.buffer), shape[0]!, cols * 4, heads) : new Uint8Array(f32.buffer);
            return native!.quantize(q, new Float32Array(rows.buffer, rows.byteOffset, f32.length), shape[0]!, cols);
          }
          if (info.dtype !== target) bytes = fromFloat32(toFloat32(bytes, info.dtype), target);
          if (heads) bytes = permuteRows(bytes, shape[0]!, cols * (target === "F32" ? 4 : 2), heads);
          return bytes;
        },
      });
      report.tensors.push({ name: gguf, shape, type: ggmlTypeName(gtype) });
      if (plan?.fallback) report.fellBack.push({ name: gguf, type: ggmlTypeName(gtype), why: plan.fallback });
    };
    add("token_embd.weight", `${p}embed_tokens.weight`, [spec.vocabSize, d], Role.EMBED_TOKENS, -1);
    add("output_norm.weight", `${p}norm.weight`, [d], Role.FINAL_LN_W, -1);
    if (!tied) add("output.weight", "lm_head.weight", [spec.vocabSize, d], Role.LM_HEAD, -1);
    else if (!spec.tieWordEmbeddings) throw new Error(`convert: ${dir}: missing tensor lm_head.weight (config.json says tie_word_embeddings is false)`);
    if (scaling?.type === "llama3") {
      const f = llama3Factors(spec);
      tensors.push({ name: "rope_freqs.weight", shape: [f.length], type: GgmlType.F32, data: fromFloat32(f, "F32") });
      report.tensors.push({ name: "rope_freqs.weight", shape: [f.length], type: "F32" });
    }
    const b = spec.biases;
    for (let l = 0; l < spec.numLayers; l++) {
      const h = `${p}layers.${l}.`;
      const g = `blk.${l}.`;
      add(`${g}attn_norm.weight`, `${h}input_layernorm.weight`, [d], Role.ATTN_LN_W, l);
      const qkv: [string, string, number, number, number, number | undefined][] = [
        ["attn_q", "q_proj", qd, Role.Q_W, Role.Q_B, permute ? spec.numHeads : undefined],
        ["attn_k", "k_proj", kd, Role.K_W, Role.K_B, permute ? spec.numKvHeads : undefined],
        ["attn_v", "v_proj", kd, Role.V_W, Role.V_B, undefined],
      ];
      for (const [gn, hn, rows, rw, rb, heads] of qkv) {
        add(`${g}${gn}.weight`, `${h}self_attn.${hn}.weight`, [rows, d], rw, l, heads);
        if (b.qkv) add(`${g}${gn}.bias`, `${h}self_attn.${hn}.bias`, [rows], rb, l, heads);
      }
      add(`${g}attn_output.weight`, `${h}self_attn.o_proj.weight`, [d, qd], Role.O_W, l);
      if (b.o) add(`${g}attn_output.bias`, `${h}self_attn.o_proj.bias`, [d], Role.O_B, l);
      add(`${g}ffn_norm.weight`, `${h}post_attention_layernorm.weight`, [d], Role.MLP_LN_W, l);
      const mlp: [string, string, number, number, number, number][] = [
        ["ffn_gate", "gate_proj", ff, d, Role.GATE_W, Role.GATE_B],
        ["ffn_up", "up_proj", ff, d, Role.FC1_W, Role.FC1_B],
        ["ffn_down", "down_proj", d, ff, Role.FC2_W, Role.FC2_B],
      ];
      for (const [gn, hn, rows, cols, rw, rb] of mlp) {
        add(`${g}${gn}.weight`, `${h}mlp.${hn}.weight`, [rows, cols], rw, l);
        if (b.mlp) add(`${g}${gn}.bias`, `${h}mlp.${hn}.bias`, [rows], rb, l);
      }
    }
    writeGgufFile(out, kv, tensors);
    report.bytes = Bun.file(out).size;
    return report;
  } finally {
    ckpt.close();
  }
}
