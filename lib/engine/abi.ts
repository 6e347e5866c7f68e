/**
 * The C ABI's numbers (cuda/include/skipdecode.h) as TypeScript constants:
 * the ABI version, status codes, engine config slots, family descriptor
 * values, element types, tensor roles, step-row fields and flags, the KV
 * pool's stat fields. Plain data
 * with no imports, so the checkpoint code uses them without loading the FFI
 * layer (native.ts); test/abi.test.ts holds them equal to the header.
 */

/** Must equal SKD_ABI_VERSION of the loaded library. */
export const ABI_VERSION = 7;

/** Status codes of skipdecode.h. */
export const Status = {
  OK: 0,
  INVALID_ARG: 1,
  OUT_OF_MEMORY: 2,
  NO_DEVICE: 3,
  KV_MISSING: 4,
  STATE: 5,
  DEVICE: 6,
  UNSUPPORTED: 7,
  KV_FULL: 8,
} as const;

/** Config slots of skd_engine_create (skd_cfg_slot). */
export const Cfg = {
  ARCH: 0,
  NUM_LAYERS: 1,
  HIDDEN: 2,
  NUM_HEADS: 3,
  FFN: 4,
  VOCAB: 5,
  MAX_POSITIONS: 6,
  EMBED_DIM: 7,
  PRE_LN: 8,
  FINAL_LN: 9,
  POS_OFFSET: 10,
  MAX_SLOTS: 11,
  MAX_SEQ: 12,
  MAX_ROWS: 13,
  THREADS: 14,
  COMPUTE_DTYPE: 15,
  NORM: 16,
  POSITIONS: 17,
  MLP: 18,
  NUM_KV_HEADS: 19,
  HEAD_DIM: 20,
  NO_BIAS: 21,
  NORM_EPS_E12: 22,
  KV_DTYPE: 23,
  KV_BLOCKS: 24,
  KV_BLOCK_SIZE: 25,
  COUNT: 26,
} as const;

export const ARCH_OPT = 1;
export const ARCH_LLAMA = 2;
/** Values of the family slots (skd_norm_kind, skd_pos_kind, skd_mlp_kind) and SKD_BIAS_* bits. */
export const Norm = { LAYER: 1, RMS: 2 } as const;
export const Positions = { LEARNED: 1, ROTARY: 2 } as const;
export const Mlp = { RELU: 1, SWIGLU: 2 } as const;
export const Bias = { QKV: 1, O: 2, MLP: 4, NORM: 8 } as const;

/**
 * Element types (skd_dtype). Q8_0, Q4_0, Q5_0 (blocks of 32) and Q4_K, Q6_K
 * (256) are ggml's block formats bit for bit; a quantized [rows, cols] tensor
 * is rows × NativeBackend.rowBytes(dtype, cols) bytes.
 */
export const DType = { F32: 1, F16: 2, BF16: 3, Q8_0: 4, Q4_0: 5, Q4_K: 6, Q6_K: 7, Q5_0: 8 } as const;
export type DTypeCode = (typeof DType)[keyof typeof DType];
/** The quantized element types. */
export type QuantDTypeCode = typeof DType.Q8_0 | typeof DType.Q4_0 | typeof DType.Q4_K | typeof DType.Q6_K | typeof DType.Q5_0;
/** Elements per block of each element type (1 for the float types). */
export const DTYPE_BLOCK: Record<DTypeCode, number> = { 1: 1, 2: 1, 3: 1, 4: 32, 5: 32, 6: 256, 7: 256, 8: 32 };
/** Names of the element types, as ggml and GGUF spell them. */
export const DTYPE_NAMES: Record<DTypeCode, string> = { 1: "F32", 2: "F16", 3: "BF16", 4: "Q8_0", 5: "Q4_0", 6: "Q4_K", 7: "Q6_K", 8: "Q5_0" };

/** Whether `dtype` is one of the quantized block types. */
export function isQuantized(dtype: DTypeCode): dtype is QuantDTypeCode {
  return dtype >= DType.Q8_0;
}

/** Tensor roles (skd_tensor). */
export const Role = {
  EMBED_TOKENS: 0,
  EMBED_POSITIONS: 1,
  PROJECT_IN: 2,
  PROJECT_OUT: 3,
  FINAL_LN_W: 4,
  FINAL_LN_B: 5,
  LM_HEAD: 6,
  ROPE_INV_FREQ: 7,
  ATTN_LN_W: 16,
  ATTN_LN_B: 17,
  Q_W: 18,
  Q_B: 19,
  K_W: 20,
  K_B: 21,
  V_W: 22,
  V_B: 23,
  O_W: 24,
  O_B: 25,
  MLP_LN_W: 26,
  MLP_LN_B: 27,
  FC1_W: 28,
  FC1_B: 29,
  FC2_W: 30,
  FC2_B: 31,
  GATE_W: 32,
  GATE_B: 33,
} as const;

/** Fields of one step row (skd_row_field) and its flags. */
export const Row = {
  TOKEN: 0,
  POS: 1,
  SLOT: 2,
  BUDGET: 3,
  WARMUP: 4,
  FLAGS: 5,
  TOP_K: 6,
  SEQ: 7,
  STEP: 8,
  SEED_LO: 9,
  SEED_HI: 10,
  FIELDS: 11,
} as const;
export const ROW_WANT_LOGITS = 1;
export const ROW_SAMPLE = 2;
/** With ROW_SAMPLE: report the sampled token's log-probability and the top alternatives (skd_engine_step_logprobs). */
export const ROW_LOGPROBS = 4;
/** SKD_MAX_TOP_LOGPROBS: most alternatives per row. */
export const MAX_TOP_LOGPROBS = 20;

/** Per-row float parameters (skd_param_field). */
export const Param = { TEMPERATURE: 0, TOP_P: 1, FIELDS: 2 } as const;

/** Fields of skd_engine_kv_stats (skd_kv_stat) and skd_engine_kv_slot_stats (skd_kv_slot_stat), SKD_KV_-prefixed in the header. */
export const KvStat = {
  POOL_BYTES: 0,
  USED_BYTES: 1,
  RESERVED_BYTES: 2,
  BLOCK_SIZE: 3,
  BLOCK_BYTES: 4,
  BLOCKS: 5,
  BLOCKS_FREE: 6,
  BLOCKS_AVAILABLE: 7,
  DTYPE: 8,
  PAGED: 9,
  STATS_COUNT: 10,
} as const;
export const KvSlotStat = { SLOT_OWNED: 0, SLOT_PEAK: 1, SLOT_RESERVED: 2, SLOT_STATS_COUNT: 3 } as const;
