/**
 * One tensor on its way to the engine, and the checked read every family
 * module (opt.ts, llama.ts) uses to get it out of a checkpoint.
 */
import { DType, type DTypeCode, Role } from "../engine/abi.ts";
import type { CheckpointTensors, SafetensorsDtype } from "./safetensors.ts";

/** One tensor ready for the engine. */
export interface WeightTensor {
  /** Checkpoint name, or a description when synthesised (tied head, absent bias, rotary frequencies). */
  name: string;
  role: number;
  /** -1 for global tensors. */
  layer: number;
  shape: number[];
  dtype: DTypeCode;
  data: Uint8Array;
  /** Load as given, never converted to 16 bits (the rotary frequencies). */
  exact?: boolean;
}

const DTYPES: Partial<Record<SafetensorsDtype, DTypeCode>> = { F32: DType.F32, F16: DType.F16, BF16: DType.BF16 };

/**
 * A checkpoint tensor for the engine, checked: it must exist, have `shape`
 * (from config.json) and a dtype the engines load. Errors name the tensor.
 */
export function readWeight(ckpt: CheckpointTensors, name: string, role: number, layer: number, shape: number[]): WeightTensor {
  if (!ckpt.has(name)) throw new Error(`${ckpt.dir}: missing tensor ${name}`);
  const info = ckpt.info(name);
  if (info.shape.length !== shape.length || info.shape.some((v, i) => v !== shape[i])) {
    throw new Error(`${info.file}: tensor ${name} has shape [${info.shape.join(", ")}], expected [${shape.join(", ")}] from config.json`);
  }
  const dtype = DTYPES[info.dtype];
  if (dtype === undefined) throw new Error(`${info.file}: tensor ${name} has dtype ${info.dtype}; skipdecode loads F32, F16 and BF16`);
  return { name, role, layer, shape, dtype, data: ckpt.read(name) };
}


/**
 * The LM head, the same rule for every family: `lm_head.weight` (checked
 * against `shape`) when the checkpoint has one, else the token embedding when
 * config.json ties them, else an error naming the missing tensor.
 */
export function lmHead(ckpt: CheckpointTensors, embed: WeightTensor, shape: number[], tied: boolean): WeightTensor {
  if (ckpt.has("lm_head.weight")) return readWeight(ckpt, "lm_head.weight", Role.LM_HEAD, -1, shape);
  if (tied) return { ...embed, name: `lm_head.weight (tied to ${embed.name})`, role: Role.LM_HEAD };
  throw new Error(`${ckpt.dir}: missing tensor lm_head.weight (config.json says tie_word_embeddings is false)`);
}
