/**
 * 16-bit floats: IEEE binary16 and bfloat16 to and from float32, bit for bit
 * (round to nearest even), and whole tensors of F32/F16/BF16 bytes to and from
 * Float32Array. Used by the loader's dtype conversion, the writers and the
 * tests.
 */
import type { SafetensorsDtype } from "./safetensors.ts";


const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * IEEE 754 binary16 bits of `x` (first rounded to float32), round to nearest
 * even. Overflow gives ±inf, tiny values become subnormals or ±0, NaN stays
 * NaN (quiet).
 *
 * @example
 * f32ToF16Bits(1); // 0x3c00
 * f32ToF16Bits(65504); // 0x7bff, the largest finite half
 */
export function f32ToF16Bits(x: number): number {
  f32[0] = x;
  const f = u32[0]!;
  const sign = (f >>> 16) & 0x8000;
  const exp = (f >>> 23) & 0xff;
  const mant = f & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0); // inf / quiet NaN
  // Re-bias the exponent: float32 bias 127, float16 bias 15.
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // |x| >= 2^16: overflow to inf
  if (e <= 0) {
    // Result is subnormal (or zero): value = full × 2^(e-1-23) → units of 2^-24 = full >> (14 - e).
    if (e < -10) return sign; // |x| < 2^-25 rounds to zero (2^-25 itself ties to even 0)
    const full = mant | 0x800000; // restore the implicit leading 1
    const shift = 14 - e;
    let half = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (half & 1) !== 0)) half++; // may carry into the smallest normal: correct
    return sign | half;
  }
  // Normal: keep 10 of 23 mantissa bits, round the dropped 13 to nearest even.
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) !== 0)) half++; // carry may reach 0x7c00 = inf: correct
  return sign | half;
}

/**
 * Value of IEEE 754 binary16 bits `h` (exact; subnormals, ±0, ±inf, NaN).
 *
 * @example
 * f16BitsToF32(0x3c00); // 1
 * f16BitsToF32(0x0001); // 2^-24
 */
export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24; // zero / subnormal
  if (exp === 0x1f) return mant !== 0 ? NaN : sign * Infinity;
  return sign * (1024 + mant) * 2 ** (exp - 25); // (1 + mant/2^10) × 2^(exp-15)
}

/**
 * bfloat16 bits of `x` (first rounded to float32): the top 16 bits of the
 * float32, round to nearest even. NaN stays NaN (quiet).
 *
 * @example
 * f32ToBf16Bits(1); // 0x3f80
 */
export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const f = u32[0]!;
  if ((f & 0x7fffffff) > 0x7f800000) return ((f >>> 16) | 0x0040) & 0xffff; // NaN: keep sign/payload, force quiet
  // Add 0x7fff plus the lowest kept bit: rounds up above half, ties to even.
  return ((f + 0x7fff + ((f >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * Value of bfloat16 bits `b` (exact).
 *
 * @example
 * bf16BitsToF32(0x3f80); // 1
 */
export function bf16BitsToF32(b: number): number {
  u32[0] = (b & 0xffff) << 16;
  return f32[0]!;
}

let F16_TABLE: Float32Array | null = null;
function f16Table(): Float32Array {
  if (!F16_TABLE) {
    F16_TABLE = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) F16_TABLE[h] = f16BitsToF32(h);
  }
  return F16_TABLE;
}

/** Little-endian u16 values of `data` (length already checked even). */
function u16View(data: Uint8Array): Uint16Array {
  if (LITTLE_ENDIAN && data.byteOffset % 2 === 0) return new Uint16Array(data.buffer, data.byteOffset, data.byteLength / 2);
  const out = new Uint16Array(data.byteLength / 2);
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  for (let i = 0; i < out.length; i++) out[i] = dv.getUint16(2 * i, true);
  return out;
}

/**
 * Decodes little-endian F32, F16 or BF16 tensor bytes into a new
 * Float32Array. Other dtypes throw, naming the dtype.
 *
 * @example
 * toFloat32(ckpt.read("lm_head.weight"), "BF16");
 */
export function toFloat32(data: Uint8Array, dtype: SafetensorsDtype): Float32Array {
  const size = dtype === "F32" ? 4 : dtype === "F16" || dtype === "BF16" ? 2 : 0;
  if (size === 0) throw new Error(`toFloat32: unsupported dtype ${dtype} (only F32, F16 and BF16 convert to float32)`);
  if (data.byteLength % size !== 0) throw new Error(`toFloat32: ${data.byteLength} bytes is not a whole number of ${dtype} elements`);
  const n = data.byteLength / size;
  if (dtype === "F32") {
    if (LITTLE_ENDIAN) return new Float32Array(data.slice().buffer); // copy: aligned, and the caller may reuse `data`
    const out = new Float32Array(n);
    const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
    for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
    return out;
  }
  const src = u16View(data);
  const out = new Float32Array(n);
  if (dtype === "F16") {
    const table = f16Table();
    for (let i = 0; i < n; i++) out[i] = table[src[i]!]!;
  } else {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) bits[i] = src[i]! << 16; // bf16 is the top half of a float32
  }
  return out;
}

/**
 * Encodes float32 values as little-endian F32, F16 or BF16 bytes (round to
 * nearest even). Other dtypes throw, naming the dtype.
 *
 * @example
 * writeSafetensors(p, [{ name: "w", dtype: "BF16", shape: [3], data: fromFloat32(new Float32Array([1, 2, 3]), "BF16") }]);
 */
export function fromFloat32(values: Float32Array | readonly number[], dtype: SafetensorsDtype): Uint8Array {
  const n = values.length;
  if (dtype === "F32") {
    const out = new Uint8Array(n * 4);
    const dv = new DataView(out.buffer);
    for (let i = 0; i < n; i++) dv.setFloat32(4 * i, values[i]!, true);
    return out;
  }
  const conv = dtype === "F16" ? f32ToF16Bits : dtype === "BF16" ? f32ToBf16Bits : null;
  if (!conv) throw new Error(`fromFloat32: unsupported dtype ${dtype} (only F32, F16 and BF16)`);
  const out = new Uint8Array(n * 2);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < n; i++) dv.setUint16(2 * i, conv(values[i]!), true);
  return out;
}
