/**
 * Builds a native engine from a model folder: creates it for the model's
 * shape, copies every tensor in (converting dtypes as asked, or quantizing
 * them by the rule of lib/checkpoint/quant-plan.ts) and finalizes. Runs on the
 * engine thread (lib/engine/worker.ts), so loading a large checkpoint never
 * blocks the caller's event loop (docs/DESIGN.md, "Threads").
 */
import type { ModelSpec } from "../checkpoint/config.ts";
import { modelConfig } from "../checkpoint/family.ts";
import { findNonFinite } from "../checkpoint/finite.ts";
import { fromFloat32, toFloat32 } from "../checkpoint/half.ts";
import { planTensor, type Quantization, STORAGE_DTYPE } from "../checkpoint/quant-plan.ts";
import { openTensorSource } from "../checkpoint/source.ts";
import type { WeightTensor } from "../checkpoint/weight.ts";
import { type BackendName, chooseBackend, NativeBackend, type NativeEngine } from "./native.ts";
import { Cfg, DType, type DTypeCode, DTYPE_NAMES, isQuantized } from "./abi.ts";
import { KV_DTYPE_CODES, type KvDType } from "./kv.ts";

/**
 * Weight dtype the engine keeps: "auto" = the checkpoint's own; "q8_0",
 * "q4_0", "q4_k" quantize the matrices on load (lib/checkpoint/quant-plan.ts).
 */
export type WeightDType = "auto" | "float32" | "float16" | "bfloat16" | "q8_0" | "q4_0" | "q4_k";
export const WEIGHT_DTYPES: readonly WeightDType[] = ["auto", "float32", "float16", "bfloat16", "q8_0", "q4_0", "q4_k"];

/** How one tensor ended up in the engine. */
export interface StoredTensor {
  name: string;
  /** skd_tensor role (native.ts Role) and layer (-1: global). */
  role: number;
  layer: number;
  shape: number[];
  /** Element type as stored: "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q5_0", "Q4_K", "Q6_K" (Q5_0: Q4_K's fallback, or a GGUF file's). */
  type: string;
  bytes: number;
  /** Why a quantized type fell back to another (quant-plan.ts), or null. */
  fallback: string | null;
}

/** What a load stored: every tensor's type, totals per type, the fallbacks, and a backend note. */
export interface LoadSummary {
  dtype: WeightDType;
  tensors: StoredTensor[];
  /** Tensors and bytes per stored type. */
  byType: Record<string, { tensors: number; bytes: number }>;
  /** The tensors whose requested quantized type did not fit their shape. */
  fallbacks: { name: string; shape: number[]; type: string; reason: string }[];
  /** What the backend did beyond storing (CUDA: quantized weights dequantized on load), or null. */
  note: string | null;
}

/**
 * The load summary as lines of text (what the CLI prints).
 *
 * @example
 * console.log(describeLoad(dec.loadSummary).join("\n"));
 */
export function describeLoad(s: LoadSummary): string[] {
  const types = Object.entries(s.byType)
    .map(([t, v]) => `${t} ${v.tensors} tensor${v.tensors === 1 ? "" : "s"} (${(v.bytes / 2 ** 20).toFixed(1)} MiB)`)
    .join(", ");
  const lines = [`weights (dtype ${s.dtype}): ${types}`];
  if (s.fallbacks.length) {
    // grouped by outcome: a model's fallbacks are mostly one shape repeated over its layers
    const groups = new Map<string, string[]>();
    for (const f of s.fallbacks) {
      const key = `${f.type}: ${f.reason}`;
      groups.set(key, [...(groups.get(key) ?? []), `${f.name} [${f.shape.join(", ")}]`]);
    }
    lines.push(`${s.fallbacks.length} tensor${s.fallbacks.length === 1 ? "" : "s"} fell back to another type:`);
    for (const [key, names] of groups) {
      const shown = names.slice(0, 4).join(", ") + (names.length > 4 ? `, and ${names.length - 4} more` : "");
      lines.push(`  ${names.length} -> ${key}: ${shown}`);
    }
  }
  if (s.note) lines.push(s.note);
  return lines;
}

/** What the engine is built with (the validated load options). */
export interface EngineOptions {
  backend: BackendName | "auto";
  dtype: WeightDType;
  maxBatch: number;
  maxSeqLen: number;
  threads: number;
  maxBatchTokens: number;
  /** Scan every tensor for NaN/Inf before it is copied in. */
  checkWeights: boolean;
  /** KV storage (default: the backend's, float16 on the CPU); lib/engine/kv.ts. */
  kvDtype?: KvDType;
  /** Blocks in the KV pool (default 0: every slot at full depth and length). */
  kvBlocks?: number;
  /** Positions per KV block (default 0: the engine's, 16). */
  kvBlockSize?: number;
}

/** Whether every F32 value in `data` is finite and within float16's range. */
function fitsFloat16(data: Uint8Array): boolean {
  const f = toFloat32(data, "F32");
  for (let i = 0; i < f.length; i++) if (!(Math.abs(f[i]!) <= 65504)) return false;
  return true;
}

const FLOAT_CODES: Record<"float32" | "float16" | "bfloat16", DTypeCode> = {
  float32: DType.F32,
  float16: DType.F16,
  bfloat16: DType.BF16,
};
const SAFETENSORS_NAMES = { [DType.F32]: "F32", [DType.F16]: "F16", [DType.BF16]: "BF16" } as const;
type FloatCode = keyof typeof SAFETENSORS_NAMES;

function isQuantization(d: WeightDType): d is Quantization & WeightDType {
  return d === "q8_0" || d === "q4_0" || d === "q4_k";
}

/**
 * Quantizes a float tensor as the plan says, or returns null when the plan
 * leaves it unquantized. `reuse` holds the last quantized tensor, so a tied
 * LM head is not quantized twice. The CPU library quantizes whatever the
 * engine (its skd_quantize splits a tensor across the cores; the bytes are the
 * same on every backend).
 */
function quantizeTensor(
  native: NativeBackend,
  q: Quantization,
  t: WeightTensor,
  ctx: { numLayers: number; tied: boolean; dir: string },
  reuse: Map<Uint8Array, { type: DTypeCode; bytes: Uint8Array }>,
): { dtype: DTypeCode; data: Uint8Array; fallback: string | null } | null {
  if (isQuantized(t.dtype)) return null; // already quantized (a GGUF tensor): kept as it is
  const plan = planTensor(q, { role: t.role, layer: t.layer, numLayers: ctx.numLayers, shape: t.shape, tied: ctx.tied });
  if (plan.type === "float") return plan.fallback ? { dtype: t.dtype, data: t.data, fallback: plan.fallback } : null;
  const code = STORAGE_DTYPE[plan.type];
  const seen = reuse.get(t.data);
  if (seen && seen.type === code) return { dtype: code, data: seen.bytes, fallback: plan.fallback };
  const [rows, cols] = t.shape as [number, number];
  let bytes: Uint8Array;
  try {
    bytes = native.quantize(code, toFloat32(t.data, SAFETENSORS_NAMES[t.dtype as FloatCode]), rows, cols);
  } catch (e) {
    throw new Error(`${ctx.dir}: quantizing ${t.name} to ${DTYPE_NAMES[code]}: ${(e as Error).message}`);
  }
  reuse.clear();
  reuse.set(t.data, { type: code, bytes });
  return { dtype: code, data: bytes, fallback: plan.fallback };
}

/** The backend's note on quantized weights (the CUDA engine dequantizes them on load). */
export function backendNote(backend: BackendName, summary: LoadSummary): string | null {
  const quant = summary.tensors.some((t) => t.type.startsWith("Q"));
  if (backend !== "cuda" || !quant) return null;
  return "CUDA: quantized tensors were dequantized to fp16 in host code on load (no quantized CUDA kernels yet): the GPU holds and reads 2 bytes per weight";
}

/** Most rows one native step carries for these options. */
export function maxStepRows(o: Pick<EngineOptions, "maxBatch" | "maxBatchTokens">): number {
  return Math.max(o.maxBatchTokens, o.maxBatch);
}

/**
 * Creates, fills and finalizes an engine for the model at `dir` (a folder or
 * a GGUF file: lib/checkpoint/source.ts). Throws (after freeing what it made)
 * with a message naming the folder or file and the tensor. When `summary`
 * is given, it receives what was stored (LoadSummary).
 *
 * @example
 * const engine = buildEngine(dir, readModelSpec(dir), { backend: "cpu", dtype: "auto", maxBatch: 8, maxSeqLen: 512, threads: 0, maxBatchTokens: 512 });
 */
export function buildEngine(dir: string, spec: ModelSpec, options: EngineOptions, summary?: LoadSummary): NativeEngine {
  const native = chooseBackend(options.backend);
  const quant = isQuantization(options.dtype) ? options.dtype : null;
  const quantizer = quant ? NativeBackend.get("cpu") : null;
  const want = options.dtype === "auto" || quant ? null : FLOAT_CODES[options.dtype as keyof typeof FLOAT_CODES];
  const empty: LoadSummary = { dtype: options.dtype, tensors: [], byType: {}, fallbacks: [], note: null };
  const stored: LoadSummary = summary ? Object.assign(summary, empty) : empty;
  const reuse = new Map<Uint8Array, { type: DTypeCode; bytes: Uint8Array }>();
  const cfg = modelConfig(spec); // the model's slots, family descriptor included
  cfg[Cfg.MAX_SLOTS] = options.maxBatch;
  cfg[Cfg.MAX_SEQ] = options.maxSeqLen;
  cfg[Cfg.MAX_ROWS] = maxStepRows(options);
  cfg[Cfg.THREADS] = options.threads;
  cfg[Cfg.COMPUTE_DTYPE] = want === DType.F16 || want === DType.BF16 ? want : 0;
  cfg[Cfg.KV_DTYPE] = options.kvDtype ? KV_DTYPE_CODES[options.kvDtype] : 0;
  cfg[Cfg.KV_BLOCKS] = options.kvBlocks ?? 0;
  cfg[Cfg.KV_BLOCK_SIZE] = options.kvBlockSize ?? 0;
  const source = openTensorSource(dir, { map: (path) => native.mapFile(path) }); // a GGUF file: mapped, no copy in the heap
  const tied = source.tiedHead; // the families take the LM head from the embedding then
  let engine: NativeEngine | null = null;
  try {
    engine = native.createEngine(cfg);
    for (const t of source.weights(spec)) {
      let { data, dtype } = t;
      if (options.checkWeights) {
        // a NaN/Inf weight makes every logit NaN, and greedy decoding emits token 0 forever
        const bad = findNonFinite(data, dtype);
        if (bad) {
          throw new Error(
            `${dir}: tensor ${t.name} has ${bad.count} non-finite value${bad.count > 1 ? "s" : ""} ` +
              `(the first, at element ${bad.first}, is ${bad.value}); the checkpoint is damaged ` +
              `(checkWeights: false loads it anyway)`,
          );
        }
      }
      const q = quant && !t.exact ? quantizeTensor(quantizer!, quant, t, { numLayers: spec.numLayers, tied, dir }, reuse) : null;
      let fallback: string | null = null;
      if (q) ({ dtype, data, fallback } = q);
      let target: DTypeCode | null = t.exact || isQuantized(dtype) ? null : want;
      if (target === null && source.kind === "folder" && native.name === "cpu" && dtype === DType.F32 && t.shape.length === 2) {
        // "auto" on the CPU keeps matrices in 16 bits (half the memory traffic):
        // float16 (11 significant bits), or bfloat16 where a value exceeds float16's range.
        target = fitsFloat16(data) ? DType.F16 : DType.BF16;
      }
      if (target !== null && dtype !== target) {
        data = fromFloat32(toFloat32(data, SAFETENSORS_NAMES[dtype as FloatCode]), SAFETENSORS_NAMES[target as FloatCode]);
        dtype = target;
        const over = options.checkWeights ? findNonFinite(data, dtype) : null;
        if (over) {
          throw new Error(
            `${dir}: tensor ${t.name} does not fit ${DTYPE_NAMES[target]}: ${over.count} ${over.count > 1 ? "values overflow" : "value overflows"} ` +
              `to ${over.value} (the first at element ${over.first}); load it with another dtype`,
          );
        }
      }
      const numel = t.shape.reduce((a, b) => a * b, 1);
      try {
        engine.setTensor(t.role, t.layer, dtype, data, numel);
      } catch (e) {
        throw new Error(`${dir}: loading ${t.name}: ${(e as Error).message}`);
      }
      const type = DTYPE_NAMES[dtype];
      stored.tensors.push({ name: t.name, role: t.role, layer: t.layer, shape: t.shape, type, bytes: data.byteLength, fallback });
      const agg = (stored.byType[type] ??= { tensors: 0, bytes: 0 });
      agg.tensors++;
      agg.bytes += data.byteLength;
      if (fallback) stored.fallbacks.push({ name: t.name, shape: t.shape, type, reason: fallback });
    }
    engine.finalize();
    stored.note = backendNote(native.name, stored);
    return engine;
  } catch (e) {
    engine?.free();
    throw e;
  } finally {
    source.close();
  }
}
