/**
 * Finds non-finite values (NaN, ±Inf) in raw F32/F16/BF16 tensor bytes
 * without converting them: a value is non-finite exactly when its exponent
 * bits are all ones, so the scan tests masks on the integer words, two 16-bit
 * values per 32-bit word (SWAR), and only looks closer at a word that fails.
 * On this project's 2-core VM it reads ~1-2 GB/s; the load measures it
 * (README, "Checkpoints"). Quantized tensors (ggml block types) are checked
 * by their fp16 scales, the only fields that can hold a non-finite value.
 */
import { DType, type DTypeCode } from "../engine/abi.ts";

/** The first non-finite value of a tensor and how many there are. */
export interface NonFinite {
  count: number;
  /** Element index of the first. */
  first: number;
  /** "NaN", "Infinity" or "-Infinity". */
  value: string;
}

/** Exponent masks of one element. */
const EXP = { [DType.F32]: 0x7f800000, [DType.F16]: 0x7c00, [DType.BF16]: 0x7f80 } as const;
const MANT = { [DType.F32]: 0x007fffff, [DType.F16]: 0x03ff, [DType.BF16]: 0x007f } as const;
type FloatCode = keyof typeof EXP;

/** Quantized types: [block bytes, elements per block, byte offsets of the fp16 scales in a block]. */
const SCALES: Record<number, [number, number, number[]]> = {
  [DType.Q8_0]: [34, 32, [0]],
  [DType.Q4_0]: [18, 32, [0]],
  [DType.Q5_0]: [22, 32, [0]],
  [DType.Q4_K]: [144, 256, [0, 2]],
  [DType.Q6_K]: [210, 256, [208]],
};

/** The quantized tensor's blocks whose fp16 scale is not finite. */
function quantNonFinite(data: Uint8Array, [bytes, elems, offsets]: [number, number, number[]]): NonFinite | null {
  // an fp16 is non-finite when its exponent bits (bits 2-6 of its high byte) are all ones: a
  // first pass tests that one byte of each scale in a plain strided loop, the count only on a hit
  const n = data.byteLength - bytes;
  let hit = false;
  for (const o of offsets) {
    for (let b = o + 1; b <= n + o + 1; b += bytes) {
      if ((data[b]! & 0x7c) === 0x7c) {
        hit = true;
        break;
      }
    }
  }
  if (!hit) return null;
  let count = 0;
  let first = -1;
  let value = "";
  for (let b = 0; b + bytes <= data.byteLength; b += bytes) {
    for (const o of offsets) {
      const h = data[b + o]! | (data[b + o + 1]! << 8);
      if ((h & 0x7c00) !== 0x7c00) continue;
      if (count++ === 0) {
        first = (b / bytes) * elems;
        value = describe(h, DType.F16);
      }
    }
  }
  return count ? { count, first, value } : null;
}

/** A 32-bit-aligned Uint32Array over `data` (copied when it is not aligned). */
function words(data: Uint8Array): Uint32Array {
  const n = data.byteLength >>> 2;
  if (data.byteOffset % 4 === 0) return new Uint32Array(data.buffer, data.byteOffset, n);
  return new Uint32Array(data.slice(0, n * 4).buffer);
}

function describe(bits: number, dtype: FloatCode): string {
  if ((bits & MANT[dtype]) !== 0) return "NaN";
  const sign = dtype === DType.F32 ? bits >>> 31 : (bits >>> 15) & 1;
  return sign ? "-Infinity" : "Infinity";
}

/**
 * Scans `data` (little-endian elements of `dtype`); null when every value is
 * finite. For a quantized dtype, `count` counts non-finite scales and `first`
 * is the first element of the first such block.
 *
 * @example
 * findNonFinite(new Uint8Array(new Float32Array([1, NaN]).buffer), DType.F32); // { count: 1, first: 1, value: "NaN" }
 */
export function findNonFinite(data: Uint8Array, dtype: DTypeCode): NonFinite | null {
  const q = SCALES[dtype];
  if (q) return quantNonFinite(data, q);
  return floatNonFinite(data, dtype as FloatCode);
}

function floatNonFinite(data: Uint8Array, dtype: FloatCode): NonFinite | null {
  const w = words(data);
  const n = w.length;
  let count = 0;
  let first = -1;
  let value = "";
  const hit = (element: number, bits: number) => {
    if (count++ === 0) {
      first = element;
      value = describe(bits, dtype);
    }
  };
  if (dtype === DType.F32) {
    const e = EXP[DType.F32];
    for (let i = 0; i < n; i++) if ((w[i]! & e) === e) hit(i, w[i]!);
    return count ? { count, first, value } : null;
  }
  // two 16-bit values per word: t = (x & both) ^ both has a zero half exactly
  // where an exponent is all ones; bit 15 of each half of t is 0, so t - 0x10001
  // sets bit 15 or 31 when a half is zero (a borrow may also mark the upper
  // half when the lower is zero: the word is a hit either way)
  const e = EXP[dtype];
  const both = (e | (e << 16)) >>> 0;
  for (let i = 0; i < n; i++) {
    const x = w[i]!;
    if ((((x & both) ^ both) - 0x10001) & 0x80008000) {
      if ((x & e) === e) hit(2 * i, x & 0xffff);
      if (((x >>> 16) & e) === e) hit(2 * i + 1, x >>> 16);
    }
  }
  if (data.byteLength % 4 === 2) {
    const last = data[data.byteLength - 2]! | (data[data.byteLength - 1]! << 8);
    if ((last & e) === e) hit(2 * n, last);
  }
  return count ? { count, first, value } : null;
}
