/**
 * The KV-cache slots of one engine, with a single owner. A decoder's engine
 * holds maxBatch sequences at once, one per slot; this pool is the only
 * record of which slots are free, and the only place that resets one (so the
 * decoder, the scheduler and raw steps in tests cannot disagree about a
 * slot). The invariant: every slot is free or held, never both, never
 * neither. A slot is reset when it is taken (a clean start whatever happened
 * before) and when it is given back (its KV forgotten at once; on the engine
 * thread the reset is queued behind a step in flight, so a sequence cancelled
 * mid-step frees its slot before the next step is built).
 */

/** What the pool needs of an engine. */
export interface SlotEngine {
  resetSlot(slot: number): void;
  readonly freed: boolean;
}

/**
 * A fixed set of slots 0..size-1.
 *
 * @example
 * const pool = new SlotPool(8, engine);
 * const s = pool.acquire(); // 0
 * pool.release(s);
 */
export class SlotPool {
  readonly size: number;
  readonly #engine: SlotEngine;
  /** Free slots; popped from the end, so slot 0 is taken first. */
  readonly #free: number[];
  readonly #held = new Set<number>();

  constructor(size: number, engine: SlotEngine) {
    this.size = size;
    this.#engine = engine;
    this.#free = Array.from({ length: size }, (_, i) => size - 1 - i);
  }

  /** Slots free now. */
  get free(): number {
    return this.#free.length;
  }

  /** Takes a free slot, reset; throws when all are held. */
  acquire(): number {
    const s = this.#free.pop();
    if (s === undefined) throw new Error(`SkipDecoder: all ${this.size} sequence slots are busy (raise maxBatch)`);
    try {
      this.#engine.resetSlot(s);
    } catch (e) {
      this.#free.push(s);
      throw e;
    }
    this.#held.add(s);
    return s;
  }

  /** Gives a held slot back (reset, unless the engine is already freed); throws for a slot that is not held. */
  release(slot: number): void {
    if (!this.#held.delete(slot)) throw new Error(`SkipDecoder: slot ${slot} is not in use (released twice?)`);
    if (!this.#engine.freed) this.#engine.resetSlot(slot);
    this.#free.push(slot);
  }
}
