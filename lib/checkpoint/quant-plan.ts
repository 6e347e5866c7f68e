/**
 * The one rule that picks how each tensor is stored when a model is
 * quantized: on load (`SkipDecoder.load(dir, { dtype: "q4_k" })`, lib/engine/weights.ts)
 * and by `skipdecode convert` (`--type q4_k_m`). It follows llama.cpp's
 * `llama-quantize` (src/llama-quant.cpp) so a model quantized here holds the
 * same types as the file llama.cpp would write:
 *
 * 1. Vectors (norms, biases, rotary frequencies) and the learned position
 *    table stay unquantized ("float": fp32 vectors, 16-bit matrices).
 * 2. The mix's choice per tensor:
 *      q8_0    every matrix Q8_0
 *      q4_0    every matrix Q4_0; the output (LM head, and the token embedding
 *              when the two are tied) Q6_K
 *      q4_k    every matrix Q4_K; the output as in q4_0 (Q6_K)
 *      q4_k_m  q4_k, plus attn_v (V) and ffn_down (FC2) in Q6_K in the layers
 *              where llama.cpp's `use_more_bits(i, n)` holds: the first n/8,
 *              the last n/8, and every third layer between
 *              (i < n/8 || i >= 7n/8 || (i − n/8) % 3 == 2)
 * 3. The shape fallback, llama.cpp's: a K-quant (Q4_K, Q6_K) needs rows whose
 *    length (cols) is a multiple of 256; otherwise the tensor falls back to the
 *    block-32 type llama-quantize picks: Q4_K to Q5_0, Q6_K to Q8_0 (each the
 *    next block-32 type at least as precise; Q4_0 would be less precise than
 *    the Q4_K asked for). A block-32 type (Q8_0, Q4_0, Q5_0) needs
 *    cols % 32 == 0; otherwise the tensor stays unquantized (llama.cpp: F16).
 *    Every fallback is reported. Models with hidden sizes like 896
 *    (Qwen2.5-0.5B) are mostly such tensors, in our files as in llama.cpp's.
 *
 * Decision: Q5_0 is a storage type only, read from GGUF files and written as
 * Q4_K's fallback. It is not a quantization a user asks for: there is no
 * `dtype: "q5_0"` and no `convert --type q5_0`; the four above are the
 * choices.
 *
 * @example
 * planTensor("q4_k", { role: Role.FC1_W, layer: 0, numLayers: 12, shape: [512, 128], tied: true });
 * // { type: "q5_0", chosen: "q4_k", fallback: "cols 128 is not a multiple of 256 (Q4_K's block)" }
 */
import { DType, type DTypeCode, Role } from "../engine/abi.ts";

/** A requested quantization of a whole model. */
export type Quantization = "q8_0" | "q4_0" | "q4_k" | "q4_k_m";
export const QUANTIZATIONS: readonly Quantization[] = ["q8_0", "q4_0", "q4_k", "q4_k_m"];

/** How one tensor is stored: a quantized block type, or "float" (left as the unquantized path keeps it). */
export type StorageType = "float" | "q8_0" | "q4_0" | "q5_0" | "q4_k" | "q6_k";

/** The engine's element type of each quantized storage type. */
export const STORAGE_DTYPE: Record<Exclude<StorageType, "float">, DTypeCode> = {
  q8_0: DType.Q8_0,
  q4_0: DType.Q4_0,
  q5_0: DType.Q5_0,
  q4_k: DType.Q4_K,
  q6_k: DType.Q6_K,
};

const BLOCK: Record<Exclude<StorageType, "float">, number> = { q8_0: 32, q4_0: 32, q5_0: 32, q4_k: 256, q6_k: 256 };

/** llama-quantize's block-32 fallback of each K-quant (rows not a multiple of 256). */
const K_FALLBACK: Partial<Record<StorageType, StorageType>> = { q4_k: "q5_0", q6_k: "q8_0" };

/** What the rule looks at. */
export interface TensorDesc {
  /** skd_tensor role (native.ts Role). */
  role: number;
  /** Layer index, -1 for global tensors. */
  layer: number;
  numLayers: number;
  /** [rows, cols] of a matrix, [n] of a vector. */
  shape: readonly number[];
  /** Whether the LM head is the token embedding (tied): then the embedding is quantized as the output. */
  tied: boolean;
}

/** The rule's answer for one tensor. */
export interface TensorPlan {
  /** The storage type. */
  type: StorageType;
  /** What the mix chose before the shape fallback (equals type unless it fell back). */
  chosen: StorageType;
  /** Why it fell back, or null. */
  fallback: string | null;
}

const MATRICES: ReadonlySet<number> = new Set([
  Role.EMBED_TOKENS, Role.PROJECT_IN, Role.PROJECT_OUT, Role.LM_HEAD,
  Role.Q_W, Role.K_W, Role.V_W, Role.O_W, Role.FC1_W, Role.FC2_W, Role.GATE_W,
]);

/** llama.cpp's `use_more_bits`: the layers where Q4_K_M spends more bits on attn_v and ffn_down. */
export function useMoreBits(layer: number, numLayers: number): boolean {
  const n8 = Math.trunc(numLayers / 8);
  return layer < n8 || layer >= Math.trunc((7 * numLayers) / 8) || (layer - n8) % 3 === 2;
}

function mixChoice(q: Quantization, t: TensorDesc): StorageType {
  if (q === "q8_0") return "q8_0";
  const output = t.role === Role.LM_HEAD || (t.role === Role.EMBED_TOKENS && t.tied);
  if (output) return "q6_k";
  if (q === "q4_0") return "q4_0";
  if (q === "q4_k_m" && (t.role === Role.V_W || t.role === Role.FC2_W) && useMoreBits(t.layer, t.numLayers)) return "q6_k";
  return "q4_k";
}

/**
 * The storage type of one tensor under quantization `q` (the rule above).
 * Throws for an unknown quantization.
 */
export function planTensor(q: Quantization, t: TensorDesc): TensorPlan {
  if (!QUANTIZATIONS.includes(q)) throw new Error(`unknown quantization ${JSON.stringify(q)} (expected ${QUANTIZATIONS.join(", ")})`);
  if (!MATRICES.has(t.role) || t.shape.length !== 2) return { type: "float", chosen: "float", fallback: null };
  const chosen = mixChoice(q, t);
  const cols = t.shape[1]!;
  let type: StorageType = chosen;
  const why: string[] = [];
  const k = K_FALLBACK[type];
  if (k && cols % 256 !== 0) {
    why.push(`cols ${cols} is not a multiple of 256 (${type.toUpperCase()}'s block)`);
    type = k;
  }
  if (type !== "float" && cols % BLOCK[type] !== 0) {
    why.push(`cols ${cols} is not a multiple of 32 (${type.toUpperCase()}'s block)`);
    type = "float";
  }
  return { type, chosen, fallback: why.length ? why.join("; ") : null };
}
