/**
 * Seeded randomness for the tiny checkpoints (lib/tiny/model.ts and each family's
 * writer): the same seed always gives the same numbers, so the same options
 * always write the same bytes.
 */
import { type WriteTensor } from "../checkpoint/safetensors_write.ts";
import { fromFloat32 } from "../checkpoint/half.ts";

/** safetensors dtype names of writeTinyModel's `dtype` option. */
export const SAFETENSORS_DTYPE = { float32: "F32", float16: "F16", bfloat16: "BF16" } as const;

/** A small, fast, seeded PRNG (mulberry32) with a Box–Muller normal. */
export class Rng {
  #s: number;
  #spare: number | null = null;
  constructor(seed: number) {
    this.#s = (seed ^ 0x9e3779b9) >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Standard normal. */
  normal(): number {
    if (this.#spare !== null) {
      const s = this.#spare;
      this.#spare = null;
      return s;
    }
    const u = Math.max(this.next(), 1e-12);
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.#spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
}

/** add(name, shape, gen): a tensor of `gen()` values, stored as `st`, appended to `tensors`. */
export function tensorAdder(tensors: WriteTensor[], st: "F32" | "F16" | "BF16") {
  return (name: string, shape: number[], gen: () => number): void => {
    const n = shape.reduce((a, b) => a * b, 1);
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) v[i] = gen();
    tensors.push({ name, dtype: st, shape, data: fromFloat32(v, st) });
  };
}
