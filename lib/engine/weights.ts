/**
 * Builds a native engine from a model folder: creates it for the model's
 * shape, copies every tensor in (converting dtypes as asked) and finalizes.
 * Runs on the engine thread (lib/engine/worker.ts), so loading a large
 * checkpoint never blocks the caller's event loop (docs/DESIGN.md, "Threads").
 */
import type { ModelSpec } from "../checkpoint/config.ts";
import { familyWeights, modelConfig } from "../checkpoint/family.ts";
import { findNonFinite } from "../checkpoint/finite.ts";
import { CheckpointTensors } from "../checkpoint/safetensors.ts";
import { fromFloat32, toFloat32 } from "../checkpoint/half.ts";
import { type BackendName, chooseBackend, type NativeEngine } from "./native.ts";
import { Cfg, DType, type DTypeCode } from "./abi.ts";

/** Weight dtype the engine keeps: "auto" = the checkpoint's own. */
export type WeightDType = "auto" | "float32" | "float16" | "bfloat16";

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
}

/** Whether every F32 value in `data` is finite and within float16's range. */
function fitsFloat16(data: Uint8Array): boolean {
  const f = toFloat32(data, "F32");
  for (let i = 0; i < f.length; i++) if (!(Math.abs(f[i]!) <= 65504)) return false;
  return true;
}

const DTYPE_CODES: Record<Exclude<WeightDType, "auto">, DTypeCode> = {
  float32: DType.F32,
  float16: DType.F16,
  bfloat16: DType.BF16,
};
const SAFETENSORS_NAMES = { [DType.F32]: "F32", [DType.F16]: "F16", [DType.BF16]: "BF16" } as const;

/** Most rows one native step carries for these options. */
export function maxStepRows(o: EngineOptions): number {
  return Math.max(o.maxBatchTokens, o.maxBatch);
}

/**
 * Creates, fills and finalizes an engine for the checkpoint in `dir`. Throws
 * (after freeing what it made) with a message naming the folder and tensor.
 *
 * @example
 * const engine = buildEngine(dir, readModelSpec(dir), { backend: "cpu", dtype: "auto", maxBatch: 8, maxSeqLen: 512, threads: 0, maxBatchTokens: 512 });
 */
export function buildEngine(dir: string, spec: ModelSpec, options: EngineOptions): NativeEngine {
  const native = chooseBackend(options.backend);
  const want = options.dtype === "auto" ? null : DTYPE_CODES[options.dtype];
  const cfg = modelConfig(spec); // the model's slots, family descriptor included
  cfg[Cfg.MAX_SLOTS] = options.maxBatch;
  cfg[Cfg.MAX_SEQ] = options.maxSeqLen;
  cfg[Cfg.MAX_ROWS] = maxStepRows(options);
  cfg[Cfg.THREADS] = options.threads;
  cfg[Cfg.COMPUTE_DTYPE] = want === DType.F16 || want === DType.BF16 ? want : 0;
  const ckpt = CheckpointTensors.open(dir);
  let engine: NativeEngine | null = null;
  try {
    engine = native.createEngine(cfg);
    for (const t of familyWeights(spec, ckpt)) {
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
      let target: DTypeCode | null = t.exact ? null : want;
      if (target === null && native.name === "cpu" && dtype === DType.F32 && t.shape.length === 2) {
        // "auto" on the CPU keeps matrices in 16 bits (half the memory traffic):
        // float16 (11 significant bits), or bfloat16 where a value exceeds float16's range.
        target = fitsFloat16(data) ? DType.F16 : DType.BF16;
      }
      if (target !== null && dtype !== target) {
        data = fromFloat32(toFloat32(data, SAFETENSORS_NAMES[dtype]), SAFETENSORS_NAMES[target]);
        dtype = target;
        const over = options.checkWeights ? findNonFinite(data, dtype) : null;
        if (over) {
          throw new Error(
            `${dir}: tensor ${t.name} does not fit ${SAFETENSORS_NAMES[target]}: ${over.count} ${over.count > 1 ? "values overflow" : "value overflows"} ` +
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
    }
    engine.finalize();
    return engine;
  } catch (e) {
    engine?.free();
    throw e;
  } finally {
    ckpt.close();
  }
}
