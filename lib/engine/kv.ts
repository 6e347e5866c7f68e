/**
 * The KV pool's arithmetic on the TypeScript side (docs/kv-cache.md): the
 * bytes of a block, and the exact number of blocks a sequence owns at its
 * peak, known before it starts because SkipDecode fixes every position's
 * budget in advance. The engine counts blocks the same way
 * (cuda/common/kv_ledger.h): a layer owns ceil(positions that computed it / B)
 * blocks, and the positions that computed a layer are a prefix of the
 * sequence because budgets never increase.
 */
import { DType, type DTypeCode } from "./abi.ts";

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

/**
 * Positions of a generation fed to the engine after its prompt: generated
 * token i is fed back (with budget policy.layersAt(i)) unless it is the last
 * one asked for or the context is full.
 */
export function fedDecodeTokens(promptLen: number, maxNewTokens: number, maxSeqLen: number): number {
  return Math.max(0, Math.min(maxNewTokens - 1, maxSeqLen - promptLen));
}

/**
 * Blocks a generation owns at its peak, known before it starts: the prompt at
 * full depth, then every generated token that is fed back with its budget.
 *
 * @example
 * sequenceKvBlocks({ numLayers: 24, blockSize: 16, promptLen: 32, maxNewTokens: 256, maxSeqLen: 2048,
 *                    layersAt: (i) => policy.layersAt(i), warmupLayers: 1 });
 */
export function sequenceKvBlocks(o: {
  numLayers: number;
  blockSize: number;
  promptLen: number;
  maxNewTokens: number;
  maxSeqLen: number;
  layersAt: (i: number) => number;
  warmupLayers: number;
}): number {
  const n = fedDecodeTokens(o.promptLen, o.maxNewTokens, o.maxSeqLen);
  const budgets = Array.from({ length: n }, (_, i) => o.layersAt(i));
  return kvBlocksNeeded(o.numLayers, o.blockSize, o.promptLen, budgets, o.warmupLayers);
}

/**
 * The decoder's ledger of the blocks it has promised: admission asks it
 * before a sequence may start, and every promise is also made to the engine
 * (skd_engine_kv_reserve) before the sequence's first step, so the engine's
 * count and this one agree. A promise is kept until the sequence's slot is
 * reset (it ended: finished, stopped early, aborted, failed), when the whole
 * of it comes back. The engine still refuses anything past its pool.
 *
 * @example
 * const budget = new KvBudget(1024, 16, 65536);
 * if (budget.tryReserve(248)) { ... budget.release(248); }
 */
export class KvBudget {
  /** Blocks in the engine's pool. */
  readonly blocks: number;
  readonly blockSize: number;
  readonly blockBytes: number;
  #promised = 0;
  #listeners: (() => void)[] = [];

  constructor(blocks: number, blockSize: number, blockBytes: number) {
    this.blocks = blocks;
    this.blockSize = blockSize;
    this.blockBytes = blockBytes;
  }

  /** Blocks promised now. */
  get promised(): number {
    return this.#promised;
  }

  /** Blocks not promised to any sequence. */
  get available(): number {
    return this.blocks - this.#promised;
  }

  /** Promises `n` blocks if that many are available. */
  tryReserve(n: number): boolean {
    if (n > this.available) return false;
    this.#promised += n;
    return true;
  }

  /** Gives back `n` promised blocks (a sequence ended); tells every listener. */
  release(n: number): void {
    if (n > this.#promised) throw new Error(`KvBudget: ${n} blocks released, ${this.#promised} were promised`);
    this.#promised -= n;
    if (n > 0) for (const f of this.#listeners) f();
  }

  /** Calls `listener` whenever blocks come back (a queued sequence may fit now). */
  onRelease(listener: () => void): () => void {
    this.#listeners.push(listener);
    return () => {
      const i = this.#listeners.indexOf(listener);
      if (i >= 0) this.#listeners.splice(i, 1);
    };
  }

  /** `blocks` as MiB, for messages. */
  mib(blocks: number): string {
    return ((blocks * this.blockBytes) / 2 ** 20).toFixed(1);
  }
}
