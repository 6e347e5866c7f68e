/**
 * GGUF reader: llama.cpp's single-file model format (ggml's docs/gguf.md),
 * versions 2 and 3 (the same layout; v1 used 32-bit counts and is refused).
 *
 * ```
 * magic "GGUF" | version u32 | tensor count u64 | key/value count u64
 * key/values:   key (u64 length + UTF-8) | value type u32 | value
 *               (an array is: element type u32 | count u64 | elements)
 * tensor infos: name | n_dims u32 | dims u64 × n_dims (fastest-varying first)
 *               | ggml type u32 | offset u64 (into the data section)
 * padding to general.alignment (u32, a power of two, default 32)
 * data section: each tensor at its offset, offsets multiples of the alignment
 * ```
 *
 * Everything is little-endian; strings are length-prefixed, not terminated.
 * The file is read with positioned reads (`readSync`), never mapped or
 * slurped: the header is parsed through a small window, and each tensor is
 * read on demand, into a buffer the caller may reuse — a model file is never
 * held twice in memory (the engine keeps its own copy of the weights).
 *
 * Every length and count is checked against what is left of the file before
 * anything is allocated, and against fixed limits ({@link GGUF_LIMITS}):
 * a truncated or hostile file gets an `Error` naming the file, the offset and
 * what was wrong, never a crash or a huge allocation. Tensor infos are checked
 * as llama.cpp checks them (at most 4 dims, element counts that fit, rows a
 * whole number of blocks, known types) and more strictly for the data: every
 * offset aligned, every tensor inside the file, no two tensors overlapping.
 *
 * @module
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";

/** GGUF key/value types (gguf.h `gguf_type`). */
export const GgufType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;
export type GgufTypeCode = (typeof GgufType)[keyof typeof GgufType];

const TYPE_NAMES = ["u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"] as const;
const TYPE_SIZES = [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8] as const;

/**
 * Name of a key/value type.
 *
 * @example
 * ggufTypeName(GgufType.UINT32); // "u32"
 */
export function ggufTypeName(t: number): string {
  return TYPE_NAMES[t] ?? `type ${t}`;
}

/** ggml tensor types this project reads and writes (ggml.h `ggml_type`). */
export const GgmlType = { F32: 0, F16: 1, Q4_0: 2, Q5_0: 6, Q8_0: 8, Q4_K: 12, Q6_K: 14, BF16: 30 } as const;
export type GgmlTypeCode = (typeof GgmlType)[keyof typeof GgmlType];

/** Every ggml type a GGUF file may hold: name, elements per block, bytes per block (ggml.c `type_traits`). */
export const GGML_TYPES: Readonly<Record<number, { name: string; blockSize: number; typeSize: number }>> = Object.freeze({
  0: { name: "F32", blockSize: 1, typeSize: 4 },
  1: { name: "F16", blockSize: 1, typeSize: 2 },
  2: { name: "Q4_0", blockSize: 32, typeSize: 18 },
  3: { name: "Q4_1", blockSize: 32, typeSize: 20 },
  6: { name: "Q5_0", blockSize: 32, typeSize: 22 },
  7: { name: "Q5_1", blockSize: 32, typeSize: 24 },
  8: { name: "Q8_0", blockSize: 32, typeSize: 34 },
  9: { name: "Q8_1", blockSize: 32, typeSize: 36 },
  10: { name: "Q2_K", blockSize: 256, typeSize: 84 },
  11: { name: "Q3_K", blockSize: 256, typeSize: 110 },
  12: { name: "Q4_K", blockSize: 256, typeSize: 144 },
  13: { name: "Q5_K", blockSize: 256, typeSize: 176 },
  14: { name: "Q6_K", blockSize: 256, typeSize: 210 },
  15: { name: "Q8_K", blockSize: 256, typeSize: 292 },
  16: { name: "IQ2_XXS", blockSize: 256, typeSize: 66 },
  17: { name: "IQ2_XS", blockSize: 256, typeSize: 74 },
  18: { name: "IQ3_XXS", blockSize: 256, typeSize: 98 },
  19: { name: "IQ1_S", blockSize: 256, typeSize: 50 },
  20: { name: "IQ4_NL", blockSize: 32, typeSize: 18 },
  21: { name: "IQ3_S", blockSize: 256, typeSize: 110 },
  22: { name: "IQ2_S", blockSize: 256, typeSize: 82 },
  23: { name: "IQ4_XS", blockSize: 256, typeSize: 136 },
  24: { name: "I8", blockSize: 1, typeSize: 1 },
  25: { name: "I16", blockSize: 1, typeSize: 2 },
  26: { name: "I32", blockSize: 1, typeSize: 4 },
  27: { name: "I64", blockSize: 1, typeSize: 8 },
  28: { name: "F64", blockSize: 1, typeSize: 8 },
  29: { name: "IQ1_M", blockSize: 256, typeSize: 56 },
  30: { name: "BF16", blockSize: 1, typeSize: 2 },
  34: { name: "TQ1_0", blockSize: 256, typeSize: 54 },
  35: { name: "TQ2_0", blockSize: 256, typeSize: 66 },
  39: { name: "MXFP4", blockSize: 32, typeSize: 17 },
  40: { name: "NVFP4", blockSize: 64, typeSize: 36 },
  41: { name: "Q1_0", blockSize: 128, typeSize: 18 },
  42: { name: "Q2_0", blockSize: 64, typeSize: 18 },
});

/**
 * Name of a ggml type, or "type N" when unknown.
 *
 * @example
 * ggmlTypeName(12); // "Q4_K"
 */
export function ggmlTypeName(t: number): string {
  return GGML_TYPES[t]?.name ?? `type ${t}`;
}

/**
 * Bytes of one row of `cols` elements of ggml type `t` (cols must be a
 * multiple of the type's block size).
 *
 * @example
 * ggmlRowBytes(GgmlType.Q8_0, 4096); // 4352
 */
export function ggmlRowBytes(t: number, cols: number): number {
  const info = GGML_TYPES[t];
  if (!info) throw new Error(`unknown ggml type ${t}`);
  if (cols % info.blockSize !== 0) throw new Error(`${info.name} rows hold whole blocks of ${info.blockSize}, got ${cols} columns`);
  return (cols / info.blockSize) * info.typeSize;
}

/** Limits past which a file is refused as malformed (they bound every allocation the header makes). */
export const GGUF_LIMITS = {
  /** Tensors in one file. */
  tensors: 1 << 20,
  /** Key/value pairs. */
  keys: 1 << 20,
  /** Elements of one metadata array (vocabularies are ~10^5; merges ~10^6). */
  arrayElements: 1 << 24,
  /** Bytes of one metadata string (chat templates, an embedded tokenizer.json). */
  stringBytes: 1 << 26,
  /** Bytes of a key or tensor name; ggml's names are shorter than GGML_MAX_NAME = 64. */
  nameBytes: 63,
  /** Dimensions of a tensor (GGML_MAX_DIMS). */
  dims: 4,
} as const;

/** A numeric metadata array, as the typed array of its element type. */
export type GgufNumbers =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | Float64Array
  | BigUint64Array
  | BigInt64Array;

/** A metadata value: numbers (64-bit integers beyond 2^53 as bigint), booleans, strings, arrays. */
export type GgufValue = number | bigint | boolean | string | GgufNumbers | string[] | boolean[] | null;

/** One key/value pair of the header. */
export interface GgufKv {
  key: string;
  /** Value type; ARRAY for arrays (then `arrayType` is the element type). */
  type: GgufTypeCode;
  arrayType?: GgufTypeCode;
  /** Array length (arrays only). */
  length?: number;
  /** null for an array whose elements were not decoded (`arrays: false`). */
  value: GgufValue;
}

/** One tensor of the file. */
export interface GgufTensorInfo {
  name: string;
  /** ggml dims, fastest-varying first: a matrix of `rows` × `cols` is [cols, rows]. */
  dims: number[];
  /** The same dims row-major (slowest first), as safetensors and PyTorch write them. */
  shape: number[];
  /** ggml type code (see {@link GGML_TYPES}). */
  type: number;
  /** Offset into the data section. */
  offset: number;
  /** Bytes of data. */
  nbytes: number;
}

/** Options of {@link GgufFile.open}. */
export interface GgufOpenOptions {
  /**
   * Decode the `tokenizer.*` arrays (default true); false skips their elements
   * and keeps only type and length (the engine thread needs no vocabulary).
   */
  arrays?: boolean;
  /**
   * Maps the file for {@link GgufFile.read} (lib/engine/native.ts's
   * `mapFile`): tensors come back as views of the map, not copies. Without
   * it, read() copies each tensor out of the file.
   */
  map?: (path: string) => FileMap;
}

/** A read-only map of a file: views of its bytes without a copy. */
export interface FileMap {
  readonly size: number;
  /** Bytes [offset, offset + length) of the file; valid until close(). */
  view(offset: number, length: number): Uint8Array;
  /** Says the range will not be read again: its pages leave the process's resident set. */
  drop(offset: number, length: number): void;
  close(): void;
}

const WINDOW = 1 << 20;

/** A forward reader over a file descriptor through a window; every read is bounds-checked. */
class HeaderReader {
  pos = 0;
  #buf = Buffer.alloc(0);
  #dv = new DataView(new ArrayBuffer(0));
  #bufStart = 0;
  readonly #decoder = new TextDecoder("utf-8", { fatal: true });
  constructor(
    readonly path: string,
    readonly fd: number,
    readonly size: number,
  ) {}

  fail(what: string, msg: string, at = this.pos): never {
    throw new Error(`gguf: ${this.path}: ${what} (at byte ${at}): ${msg}`);
  }

  /** Bytes left after the read position. */
  get left(): number {
    return this.size - this.pos;
  }

  /** Makes the next n bytes readable; returns their index in the window and moves past them. */
  #take(n: number, what: string): number {
    if (n > this.left) this.fail(what, `the file ends after ${this.left} more bytes, ${n} needed (truncated?)`);
    let rel = this.pos - this.#bufStart;
    if (rel < 0 || rel + n > this.#buf.length) {
      const len = Math.min(Math.max(n, WINDOW), this.size - this.pos);
      const buf = Buffer.allocUnsafe(len);
      let done = 0;
      while (done < len) {
        const got = readSync(this.fd, buf, done, len - done, this.pos + done);
        if (got <= 0) this.fail(what, `read returned no data ${done} bytes in (file changed while reading?)`);
        done += got;
      }
      this.#buf = buf;
      this.#dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
      this.#bufStart = this.pos;
      rel = 0;
    }
    this.pos += n;
    return rel;
  }

  #view(n: number, what: string): [DataView, number] {
    const at = this.#take(n, what);
    return [this.#dv, at];
  }

  u32(what: string): number {
    const [d, at] = this.#view(4, what);
    return d.getUint32(at, true);
  }

  u64(what: string): bigint {
    const [d, at] = this.#view(8, what);
    return d.getBigUint64(at, true);
  }

  /** A u64 count or length, checked against `max` before anything is allocated. */
  count(what: string, max: number, unit: string): number {
    const start = this.pos;
    const [d, at] = this.#view(8, what);
    const lo = d.getUint32(at, true);
    const hi = d.getUint32(at + 4, true);
    const v = hi * 2 ** 32 + lo; // exact below 2^53; above, far beyond any max anyway
    if (v > max) this.fail(what, `${hi >= 2 ** 21 ? d.getBigUint64(at, true) : v} ${unit} is more than this file can hold (at most ${max})`, start);
    return v;
  }

  bytes(n: number, what: string): Uint8Array {
    const at = this.#take(n, what);
    return new Uint8Array(this.#buf.subarray(at, at + n)); // a copy (Buffer.slice would share)
  }

  skip(n: number, what: string): void {
    if (n > this.left) this.fail(what, `the file ends after ${this.left} more bytes, ${n} needed (truncated?)`);
    this.pos += n;
  }

  string(what: string, maxBytes: number): string {
    const start = this.pos;
    const n = this.count(`${what} length`, Math.min(maxBytes, this.left - 8), "bytes");
    const at = this.#take(n, what);
    const s = this.#buf.toString("utf8", at, at + n);
    // invalid UTF-8 decodes to U+FFFD: only then is the strict decoder asked
    if (s.includes("\uFFFD")) {
      try {
        this.#decoder.decode(this.#buf.subarray(at, at + n));
      } catch {
        this.fail(what, "not valid UTF-8", start);
      }
    }
    return s;
  }

  skipString(what: string): void {
    const n = this.count(`${what} length`, Math.min(GGUF_LIMITS.stringBytes, this.left - 8), "bytes");
    this.skip(n, what);
  }

  scalar(t: number, what: string): number | bigint | boolean | string {
    const start = this.pos;
    if (t === GgufType.STRING) return this.string(what, GGUF_LIMITS.stringBytes);
    const size = TYPE_SIZES[t];
    if (size === undefined || size === 0) this.fail(what, `unknown value type ${t}`, start);
    const [d, at] = this.#view(size, what);
    switch (t) {
      case GgufType.UINT8:
        return d.getUint8(at);
      case GgufType.INT8:
        return d.getInt8(at);
      case GgufType.UINT16:
        return d.getUint16(at, true);
      case GgufType.INT16:
        return d.getInt16(at, true);
      case GgufType.UINT32:
        return d.getUint32(at, true);
      case GgufType.INT32:
        return d.getInt32(at, true);
      case GgufType.FLOAT32:
        return d.getFloat32(at, true);
      case GgufType.BOOL: {
        const b = d.getUint8(at);
        if (b > 1) this.fail(what, `a bool must be 0 or 1, got ${b}`, start);
        return b === 1;
      }
      case GgufType.UINT64: {
        const v = d.getBigUint64(at, true);
        return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
      }
      case GgufType.INT64: {
        const v = d.getBigInt64(at, true);
        return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
      }
      default:
        return d.getFloat64(at, true);
    }
  }
}

const TYPED: Record<number, new (b: ArrayBuffer) => GgufNumbers> = {
  [GgufType.UINT8]: Uint8Array,
  [GgufType.INT8]: Int8Array,
  [GgufType.UINT16]: Uint16Array,
  [GgufType.INT16]: Int16Array,
  [GgufType.UINT32]: Uint32Array,
  [GgufType.INT32]: Int32Array,
  [GgufType.FLOAT32]: Float32Array,
  [GgufType.FLOAT64]: Float64Array,
  [GgufType.UINT64]: BigUint64Array,
  [GgufType.INT64]: BigInt64Array,
};

function readValue(r: HeaderReader, key: string, decodeArrays: boolean): GgufKv {
  const what = `metadata "${key}"`;
  const typeAt = r.pos;
  const type = r.u32(`${what} type`);
  if (type > GgufType.FLOAT64) r.fail(`${what} type`, `unknown value type ${type}`, typeAt);
  if (type !== GgufType.ARRAY) return { key, type: type as GgufTypeCode, value: r.scalar(type, what) };
  const elemAt = r.pos;
  const of = r.u32(`${what} element type`);
  if (of > GgufType.FLOAT64) r.fail(`${what} element type`, `unknown value type ${of}`, elemAt);
  if (of === GgufType.ARRAY) r.fail(`${what} element type`, "arrays of arrays are not supported", elemAt);
  const minBytes = of === GgufType.STRING ? 8 : TYPE_SIZES[of]!;
  const n = r.count(`${what} length`, Math.min(GGUF_LIMITS.arrayElements, Math.floor(r.left / minBytes)), "elements");
  const kv: GgufKv = { key, type: GgufType.ARRAY, arrayType: of as GgufTypeCode, length: n, value: null };
  if (of === GgufType.STRING) {
    if (!decodeArrays) {
      for (let i = 0; i < n; i++) r.skipString(`${what}[${i}]`);
      return kv;
    }
    const out = new Array<string>(n);
    for (let i = 0; i < n; i++) out[i] = r.string(`${what}[${i}]`, GGUF_LIMITS.stringBytes);
    kv.value = out;
    return kv;
  }
  const bytes = n * minBytes;
  if (!decodeArrays) {
    r.skip(bytes, what);
    return kv;
  }
  const raw = r.bytes(bytes, what);
  if (of === GgufType.BOOL) {
    const bad = raw.findIndex((b) => b > 1);
    if (bad >= 0) r.fail(`${what}[${bad}]`, `a bool must be 0 or 1, got ${raw[bad]}`, r.pos - bytes + bad);
    kv.value = Array.from(raw, (b) => b === 1);
    return kv;
  }
  kv.value = new TYPED[of]!(raw.buffer as ArrayBuffer);
  return kv;
}

/**
 * A GGUF file opened for reading: header parsed and validated at open,
 * tensors read on demand. Call `close()` when done.
 *
 * @example
 * using f = GgufFile.open("model.gguf");
 * f.string("general.architecture");          // "llama"
 * const info = f.tensors.get("token_embd.weight")!;
 * const bytes = f.read(info.name);           // its raw blocks
 */
export class GgufFile {
  readonly path: string;
  readonly version: number;
  readonly fileSize: number;
  readonly alignment: number;
  /** File offset of the data section. */
  readonly dataStart: number;
  /** Key/value pairs in file order. */
  readonly kv: ReadonlyMap<string, GgufKv>;
  /** Tensors in file order. */
  readonly tensors: ReadonlyMap<string, GgufTensorInfo>;
  #fd: number | null;
  #map: FileMap | null = null;

  private constructor(path: string, fd: number, fields: { version: number; fileSize: number; alignment: number; dataStart: number; kv: Map<string, GgufKv>; tensors: Map<string, GgufTensorInfo> }) {
    this.path = path;
    this.#fd = fd;
    this.version = fields.version;
    this.fileSize = fields.fileSize;
    this.alignment = fields.alignment;
    this.dataStart = fields.dataStart;
    this.kv = fields.kv;
    this.tensors = fields.tensors;
  }

  /**
   * Opens and validates `path`. Throws an Error naming the file and the
   * problem when it is not a well-formed GGUF v2/v3 file.
   */
  static open(path: string, opts: GgufOpenOptions = {}): GgufFile {
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch (e) {
      throw new Error(`gguf: cannot open ${path}: ${(e as Error).message}`);
    }
    let f: GgufFile;
    try {
      const size = fstatSync(fd).size;
      f = new GgufFile(path, fd, parse(new HeaderReader(path, fd, size), opts.arrays ?? true));
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    if (opts.map) {
      try {
        f.#map = opts.map(path);
      } catch (e) {
        f.close();
        throw e;
      }
      // every tensor's range was checked against the size parsed: a file that changed since is refused
      const mapped = f.#map.size;
      if (mapped !== f.fileSize) {
        f.close();
        throw new Error(`gguf: ${path}: the file changed while it was opened (${f.fileSize} bytes, then ${mapped})`);
      }
    }
    return f;
  }

  #fail(msg: string): never {
    throw new Error(`gguf: ${this.path}: ${msg}`);
  }

  /** The entry of `key`, or undefined. */
  get(key: string): GgufKv | undefined {
    return this.kv.get(key);
  }

  #want(key: string, required: boolean, ok: (kv: GgufKv) => boolean, want: string): GgufKv | undefined {
    const kv = this.kv.get(key);
    if (!kv) {
      if (required) this.#fail(`metadata "${key}" is missing`);
      return undefined;
    }
    if (!ok(kv)) this.#fail(`metadata "${key}" must be ${want}, got ${describeKv(kv)}`);
    return kv;
  }

  /** A string value (required unless a default is given). */
  string(key: string): string;
  string(key: string, dflt: string | null): string | null;
  string(key: string, dflt?: string | null): string | null {
    const kv = this.#want(key, dflt === undefined, (k) => k.type === GgufType.STRING, "a string");
    return kv ? (kv.value as string) : dflt!;
  }

  /** An integer of any integer type, in [min, max] (required unless a default is given). */
  int(key: string, dflt?: number | null, min = 0, max = Number.MAX_SAFE_INTEGER): number {
    const kv = this.#want(key, dflt === undefined, (k) => isIntType(k.type), "an integer");
    if (!kv) return dflt as number;
    const v = kv.value;
    if (typeof v !== "number" || v < min || v > max) this.#fail(`metadata "${key}" must be an integer in [${min}, ${max}], got ${String(v)}`);
    return v;
  }

  /**
   * A finite number (f32, f64 or an integer type). An f32 comes back as the
   * shortest decimal that rounds to it (1e-6, not 9.99999997e-7), the number
   * its writer meant.
   */
  float(key: string, dflt?: number | null): number {
    const kv = this.#want(key, dflt === undefined, (k) => k.type === GgufType.FLOAT32 || k.type === GgufType.FLOAT64 || isIntType(k.type), "a number");
    if (!kv) return dflt as number;
    const v = Number(kv.value);
    if (!Number.isFinite(v)) this.#fail(`metadata "${key}" must be a finite number, got ${v}`);
    return kv.type === GgufType.FLOAT32 ? shortestF32(v) : v;
  }

  bool(key: string, dflt?: boolean | null): boolean {
    const kv = this.#want(key, dflt === undefined, (k) => k.type === GgufType.BOOL, "a bool");
    return kv ? (kv.value as boolean) : (dflt as boolean);
  }

  /** A string array. */
  strings(key: string): string[] | null {
    const kv = this.#want(key, false, (k) => k.type === GgufType.ARRAY && k.arrayType === GgufType.STRING, "an array of strings");
    if (!kv) return null;
    if (kv.value === null) this.#fail(`metadata "${key}" was not decoded (opened with arrays: false)`);
    return kv.value as string[];
  }

  /** A numeric array of one of `types`. */
  numbers(key: string, types: readonly GgufTypeCode[]): GgufNumbers | null {
    const want = `an array of ${types.map(ggufTypeName).join(" or ")}`;
    const kv = this.#want(key, false, (k) => k.type === GgufType.ARRAY && types.includes(k.arrayType!), want);
    if (!kv) return null;
    if (kv.value === null) this.#fail(`metadata "${key}" was not decoded (opened with arrays: false)`);
    return kv.value as GgufNumbers;
  }

  /**
   * Reads one tensor's bytes. A mapped file (GgufOpenOptions.map) returns a
   * view of the map, valid until close(); otherwise, with `into` (at least
   * nbytes long) the bytes go there and a view of it is returned, so one
   * buffer can serve every tensor.
   */
  read(name: string, into?: Uint8Array): Uint8Array {
    const fd = this.#fd;
    if (fd === null) this.#fail(`closed; cannot read tensor "${name}"`);
    const t = this.tensors.get(name);
    if (!t) this.#fail(`no tensor "${name}"`);
    if (this.#map) return t.nbytes ? this.#map.view(this.dataStart + t.offset, t.nbytes) : new Uint8Array(0);
    if (into && into.length < t.nbytes) throw new Error(`gguf: read ${name}: the buffer holds ${into.length} bytes, ${t.nbytes} needed`);
    const out = into ? into.subarray(0, t.nbytes) : new Uint8Array(t.nbytes);
    const CHUNK = 1 << 30;
    let done = 0;
    while (done < t.nbytes) {
      const n = readSync(fd, out, done, Math.min(CHUNK, t.nbytes - done), this.dataStart + t.offset + done);
      if (n <= 0) this.#fail(`tensor "${name}": unexpected end of file after ${done} of ${t.nbytes} bytes`);
      done += n;
    }
    return out;
  }

  /** Says a tensor's bytes will not be read again (a mapped file: its pages leave the resident set). */
  done(name: string): void {
    const t = this.tensors.get(name);
    if (this.#map && t && t.nbytes) this.#map.drop(this.dataStart + t.offset, t.nbytes);
  }

  get closed(): boolean {
    return this.#fd === null;
  }

  /** Whether read() returns views of a map (GgufOpenOptions.map). */
  get mapped(): boolean {
    return this.#map !== null;
  }

  /** Closes the file (and its map: views of it must not be read after); safe to call twice. */
  close(): void {
    if (this.#fd === null) return;
    const fd = this.#fd;
    this.#fd = null;
    const map = this.#map;
    this.#map = null;
    try {
      map?.close();
    } finally {
      closeSync(fd);
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * The shortest decimal whose float32 rounding is `v` (itself a float32).
 *
 * @example
 * shortestF32(Math.fround(1e-6)); // 1e-6, not 9.999999974752427e-7
 */
export function shortestF32(v: number): number {
  for (let digits = 1; digits <= 9; digits++) {
    const d = Number(v.toPrecision(digits));
    if (Math.fround(d) === v) return d;
  }
  return v;
}

function isIntType(t: number): boolean {
  return t <= GgufType.INT32 || t === GgufType.UINT64 || t === GgufType.INT64;
}

/** "u32 7", "string "llama"", "array of 32000 string" — for error messages. */
function describeKv(kv: GgufKv): string {
  if (kv.type === GgufType.ARRAY) return `an array of ${kv.length} ${ggufTypeName(kv.arrayType!)}`;
  const v = kv.value;
  const shown = typeof v === "string" ? JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v) : String(v);
  return `${ggufTypeName(kv.type)} ${shown}`;
}

function parse(r: HeaderReader, decodeArrays: boolean) {
  const magic = r.bytes(4, "magic");
  if (new TextDecoder().decode(magic) !== "GGUF") {
    const shown = Array.from(magic, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : "?")).join("");
    r.fail("magic", `not a GGUF file: it starts with "${shown}", not "GGUF"`, 0);
  }
  const version = r.u32("version");
  if ((version & 0xffff) === 0 && version !== 0) r.fail("version", `version ${version} looks byte-swapped: big-endian GGUF files are not supported`, 4);
  if (version !== 2 && version !== 3) r.fail("version", `GGUF version ${version} is not supported (skipdecode reads versions 2 and 3)`, 4);
  // every tensor info takes at least 24 bytes, every key/value at least 13
  const nTensors = r.count("tensor count", Math.min(GGUF_LIMITS.tensors, Math.floor((r.left - 8) / 24)), "tensors");
  const nKv = r.count("key/value count", Math.min(GGUF_LIMITS.keys, Math.floor(r.left / 13)), "key/value pairs");

  const kv = new Map<string, GgufKv>();
  for (let i = 0; i < nKv; i++) {
    const at = r.pos;
    const key = r.string(`key ${i}`, GGUF_LIMITS.stringBytes);
    if (key === "") r.fail(`key ${i}`, "empty key", at);
    if (kv.has(key)) r.fail(`key ${i}`, `duplicate key "${key}"`, at);
    kv.set(key, readValue(r, key, decodeArrays || !key.startsWith("tokenizer.")));
  }
  let alignment = 32;
  const al = kv.get("general.alignment");
  if (al) {
    if (al.type !== GgufType.UINT32) r.fail("general.alignment", `must be a u32, got ${describeKv(al)}`, 0);
    alignment = al.value as number;
    if (alignment === 0 || (alignment & (alignment - 1)) !== 0) r.fail("general.alignment", `${alignment} is not a power of two`, 0);
  }

  const tensors = new Map<string, GgufTensorInfo>();
  for (let i = 0; i < nTensors; i++) {
    const at = r.pos;
    const name = r.string(`tensor ${i} name`, GGUF_LIMITS.stringBytes);
    if (Buffer.byteLength(name) > GGUF_LIMITS.nameBytes) r.fail(`tensor ${i} name`, `"${name.slice(0, 80)}" is longer than ${GGUF_LIMITS.nameBytes} bytes`, at);
    if (tensors.has(name)) r.fail(`tensor ${i} name`, `duplicate tensor "${name}"`, at);
    const what = `tensor "${name}"`;
    const ndAt = r.pos;
    const nd = r.u32(`${what} dims count`);
    if (nd > GGUF_LIMITS.dims) r.fail(`${what} dims count`, `${nd} dims (at most ${GGUF_LIMITS.dims})`, ndAt);
    const dims: number[] = [];
    let elems = 1n;
    for (let d = 0; d < nd; d++) {
      const dAt = r.pos;
      const v = r.u64(`${what} dim ${d}`);
      elems *= v;
      if (v > BigInt(Number.MAX_SAFE_INTEGER) || elems > BigInt(Number.MAX_SAFE_INTEGER)) {
        r.fail(`${what} dims`, `dim ${d} = ${v} makes the element count overflow (more than 2^53)`, dAt);
      }
      dims.push(Number(v));
    }
    const typeAt = r.pos;
    const type = r.u32(`${what} type`);
    const info = GGML_TYPES[type];
    if (!info) r.fail(`${what} type`, `unknown ggml type ${type}`, typeAt);
    const cols = dims[0] ?? 1;
    if (cols % info.blockSize !== 0) {
      r.fail(`${what} dims`, `${info.name} rows hold whole blocks of ${info.blockSize}, but dim 0 is ${cols}`, ndAt);
    }
    const nbytes = (Number(elems) / info.blockSize) * info.typeSize;
    const offAt = r.pos;
    const off = r.u64(`${what} offset`);
    if (off > BigInt(Number.MAX_SAFE_INTEGER)) r.fail(`${what} offset`, `offset ${off} is beyond any file`, offAt);
    const offset = Number(off);
    if (offset % alignment !== 0) r.fail(`${what} offset`, `offset ${offset} is not a multiple of the alignment ${alignment}`, offAt);
    tensors.set(name, { name, dims, shape: dims.slice().reverse(), type, offset, nbytes });
  }
  const dataStart = nTensors > 0 ? Math.ceil(r.pos / alignment) * alignment : r.pos;
  const dataBytes = r.size - dataStart;
  const byOffset = [...tensors.values()].sort((a, b) => a.offset - b.offset);
  let end = 0;
  let prev = "";
  for (const t of byOffset) {
    if (t.offset < end) r.fail(`tensor "${t.name}"`, `its data [${t.offset}, ${t.offset + t.nbytes}) overlaps tensor "${prev}" (which ends at ${end})`, dataStart);
    if (t.offset + t.nbytes > dataBytes) {
      r.fail(`tensor "${t.name}"`, `its data [${t.offset}, ${t.offset + t.nbytes}) runs past the end of the data section (${Math.max(0, dataBytes)} bytes; truncated?)`, dataStart);
    }
    if (t.nbytes > 0) {
      end = t.offset + t.nbytes;
      prev = t.name;
    }
  }
  return { version, fileSize: r.size, alignment, dataStart, kv, tensors };
}
