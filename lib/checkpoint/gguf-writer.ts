/**
 * GGUF writer (version 3; the layout is in gguf.ts). Key/values are typed
 * explicitly, as llama.cpp reads them strictly (a u32 where it wants a u32).
 * Tensors are given with row-major shapes and their ggml type; their bytes
 * may come from a function called only when that tensor is written, so a
 * converter holds one tensor at a time, never the whole model. The file is
 * written next to its destination and renamed into place at the end: a
 * failed write leaves no half file behind.
 *
 * @module
 */
import { closeSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { GGML_TYPES, GgufType } from "./gguf.ts";

type NumType = "u8" | "i8" | "u16" | "i16" | "u32" | "i32" | "u64" | "i64" | "f32" | "f64";

/** A typed metadata value. */
export type GgufWriteValue =
  | { type: NumType; value: number }
  | { type: "bool"; value: boolean }
  | { type: "string"; value: string }
  | { type: "array"; of: NumType; value: ArrayLike<number> }
  | { type: "array"; of: "string"; value: readonly string[] }
  | { type: "array"; of: "bool"; value: readonly boolean[] };

/** One tensor to write. */
export interface GgufWriteTensor {
  name: string;
  /** Row-major shape (a matrix is [rows, cols]); written fastest-varying first. */
  shape: number[];
  /** ggml type code (gguf.ts GgmlType). */
  type: number;
  /** The bytes, or a function producing them when the tensor is written. */
  data: Uint8Array | (() => Uint8Array);
}

const CODES: Record<NumType | "bool" | "string", number> = {
  u8: GgufType.UINT8,
  i8: GgufType.INT8,
  u16: GgufType.UINT16,
  i16: GgufType.INT16,
  u32: GgufType.UINT32,
  i32: GgufType.INT32,
  u64: GgufType.UINT64,
  i64: GgufType.INT64,
  f32: GgufType.FLOAT32,
  f64: GgufType.FLOAT64,
  bool: GgufType.BOOL,
  string: GgufType.STRING,
};

/** An append-only little-endian byte builder. */
class Bytes {
  #chunks: Uint8Array[] = [];
  #cur = new Uint8Array(1 << 16);
  #view = new DataView(this.#cur.buffer);
  #at = 0;
  size = 0;
  readonly #enc = new TextEncoder();

  #room(n: number): void {
    if (this.#at + n <= this.#cur.length) return;
    this.#chunks.push(this.#cur.subarray(0, this.#at));
    this.#cur = new Uint8Array(Math.max(1 << 16, n));
    this.#view = new DataView(this.#cur.buffer);
    this.#at = 0;
  }

  num(t: NumType | "bool", v: number | boolean): void {
    const n = t === "u8" || t === "i8" || t === "bool" ? 1 : t === "u16" || t === "i16" ? 2 : t === "u64" || t === "i64" || t === "f64" ? 8 : 4;
    this.#room(n);
    const d = this.#view;
    const a = this.#at;
    switch (t) {
      case "u8":
        d.setUint8(a, v as number);
        break;
      case "i8":
        d.setInt8(a, v as number);
        break;
      case "bool":
        d.setUint8(a, v ? 1 : 0);
        break;
      case "u16":
        d.setUint16(a, v as number, true);
        break;
      case "i16":
        d.setInt16(a, v as number, true);
        break;
      case "u32":
        d.setUint32(a, v as number, true);
        break;
      case "i32":
        d.setInt32(a, v as number, true);
        break;
      case "f32":
        d.setFloat32(a, v as number, true);
        break;
      case "f64":
        d.setFloat64(a, v as number, true);
        break;
      case "u64":
        d.setBigUint64(a, BigInt(v as number), true);
        break;
      case "i64":
        d.setBigInt64(a, BigInt(v as number), true);
        break;
    }
    this.#at += n;
    this.size += n;
  }

  str(s: string): void {
    const b = this.#enc.encode(s);
    this.num("u64", b.length);
    this.#room(b.length);
    this.#cur.set(b, this.#at);
    this.#at += b.length;
    this.size += b.length;
  }

  zeros(n: number): void {
    this.#room(n);
    this.#cur.fill(0, this.#at, this.#at + n);
    this.#at += n;
    this.size += n;
  }

  parts(): Uint8Array[] {
    return [...this.#chunks, this.#cur.subarray(0, this.#at)];
  }
}

function checkInt(key: string, t: NumType, v: number): void {
  const ranges: Partial<Record<NumType, [number, number]>> = {
    u8: [0, 255],
    i8: [-128, 127],
    u16: [0, 65535],
    i16: [-32768, 32767],
    u32: [0, 2 ** 32 - 1],
    i32: [-(2 ** 31), 2 ** 31 - 1],
    u64: [0, Number.MAX_SAFE_INTEGER],
    i64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  };
  const r = ranges[t];
  if (r && !(Number.isInteger(v) && v >= r[0] && v <= r[1])) throw new Error(`gguf writer: "${key}": ${v} is not a ${t}`);
}

function writeValue(b: Bytes, key: string, v: GgufWriteValue): void {
  if (v.type !== "array") {
    b.num("u32", CODES[v.type]);
    if (v.type === "string") b.str(v.value);
    else {
      if (v.type !== "bool") checkInt(key, v.type, v.value);
      b.num(v.type, v.value);
    }
    return;
  }
  b.num("u32", GgufType.ARRAY);
  b.num("u32", CODES[v.of]);
  b.num("u64", v.value.length);
  if (v.of === "string") for (const s of v.value as readonly string[]) b.str(s);
  else if (v.of === "bool") for (const x of v.value as readonly boolean[]) b.num("bool", x);
  else {
    const of = v.of;
    const xs = v.value as ArrayLike<number>;
    for (let i = 0; i < xs.length; i++) {
      checkInt(key, of, xs[i]!);
      b.num(of, xs[i]!);
    }
  }
}

/** Bytes of a tensor of `shape` and ggml `type`; throws when its rows are not whole blocks. */
function ggufTensorBytes(name: string, shape: readonly number[], type: number): number {
  const info = GGML_TYPES[type];
  if (!info) throw new Error(`gguf writer: tensor "${name}": unknown ggml type ${type}`);
  const cols = shape.length ? shape[shape.length - 1]! : 1;
  if (cols % info.blockSize !== 0) throw new Error(`gguf writer: tensor "${name}": ${info.name} needs rows of whole ${info.blockSize}-blocks, got ${cols} columns`);
  const n = shape.reduce((a, d) => a * d, 1);
  return (n / info.blockSize) * info.typeSize;
}

/**
 * Writes a GGUF v3 file: `kv` in order (general.alignment is added when
 * absent), then the tensor infos and the tensors, each at an offset that is a
 * multiple of the alignment (32).
 *
 * @example
 * writeGgufFile("/tmp/x.gguf", [["general.architecture", { type: "string", value: "llama" }]],
 *   [{ name: "w", shape: [2, 4], type: GgmlType.F32, data: new Uint8Array(32) }]);
 */
export function writeGgufFile(path: string, kv: readonly [string, GgufWriteValue][], tensors: readonly GgufWriteTensor[]): void {
  const ALIGN = 32;
  const keys = new Set<string>();
  for (const [k] of kv) {
    if (keys.has(k)) throw new Error(`gguf writer: duplicate key "${k}"`);
    keys.add(k);
  }
  const all: [string, GgufWriteValue][] = keys.has("general.alignment") ? [...kv] : [...kv, ["general.alignment", { type: "u32", value: ALIGN }]];
  const head = new Bytes();
  for (const c of new TextEncoder().encode("GGUF")) head.num("u8", c);
  head.num("u32", 3);
  head.num("u64", tensors.length);
  head.num("u64", all.length);
  for (const [k, v] of all) {
    head.str(k);
    writeValue(head, k, v);
  }
  const names = new Set<string>();
  const sizes: number[] = [];
  let offset = 0;
  for (const t of tensors) {
    if (names.has(t.name)) throw new Error(`gguf writer: duplicate tensor "${t.name}"`);
    names.add(t.name);
    const nbytes = ggufTensorBytes(t.name, t.shape, t.type);
    sizes.push(nbytes);
    head.str(t.name);
    head.num("u32", t.shape.length);
    for (let d = t.shape.length - 1; d >= 0; d--) head.num("u64", t.shape[d]!);
    head.num("u32", t.type);
    head.num("u64", offset);
    offset += Math.ceil(nbytes / ALIGN) * ALIGN;
  }
  const partial = `${path}.partial`;
  const fd = openSync(partial, "w");
  try {
    for (const p of head.parts()) writeSync(fd, p);
    const pad = (n: number) => {
      if (n % ALIGN) writeSync(fd, new Uint8Array(ALIGN - (n % ALIGN)));
    };
    pad(head.size);
    tensors.forEach((t, i) => {
      const data = typeof t.data === "function" ? t.data() : t.data;
      if (data.length !== sizes[i]) {
        throw new Error(`gguf writer: tensor "${t.name}": ${data.length} bytes given, ${sizes[i]} expected for [${t.shape.join(", ")}] of ${GGML_TYPES[t.type]!.name}`);
      }
      let done = 0;
      while (done < data.length) done += writeSync(fd, data, done, Math.min(data.length - done, 1 << 30));
      pad(data.length);
    });
    closeSync(fd);
    renameSync(partial, path);
  } catch (e) {
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
    rmSync(partial, { force: true });
    throw e;
  }
}
