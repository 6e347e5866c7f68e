/**
 * GGUF files: the reader (malformed files crafted byte by byte, as
 * safetensors.test.ts does for safetensors), the writer, the metadata →
 * spec mapping, the tokenizer rebuilt from `tokenizer.ggml.*`, and a
 * converted file loading to the same logits as its folder.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type ConvertType, convertToGguf } from "../lib/checkpoint/gguf-convert.ts";
import { GgmlType, GgufFile, GgufType, shortestF32 } from "../lib/checkpoint/gguf.ts";
import { ggmlTypeOf, ggufSpec, openGgufModel } from "../lib/checkpoint/gguf-model.ts";
import { type GgufWriteValue, writeGgufFile } from "../lib/checkpoint/gguf-writer.ts";
import { readModelSpec } from "../lib/checkpoint/config.ts";
import { planTensor, STORAGE_DTYPE } from "../lib/checkpoint/quant-plan.ts";
import { fromFloat32, toFloat32 } from "../lib/checkpoint/half.ts";
import { SafetensorsFile } from "../lib/checkpoint/safetensors.ts";
import { Role } from "../lib/engine/abi.ts";
import { NativeBackend } from "../lib/engine/native.ts";
import { SkipTokenizer } from "../lib/checkpoint/tokenizer.ts";
import { SkipDecoder } from "../lib/index.ts";
import { main } from "../bin/skipdecode.ts";
import { Rng, type TinyModelOptions } from "../lib/tiny/model.ts";
import { createApp } from "../server/app.ts";
import { cleanupTemp, tempDir, tinyModel } from "./helpers.ts";

afterAll(cleanupTemp);

// ---------------------------------------------------------------------------
// a byte-level GGUF builder, independent of lib's writer
// ---------------------------------------------------------------------------

class Raw {
  parts: number[] = [];
  u8(v: number) {
    this.parts.push(v & 0xff);
    return this;
  }
  u32(v: number) {
    for (let i = 0; i < 4; i++) this.parts.push((v >>> (8 * i)) & 0xff);
    return this;
  }
  u64(v: bigint | number) {
    let x = BigInt(v);
    for (let i = 0; i < 8; i++) {
      this.parts.push(Number(x & 0xffn));
      x >>= 8n;
    }
    return this;
  }
  bytes(b: ArrayLike<number>) {
    for (let i = 0; i < b.length; i++) this.parts.push(b[i]!);
    return this;
  }
  str(s: string) {
    const b = new TextEncoder().encode(s);
    return this.u64(b.length).bytes(b);
  }
  pad(to: number) {
    while (this.parts.length % to) this.parts.push(0);
    return this;
  }
  head(version: number, nTensors: number | bigint, nKv: number | bigint) {
    return this.bytes(new TextEncoder().encode("GGUF")).u32(version).u64(nTensors).u64(nKv);
  }
  kvU32(key: string, v: number) {
    return this.str(key).u32(GgufType.UINT32).u32(v);
  }
  kvStr(key: string, v: string) {
    return this.str(key).u32(GgufType.STRING).str(v);
  }
  tensor(name: string, dims: (number | bigint)[], type: number, offset: number | bigint) {
    this.str(name).u32(dims.length);
    for (const d of dims) this.u64(d);
    return this.u32(type).u64(offset);
  }
  done(): Uint8Array {
    return new Uint8Array(this.parts);
  }
}

const dir = tempDir("skd-gguf-");
let counter = 0;
function file(bytes: Uint8Array): string {
  const p = join(dir, `${counter++}.gguf`);
  writeFileSync(p, bytes);
  return p;
}
const open = (bytes: Uint8Array) => GgufFile.open(file(bytes)).close();

/** A valid file: two keys, two F32 tensors ([2, 4] and [3]). */
function valid(version = 3): Uint8Array {
  const r = new Raw().head(version, 2, 2).kvStr("general.architecture", "llama").kvU32("general.alignment", 32);
  r.tensor("a", [4, 2], GgmlType.F32, 0).tensor("b", [3], GgmlType.F32, 32).pad(32);
  for (let i = 0; i < 8; i++) r.bytes(new Uint8Array(new Float32Array([i]).buffer));
  r.bytes(new Uint8Array(32));
  return r.done();
}

describe("reader: well-formed files", () => {
  test("v3 and v2 files read the same: keys, tensor infos, data", () => {
    for (const v of [2, 3]) {
      using f = GgufFile.open(file(valid(v)));
      expect(f.version).toBe(v);
      expect(f.string("general.architecture")).toBe("llama");
      expect(f.alignment).toBe(32);
      expect(f.tensors.get("a")).toEqual({ name: "a", dims: [4, 2], shape: [2, 4], type: GgmlType.F32, offset: 0, nbytes: 32 });
      expect(f.dataStart % 32).toBe(0);
      expect(Array.from(new Float32Array(f.read("a").slice().buffer))).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
      const into = new Uint8Array(64).fill(9);
      expect(f.read("b", into).length).toBe(12);
      expect(into[12]).toBe(9);
    }
  });

  test("the writer's values round-trip through the reader, every type", () => {
    const p = join(dir, "rt.gguf");
    const kv: [string, GgufWriteValue][] = [
      ["u8", { type: "u8", value: 200 }],
      ["i8", { type: "i8", value: -100 }],
      ["u16", { type: "u16", value: 60000 }],
      ["i16", { type: "i16", value: -30000 }],
      ["u32", { type: "u32", value: 4e9 }],
      ["i32", { type: "i32", value: -2e9 }],
      ["u64", { type: "u64", value: 2 ** 50 }],
      ["i64", { type: "i64", value: -(2 ** 50) }],
      ["f32", { type: "f32", value: 1e-6 }],
      ["f64", { type: "f64", value: Math.PI }],
      ["bool", { type: "bool", value: true }],
      ["s", { type: "string", value: "héllo ▁ 🚀" }],
      ["as", { type: "array", of: "string", value: ["a", "", "▁b"] }],
      ["ai", { type: "array", of: "i32", value: [1, -2, 3] }],
      ["af", { type: "array", of: "f32", value: [0.5, -1000] }],
      ["ab", { type: "array", of: "bool", value: [true, false] }],
    ];
    writeGgufFile(p, kv, [
      { name: "m", shape: [2, 32], type: GgmlType.Q8_0, data: new Uint8Array(68).fill(3) },
      { name: "v", shape: [5], type: GgmlType.F32, data: () => fromFloat32([1, 2, 3, 4, 5], "F32") },
    ]);
    using f = GgufFile.open(p);
    expect(f.int("u8")).toBe(200);
    expect(f.int("i8", null, -1000)).toBe(-100);
    expect(f.int("u32")).toBe(4e9);
    expect(f.int("i64", null, -(2 ** 53))).toBe(-(2 ** 50));
    expect(f.float("f32")).toBe(1e-6); // the shortest decimal, not 9.99999997e-7
    expect(f.float("f64")).toBe(Math.PI);
    expect(f.bool("bool")).toBe(true);
    expect(f.string("s")).toBe("héllo ▁ 🚀");
    expect(f.strings("as")).toEqual(["a", "", "▁b"]);
    expect(Array.from(f.numbers("ai", [GgufType.INT32])! as ArrayLike<number>)).toEqual([1, -2, 3]);
    expect(Array.from(f.numbers("af", [GgufType.FLOAT32])! as ArrayLike<number>)).toEqual([0.5, -1000]);
    expect(f.get("ab")!.value).toEqual([true, false]);
    expect(f.int("general.alignment")).toBe(32);
    expect(f.tensors.get("m")).toMatchObject({ shape: [2, 32], dims: [32, 2], nbytes: 68 });
    expect(f.read("m")).toEqual(new Uint8Array(68).fill(3));
    expect(f.tensors.get("v")!.offset % 32).toBe(0);
  });

  test("a mapped file's tensors are views of the map with the bytes read() copies; the map ends with the file", () => {
    const cpu = NativeBackend.get("cpu");
    const p = file(valid());
    using copied = GgufFile.open(p);
    const f = GgufFile.open(p, { map: (path) => cpu.mapFile(path) });
    expect(f.mapped).toBe(true);
    for (const name of ["a", "b"]) expect(f.read(name)).toEqual(copied.read(name));
    const a = f.read("a");
    expect(a.buffer.byteLength).toBe(a.byteLength); // a view of the map's range, not of a copied buffer
    f.done("a"); // pages dropped: the file is read again
    expect(f.read("a")).toEqual(copied.read("a"));
    f.close();
    expect(() => f.read("a")).toThrow(/closed/);
    using m = cpu.mapFile(p);
    expect(() => m.view(0, m.size + 1)).toThrow(/outside the file's \d+ bytes/);
    m.close();
    expect(() => m.view(0, 4)).toThrow(/after the map was closed/);
    expect(() => cpu.mapFile(join(dir, "no-such.gguf"))).toThrow(/cannot open .*no-such.gguf/);
    expect(() => cpu.mapFile(dir)).toThrow(/not a non-empty regular file/);
  });

  test("arrays: false skips the tokenizer arrays but keeps their length", () => {
    const p = join(dir, "skip.gguf");
    writeGgufFile(p, [["tokenizer.ggml.tokens", { type: "array", of: "string", value: ["a", "b", "c"] }], ["x.layers", { type: "array", of: "u32", value: [4, 4] }]], []);
    using f = GgufFile.open(p, { arrays: false });
    expect(f.get("tokenizer.ggml.tokens")).toMatchObject({ length: 3, value: null });
    expect(() => f.strings("tokenizer.ggml.tokens")).toThrow(/was not decoded/);
    expect(Array.from(f.numbers("x.layers", [GgufType.UINT32])! as ArrayLike<number>)).toEqual([4, 4]);
  });

  test("typed getters name the key and the type they wanted", () => {
    using f = GgufFile.open(file(valid()));
    expect(() => f.int("general.architecture")).toThrow(/metadata "general.architecture" must be an integer, got string "llama"/);
    expect(() => f.string("general.alignment")).toThrow(/must be a string, got u32 32/);
    expect(() => f.string("nope")).toThrow(/metadata "nope" is missing/);
    expect(f.string("nope", null)).toBeNull();
    expect(() => f.int("general.alignment", null, 0, 8)).toThrow(/must be an integer in \[0, 8\], got 32/);
    expect(() => f.read("zzz")).toThrow(/no tensor "zzz"/);
    f.close();
    f.close();
    expect(() => f.read("a")).toThrow(/closed/);
  });

  test("writer refuses what it cannot write", () => {
    const p = join(dir, "bad.gguf");
    expect(() => writeGgufFile(p, [["k", { type: "u8", value: 300 }]], [])).toThrow(/300 is not a u8/);
    expect(() => writeGgufFile(p, [["k", { type: "u8", value: 1 }], ["k", { type: "u8", value: 1 }]], [])).toThrow(/duplicate key "k"/);
    expect(() => writeGgufFile(p, [], [{ name: "q", shape: [2, 33], type: GgmlType.Q8_0, data: new Uint8Array(0) }])).toThrow(/whole 32-blocks, got 33 columns/);
    expect(() => writeGgufFile(p, [], [{ name: "w", shape: [4], type: GgmlType.F32, data: new Uint8Array(8) }])).toThrow(/8 bytes given, 16 expected/);
    expect(() => readFileSync(p)).toThrow(); // nothing left behind
    expect(() => readFileSync(`${p}.partial`)).toThrow();
  });
});

describe("reader: malformed files get a clear error", () => {
  test("missing file, empty file, wrong magic", () => {
    expect(() => GgufFile.open(join(dir, "nope.gguf"))).toThrow(/cannot open .*nope\.gguf/);
    expect(() => open(new Uint8Array(0))).toThrow(/magic.*the file ends after 0 more bytes, 4 needed/);
    expect(() => open(new TextEncoder().encode('{"not": "gguf"}'))).toThrow(/not a GGUF file: it starts with "\{"no"/);
  });

  test("versions: 1 and 4 refused, byte-swapped refused", () => {
    expect(() => open(new Raw().head(1, 0, 0).done())).toThrow(/GGUF version 1 is not supported \(skipdecode reads versions 2 and 3\)/);
    expect(() => open(new Raw().head(4, 0, 0).done())).toThrow(/GGUF version 4 is not supported/);
    expect(() => open(new Raw().head(0x03000000, 0, 0).done())).toThrow(/big-endian GGUF files are not supported/);
  });

  test("every truncation of a valid file is an error naming the cut", () => {
    const good = valid();
    const end = good.length - 20; // the last 20 bytes pad tensor "b"; the file is whole without them
    for (let n = 0; n < end; n++) {
      expect(() => open(good.subarray(0, n))).toThrow(/gguf: .*(the file ends after|runs past the end|more than this file can hold)/);
    }
    open(good.subarray(0, end));
  });

  test("absurd counts and lengths are refused before anything is allocated", () => {
    expect(() => open(new Raw().head(3, 1n << 60n, 0).done())).toThrow(/tensor count.*1152921504606846976 tensors is more than this file can hold/);
    expect(() => open(new Raw().head(3, 0, 0xffffffffffffffffn).done())).toThrow(/key\/value count.*is more than this file can hold/);
    expect(() => open(new Raw().head(3, 0, 1).u64(1n << 40n).done())).toThrow(/key 0 length.*1099511627776 bytes is more than this file can hold/);
    const longValue = new Raw().head(3, 0, 1).str("k").u32(GgufType.STRING).u64(1n << 62n).done();
    expect(() => open(longValue)).toThrow(/metadata "k" length.*bytes is more than this file can hold/);
    const longArray = new Raw().head(3, 0, 1).str("k").u32(GgufType.ARRAY).u32(GgufType.UINT32).u64(1n << 50n).done();
    expect(() => open(longArray)).toThrow(/metadata "k" length.*elements is more than this file can hold/);
    const strArray = new Raw().head(3, 0, 1).str("k").u32(GgufType.ARRAY).u32(GgufType.STRING).u64(1000).done();
    expect(() => open(strArray)).toThrow(/metadata "k" length.*1000 elements is more than this file can hold/);
  });

  test("bad value types: unknown, array of arrays, bool not 0/1, bad UTF-8, empty and duplicate keys", () => {
    expect(() => open(new Raw().head(3, 0, 1).str("k").u32(13).u32(0).done())).toThrow(/metadata "k" type.*unknown value type 13/);
    expect(() => open(new Raw().head(3, 0, 1).str("k").u32(GgufType.ARRAY).u32(99).u64(0).done())).toThrow(/unknown value type 99/);
    expect(() => open(new Raw().head(3, 0, 1).str("k").u32(GgufType.ARRAY).u32(GgufType.ARRAY).u64(1).done())).toThrow(/arrays of arrays are not supported/);
    expect(() => open(new Raw().head(3, 0, 1).str("k").u32(GgufType.BOOL).u8(2).done())).toThrow(/a bool must be 0 or 1, got 2/);
    expect(() => open(new Raw().head(3, 0, 1).u64(2).bytes([0xff, 0xfe]).u32(GgufType.UINT8).u8(0).done())).toThrow(/key 0.*not valid UTF-8/);
    expect(() => open(new Raw().head(3, 0, 1).str("").u32(GgufType.UINT8).u8(0).done())).toThrow(/empty key/);
    expect(() => open(new Raw().head(3, 0, 2).kvU32("k", 1).kvU32("k", 2).done())).toThrow(/duplicate key "k"/);
  });

  test("general.alignment: wrong type, not a power of two", () => {
    expect(() => open(new Raw().head(3, 0, 1).kvStr("general.alignment", "32").done())).toThrow(/general.alignment.*must be a u32, got string "32"/);
    expect(() => open(new Raw().head(3, 0, 1).kvU32("general.alignment", 24).done())).toThrow(/24 is not a power of two/);
    expect(() => open(new Raw().head(3, 0, 1).kvU32("general.alignment", 0).done())).toThrow(/0 is not a power of two/);
  });

  test("tensor infos: dims, overflow, types, block multiples, names", () => {
    const one = (name: string, dims: (number | bigint)[], type: number, offset: number | bigint = 0, data = 64) =>
      new Raw().head(3, 1, 0).tensor(name, dims, type, offset).pad(32).bytes(new Uint8Array(data)).done();
    expect(() => open(one("t", [1, 1, 1, 1, 1], GgmlType.F32))).toThrow(/tensor "t" dims count.*5 dims \(at most 4\)/);
    expect(() => open(one("t", [1n << 40n, 1n << 40n], GgmlType.F32))).toThrow(/element count overflow \(more than 2\^53\)/);
    expect(() => open(one("t", [0xffffffffffffffffn], GgmlType.F32))).toThrow(/overflow/);
    expect(() => open(one("t", [4], 99))).toThrow(/tensor "t" type.*unknown ggml type 99/);
    expect(() => open(one("t", [4], 4))).toThrow(/unknown ggml type 4/); // Q4_2: removed from ggml
    expect(() => open(one("t", [33, 2], GgmlType.Q8_0))).toThrow(/Q8_0 rows hold whole blocks of 32, but dim 0 is 33/);
    expect(() => open(one("t", [255], GgmlType.Q4_K))).toThrow(/Q4_K rows hold whole blocks of 256/);
    expect(() => open(one("x".repeat(64), [4], GgmlType.F32))).toThrow(/is longer than 63 bytes/);
    const dup = new Raw().head(3, 2, 0).tensor("t", [4], GgmlType.F32, 0).tensor("t", [4], GgmlType.F32, 32).pad(32).bytes(new Uint8Array(64)).done();
    expect(() => open(dup)).toThrow(/duplicate tensor "t"/);
  });

  test("tensor data: unaligned, past the end, overlapping, offsets beyond any file", () => {
    const one = (offset: number | bigint, data: number, dims = [4]) => new Raw().head(3, 1, 0).tensor("t", dims, GgmlType.F32, offset).pad(32).bytes(new Uint8Array(data)).done();
    expect(() => open(one(4, 64))).toThrow(/offset 4 is not a multiple of the alignment 32/);
    expect(() => open(one(32, 40))).toThrow(/tensor "t".*\[32, 48\) runs past the end of the data section \(40 bytes; truncated\?\)/);
    expect(() => open(one(0, 8))).toThrow(/runs past the end/);
    expect(() => open(one(1n << 62n, 64))).toThrow(/offset 4611686018427387904 is beyond any file/);
    const overlap = new Raw().head(3, 2, 0).tensor("a", [16], GgmlType.F32, 0).tensor("b", [4], GgmlType.F32, 32).pad(32).bytes(new Uint8Array(128)).done();
    expect(() => open(overlap)).toThrow(/tensor "b".*\[32, 48\) overlaps tensor "a" \(which ends at 64\)/);
  });

  test("random byte flips of a valid file: an Error or a file, never a crash", () => {
    const good = valid();
    const rng = new Rng(5);
    let errors = 0;
    for (let i = 0; i < 400; i++) {
      const bad = good.slice();
      const flips = 1 + Math.floor(rng.next() * 3);
      for (let k = 0; k < flips; k++) bad[Math.floor(rng.next() * bad.length)] = Math.floor(rng.next() * 256);
      try {
        open(bad);
      } catch (e) {
        expect(e).toBeInstanceOf(Error);
        expect((e as Error).message).toMatch(/^gguf: /);
        errors++;
      }
    }
    expect(errors).toBeGreaterThan(50);
  });
});

// ---------------------------------------------------------------------------
// models
// ---------------------------------------------------------------------------

const convertCache = new Map<string, string>();
/** A converted GGUF of a tiny model (cached per options and type). */
async function converted(opts: TinyModelOptions, type: ConvertType = "f32"): Promise<{ dir: string; gguf: string }> {
  const folder = tinyModel(opts);
  const key = JSON.stringify([opts, type]);
  let out = convertCache.get(key);
  if (!out) {
    out = join(tempDir("skd-conv-"), `m-${type}.gguf`);
    await convertToGguf(folder, out, { type });
    convertCache.set(key, out);
  }
  return { dir: folder, gguf: out };
}

/** Rewrites a converted file with some keys or tensors changed. */
function edited(src: string, edit: { kv?: (kv: Map<string, GgufWriteValue>) => void; tensors?: (t: { name: string; shape: number[]; type: number; data: Uint8Array }[]) => void }): string {
  using f = GgufFile.open(src);
  const kv = new Map<string, GgufWriteValue>();
  const codes: Record<number, string> = { 0: "u8", 1: "i8", 2: "u16", 3: "i16", 4: "u32", 5: "i32", 6: "f32", 7: "bool", 8: "string", 10: "u64", 11: "i64", 12: "f64" };
  for (const [k, e] of f.kv) {
    if (e.type === GgufType.ARRAY) kv.set(k, { type: "array", of: codes[e.arrayType!], value: Array.from(e.value as ArrayLike<unknown>) } as GgufWriteValue);
    else kv.set(k, { type: codes[e.type], value: e.value } as GgufWriteValue);
  }
  const tensors = [...f.tensors.values()].map((t) => ({ name: t.name, shape: t.shape, type: t.type, data: f.read(t.name) }));
  edit.kv?.(kv);
  edit.tensors?.(tensors);
  const p = join(tempDir("skd-edit-"), "e.gguf");
  writeGgufFile(p, [...kv], tensors);
  return p;
}

const LLAMA: TinyModelOptions = { family: "llama", seed: 40, layers: 2, heads: 4, kvHeads: 2 };

describe("metadata → model spec", () => {
  for (const family of ["llama", "mistral", "qwen2"] as const) {
    test(`${family}: the GGUF's spec is the folder's (arch "${family === "qwen2" ? "qwen2" : "llama"}")`, async () => {
      const { dir: folder, gguf } = await converted({ ...LLAMA, family, seed: 41 });
      const a = readModelSpec(folder);
      const b = openGgufModel(gguf).spec;
      expect(b).toEqual({ ...a, arch: family === "qwen2" ? "qwen2" : "llama", torchDtype: null });
    });
  }

  test("GQA, head_dim != hidden / heads, tied head, linear and llama3 rope scaling", async () => {
    const cases: TinyModelOptions[] = [
      { family: "llama", seed: 42, heads: 4, kvHeads: 1, headDim: 24, tiedHead: true, ropeScaling: { type: "linear", factor: 2 } },
      { family: "llama", seed: 43, heads: 4, kvHeads: 2, ropeTheta: 500000, ropeScaling: { type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 64 } },
    ];
    for (const c of cases) {
      const { dir: folder, gguf } = await converted(c);
      const a = readModelSpec(folder);
      const b = openGgufModel(gguf).spec;
      expect({ ...b, rope: null }).toEqual({ ...a, torchDtype: null, rope: null });
      if (a.rope!.scaling?.type === "llama3") {
        // llama.cpp's form: per-pair divisors in rope_freqs
        expect(b.rope!.scaling!.type).toBe("factors");
        expect(b.rope!.theta).toBe(500000);
      } else expect(b.rope).toEqual(a.rope);
    }
  });

  test("wrong or missing metadata is refused, naming the key", async () => {
    const { gguf } = await converted(LLAMA);
    const bad = (kv: (m: Map<string, GgufWriteValue>) => void) => () => openGgufModel(edited(gguf, { kv })).tokenizer();
    expect(bad((m) => m.set("general.architecture", { type: "string", value: "gpt2" }))).toThrow(/architecture "gpt2" is not supported \(skipdecode reads "llama" and "qwen2"\)/);
    expect(bad((m) => m.set("llama.block_count", { type: "string", value: "2" }))).toThrow(/metadata "llama.block_count" must be an integer, got string "2"/);
    expect(bad((m) => m.delete("llama.context_length"))).toThrow(/metadata "llama.context_length" is missing/);
    expect(bad((m) => m.set("llama.attention.head_count_kv", { type: "u32", value: 3 }))).toThrow(/3 KV heads do not divide 4 heads/);
    expect(bad((m) => m.set("llama.attention.head_count", { type: "array", of: "u32", value: [4, 8] }))).toThrow(/differs between layers/);
    expect(bad((m) => m.set("llama.rope.dimension_count", { type: "u32", value: 8 }))).toThrow(/partial rotary is not supported/);
    expect(bad((m) => m.set("llama.rope.scaling.type", { type: "string", value: "yarn" }))).toThrow(/rope scaling type "yarn" is not supported/);
    expect(bad((m) => m.set("llama.vocab_size", { type: "u32", value: 7 }))).toThrow(/llama.vocab_size is 7 but token_embd.weight has \d+ rows/);
    expect(bad((m) => m.set("tokenizer.ggml.tokens", { type: "array", of: "u32", value: [1, 2] }))).toThrow(/"tokenizer.ggml.tokens" must be an array of strings, got an array of 2 u32/);
    expect(bad((m) => m.set("tokenizer.ggml.bos_token_id", { type: "u32", value: 1 << 20 }))).toThrow(/"tokenizer.ggml.bos_token_id" must be an integer in \[0, \d+\]/);
    expect(bad((m) => m.set("tokenizer.ggml.pre", { type: "string", value: "deepseek-llm" }))).toThrow(/tokenizer.ggml.pre "deepseek-llm" is not supported \(skipdecode reads: llama-bpe/);
    expect(bad((m) => m.set("tokenizer.ggml.model", { type: "string", value: "t5" }))).toThrow(/tokenizer.ggml.model "t5" is not supported/);
    expect(bad((m) => m.delete("tokenizer.ggml.merges"))).toThrow(/needs "tokenizer.ggml.merges", which is missing/);
    expect(bad((m) => m.set("tokenizer.ggml.token_type", { type: "array", of: "i32", value: [1] }))).toThrow(/"tokenizer.ggml.token_type" has 1 entries for \d+ tokens/);
    expect(bad((m) => {
      const t = (m.get("tokenizer.ggml.tokens")!.value as string[]).slice();
      t[5] = t[6]!;
      m.set("tokenizer.ggml.tokens", { type: "array", of: "string", value: t });
    })).toThrow(/holds ".*" twice \(ids 5 and 6\)/);
  });

  test("wrong tensors are refused by name before anything loads", async () => {
    const { gguf } = await converted(LLAMA);
    const load = (tensors: (t: { name: string; shape: number[]; type: number; data: Uint8Array }[]) => void) =>
      SkipDecoder.load(edited(gguf, { tensors }), { backend: "cpu" });
    await expect(load((ts) => ts.splice(ts.findIndex((t) => t.name === "blk.1.ffn_up.weight"), 1))).rejects.toThrow(/missing tensor "blk.1.ffn_up.weight"/);
    await expect(load((ts) => ts.push({ name: "blk.0.attn_sinks", shape: [4], type: GgmlType.F32, data: new Uint8Array(16) }))).rejects.toThrow(/tensor "blk.0.attn_sinks" not used by skipdecode's llama block/);
    await expect(
      load((ts) => {
        const t = ts.find((x) => x.name === "blk.0.attn_q.weight")!;
        t.type = 13; // Q5_K: a real ggml type the engines do not run
        t.shape = [t.shape[0]!, 256];
        t.data = new Uint8Array(t.shape[0]! * 176);
      }),
    ).rejects.toThrow(/tensor "blk.0.attn_q.weight" has shape \[64, 256\], expected \[64, 64\]/);
    await expect(
      load((ts) => {
        const t = ts.find((x) => x.name === "blk.0.attn_norm.weight")!;
        t.type = GgmlType.F16;
        t.data = t.data.subarray(0, t.data.length / 2);
        const u = ts.find((x) => x.name === "blk.0.ffn_down.weight")!;
        u.type = 7; // Q5_1: llama.cpp's fallback for Q5_K, which skipdecode does not run
        u.data = new Uint8Array((u.shape[0]! * u.shape[1]! * 24) / 32);
      }),
    ).rejects.toThrow(/tensor "blk.0.ffn_down.weight" has type Q5_1; skipdecode loads F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K, Q6_K$/);
    await expect(
      load((ts) => {
        const t = ts.find((x) => x.name === "blk.1.ffn_norm.weight")!;
        t.type = GgmlType.Q8_0;
        t.data = new Uint8Array((t.shape[0]! / 32) * 34);
      }),
    ).rejects.toThrow(/tensor "blk.1.ffn_norm.weight" is a vector stored as Q8_0; skipdecode loads vectors as F32, F16 or BF16/);
  });

  test("a truncated model file is refused at load, naming the tensor", async () => {
    const { gguf } = await converted(LLAMA);
    const bytes = readFileSync(gguf);
    const cut = join(tempDir(), "cut.gguf");
    writeFileSync(cut, bytes.subarray(0, bytes.length - 1000));
    await expect(SkipDecoder.load(cut, { backend: "cpu" })).rejects.toThrow(/gguf: .*cut\.gguf: tensor "[^"]+".*runs past the end of the data section/);
    writeFileSync(cut, bytes.subarray(0, 100));
    await expect(SkipDecoder.load(cut, { backend: "cpu" })).rejects.toThrow(/tensor count.*21 tensors is more than this file can hold/);
    writeFileSync(cut, "not a model");
    await expect(SkipDecoder.load(cut, { backend: "cpu" })).rejects.toThrow(/not a GGUF file.*; a model is a Hugging Face model folder or a GGUF file/);
  });
});

describe("a converted file loads to the folder's logits", () => {
  const ids = [1, 17, 250, 31, 8, 99, 300, 5, 42];
  const cases: [string, TinyModelOptions, "f32" | "f16" | "bf16", "float32" | "auto"][] = [
    ["llama F32 (exact, dtype float32)", { ...LLAMA, seed: 50 }, "f32", "float32"],
    ["mistral F16 (exact, auto)", { ...LLAMA, family: "mistral", seed: 51, dtype: "float16" }, "f16", "auto"],
    ["qwen2 BF16 with q/k/v biases (exact, auto)", { ...LLAMA, family: "qwen2", seed: 52, dtype: "bfloat16" }, "bf16", "auto"],
    ["llama GQA 4:1, head_dim 24, tied head (exact)", { family: "llama", seed: 53, layers: 2, heads: 4, kvHeads: 1, headDim: 24, tiedHead: true, dtype: "float16" }, "f16", "auto"],
  ];
  for (const [name, opts, type, dtype] of cases) {
    test(name, async () => {
      const { dir: folder, gguf } = await converted(opts, type);
      using a = await SkipDecoder.load(folder, { backend: "cpu", dtype });
      using b = await SkipDecoder.load(gguf, { backend: "cpu", dtype });
      const budgets = [2, 2, 2, 2, 2, 2, 1, 1, 1];
      expect(await b.forward(ids)).toEqual(await a.forward(ids));
      expect(await b.forward(ids, { budgets })).toEqual(await a.forward(ids, { budgets }));
    });
  }

  test("llama3 rope scaling: the rope_freqs divisors give the same logits within float32 rounding of the divisors", async () => {
    const opts: TinyModelOptions = { family: "llama", seed: 54, layers: 2, heads: 4, kvHeads: 2, ropeTheta: 500000, ropeScaling: { type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 64 } };
    const { dir: folder, gguf } = await converted(opts);
    using a = await SkipDecoder.load(folder, { backend: "cpu", dtype: "float32" });
    using b = await SkipDecoder.load(gguf, { backend: "cpu", dtype: "float32" });
    const la = await a.forward(ids);
    const lb = await b.forward(ids);
    let diff = 0;
    let scale = 0;
    for (let i = 0; i < la.length; i++) {
      diff = Math.max(diff, Math.abs(la[i]! - lb[i]!));
      scale = Math.max(scale, Math.abs(la[i]!));
    }
    expect(diff).toBeLessThan(1e-4 * scale); // the divisors are f32 in the file, the folder's blend is computed in f64
  });

  test("a fused attn_qkv tensor loads as its three row blocks", async () => {
    const { dir: folder, gguf } = await converted({ ...LLAMA, seed: 58 });
    const fusedFile = edited(gguf, {
      tensors: (ts) => {
        for (let l = 0; l < 2; l++) {
          const parts = ["attn_q", "attn_k", "attn_v"].map((n) => ts.findIndex((t) => t.name === `blk.${l}.${n}.weight`));
          const [q, k, v] = parts.map((i) => ts[i]!);
          const data = new Uint8Array(q!.data.length + k!.data.length + v!.data.length);
          data.set(q!.data, 0);
          data.set(k!.data, q!.data.length);
          data.set(v!.data, q!.data.length + k!.data.length);
          const fused = { name: `blk.${l}.attn_qkv.weight`, shape: [q!.shape[0]! + k!.shape[0]! + v!.shape[0]!, q!.shape[1]!], type: q!.type, data };
          for (const i of parts.sort((x, y) => y - x)) ts.splice(i, 1);
          ts.push(fused);
        }
      },
    });
    using a = await SkipDecoder.load(folder, { backend: "cpu", dtype: "float32" });
    using b = await SkipDecoder.load(fusedFile, { backend: "cpu", dtype: "float32" });
    expect(await b.forward(ids)).toEqual(await a.forward(ids));
  });

  test("the q/k rows in the file are llama.cpp's interleaved pairs; qwen2's are not permuted", async () => {
    for (const family of ["llama", "qwen2"] as const) {
      const { dir: folder, gguf } = await converted({ ...LLAMA, family, seed: 55 });
      using f = GgufFile.open(gguf);
      const st = readModelSpec(folder);
      const { SafetensorsFile } = await import("../lib/checkpoint/safetensors.ts");
      using s = SafetensorsFile.open(join(folder, "model.safetensors"));
      const hf = new Float32Array(s.read("model.layers.0.self_attn.k_proj.weight").slice().buffer);
      const gg = new Float32Array(f.read("blk.0.attn_k.weight").slice().buffer);
      const d = st.hiddenSize, hd = st.headDim;
      const row = (a: Float32Array, r: number) => Array.from(a.subarray(r * d, (r + 1) * d));
      // head 1, pair i = 3: GGUF rows hd + 6, hd + 7 hold HF rows hd + 3 and hd + 3 + hd/2
      const want = family === "llama" ? [hd + 3, hd + 3 + hd / 2] : [hd + 6, hd + 7];
      expect([row(gg, hd + 6), row(gg, hd + 7)]).toEqual([row(hf, want[0]!), row(hf, want[1]!)]);
    }
  });
});

describe("quantized files", () => {
  /** Rows of 256: every K-quant applies (hidden 256, ffn 512). */
  const BLOCKS: TinyModelOptions = { family: "llama", seed: 56, layers: 2, hidden: 256, heads: 4, kvHeads: 2, ffn: 512, dtype: "float16" };
  const ids = [1, 17, 250, 31, 8, 99, 300, 5, 42];

  for (const type of ["q8_0", "q4_0"] as const) {
    test(`${type}: the file's logits equal the folder's quantized on load with dtype "${type}" (the same blocks)`, async () => {
      const { dir: folder, gguf } = await converted(BLOCKS, type);
      using a = await SkipDecoder.load(folder, { backend: "cpu", dtype: type });
      using b = await SkipDecoder.load(gguf, { backend: "cpu" });
      expect(await b.forward(ids)).toEqual(await a.forward(ids));
      const quantized = (d: SkipDecoder) => Object.fromEntries(Object.entries(d.loadSummary.byType).filter(([t]) => t.startsWith("Q")));
      expect(quantized(b)).toEqual(quantized(a)); // norms: F32 in the file, F16 in the folder; both run in fp32
    });
  }

  /** The engine role of a GGUF matrix name. */
  const roles: [RegExp, number][] = [[/attn_q/, Role.Q_W], [/attn_k/, Role.K_W], [/attn_v/, Role.V_W], [/attn_output/, Role.O_W], [/ffn_gate/, Role.GATE_W], [/ffn_up/, Role.FC1_W], [/ffn_down/, Role.FC2_W], [/token_embd/, Role.EMBED_TOKENS], [/^output\./, Role.LM_HEAD]];

  test("q4_k_m: each tensor has the type llama-quantize's Q4_K_M gives it, and the blocks of the folder's weights", async () => {
    const { dir: folder, gguf } = await converted(BLOCKS, "q4_k_m");
    using f = GgufFile.open(gguf);
    using st = SafetensorsFile.open(join(folder, "model.safetensors"));
    const native = NativeBackend.get("cpu");
    const spec = readModelSpec(folder);
    const hfName: Record<string, string> = { attn_q: "self_attn.q_proj", attn_k: "self_attn.k_proj", attn_v: "self_attn.v_proj", attn_output: "self_attn.o_proj", ffn_gate: "mlp.gate_proj", ffn_up: "mlp.up_proj", ffn_down: "mlp.down_proj" };
    const seen = new Map<string, number>();
    for (const t of f.tensors.values()) {
      if (t.shape.length !== 2) {
        expect(t.type).toBe(GgmlType.F32);
        continue;
      }
      const role = roles.find(([re]) => re.test(t.name))![1];
      const layer = Number(/^blk\.(\d+)\./.exec(t.name)?.[1] ?? -1);
      const plan = planTensor("q4_k_m", { role, layer, numLayers: spec.numLayers, shape: t.shape, tied: false });
      const dtype = STORAGE_DTYPE[plan.type as "q4_k"];
      const name = layer < 0 ? (role === Role.LM_HEAD ? "lm_head.weight" : "model.embed_tokens.weight") : `model.layers.${layer}.${hfName[t.name.split(".")[2]!]}.weight`;
      // v and the MLP need no permutation: compare their blocks with the folder's weights quantized here
      if (!/attn_[qk]\./.test(t.name)) {
        const info = st.tensors.get(name)!;
        const want = native.quantize(dtype, toFloat32(st.read(name), info.dtype), t.shape[0]!, t.shape[1]!);
        expect(f.read(t.name)).toEqual(want);
      }
      seen.set(plan.type, (seen.get(plan.type) ?? 0) + 1);
    }
    // llama.cpp's Q4_K_M on 2 layers: output Q6_K; attn_v and ffn_down Q6_K where use_more_bits (layer 1 of 2), the rest Q4_K
    expect(Object.fromEntries(seen)).toEqual({ q4_k: 13, q6_k: 3 });
    expect([f.tensors.get("blk.1.attn_v.weight")!.type, f.tensors.get("blk.0.attn_v.weight")!.type]).toEqual([GgmlType.Q6_K, GgmlType.Q4_K]);
  });

  test("a float file loaded with a quantized dtype is quantized on load, as the quantized file holds it", async () => {
    const f16 = await converted(BLOCKS, "f16");
    const q8 = await converted(BLOCKS, "q8_0");
    using a = await SkipDecoder.load(f16.gguf, { backend: "cpu", dtype: "q8_0" });
    using b = await SkipDecoder.load(q8.gguf, { backend: "cpu" });
    expect(await a.forward(ids)).toEqual(await b.forward(ids));
  });

  test("the report names the tensors whose K-quant fell back (rows not a multiple of 256): Q4_K to Q5_0, Q6_K to Q8_0, as llama-quantize", async () => {
    const out = join(tempDir(), "fb.gguf");
    const r = await convertToGguf(tinyModel({ ...LLAMA, seed: 57 }), out, { type: "q4_k_m" });
    // hidden 64, ffn 192: every matrix falls back; Q6_K's are the output and layer 1's attn_v and ffn_down (use_more_bits)
    expect(r.fellBack.length).toBe(16);
    const q8 = ["output.weight", "blk.1.attn_v.weight", "blk.1.ffn_down.weight"];
    for (const fb of r.fellBack) {
      expect(fb).toMatchObject(q8.includes(fb.name) ? { type: "Q8_0", why: expect.stringMatching(/^cols (64|192) is not a multiple of 256 \(Q6_K's block\)$/) } : { type: "Q5_0", why: expect.stringMatching(/^cols (64|192) is not a multiple of 256 \(Q4_K's block\)$/) });
    }
    using f = GgufFile.open(out);
    expect(f.tensors.get("token_embd.weight")!.type).toBe(GgmlType.Q5_0);
    expect(f.tensors.get("blk.0.ffn_down.weight")!.type).toBe(GgmlType.Q5_0);
    expect(f.tensors.get("blk.1.ffn_down.weight")!.type).toBe(GgmlType.Q8_0);
    using d = await SkipDecoder.load(out, { backend: "cpu" });
    expect(Object.keys(d.loadSummary.byType).sort()).toEqual(["F32", "Q5_0", "Q8_0"]);
    expect(d.loadSummary.byType.Q5_0!.tensors).toBe(13);
  });

  test("Q5_0 tensors (Q4_K's fallback in llama.cpp's files) load to the folder's logits quantized on load with dtype \"q4_k\" (the same blocks)", async () => {
    // hidden 64, ffn 192: under q4_k every matrix is Q5_0 but the output (Q6_K's fallback, Q8_0)
    const opts: TinyModelOptions = { ...LLAMA, seed: 58, dtype: "float16" };
    const { dir: folder, gguf } = await converted(opts, "f32");
    const native = NativeBackend.get("cpu");
    const spec = readModelSpec(folder);
    // the F32 file's matrices quantized by the load's rule, as a llama.cpp file holds them; q/k rows
    // stay permuted (quantizing is per row, so it commutes with the row order)
    const file = edited(gguf, {
      tensors: (ts) => {
        for (const t of ts) {
          if (t.shape.length !== 2) continue;
          const role = roles.find(([re]) => re.test(t.name))![1];
          const layer = Number(/^blk\.(\d+)\./.exec(t.name)?.[1] ?? -1);
          const plan = planTensor("q4_k", { role, layer, numLayers: spec.numLayers, shape: t.shape, tied: false });
          if (plan.type === "float") continue;
          const dtype = STORAGE_DTYPE[plan.type];
          t.type = ggmlTypeOf(dtype);
          t.data = native.quantize(dtype, toFloat32(t.data, "F32"), t.shape[0]!, t.shape[1]!);
        }
      },
    });
    using f = GgufFile.open(file);
    const types = [...f.tensors.values()].filter((t) => t.shape.length === 2).map((t) => t.type);
    expect(types.filter((t) => t === GgmlType.Q5_0).length).toBe(1 + 7 * spec.numLayers);
    expect(types.filter((t) => t === GgmlType.Q8_0).length).toBe(1);
    using a = await SkipDecoder.load(folder, { backend: "cpu", dtype: "q4_k" });
    using b = await SkipDecoder.load(file, { backend: "cpu" });
    expect(b.loadSummary.byType.Q5_0).toEqual(a.loadSummary.byType.Q5_0!);
    const budgets = [2, 2, 2, 2, 1, 1, 1, 1, 1];
    expect(await b.forward(ids)).toEqual(await a.forward(ids));
    expect(await b.forward(ids, { budgets, warmupLayers: 1 })).toEqual(await a.forward(ids, { budgets, warmupLayers: 1 }));
    const gen = { maxNewTokens: 16, ignoreEos: true };
    expect((await b.generate(ids, gen)).tokens).toEqual((await a.generate(ids, gen)).tokens);
  });
});

describe("tokenizer from tokenizer.ggml.*", () => {
  // words the corpus taught, contractions, digit runs, whitespace runs, bytes outside the vocabulary
  const TEXTS = ["The dog did not move; it was asleep.", "We'll see: 1234567 tokens?", "\t tabs\r\nand\n\n\nnewlines ", "Zürich → 北京 🦙", "   "];
  for (const family of ["llama", "mistral", "qwen2"] as const) {
    test(`${family}: the same ids, text, BOS/EOS and chat template as the folder's tokenizer`, async () => {
      const { dir: folder, gguf } = await converted({ ...LLAMA, family, seed: 60, merges: 300 });
      const a = (await SkipDecoder.load(folder, { backend: "cpu" }));
      const b = (await SkipDecoder.load(gguf, { backend: "cpu" }));
      try {
        for (const t of TEXTS) {
          expect(b.tokenize(t)).toEqual(a.tokenize(t));
          expect(b.detokenize(b.tokenize(t))).toBe(a.detokenize(a.tokenize(t)));
        }
        const ta = a.tokenizer!, tb = b.tokenizer!;
        expect([tb.bosId, tb.eosId, tb.addsBos, tb.chatTemplate]).toEqual([ta.bosId, ta.eosId, ta.addsBos, ta.chatTemplate]);
        expect(b.spec.eosTokenIds).toEqual(a.spec.eosTokenIds);
        const msgs = [{ role: "user", content: "Name three colours." }];
        expect(b.applyChatTemplate(msgs)).toBe(a.applyChatTemplate(msgs));
        const ra = await a.chat(msgs, { maxNewTokens: 6, ignoreEos: true });
        const rb = await b.chat(msgs, { maxNewTokens: 6, ignoreEos: true });
        expect(rb.promptTokens).toEqual(ra.promptTokens);
      } finally {
        a.close();
        b.close();
      }
    });
  }

  test("a file without a tokenizer loads for ids; text prompts are refused", async () => {
    const { gguf } = await converted(LLAMA);
    const p = edited(gguf, {
      kv: (m) => {
        for (const k of [...m.keys()]) if (k.startsWith("tokenizer.")) m.delete(k);
      },
    });
    using d = await SkipDecoder.load(p, { backend: "cpu" });
    expect(d.tokenizer).toBeNull();
    expect((await d.generate([1, 2, 3], { maxNewTokens: 2, ignoreEos: true })).tokens.length).toBe(2);
    expect(() => d.tokenize("hi")).toThrow(/has no tokenizer/);
  });

  test("SentencePiece defaults: BOS 1 and added when the keys are absent; add_bos_token false is honoured", async () => {
    const { gguf } = await converted({ ...LLAMA, family: "mistral", seed: 61 });
    const noKeys = edited(gguf, { kv: (m) => ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.add_bos_token"].forEach((k) => m.delete(k)) });
    const tok = openGgufModel(noKeys).tokenizer()!.tokenizer;
    expect([tok.bosId, tok.addsBos]).toEqual([1, true]);
    const off = edited(gguf, { kv: (m) => m.set("tokenizer.ggml.add_bos_token", { type: "bool", value: false }) });
    const t2 = openGgufModel(off).tokenizer()!.tokenizer;
    expect(t2.encode("a test")).toEqual(t2.encode("a test", { addBos: false }));
  });

  test("SkipTokenizer.fromJson builds from objects in memory", () => {
    const t = SkipTokenizer.fromJson(
      { model: { type: "BPE", vocab: { a: 0, b: 1, ab: 2, "</s>": 3 }, merges: ["a b"] }, pre_tokenizer: null },
      { eos_token: "</s>", bos_token: null, chat_template: "{{ messages[0].content }}" },
      { bos: "config" },
    );
    expect(t.encode("abab")).toEqual([2, 2]);
    expect([t.bosId, t.eosId, t.chatTemplate]).toEqual([null, 3, "{{ messages[0].content }}"]);
  });
});

describe("convert and the CLI", () => {
  async function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
    const out: string[] = [];
    const err: string[] = [];
    const log = console.log;
    const error = console.error;
    console.log = (...a: unknown[]) => void out.push(a.join(" "));
    console.error = (...a: unknown[]) => void err.push(a.join(" "));
    try {
      const code = await main(args);
      return { code, out: out.join("\n"), err: err.join("\n") };
    } finally {
      console.log = log;
      console.error = error;
    }
  }

  test("convert writes a file `logits --model FILE` reads", async () => {
    const folder = tinyModel({ ...LLAMA, seed: 70 });
    const out = join(tempDir(), "tiny.gguf");
    const r = await cli("convert", folder, out, "--type", "f16");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/wrote .*tiny\.gguf: llama, 21 tensors \(\d+ F16, \d+ F32\)/);
    using f = GgufFile.open(out);
    expect(f.int("general.file_type")).toBe(1);
    expect(ggufSpec(f).numLayers).toBe(2);
  });

  test("convert refuses OPT by name, unknown types and outputs, and leaves nothing behind", async () => {
    const out = join(tempDir(), "opt.gguf");
    const opt = await cli("convert", tinyModel({ seed: 71 }), out);
    expect(opt.code).toBe(1);
    expect(opt.err).toMatch(/is an OPT model, and llama.cpp has no OPT architecture/);
    expect(() => readFileSync(out)).toThrow();
    const bad = await cli("convert", tinyModel(LLAMA), out, "--type", "q3_k");
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--type must be one of f32, f16, bf16, q8_0, q4_0, q4_k_m/);
    expect((await cli("convert", tinyModel(LLAMA), join(tempDir(), "x.bin"))).err).toMatch(/must end in \.gguf/);
    expect((await cli("convert", tinyModel(LLAMA))).code).toBe(2);
  });

  test("generate --model FILE.gguf streams text; the server names the model by the file and chats", async () => {
    const { gguf } = await converted({ ...LLAMA, seed: 72 }, "f16");
    const cliPath = join(import.meta.dir, "..", "bin", "skipdecode.ts");
    const g = Bun.spawnSync([process.execPath, cliPath, "generate", "--model", gguf, "--prompt", "The quick brown", "--max-new-tokens", "4", "--ignore-eos", "--backend", "cpu", "--json"]);
    expect(g.exitCode).toBe(0);
    expect(JSON.parse(g.stdout.toString()).tokens.length).toBe(4);
    using dec = await SkipDecoder.load(gguf, { backend: "cpu", maxBatch: 2, maxSeqLen: 128 });
    const srv = createApp(dec, { log: () => {} });
    try {
      const models = (await (await srv.app.request("/v1/models")).json()) as { data: { id: string }[] };
      expect(models.data[0]!.id).toBe("m-f16");
      const messages = [{ role: "user", content: "Hello there" }];
      const res = await srv.app.request("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ model: "m-f16", messages, max_tokens: 6, temperature: 0, ignore_eos: true }),
      });
      expect(res.status).toBe(200);
      const j = (await res.json()) as { choices: { message: { content: string } }[] };
      expect(j.choices[0]!.message.content).toBe((await dec.chat(messages, { maxNewTokens: 6, ignoreEos: true })).text);
      // a long text goes to the tokenizer thread, which rebuilds the GGUF's tokenizer from the file
      const long = "The quick brown fox jumps over the lazy dog. ".repeat(900);
      const tok = await srv.app.request("/tokenize", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ prompt: long }) });
      expect(((await tok.json()) as { tokens: number[] }).tokens).toEqual(dec.tokenize(long));
    } finally {
      srv.close();
    }
  });

  test("streaming a SentencePiece GGUF model: the pieces add up to the text", async () => {
    const { gguf } = await converted({ ...LLAMA, family: "mistral", seed: 73 }, "f16");
    using dec = await SkipDecoder.load(gguf, { backend: "cpu", maxBatch: 1 });
    let text = "";
    const it = dec.stream("Once upon a time", { maxNewTokens: 24, ignoreEos: true });
    let r = await it.next();
    while (!r.done) {
      text += r.value.text;
      r = await it.next();
    }
    expect(text).toBe(r.value.text);
    expect(text).toBe(dec.detokenize(r.value.tokens));
  });

  test("shortestF32 gives the decimal a writer meant", () => {
    expect(shortestF32(Math.fround(1e-5))).toBe(1e-5);
    expect(shortestF32(Math.fround(0.1))).toBe(0.1);
    expect(shortestF32(Math.fround(500000))).toBe(500000);
  });
});
