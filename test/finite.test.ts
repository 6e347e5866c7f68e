/** The NaN/Inf scan of raw tensor bytes (lib/checkpoint/finite.ts), against plain conversion. */
import { describe, expect, test } from "bun:test";
import { findNonFinite } from "../lib/checkpoint/finite.ts";
import { bf16BitsToF32, f16BitsToF32 } from "../lib/checkpoint/half.ts";
import { DType } from "../lib/engine/abi.ts";

describe("findNonFinite", () => {
  for (const [name, dtype, toF32] of [
    ["F16", DType.F16, f16BitsToF32],
    ["BF16", DType.BF16, bf16BitsToF32],
  ] as const) {
    test(`${name}: every 16-bit pattern, in either half of a word, is judged as its value`, () => {
      // each pattern next to a finite one (1.0) on both sides: low half, high half
      const one = dtype === DType.F16 ? 0x3c00 : 0x3f80;
      const bits = new Uint16Array(4 * 65536);
      for (let v = 0; v < 65536; v++) bits.set([v, one, one, v], 4 * v);
      const all = new Uint8Array(bits.buffer);
      let want = 0;
      for (let v = 0; v < 65536; v++) if (!Number.isFinite(toF32(v))) want++;
      const got = findNonFinite(all, dtype)!;
      expect(got.count).toBe(2 * want);
      // and one at a time, with an odd element count and an unaligned start
      for (const v of [0x0000, 0x8000, one, 0x7bff, 0x7c00, 0xfc00, 0x7e00, 0x7f80, 0xff80, 0x7fc0, 0xffff]) {
        const buf = new Uint8Array(2 + 6);
        new DataView(buf.buffer).setUint16(2 + 4, v, true);
        const r = findNonFinite(buf.subarray(2), dtype);
        const f = toF32(v);
        if (Number.isFinite(f)) expect(r).toBeNull();
        else expect(r).toEqual({ count: 1, first: 2, value: String(f) });
      }
    });
  }

  test("F32: NaN, ±Infinity found with their index; finite extremes pass", () => {
    const f = new Float32Array([0, -0, 3.4e38, -3.4e38, 1e-45, NaN, 1, -Infinity, Infinity]);
    expect(findNonFinite(new Uint8Array(f.buffer), DType.F32)).toEqual({ count: 3, first: 5, value: "NaN" });
    expect(findNonFinite(new Uint8Array(f.buffer, 0, 20), DType.F32)).toBeNull();
    expect(findNonFinite(new Uint8Array(f.buffer, 28, 8), DType.F32)).toEqual({ count: 2, first: 0, value: "-Infinity" });
  });
});
