/**
 * The safetensors reader: one file (SafetensorsFile) and a model folder's
 * single or sharded checkpoint (CheckpointTensors). The writer is
 * safetensors_write.ts; 16-bit float conversion is half.ts.
 *
 * File layout (https://github.com/huggingface/safetensors):
 *
 * ```
 * [0, 8)            N: u64 little-endian, the byte length of the header
 * [8, 8+N)          header: UTF-8 JSON object, starts with `{`, may be padded
 *                   with trailing spaces (writers pad to a multiple of 8)
 * [8+N, EOF)        data section: raw little-endian, row-major tensor bytes
 * ```
 *
 * The header maps each tensor name to
 * `{ "dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end] }`, offsets
 * relative to the start of the data section, plus an optional
 * `"__metadata__": { string: string }`. The reader validates exactly what the
 * reference reader (the Rust `safetensors` crate) validates: sorted by offset,
 * the tensors tile the data section from byte 0 to its very end with no gaps
 * and no overlaps, and each tensor's byte length equals
 * `prod(shape) × bits(dtype) / 8`.
 *
 * Files may be many GB: nothing here reads a whole file into memory. Only the
 * header is read at open; each tensor is read on demand with `readSync`.
 *
 * @module
 */

import { closeSync, existsSync, fstatSync, openSync, readdirSync, readFileSync, readSync, statSync } from "node:fs";
import { isAbsolute, join, normalize, sep } from "node:path";

// ---------------------------------------------------------------------------
// dtypes
// ---------------------------------------------------------------------------

/**
 * Every element type the safetensors format defines (safetensors 0.6 `Dtype`).
 * Sub-byte types (F4, F6_*) are packed; a tensor of them must fill whole bytes.
 *
 * @example
 * const d: SafetensorsDtype = "BF16";
 * SAFETENSORS_DTYPE_BITS[d]; // 16
 */
export type SafetensorsDtype =
  | "BOOL"
  | "F4"
  | "F6_E2M3"
  | "F6_E3M2"
  | "U8"
  | "I8"
  | "F8_E5M2"
  | "F8_E4M3"
  | "F8_E8M0"
  | "I16"
  | "U16"
  | "F16"
  | "BF16"
  | "I32"
  | "U32"
  | "F32"
  | "C64"
  | "F64"
  | "I64"
  | "U64";

/**
 * Bits per element of each dtype (the reference crate's `Dtype::bitsize`).
 * Byte size = bits / 8 (0.5 for F4, 0.75 for F6_*).
 *
 * @example
 * SAFETENSORS_DTYPE_BITS.F16 / 8; // 2 bytes per element
 */
export const SAFETENSORS_DTYPE_BITS: Readonly<Record<SafetensorsDtype, number>> = Object.freeze({
  BOOL: 8, // one byte per element, 0 or 1
  F4: 4, // OCP MX FP4 (E2M1), two per byte
  F6_E2M3: 6, // OCP MX FP6, four per three bytes
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8, // OCP MX shared scale
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64, // complex, two F32 parts
  F64: 64,
  I64: 64,
  U64: 64,
});

/**
 * True when `s` is a dtype name of the format.
 *
 * @example
 * isSafetensorsDtype("F32"); // true
 * isSafetensorsDtype("float32"); // false
 */
export function isSafetensorsDtype(s: unknown): s is SafetensorsDtype {
  return typeof s === "string" && Object.prototype.hasOwnProperty.call(SAFETENSORS_DTYPE_BITS, s);
}

const U64_LIMIT = 1n << 64n; // the reference does its size arithmetic in u64 (usize)

/**
 * Byte length of a tensor of `shape` and `dtype`, with the reference reader's
 * checks: the element count × bits must not overflow u64, and must be a whole
 * number of bytes (sub-byte dtypes). Throws a plain message (no file name);
 * callers add context.
 *
 * @example
 * safetensorsByteLength("BF16", [3, 4]); // 24
 */
export function safetensorsByteLength(dtype: SafetensorsDtype, shape: readonly number[]): number {
  let n = 1n;
  for (const d of shape) {
    n *= BigInt(d);
    if (n >= U64_LIMIT) throw new Error(`overflow: element count of shape [${shape.join(", ")}] exceeds 2^64`);
  }
  const bits = n * BigInt(SAFETENSORS_DTYPE_BITS[dtype]);
  if (bits >= U64_LIMIT) throw new Error(`overflow: bit size of shape [${shape.join(", ")}] × ${dtype} exceeds 2^64`);
  if (bits % 8n !== 0n) {
    throw new Error(`shape [${shape.join(", ")}] of ${dtype} is not a whole number of bytes (${bits} bits)`);
  }
  const bytes = bits / 8n;
  // Anything above 2^53 cannot match offsets that are safe integers; report it as too large.
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new Error(`overflow: shape [${shape.join(", ")}] × ${dtype} is ${bytes} bytes, beyond 2^53`);
  }
  return Number(bytes);
}

// ---------------------------------------------------------------------------
// reader
// ---------------------------------------------------------------------------

/** Largest header the reference reader accepts (100 MB). */
export const MAX_HEADER_SIZE = 100_000_000;

/**
 * One tensor of a safetensors file.
 *
 * @example
 * const t: TensorInfo = st.tensors.get("lm_head.weight")!;
 * t.end - t.begin; // byte length
 */
export interface TensorInfo {
  /** Tensor name as written in the header. */
  name: string;
  /** Element type. */
  dtype: SafetensorsDtype;
  /** Dimensions, row-major. `[]` is a scalar. */
  shape: number[];
  /** First byte, relative to the start of the data section. */
  begin: number;
  /** One past the last byte, relative to the start of the data section. */
  end: number;
  /** Path of the file that holds the tensor. */
  file: string;
}

// A string with an unpaired UTF-16 surrogate: JSON.parse accepts `"\ud800"`,
// serde_json (the reference) rejects it, so we do too.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** @internal shared with the writer */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** @internal shared with the writer */
export function isNonNegInt(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** Reads exactly `length` bytes at `position` (readSync may return short counts). */
function readExact(fd: number, length: number, position: number, what: () => string): Uint8Array {
  const out = new Uint8Array(length);
  const CHUNK = 1 << 30; // keep each syscall well under the 2 GiB read limit
  let done = 0;
  while (done < length) {
    const n = readSync(fd, out, done, Math.min(CHUNK, length - done), position + done);
    if (n <= 0) throw new Error(`${what()}: unexpected end of file after ${done} of ${length} bytes`);
    done += n;
  }
  return out;
}

/**
 * A safetensors file opened for reading. The header is read and validated at
 * open; tensor bytes are read on demand. Call `close()` when done.
 *
 * @example
 * const st = SafetensorsFile.open("model.safetensors");
 * try {
 *   const info = st.tensors.get("model.decoder.embed_tokens.weight")!;
 *   const w = toFloat32(st.read(info.name), info.dtype);
 * } finally {
 *   st.close();
 * }
 */
export class SafetensorsFile {
  /** Path the file was opened from. */
  readonly path: string;
  /** The header's `__metadata__` (empty when absent). */
  readonly metadata: Record<string, string>;
  /** Tensors by name, in data-offset order. */
  readonly tensors: Map<string, TensorInfo>;
  /** Absolute file offset of the data section: 8 + header length. */
  readonly dataStart: number;
  /** Total file size in bytes. */
  readonly fileSize: number;
  #fd: number | null;

  private constructor(
    path: string,
    fd: number,
    metadata: Record<string, string>,
    tensors: Map<string, TensorInfo>,
    dataStart: number,
    fileSize: number,
  ) {
    this.path = path;
    this.#fd = fd;
    this.metadata = metadata;
    this.tensors = tensors;
    this.dataStart = dataStart;
    this.fileSize = fileSize;
  }

  /**
   * Opens `path` and validates its header. Throws an `Error` naming the file
   * and the problem when the file is not a valid safetensors file.
   *
   * @example
   * const st = SafetensorsFile.open("/models/opt-125m/model.safetensors");
   * console.log([...st.tensors.keys()]);
   * st.close();
   */
  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch (e) {
      throw new Error(`safetensors: cannot open ${path}: ${(e as Error).message}`);
    }
    try {
      const fileSize = fstatSync(fd).size;
      const { metadata, tensors, dataStart } = parseHeader(path, fd, fileSize);
      return new SafetensorsFile(path, fd, metadata, tensors, dataStart, fileSize);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** True once `close()` has been called. */
  get closed(): boolean {
    return this.#fd === null;
  }

  /**
   * Reads one tensor's bytes into a fresh buffer (little-endian, row-major).
   *
   * @example
   * const bytes = st.read("lm_head.weight"); // Uint8Array of end - begin bytes
   */
  read(name: string): Uint8Array {
    const fd = this.#fd;
    if (fd === null) throw new Error(`safetensors: ${this.path} is closed; cannot read tensor "${name}"`);
    const info = this.tensors.get(name);
    if (!info) throw new Error(`safetensors: tensor "${name}" not found in ${this.path}`);
    return readExact(fd, info.end - info.begin, this.dataStart + info.begin, () => `safetensors: ${this.path}: tensor "${name}"`);
  }

  /**
   * Closes the file descriptor. Safe to call more than once.
   *
   * @example
   * st.close(); st.close(); // no error
   */
  close(): void {
    if (this.#fd !== null) {
      const fd = this.#fd;
      this.#fd = null;
      closeSync(fd);
    }
  }

  /** Same as `close()`, for `using st = SafetensorsFile.open(p)`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

interface ParsedHeader {
  metadata: Record<string, string>;
  tensors: Map<string, TensorInfo>;
  dataStart: number;
}

/** Reads and validates the header; every error names the file. */
function parseHeader(path: string, fd: number, fileSize: number): ParsedHeader {
  const fail = (msg: string): never => {
    throw new Error(`safetensors: ${path}: ${msg}`);
  };

  // --- 8-byte length prefix
  if (fileSize < 8) fail(`file is too small (${fileSize} bytes): shorter than the 8-byte header length prefix`);
  const prefix = readExact(fd, 8, 0, () => `safetensors: ${path}`);
  const n64 = new DataView(prefix.buffer).getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_SIZE)) fail(`header too large: ${n64} bytes (the limit is ${MAX_HEADER_SIZE})`);
  const n = Number(n64);
  if (8 + n > fileSize) fail(`invalid header length ${n}: header would end at byte ${8 + n}, beyond the end of the file (${fileSize} bytes)`);

  // --- header text: UTF-8, begins with `{`, a JSON object
  const headerBytes = readExact(fd, n, 8, () => `safetensors: ${path}: header`);
  // a byte-order mark is not '{': the reference reader refuses it, and TextDecoder would silently drop it
  if (headerBytes[0] === 0xef && headerBytes[1] === 0xbb && headerBytes[2] === 0xbf) {
    fail("header begins with a UTF-8 byte-order mark; it must begin with '{'");
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    return fail("header is not valid UTF-8");
  }
  // The format requires the header to begin with `{` (0x7B); trailing spaces are padding.
  if (!text.startsWith("{")) fail(`header does not start with '{' (first byte 0x${(headerBytes[0] ?? 0).toString(16).padStart(2, "0")})`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON: ${(e as Error).message}`);
  }
  if (!isPlainObject(json)) return fail("header is not a JSON object");

  // --- entries: __metadata__ and tensors. Structural errors first, as the
  // reference reader deserializes the whole header before validating offsets.
  let metadata: Record<string, string> = {};
  const entries: TensorInfo[] = [];
  for (const [name, value] of Object.entries(json)) {
    if (LONE_SURROGATE.test(name)) fail(`tensor name ${JSON.stringify(name)} contains an unpaired UTF-16 surrogate`);
    if (name === "__metadata__") {
      // Optional; the reference reads it as Option<HashMap<String, String>>, so null means absent.
      if (value === null) continue;
      if (!isPlainObject(value)) return fail(`__metadata__ must be an object of string to string, got ${describe(value)}`);
      const m: Record<string, string> = {};
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== "string") fail(`__metadata__ must be an object of string to string; key ${JSON.stringify(k)} has ${describe(v)}`);
        if (LONE_SURROGATE.test(k) || LONE_SURROGATE.test(v as string)) fail(`__metadata__ key ${JSON.stringify(k)} contains an unpaired UTF-16 surrogate`);
        m[k] = v as string;
      }
      metadata = m;
      continue;
    }
    const t = `tensor ${JSON.stringify(name)}`;
    if (!isPlainObject(value)) return fail(`${t}: entry is not an object (got ${describe(value)})`);
    // Unknown extra fields are ignored, as by the reference reader.
    const { dtype, shape, data_offsets: offsets } = value;
    if (dtype === undefined) fail(`${t}: missing "dtype"`);
    if (!isSafetensorsDtype(dtype)) fail(`${t}: unknown dtype ${JSON.stringify(dtype)} (known: ${Object.keys(SAFETENSORS_DTYPE_BITS).join(", ")})`);
    if (shape === undefined) fail(`${t}: missing "shape"`);
    if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
      fail(`${t}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    if (offsets === undefined) fail(`${t}: missing "data_offsets"`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegInt)) {
      fail(`${t}: data_offsets must be [begin, end] with non-negative integers, got ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    if (end < begin) fail(`${t}: invalid data_offsets [${begin}, ${end}]: end < begin`);
    entries.push({ name, dtype: dtype as SafetensorsDtype, shape: (shape as number[]).slice(), begin, end, file: path });
  }

  // --- layout: sorted by offsets, the tensors must tile [0, last end) exactly.
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const e of entries) {
    const t = `tensor ${JSON.stringify(e.name)}`;
    if (e.begin !== cursor) {
      fail(
        `${t}: data_offsets not contiguous: it begins at byte ${e.begin} but ` +
          (cursor === 0 ? "the first tensor must begin at 0" : `the previous tensor ends at ${cursor}`) +
          ` (${e.begin > cursor ? "gap" : "overlap"})`,
      );
    }
    cursor = e.end;
    let bytes: number;
    try {
      bytes = safetensorsByteLength(e.dtype, e.shape);
    } catch (err) {
      return fail(`${t}: ${(err as Error).message}`);
    }
    if (bytes !== e.end - e.begin) {
      fail(`${t}: size mismatch: shape [${e.shape.join(", ")}] of ${e.dtype} needs ${bytes} bytes but data_offsets [${e.begin}, ${e.end}] span ${e.end - e.begin}`);
    }
  }

  // --- the data section is exactly the tensors: no trailing bytes, nothing missing.
  const dataStart = 8 + n;
  const dataLen = fileSize - dataStart;
  if (cursor !== dataLen) {
    fail(
      `data section length mismatch: the tensors cover ${cursor} bytes but the file has ${dataLen} data bytes ` +
        (dataLen > cursor ? `(${dataLen - cursor} trailing bytes)` : `(${cursor - dataLen} bytes missing: truncated file?)`),
    );
  }

  const tensors = new Map<string, TensorInfo>();
  for (const e of entries) tensors.set(e.name, e);
  return { metadata, tensors, dataStart };
}

/** @internal shared with the writer */
export function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return `a ${typeof v}`;
}

// ---------------------------------------------------------------------------
// Hugging Face model folders
// ---------------------------------------------------------------------------

const INDEX_FILE = "model.safetensors.index.json";
const SINGLE_FILE = "model.safetensors";

/**
 * The tensors of a Hugging Face model folder: a single `model.safetensors` or
 * the shards listed by `model.safetensors.index.json`. PyTorch pickle weights
 * (`pytorch_model.bin`, `*.pt`, `*.pth`) are refused with a hint to convert.
 *
 * @example
 * const ckpt = CheckpointTensors.open("/models/opt-125m");
 * try {
 *   if (ckpt.has("lm_head.weight")) console.log(ckpt.info("lm_head.weight").shape);
 *   const emb = ckpt.read("model.decoder.embed_tokens.weight");
 * } finally {
 *   ckpt.close();
 * }
 */
export class CheckpointTensors {
  /** The model folder. */
  readonly dir: string;
  /** The opened files (one, or one per shard). */
  readonly files: readonly SafetensorsFile[];
  /** `__metadata__` of the first file, or the index's `metadata` entries that are strings. */
  readonly metadata: Record<string, string>;
  #map: Map<string, { info: TensorInfo; file: SafetensorsFile }>;
  #closed = false;

  private constructor(
    dir: string,
    files: SafetensorsFile[],
    map: Map<string, { info: TensorInfo; file: SafetensorsFile }>,
    metadata: Record<string, string>,
  ) {
    this.dir = dir;
    this.files = files;
    this.#map = map;
    this.metadata = metadata;
  }

  /**
   * Opens the weights of model folder `dir`. Throws when the folder has no
   * safetensors weights, when the index is malformed, or when a tensor the
   * index lists is missing from its shard.
   *
   * @example
   * const ckpt = CheckpointTensors.open("./tiny-opt");
   * ckpt.names().length;
   * ckpt.close();
   */
  static open(dir: string): CheckpointTensors {
    let st;
    try {
      st = statSync(dir);
    } catch {
      throw new Error(`checkpoint: model folder ${dir} does not exist`);
    }
    if (!st.isDirectory()) throw new Error(`checkpoint: ${dir} is not a folder (expected a Hugging Face model folder)`);

    const indexPath = join(dir, INDEX_FILE);
    if (existsSync(indexPath)) return CheckpointTensors.#openSharded(dir, indexPath);

    const single = join(dir, SINGLE_FILE);
    if (existsSync(single)) {
      const f = SafetensorsFile.open(single);
      const map = new Map<string, { info: TensorInfo; file: SafetensorsFile }>();
      for (const info of f.tensors.values()) map.set(info.name, { info, file: f });
      return new CheckpointTensors(dir, [f], map, { ...f.metadata });
    }

    const pickles = readdirSync(dir).filter((f) => /\.(bin|pt|pth)$/i.test(f) || f === "pytorch_model.bin.index.json");
    if (pickles.length > 0) {
      throw new Error(
        `checkpoint: ${dir} has only PyTorch pickle weights (${pickles.sort().join(", ")}), which skipdecode does not load. ` +
          `Convert them to safetensors, e.g. with transformers: ` +
          `AutoModelForCausalLM.from_pretrained(dir).save_pretrained(out, safe_serialization=True)`,
      );
    }
    throw new Error(`checkpoint: no ${SINGLE_FILE} or ${INDEX_FILE} in ${dir}`);
  }

  static #openSharded(dir: string, indexPath: string): CheckpointTensors {
    let index: unknown;
    try {
      index = JSON.parse(readFileSync(indexPath, "utf8"));
    } catch (e) {
      throw new Error(`checkpoint: ${indexPath} is not valid JSON: ${(e as Error).message}`);
    }
    if (!isPlainObject(index)) throw new Error(`checkpoint: ${indexPath} is not a JSON object`);
    const weightMap = index.weight_map;
    if (weightMap === undefined) throw new Error(`checkpoint: ${indexPath} has no "weight_map"`);
    if (!isPlainObject(weightMap)) throw new Error(`checkpoint: ${indexPath}: "weight_map" must be an object of tensor name to shard file, got ${describe(weightMap)}`);
    const entries = Object.entries(weightMap);
    if (entries.length === 0) throw new Error(`checkpoint: ${indexPath}: "weight_map" is empty`);

    const shardNames: string[] = [];
    for (const [name, shard] of entries) {
      if (typeof shard !== "string" || shard === "") {
        throw new Error(`checkpoint: ${indexPath}: "weight_map" entry for tensor "${name}" must be a shard file name, got ${JSON.stringify(shard)}`);
      }
      // Shards live inside the model folder.
      const norm = normalize(shard);
      if (isAbsolute(shard) || norm === ".." || norm.startsWith(`..${sep}`)) {
        throw new Error(`checkpoint: ${indexPath}: shard "${shard}" for tensor "${name}" is outside the model folder`);
      }
      if (!shardNames.includes(shard)) shardNames.push(shard);
    }

    // Open each shard once; on any failure close what was opened.
    const opened = new Map<string, SafetensorsFile>();
    try {
      for (const shard of shardNames) {
        const p = join(dir, shard);
        if (!existsSync(p)) throw new Error(`checkpoint: shard ${shard} listed in ${indexPath} does not exist (${p})`);
        opened.set(shard, SafetensorsFile.open(p));
      }
      const map = new Map<string, { info: TensorInfo; file: SafetensorsFile }>();
      for (const [name, shard] of entries) {
        const file = opened.get(shard as string)!;
        const info = file.tensors.get(name);
        if (!info) throw new Error(`checkpoint: tensor "${name}" is listed in ${indexPath} but missing from its shard ${shard}`);
        map.set(name, { info, file });
      }
      const meta: Record<string, string> = {};
      if (isPlainObject(index.metadata)) {
        for (const [k, v] of Object.entries(index.metadata)) if (typeof v === "string") meta[k] = v;
      }
      return new CheckpointTensors(dir, [...opened.values()], map, meta);
    } catch (e) {
      for (const f of opened.values()) f.close();
      throw e;
    }
  }

  #check(what: string): void {
    if (this.#closed) throw new Error(`checkpoint: ${this.dir} is closed; cannot ${what}`);
  }

  /**
   * True when the checkpoint has tensor `name`.
   *
   * @example
   * ckpt.has("lm_head.weight"); // false for OPT with tied embeddings
   */
  has(name: string): boolean {
    return this.#map.has(name);
  }

  /**
   * Dtype, shape, offsets and file of tensor `name`; throws if absent.
   *
   * @example
   * ckpt.info("model.decoder.embed_tokens.weight").shape; // [vocab, hidden]
   */
  info(name: string): TensorInfo {
    const e = this.#map.get(name);
    if (!e) throw new Error(`checkpoint: tensor "${name}" not found in ${this.dir}`);
    return e.info;
  }

  /**
   * Reads tensor `name` into a fresh buffer; throws if absent or closed.
   *
   * @example
   * const w = toFloat32(ckpt.read(name), ckpt.info(name).dtype);
   */
  read(name: string): Uint8Array {
    this.#check(`read tensor "${name}"`);
    const e = this.#map.get(name);
    if (!e) throw new Error(`checkpoint: tensor "${name}" not found in ${this.dir}`);
    return e.file.read(name);
  }

  /**
   * Tensor names: index `weight_map` order for sharded folders, data-offset
   * order for a single file.
   *
   * @example
   * ckpt.names().filter((n) => n.includes("layers.0."));
   */
  names(): string[] {
    return [...this.#map.keys()];
  }

  /**
   * Closes every file. Safe to call more than once.
   *
   * @example
   * ckpt.close();
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const f of this.files) f.close();
  }

  /** Same as `close()`, for `using ckpt = CheckpointTensors.open(dir)`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
