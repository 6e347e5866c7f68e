/**
 * A second, independent reading of the quantized weight formats, written from
 * their definition (ggml's block layouts; docs/quantization.md) and sharing no
 * code with cuda/common/quant_ref.h: the tests check that the library's
 * dequantization gives exactly these values. fp32 arithmetic is emulated with
 * Math.fround, one rounding per fp32 operation in ggml's order.
 */

/** Elements and bytes of one block, per type (GGUF/ggml names). */
export const FORMATS = {
  Q8_0: { code: 4, block: 32, bytes: 34 },
  Q4_0: { code: 5, block: 32, bytes: 18 },
  Q5_0: { code: 8, block: 32, bytes: 22 },
  Q4_K: { code: 6, block: 256, bytes: 144 },
  Q6_K: { code: 7, block: 256, bytes: 210 },
} as const;
export type FormatName = keyof typeof FORMATS;

const f = Math.fround;

/** IEEE half-precision bits → value (subnormals, ±0, ±inf, NaN). */
export function halfToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/** One block of `type` at bytes[off..] → its values, appended to out. */
function block(type: FormatName, b: Uint8Array, off: number, out: number[]): void {
  const u16 = (o: number) => b[off + o]! | (b[off + o + 1]! << 8);
  const i8 = (o: number) => (b[off + o]! << 24) >> 24;
  if (type === "Q8_0") {
    // d (fp16), then 32 int8 codes: x = code · d
    const d = halfToNumber(u16(0));
    for (let j = 0; j < 32; j++) out.push(f(i8(2 + j) * d));
  } else if (type === "Q4_0") {
    // d (fp16), then 16 bytes: element j < 16 is the low nibble of byte j, element 16 + j its high nibble; x = (q − 8) · d
    const d = halfToNumber(u16(0));
    const vals = new Array<number>(32);
    for (let j = 0; j < 16; j++) {
      const byte = b[off + 2 + j]!;
      vals[j] = f(((byte & 15) - 8) * d);
      vals[j + 16] = f(((byte >> 4) - 8) * d);
    }
    out.push(...vals);
  } else if (type === "Q5_0") {
    // d (fp16); qh, 4 bytes read as a little-endian u32 whose bit j is element j's fifth bit;
    // 16 bytes of nibbles as in Q4_0 (element j < 16 low nibble of byte j, 16 + j its high nibble).
    // q = nibble | (bit << 4), x = (q − 16) · d
    const d = halfToNumber(u16(0));
    const qh = (b[off + 2]! | (b[off + 3]! << 8) | (b[off + 4]! << 16) | (b[off + 5]! << 24)) >>> 0;
    const vals = new Array<number>(32);
    for (let j = 0; j < 16; j++) {
      const byte = b[off + 6 + j]!;
      const lo = (byte & 15) | (((qh >>> j) & 1) << 4);
      const hi = (byte >> 4) | (((qh >>> (j + 16)) & 1) << 4);
      vals[j] = f((lo - 16) * d);
      vals[j + 16] = f((hi - 16) * d);
    }
    out.push(...vals);
  } else if (type === "Q4_K") {
    // d, dmin (fp16); 12 bytes holding eight 6-bit scales and eight 6-bit mins; 128 bytes of nibbles.
    // Sub-block s (32 values) has scale sc[s], min mn[s]: x = (d·sc)·q − (dmin·mn).
    // Bytes 0..3: scales 0..3 (low 6 bits), top 2 bits = high bits of scales 4..7;
    // bytes 4..7: mins 0..3 (low 6 bits), top 2 bits = high bits of mins 4..7;
    // bytes 8..11: low nibble = low 4 bits of scales 4..7, high nibble = low 4 bits of mins 4..7.
    const d = halfToNumber(u16(0));
    const dmin = halfToNumber(u16(2));
    const s = (i: number) => b[off + 4 + i]!;
    const sc: number[] = [];
    const mn: number[] = [];
    for (let i = 0; i < 4; i++) {
      sc[i] = s(i) & 63;
      mn[i] = s(i + 4) & 63;
      sc[i + 4] = (s(i + 8) & 15) | ((s(i) >> 6) << 4);
      mn[i + 4] = (s(i + 8) >> 4) | ((s(i + 4) >> 6) << 4);
    }
    // values 64c..64c+31 are the low nibbles of qs[32c..32c+31] (sub-block 2c), 64c+32.. the high ones (2c+1)
    for (let c = 0; c < 4; c++) {
      for (const half of [0, 1]) {
        const sub = 2 * c + half;
        const scale = f(d * sc[sub]!);
        const min = f(dmin * mn[sub]!);
        for (let l = 0; l < 32; l++) {
          const byte = b[off + 16 + 32 * c + l]!;
          const q = half ? byte >> 4 : byte & 15;
          out.push(f(f(scale * q) - min));
        }
      }
    }
  } else {
    // Q6_K: ql (128 bytes, low 4 bits), qh (64 bytes, high 2 bits), 16 int8 scales, d (fp16).
    // Value v of the block: half h = v >> 7, w = v & 127, quarter t = w >> 5, l = w & 31;
    // low bits: ql[64h + 32·(t & 1) + l], low nibble for t < 2, high for t >= 2;
    // high bits: bits 2t, 2t+1 of qh[32h + l]; x = (d · scale[v >> 4]) · (q − 32).
    const d = halfToNumber(u16(208));
    for (let v = 0; v < 256; v++) {
      const h = v >> 7;
      const w = v & 127;
      const t = w >> 5;
      const l = w & 31;
      const lowByte = b[off + 64 * h + 32 * (t & 1) + l]!;
      const low = t < 2 ? lowByte & 15 : lowByte >> 4;
      const high = (b[off + 128 + 32 * h + l]! >> (2 * t)) & 3;
      const q = (low | (high << 4)) - 32;
      out.push(f(f(d * i8(192 + (v >> 4))) * q));
    }
  }
}

/** Decodes `rows × cols` values of `type` (rows of cols / block blocks, row-major). */
export function dequantizeTs(type: FormatName, bytes: Uint8Array, rows: number, cols: number): Float32Array {
  const { block: n, bytes: size } = FORMATS[type];
  if (cols % n !== 0) throw new Error(`cols ${cols} is not a multiple of ${n}`);
  if (bytes.byteLength !== (rows * cols * size) / n) throw new Error(`byte count ${bytes.byteLength} does not match [${rows}, ${cols}]`);
  const out: number[] = [];
  for (let k = 0; k < (rows * cols) / n; k++) block(type, bytes, k * size, out);
  return Float32Array.from(out);
}
