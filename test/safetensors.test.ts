// safetensors reader/writer and 16-bit float helpers.
// Malformed files are crafted byte by byte in a temp dir.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CheckpointTensors, SAFETENSORS_DTYPE_BITS, SafetensorsFile, safetensorsByteLength } from "../lib/checkpoint/safetensors.ts";
import { writeSafetensors } from "../lib/checkpoint/safetensors_write.ts";
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, fromFloat32, toFloat32 } from "../lib/checkpoint/half.ts";

let dir: string;
let counter = 0;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "skipdecode-safetensors-"));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function freshPath(name = "t.safetensors"): string {
  return join(dir, `${counter++}-${name}`);
}

/** 8-byte LE length + header bytes + data bytes. `n` overrides the length field. */
function rawFile(header: string | Uint8Array, data: Uint8Array | number = 0, n?: bigint): Uint8Array {
  const h = typeof header === "string" ? new TextEncoder().encode(header) : header;
  const d = typeof data === "number" ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + h.length + d.length);
  new DataView(out.buffer).setBigUint64(0, n ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(d, 8 + h.length);
  return out;
}

function writeRaw(bytes: Uint8Array): string {
  const p = freshPath();
  writeFileSync(p, bytes);
  return p;
}

function openRaw(header: string | Uint8Array, data: Uint8Array | number = 0, n?: bigint): SafetensorsFile {
  return SafetensorsFile.open(writeRaw(rawFile(header, data, n)));
}

function f32Bytes(xs: number[]): Uint8Array {
  return new Uint8Array(new Float32Array(xs).buffer);
}

describe("write / read round trip", () => {
  test("F32, F16, BF16 tensors and metadata survive a round trip", () => {
    const p = freshPath();
    const a = [1, -2.5, 3.25, 0, 65504, -0.125];
    const tensors = [
      { name: "a.f32", dtype: "F32", shape: [2, 3], data: f32Bytes(a) },
      { name: "b.f16", dtype: "F16", shape: [6], data: fromFloat32(a, "F16") },
      { name: "c.bf16", dtype: "BF16", shape: [3, 2], data: fromFloat32(a, "BF16") },
      { name: "10", dtype: "F32", shape: [], data: f32Bytes([7]) }, // integer-like name, scalar
      { name: "empty", dtype: "F32", shape: [0, 4], data: new Uint8Array(0) },
    ];
    writeSafetensors(p, tensors, { format: "pt", note: "hi" });

    const st = SafetensorsFile.open(p);
    expect(st.metadata).toEqual({ format: "pt", note: "hi" });
    expect(st.dataStart % 8).toBe(0);
    expect([...st.tensors.keys()]).toEqual(["a.f32", "b.f16", "c.bf16", "10", "empty"]);
    const info = st.tensors.get("b.f16")!;
    expect(info).toEqual({ name: "b.f16", dtype: "F16", shape: [6], begin: 24, end: 36, file: p });
    for (const t of tensors) expect(st.read(t.name)).toEqual(t.data);
    expect(Array.from(toFloat32(st.read("a.f32"), "F32"))).toEqual(a);
    expect(Array.from(toFloat32(st.read("b.f16"), "F16"))).toEqual(a); // all exact in f16
    expect(Array.from(toFloat32(st.read("c.bf16"), "BF16"))).toEqual([1, -2.5, 3.25, 0, 65536, -0.125]); // 65504 → 2^16 in bf16
    expect(Array.from(toFloat32(st.read("10"), "F32"))).toEqual([7]);
    st.close();
  });

  test("file layout is byte-exact: header padded with spaces to 8, data contiguous", () => {
    const p = freshPath();
    writeSafetensors(p, [{ name: "x", dtype: "F32", shape: [1], data: f32Bytes([1]) }]);
    const bytes = new Uint8Array(readFileSync(p));
    const json = '{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}';
    const padded = json + " ".repeat((8 - (json.length % 8)) % 8);
    expect(new DataView(bytes.buffer).getBigUint64(0, true)).toBe(BigInt(padded.length));
    expect(new TextDecoder().decode(bytes.subarray(8, 8 + padded.length))).toBe(padded);
    expect(Array.from(bytes.subarray(8 + padded.length))).toEqual([0, 0, 0x80, 0x3f]);
  });

  test("empty file list writes {} and reads back", () => {
    const p = freshPath();
    writeSafetensors(p, []);
    const st = SafetensorsFile.open(p);
    expect(st.tensors.size).toBe(0);
    expect(st.metadata).toEqual({});
    expect(st.dataStart).toBe(16);
    st.close();
  });

  test("reader accepts tensors listed out of offset order and any dtype", () => {
    const hdr = JSON.stringify({
      z: { dtype: "U8", shape: [2], data_offsets: [8, 10] },
      a: { dtype: "I64", shape: [1], data_offsets: [0, 8] },
      f4: { dtype: "F4", shape: [4], data_offsets: [10, 12] },
      f6: { dtype: "F6_E2M3", shape: [4], data_offsets: [12, 15] },
      c: { dtype: "C64", shape: [1], data_offsets: [15, 23], extra: "ignored" },
    });
    const data = Uint8Array.from({ length: 23 }, (_, i) => i);
    const st = openRaw(hdr, data);
    expect([...st.tensors.keys()]).toEqual(["a", "z", "f4", "f6", "c"]);
    expect(Array.from(st.read("z"))).toEqual([8, 9]);
    expect(Array.from(st.read("c"))).toEqual([15, 16, 17, 18, 19, 20, 21, 22]);
    st.close();
  });

  test("read errors: unknown tensor, after close; close is idempotent", () => {
    const p = freshPath();
    writeSafetensors(p, [{ name: "x", dtype: "F32", shape: [1], data: f32Bytes([1]) }]);
    const st = SafetensorsFile.open(p);
    expect(() => st.read("nope")).toThrow(/tensor "nope" not found in .*safetensors/);
    st.close();
    st.close();
    expect(st.closed).toBe(true);
    expect(() => st.read("x")).toThrow(/is closed/);
  });

  test("writer validation", () => {
    const p = freshPath();
    expect(() => writeSafetensors(p, [{ name: "x", dtype: "F32", shape: [2], data: new Uint8Array(4) }])).toThrow(/data is 4 bytes but shape \[2\] of F32 needs 8/);
    expect(() => writeSafetensors(p, [{ name: "x", dtype: "F31", shape: [1], data: new Uint8Array(4) }])).toThrow(/unknown dtype "F31"/);
    const t = { name: "x", dtype: "U8", shape: [1], data: new Uint8Array(1) };
    expect(() => writeSafetensors(p, [t, t])).toThrow(/duplicate tensor "x"/);
    expect(() => writeSafetensors(p, [{ ...t, name: "__metadata__" }])).toThrow(/reserved/);
    expect(() => writeSafetensors(p, [{ ...t, shape: [-1] }])).toThrow(/non-negative integers/);
    expect(() => writeSafetensors(p, [{ name: "x", dtype: "F4", shape: [3], data: new Uint8Array(2) }])).toThrow(/not a whole number of bytes/);
  });
});

describe("16-bit floats", () => {
  test("f16 known values", () => {
    expect(f32ToF16Bits(1)).toBe(0x3c00);
    expect(f32ToF16Bits(-2)).toBe(0xc000);
    expect(f32ToF16Bits(65504)).toBe(0x7bff);
    expect(f32ToF16Bits(65519)).toBe(0x7bff); // below the midpoint to 2^16
    expect(f32ToF16Bits(65520)).toBe(0x7c00); // midpoint ties to even → inf
    expect(f32ToF16Bits(1e6)).toBe(0x7c00);
    expect(f32ToF16Bits(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(f32ToF16Bits(2 ** -25)).toBe(0x0000); // tie → even (0)
    expect(f32ToF16Bits(1.5 * 2 ** -25)).toBe(0x0001);
    expect(f32ToF16Bits(3 * 2 ** -25)).toBe(0x0002); // 1.5 units: tie → even 2
    expect(f32ToF16Bits(2 ** -14)).toBe(0x0400); // smallest normal
    expect(f32ToF16Bits(2 ** -14 - 2 ** -25)).toBe(0x0400); // rounds up across the subnormal/normal boundary
    expect(f32ToF16Bits(1023 * 2 ** -24)).toBe(0x03ff); // largest subnormal
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie → even
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → even (up)
    expect(f32ToF16Bits(0)).toBe(0x0000);
    expect(f32ToF16Bits(-0)).toBe(0x8000);
    expect(f32ToF16Bits(Infinity)).toBe(0x7c00);
    expect(f32ToF16Bits(-Infinity)).toBe(0xfc00);
    const nan = f32ToF16Bits(NaN);
    expect((nan & 0x7c00) === 0x7c00 && (nan & 0x3ff) !== 0).toBe(true);

    expect(f16BitsToF32(0x3c00)).toBe(1);
    expect(f16BitsToF32(0x7bff)).toBe(65504);
    expect(f16BitsToF32(0x0001)).toBe(2 ** -24);
    expect(f16BitsToF32(0x03ff)).toBe(1023 * 2 ** -24);
    expect(f16BitsToF32(0x0400)).toBe(2 ** -14);
    expect(Object.is(f16BitsToF32(0x8000), -0)).toBe(true);
    expect(f16BitsToF32(0x7c00)).toBe(Infinity);
    expect(f16BitsToF32(0xfc00)).toBe(-Infinity);
    expect(f16BitsToF32(0x7e00)).toBeNaN();
    expect(f16BitsToF32(0xfc01)).toBeNaN();
  });

  test("f16: every non-NaN half round-trips through float32", () => {
    for (let h = 0; h < 0x10000; h++) {
      const x = f16BitsToF32(h);
      if (Number.isNaN(x)) continue;
      if (f32ToF16Bits(x) !== h) throw new Error(`0x${h.toString(16)} → ${x} → 0x${f32ToF16Bits(x).toString(16)}`);
    }
  });

  test("bf16 known values and round-to-nearest-even", () => {
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    expect(f32ToBf16Bits(-2)).toBe(0xc000);
    expect(f32ToBf16Bits(-0)).toBe(0x8000);
    expect(f32ToBf16Bits(Infinity)).toBe(0x7f80);
    expect(f32ToBf16Bits(-Infinity)).toBe(0xff80);
    const nan = f32ToBf16Bits(NaN);
    expect((nan & 0x7f80) === 0x7f80 && (nan & 0x7f) !== 0).toBe(true);
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie, kept bit even → down
    expect(f32ToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie, kept bit odd → up
    expect(f32ToBf16Bits(1 + 2 ** -8 + 2 ** -20)).toBe(0x3f81); // above the tie → up
    expect(f32ToBf16Bits(3.4028234663852886e38)).toBe(0x7f80); // max float32 rounds to inf
    expect(f32ToBf16Bits(2 ** -133)).toBe(0x0001); // float32 subnormal, exact in bf16

    expect(bf16BitsToF32(0x3f80)).toBe(1);
    expect(bf16BitsToF32(0x3f81)).toBe(1 + 2 ** -7);
    expect(Object.is(bf16BitsToF32(0x8000), -0)).toBe(true);
    expect(bf16BitsToF32(0x7f80)).toBe(Infinity);
    expect(bf16BitsToF32(0x7fc0)).toBeNaN();
  });

  test("toFloat32 handles unaligned input and rejects other dtypes", () => {
    const buf = new Uint8Array(9);
    buf.set(f32Bytes([1.5, -3]), 1); // byteOffset 1: unaligned
    expect(Array.from(toFloat32(buf.subarray(1), "F32"))).toEqual([1.5, -3]);
    const h = new Uint8Array(5);
    h.set(fromFloat32([1, -0.5], "F16"), 1);
    expect(Array.from(toFloat32(h.subarray(1), "F16"))).toEqual([1, -0.5]);
    h.set(fromFloat32([1, -0.5], "BF16"), 1);
    expect(Array.from(toFloat32(h.subarray(1), "BF16"))).toEqual([1, -0.5]);
    expect(() => toFloat32(new Uint8Array(4), "I32")).toThrow(/unsupported dtype I32/);
    expect(() => toFloat32(new Uint8Array(3), "F16")).toThrow(/not a whole number of F16/);
  });

  test("dtype table lists every format dtype", () => {
    expect(Object.keys(SAFETENSORS_DTYPE_BITS).sort()).toEqual(
      ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"].sort(),
    );
    expect(safetensorsByteLength("BF16", [3, 4])).toBe(24);
    expect(safetensorsByteLength("F6_E3M2", [4])).toBe(3);
  });
});

describe("malformed files", () => {
  const ok = (dtype = "F32", shape = [1], offsets = [0, 4]) => ({ dtype, shape, data_offsets: offsets });
  const hdr = (o: unknown) => JSON.stringify(o);

  test("file shorter than 8 bytes", () => {
    expect(() => SafetensorsFile.open(writeRaw(new Uint8Array([1, 0, 0])))).toThrow(/file is too small \(3 bytes\)/);
  });

  test("missing file names the path", () => {
    expect(() => SafetensorsFile.open(join(dir, "nope.safetensors"))).toThrow(/cannot open .*nope\.safetensors/);
  });

  test("header length above 100 MB", () => {
    expect(() => openRaw("{}", 0, 100_000_001n)).toThrow(/header too large/);
    expect(() => openRaw("{}", 0, 0xffffffffffffffffn)).toThrow(/header too large/);
  });

  test("header length beyond the file", () => {
    expect(() => openRaw("{}", 0, 100n)).toThrow(/invalid header length 100.*beyond the end of the file/);
  });

  test("header not UTF-8", () => {
    expect(() => openRaw(new Uint8Array([0x7b, 0xff, 0x7d]))).toThrow(/not valid UTF-8/);
  });

  test("header not starting with {", () => {
    expect(() => openRaw(" {}")).toThrow(/does not start with '\{'/);
    expect(() => openRaw("[]")).toThrow(/does not start with '\{'/);
    expect(() => openRaw("")).toThrow(/does not start with '\{'/);
  });

  test("header beginning with a UTF-8 byte-order mark", () => {
    const bom = new Uint8Array([0xef, 0xbb, 0xbf, ...new TextEncoder().encode("{}")]);
    expect(() => openRaw(bom)).toThrow(/header begins with a UTF-8 byte-order mark; it must begin with '\{'/);
  });

  test("header not valid JSON", () => {
    expect(() => openRaw("{oops}")).toThrow(/header is not valid JSON/);
    expect(() => openRaw('{"a":1,}')).toThrow(/header is not valid JSON/);
  });

  test("error messages name the file", () => {
    const p = writeRaw(rawFile("{oops}"));
    expect(() => SafetensorsFile.open(p)).toThrow(p);
  });

  test("entry not an object, missing or bad fields", () => {
    expect(() => openRaw(hdr({ w: [1, 2] }))).toThrow(/tensor "w": entry is not an object/);
    expect(() => openRaw(hdr({ w: { shape: [1], data_offsets: [0, 4] } }), 4)).toThrow(/tensor "w": missing "dtype"/);
    expect(() => openRaw(hdr({ w: ok("F31") }), 4)).toThrow(/tensor "w": unknown dtype "F31"/);
    expect(() => openRaw(hdr({ w: ok("f32") }), 4)).toThrow(/unknown dtype "f32"/);
    expect(() => openRaw(hdr({ w: { dtype: "F32", data_offsets: [0, 4] } }), 4)).toThrow(/missing "shape"/);
    expect(() => openRaw(hdr({ w: ok("F32", [-1] as number[]) }), 4)).toThrow(/shape must be an array of non-negative integers/);
    expect(() => openRaw(hdr({ w: ok("F32", [1.5]) }), 4)).toThrow(/shape must be an array of non-negative integers/);
    expect(() => openRaw(hdr({ w: { dtype: "F32", shape: "1", data_offsets: [0, 4] } }), 4)).toThrow(/shape must be an array/);
    expect(() => openRaw(hdr({ w: { dtype: "F32", shape: [1] } }), 4)).toThrow(/missing "data_offsets"/);
    expect(() => openRaw(hdr({ w: ok("F32", [1], [0]) }), 4)).toThrow(/data_offsets must be \[begin, end\]/);
    expect(() => openRaw(hdr({ w: ok("F32", [1], [0, -4]) }), 4)).toThrow(/data_offsets must be \[begin, end\]/);
    expect(() => openRaw(hdr({ w: ok("F32", [1], [0, 4, 8]) }), 4)).toThrow(/data_offsets must be \[begin, end\]/);
    expect(() => openRaw(hdr({ w: ok("F32", [0], [4, 0]) }), 4)).toThrow(/end < begin/);
  });

  test("__metadata__ must be string → string", () => {
    expect(() => openRaw(hdr({ __metadata__: { a: 1 } }))).toThrow(/__metadata__ must be an object of string to string/);
    expect(() => openRaw(hdr({ __metadata__: ["a"] }))).toThrow(/__metadata__ must be an object of string to string/);
    expect(() => openRaw(hdr({ __metadata__: "x" }))).toThrow(/__metadata__ must be an object of string to string/);
    const st = openRaw(hdr({ __metadata__: { format: "pt" } }));
    expect(st.metadata).toEqual({ format: "pt" });
    st.close();
  });

  test("unpaired surrogate escapes are rejected (as by serde_json)", () => {
    expect(() => openRaw('{"\\ud800":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}')).toThrow(/unpaired UTF-16 surrogate/);
  });

  test("size mismatch: element count × dtype size != end − begin", () => {
    expect(() => openRaw(hdr({ w: ok("F32", [2], [0, 4]) }), 4)).toThrow(/size mismatch.*needs 8 bytes.*span 4/);
    expect(() => openRaw(hdr({ w: ok("F16", [3], [0, 4]) }), 4)).toThrow(/size mismatch/);
    expect(() => openRaw(hdr({ w: ok("F4", [3], [0, 2]) }), 2)).toThrow(/not a whole number of bytes/);
  });

  test("overflow of element count is caught", () => {
    const big = 2 ** 40;
    expect(() => openRaw(hdr({ w: ok("F32", [big, big, 0], [0, 0]) }))).toThrow(/overflow/);
    expect(() => openRaw(hdr({ w: ok("F64", [2 ** 31, 2 ** 31], [0, 4]) }), 4)).toThrow(/overflow/);
  });

  test("offsets not contiguous: gap at start, gap between, overlap", () => {
    expect(() => openRaw(hdr({ w: ok("F32", [1], [4, 8]) }), 8)).toThrow(/not contiguous.*first tensor must begin at 0/);
    expect(() => openRaw(hdr({ a: ok("F32", [1], [0, 4]), b: ok("F32", [1], [8, 12]) }), 12)).toThrow(/tensor "b": data_offsets not contiguous.*\(gap\)/);
    expect(() => openRaw(hdr({ a: ok("F32", [2], [0, 8]), b: ok("F32", [1], [4, 8]) }), 8)).toThrow(/not contiguous.*\(overlap\)/);
    expect(() => openRaw(hdr({ a: ok("F32", [1], [0, 4]), b: ok("F32", [1], [0, 4]) }), 4)).toThrow(/not contiguous/);
  });

  test("data section length mismatch: trailing bytes, truncated data, empty list with data", () => {
    expect(() => openRaw(hdr({ w: ok() }), 5)).toThrow(/data section length mismatch.*1 trailing bytes/);
    expect(() => openRaw(hdr({ w: ok("F32", [2], [0, 8]) }), 4)).toThrow(/data section length mismatch.*4 bytes missing/);
    expect(() => openRaw("{}", 1)).toThrow(/data section length mismatch/);
    const st = openRaw("{}      ", 0); // trailing-space padding is fine
    expect(st.tensors.size).toBe(0);
    st.close();
  });
});

describe("CheckpointTensors", () => {
  function modelDir(name: string): string {
    const d = join(dir, `${counter++}-${name}`);
    mkdirSync(d);
    return d;
  }

  test("single model.safetensors", () => {
    const d = modelDir("single");
    writeSafetensors(join(d, "model.safetensors"), [
      { name: "a", dtype: "F32", shape: [2], data: f32Bytes([1, 2]) },
      { name: "b", dtype: "BF16", shape: [1], data: fromFloat32([3], "BF16") },
    ]);
    const ck = CheckpointTensors.open(d);
    expect(ck.names()).toEqual(["a", "b"]);
    expect(ck.has("a")).toBe(true);
    expect(ck.has("zz")).toBe(false);
    expect(ck.info("b").dtype).toBe("BF16");
    expect(ck.info("b").file).toBe(join(d, "model.safetensors"));
    expect(Array.from(toFloat32(ck.read("a"), "F32"))).toEqual([1, 2]);
    expect(() => ck.info("zz")).toThrow(/tensor "zz" not found in/);
    expect(() => ck.read("zz")).toThrow(/tensor "zz" not found in/);
    ck.close();
    ck.close();
    expect(() => ck.read("a")).toThrow(/closed/);
  });

  function shardedDir(weightMap: Record<string, string>): string {
    const d = modelDir("sharded");
    writeSafetensors(join(d, "model-00001-of-00002.safetensors"), [
      { name: "layer.0.w", dtype: "F32", shape: [2], data: f32Bytes([1, 2]) },
      { name: "extra", dtype: "U8", shape: [1], data: new Uint8Array([9]) },
    ]);
    writeSafetensors(join(d, "model-00002-of-00002.safetensors"), [
      { name: "layer.1.w", dtype: "F16", shape: [2], data: fromFloat32([3, 4], "F16") },
    ]);
    writeFileSync(join(d, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: 12 }, weight_map: weightMap }));
    return d;
  }

  test("sharded index with two shards", () => {
    const d = shardedDir({ "layer.0.w": "model-00001-of-00002.safetensors", "layer.1.w": "model-00002-of-00002.safetensors" });
    const ck = CheckpointTensors.open(d);
    expect(ck.files.length).toBe(2);
    expect(ck.names()).toEqual(["layer.0.w", "layer.1.w"]);
    expect(ck.has("extra")).toBe(false); // in a shard but not in the map: ignored
    expect(ck.info("layer.1.w").file).toBe(join(d, "model-00002-of-00002.safetensors"));
    expect(Array.from(toFloat32(ck.read("layer.0.w"), "F32"))).toEqual([1, 2]);
    expect(Array.from(toFloat32(ck.read("layer.1.w"), "F16"))).toEqual([3, 4]);
    ck.close();
    expect(ck.files.every((f) => f.closed)).toBe(true);
  });

  test("tensor in the index but missing from its shard", () => {
    const d = shardedDir({ "layer.0.w": "model-00001-of-00002.safetensors", "layer.1.w": "model-00001-of-00002.safetensors" });
    expect(() => CheckpointTensors.open(d)).toThrow(/tensor "layer\.1\.w" is listed in .* but missing from its shard model-00001-of-00002\.safetensors/);
  });

  test("shard file missing", () => {
    const d = shardedDir({ "layer.0.w": "model-00003-of-00002.safetensors" });
    expect(() => CheckpointTensors.open(d)).toThrow(/shard model-00003-of-00002\.safetensors .* does not exist/);
  });

  test("bad index JSON, missing or invalid weight_map", () => {
    const d1 = modelDir("badjson");
    writeFileSync(join(d1, "model.safetensors.index.json"), "{ not json");
    expect(() => CheckpointTensors.open(d1)).toThrow(/model\.safetensors\.index\.json is not valid JSON/);
    const d2 = modelDir("nomap");
    writeFileSync(join(d2, "model.safetensors.index.json"), JSON.stringify({ metadata: {} }));
    expect(() => CheckpointTensors.open(d2)).toThrow(/has no "weight_map"/);
    const d3 = modelDir("badmap");
    writeFileSync(join(d3, "model.safetensors.index.json"), JSON.stringify({ weight_map: ["a"] }));
    expect(() => CheckpointTensors.open(d3)).toThrow(/"weight_map" must be an object/);
    const d4 = modelDir("badshard");
    writeFileSync(join(d4, "model.safetensors.index.json"), JSON.stringify({ weight_map: { a: 3 } }));
    expect(() => CheckpointTensors.open(d4)).toThrow(/entry for tensor "a" must be a shard file name/);
    const d5 = modelDir("escape");
    writeFileSync(join(d5, "model.safetensors.index.json"), JSON.stringify({ weight_map: { a: "../x.safetensors" } }));
    expect(() => CheckpointTensors.open(d5)).toThrow(/outside the model folder/);
  });

  test("a malformed shard names the shard file", () => {
    const d = modelDir("badshardfile");
    writeFileSync(join(d, "s.safetensors"), rawFile("{oops}"));
    writeFileSync(join(d, "model.safetensors.index.json"), JSON.stringify({ weight_map: { a: "s.safetensors" } }));
    expect(() => CheckpointTensors.open(d)).toThrow(/s\.safetensors: header is not valid JSON/);
  });

  test("pytorch_model.bin only: convert error", () => {
    const d = modelDir("pt");
    writeFileSync(join(d, "pytorch_model.bin"), new Uint8Array([0x80, 0x02]));
    writeFileSync(join(d, "config.json"), "{}");
    expect(() => CheckpointTensors.open(d)).toThrow(/only PyTorch pickle weights.*pytorch_model\.bin.*[Cc]onvert them to safetensors.*save_pretrained\(out, safe_serialization=True\)/);
    const d2 = modelDir("pth");
    writeFileSync(join(d2, "consolidated.00.pth"), new Uint8Array(1));
    expect(() => CheckpointTensors.open(d2)).toThrow(/only PyTorch pickle weights/);
  });

  test("empty folder and missing folder", () => {
    const d = modelDir("empty");
    expect(() => CheckpointTensors.open(d)).toThrow(new RegExp(`no model\\.safetensors or model\\.safetensors\\.index\\.json in .*empty`));
    expect(() => CheckpointTensors.open(join(dir, "does-not-exist"))).toThrow(/does not exist/);
  });
});
