/**
 * The KV pool's arithmetic on the TypeScript side (docs/kv-cache.md): the
 * bytes of a block, and the exact number of blocks a sequence owns at its
 * peak, known before it starts because SkipDecode fixes every position's
 * budget in advance. The engine counts blocks the same way
 * (cuda/common/kv_ledger.h): a layer owns ceil(positions that computed it / B)
 * blocks, and the positions that computed a layer are a prefix of the
 * sequence because budgets never increase.
 */
import { DType, type DTypeCode } from "./native.ts";

/** Storage of keys/values: "float16" (the default), "bfloat16", or "float32" (today's full precision). */
export type KvDType = "float16" | "bfloat16" | "float32";

export const KV_DTYPE_CODES: Record<KvDType, DTypeCode> = { float16: DType.F16, bfloat16: DType.BF16, float32: DType.F32 };

/** Positions per block (SKD_CFG_KV_BLOCK_SIZE's default, capped by the context). */
export const KV_BLOCK_SIZE = 16;

/** Bytes of one block: the keys and values of `blockSize` positions of one layer. */
export function kvBlockBytes(kvDim: number, dtype: KvDType, blockSize: number): number {
  return 2 * blockSize * kvDim * (dtype === "float32" ? 4 : 2);
}

/** Does a position with budget b and warm-up w compute layer l of L? (skipdecode.h) */
export function computesLayer(l: number, L: number, b: number, w: number): boolean {
  return b >= L || l < w || l >= L - (b - w);
}

/**
 * Blocks a sequence owns at its peak: `promptLen` positions at full depth,
 * then one position per entry of `budgets` (non-increasing) with warm-up
 * `warmup`; per layer ceil(positions computing it / blockSize).
 *
 * @example
 * kvBlocksNeeded(24, 16, 32, [24, 20, 12], 1); // 24 layers × 3 blocks = 72
 */
export function kvBlocksNeeded(numLayers: number, blockSize: number, promptLen: number, budgets: ArrayLike<number>, warmup: number): number {
  let blocks = 0;
  for (let l = 0; l < numLayers; l++) {
    let n = promptLen;
    for (let i = 0; i < budgets.length; i++) if (computesLayer(l, numLayers, budgets[i]!, warmup)) n++;
    blocks += Math.ceil(n / blockSize);
  }
  return blocks;
}
