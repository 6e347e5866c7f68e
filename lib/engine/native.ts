/**
 * The one module that talks to the native libraries (cuda/include/skipdecode.h)
 * through bun:ffi. It lists the symbols in header order, validates arguments
 * before they cross (bun:ffi silently turns missing arguments into 0), turns
 * status codes into thrown {@link NativeError}s carrying the library's own
 * message, and keeps raw pointers to itself: callers see {@link NativeEngine}.
 * The ABI's constants are in abi.ts.
 */
import { dlopen, FFIType, type Pointer, toArrayBuffer } from "bun:ffi";
import type { FileMap } from "../checkpoint/gguf.ts";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { ABI_VERSION, Cfg, DType, DTYPE_BLOCK, DTYPE_NAMES, type DTypeCode, KvSlotStat, KvStat, MAX_TOP_LOGPROBS, Param, Row, ROW_LOGPROBS, ROW_SAMPLE, ROW_WANT_LOGITS, Status } from "./abi.ts";
import { BUILD_COMMAND, ensureLibrary, gpuDriver } from "./build.ts";

/** Backends the library can run on. */
export type BackendName = "cpu" | "cuda";

function checkDType(where: string, dtype: unknown): asserts dtype is DTypeCode {
  if (typeof dtype !== "number" || !(dtype in DTYPE_NAMES)) {
    throw new Error(`${where}: unknown dtype ${String(dtype)} (expected one of ${Object.entries(DTYPE_NAMES).map(([k, v]) => `${v} ${k}`).join(", ")})`);
  }
}

/** Throws unless [rows, cols] is a valid shape for `dtype` (cols a multiple of its block). */
function checkShape(where: string, dtype: DTypeCode, rows: number, cols: number): void {
  if (!Number.isSafeInteger(rows) || rows < 0 || !Number.isSafeInteger(cols) || cols < 1) {
    throw new Error(`${where}: shape [${rows}, ${cols}] must be integers with rows >= 0 and cols >= 1`);
  }
  if (cols % DTYPE_BLOCK[dtype] !== 0) {
    throw new Error(`${where}: shape [${rows}, ${cols}]: ${DTYPE_NAMES[dtype]} needs a row length (cols) that is a multiple of ${DTYPE_BLOCK[dtype]}`);
  }
}

const STATUS_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(Status).map(([k, v]) => [v, `SKD_${k === "OK" ? "OK" : "ERR_" + k}`]),
);

/** An error returned by the native library; `status` is its SKD_ code name. */
export class NativeError extends Error {
  readonly status: string;
  readonly code: number;
  constructor(context: string, code: number, message: string) {
    super(`${context}: ${message || "failed"} (${STATUS_NAMES[code] ?? `status ${code}`})`);
    this.name = "NativeError";
    this.code = code;
    this.status = STATUS_NAMES[code] ?? `status ${code}`;
  }

  /** @internal Rebuilds an error that crossed from the engine thread (message already formatted). */
  static revive(message: string, code: number): NativeError {
    const e = new NativeError("", code, "");
    e.message = message;
    return e;
  }
}

const SYMBOLS = {
  skd_status_str: { args: [FFIType.i32], returns: FFIType.cstring },
  skd_last_error: { args: [], returns: FFIType.cstring },
  skd_abi_version: { args: [], returns: FFIType.i32 },
  skd_backend_name: { args: [], returns: FFIType.cstring },
  skd_device_count: { args: [FFIType.ptr], returns: FFIType.i32 },
  skd_device_name: { args: [FFIType.i32, FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
  skd_membw: { args: [FFIType.i64_fast, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  skd_membw_passes: { args: [FFIType.i64_fast, FFIType.i32, FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
  skd_file_map: { args: [FFIType.cstring, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  skd_file_drop: { args: [FFIType.ptr, FFIType.i64_fast, FFIType.i64_fast, FFIType.i64_fast], returns: FFIType.i32 },
  skd_file_unmap: { args: [FFIType.ptr, FFIType.i64_fast], returns: FFIType.i32 },
  skd_dtype_row_bytes: { args: [FFIType.i32, FFIType.i64_fast, FFIType.ptr], returns: FFIType.i32 },
  skd_quantize: {
    args: [FFIType.i32, FFIType.ptr, FFIType.i64_fast, FFIType.i64_fast, FFIType.ptr, FFIType.i64_fast],
    returns: FFIType.i32,
  },
  skd_dequantize: { args: [FFIType.i32, FFIType.ptr, FFIType.i64_fast, FFIType.i64_fast, FFIType.ptr], returns: FFIType.i32 },
  skd_engine_create: { args: [FFIType.ptr, FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
  skd_engine_free: { args: [FFIType.ptr], returns: FFIType.void },
  skd_engine_set_tensor: {
    args: [FFIType.ptr, FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.i64_fast],
    returns: FFIType.i32,
  },
  skd_engine_finalize: { args: [FFIType.ptr], returns: FFIType.i32 },
  skd_engine_weight_bytes: { args: [FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  skd_engine_step: {
    args: [FFIType.ptr, FFIType.ptr, FFIType.i32, FFIType.ptr, FFIType.ptr, FFIType.ptr],
    returns: FFIType.i32,
  },
  skd_engine_step_logprobs: {
    args: [FFIType.ptr, FFIType.ptr, FFIType.i32, FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.i32, FFIType.ptr, FFIType.ptr],
    returns: FFIType.i32,
  },
  skd_engine_reset_slot: { args: [FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
  skd_engine_slot_info: {
    args: [FFIType.ptr, FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.ptr],
    returns: FFIType.i32,
  },
  skd_engine_kv_reserve: { args: [FFIType.ptr, FFIType.i32, FFIType.i64_fast], returns: FFIType.i32 },
  skd_engine_kv_stats: { args: [FFIType.ptr, FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
  skd_engine_kv_slot_stats: { args: [FFIType.ptr, FFIType.i32, FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
  skd_engine_kv_check: { args: [FFIType.ptr], returns: FFIType.i32 },
} as const;

type Lib = ReturnType<typeof dlopen<typeof SYMBOLS>>["symbols"];

/** Folder holding the built libraries: $SKIPDECODE_LIB_DIR, else <repo>/build. */
export function libraryDir(): string {
  return process.env.SKIPDECODE_LIB_DIR ?? resolve(import.meta.dir, "..", "..", "build");
}

/** Path of a backend's shared library. */
export function libraryPath(backend: BackendName): string {
  return join(libraryDir(), `libskipdecode_${backend}.so`);
}

const loaded = new Map<BackendName, NativeBackend>();

/** A loaded backend library. One per process per backend. */
export class NativeBackend {
  readonly name: BackendName;
  readonly #lib: Lib;

  private constructor(name: BackendName, lib: Lib) {
    this.name = name;
    this.#lib = lib;
  }

  /** Loads (once) and returns a backend's library; throws if it is not built. */
  static get(backend: BackendName): NativeBackend {
    const have = loaded.get(backend);
    if (have) return have;
    const path = libraryPath(backend);
    // missing after an install whose build was blocked or skipped: build it now (lib/engine/build.ts)
    ensureLibrary(backend, path);
    let lib: Lib;
    try {
      lib = dlopen(path, SYMBOLS).symbols;
    } catch (e) {
      throw new Error(`skipdecode: cannot load ${path} (${(e as Error).message}); rebuild it with \`${BUILD_COMMAND}\``);
    }
    const abi = lib.skd_abi_version();
    if (abi !== ABI_VERSION) {
      throw new Error(`skipdecode: ${path} has ABI version ${abi}, this code expects ${ABI_VERSION}; rebuild it with \`${BUILD_COMMAND}\``);
    }
    const b = new NativeBackend(backend, lib);
    loaded.set(backend, b);
    return b;
  }

  /** Throws a NativeError for a non-zero status. */
  check(context: string, code: number): void {
    if (code !== Status.OK) throw new NativeError(context, code, String(this.#lib.skd_last_error()));
  }

  /** Number of devices; throws NativeError(NO_DEVICE) on a CUDA machine without a GPU. */
  deviceCount(): number {
    const out = new Int32Array(1);
    this.check("skd_device_count", this.#lib.skd_device_count(out));
    return out[0]!;
  }

  /** Whether the backend has a usable device (never throws). */
  available(): boolean {
    try {
      return this.deviceCount() > 0;
    } catch {
      return false;
    }
  }

  deviceName(index = 0): string {
    const buf = new Uint8Array(256);
    this.check("skd_device_name", this.#lib.skd_device_name(index, buf, buf.length));
    const end = buf.indexOf(0);
    return new TextDecoder().decode(buf.subarray(0, end < 0 ? buf.length : end));
  }

  /**
   * Memory bandwidth in GB/s, best of `reps` passes over `bytes`-sized
   * buffers (skd_membw): host memory for the CPU, device memory for CUDA.
   */
  membw(bytes: number, threads = 0, reps = 5): { readGBs: number; copyGBs: number } {
    const r = new Float64Array(1);
    const c = new Float64Array(1);
    this.check("skd_membw", this.#lib.skd_membw(bytes, threads, reps, r, c));
    return { readGBs: r[0]!, copyGBs: c[0]! };
  }

  /**
   * The read rate in GB/s of each of `passes` reads in a row over one
   * `bytes`-sized buffer (skd_membw_passes). Their sustained rate, what a
   * long stream of reads such as a decode gets, is their count over the sum
   * of their reciprocals (bench/common.ts readBandwidth).
   */
  membwPasses(bytes: number, threads = 0, passes = 32): number[] {
    const r = new Float64Array(Math.max(1, passes));
    this.check("skd_membw_passes", this.#lib.skd_membw_passes(bytes, threads, passes, r));
    return Array.from(r);
  }

  /**
   * Maps the file at `path` read-only (skd_file_map): views of its bytes
   * without a copy, each valid until the map is closed. The GGUF loader reads
   * tensors through one (lib/engine/weights.ts).
   *
   * @example
   * using map = backend.mapFile("model.gguf");
   * const header = map.view(0, 4); // "GGUF"
   */
  mapFile(path: string): FileMap & Disposable {
    const addr = new BigUint64Array(1);
    const size = new BigInt64Array(1);
    this.check(`mapping ${path}`, this.#lib.skd_file_map(Buffer.from(`${path}\0`), addr, size));
    const lib = this.#lib;
    let ptr: Pointer | null = Number(addr[0]) as Pointer;
    const bytes = Number(size[0]);
    const range = (what: string, offset: number, length: number): Pointer => {
      if (ptr === null) throw new Error(`${path}: ${what} after the map was closed`);
      if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > bytes) {
        throw new Error(`${path}: ${what} [${offset}, +${length}) is outside the file's ${bytes} bytes`);
      }
      return ptr;
    };
    return {
      size: bytes,
      view: (offset, length) => new Uint8Array(toArrayBuffer(range("view", offset, length), offset, length)),
      drop: (offset, length) => this.check(`${path}: drop`, lib.skd_file_drop(range("drop", offset, length), bytes, offset, length)),
      close: () => {
        if (ptr === null) return;
        const p = ptr;
        ptr = null;
        this.check(`unmapping ${path}`, lib.skd_file_unmap(p, bytes));
      },
      [Symbol.dispose]() {
        this.close();
      },
    };
  }

  statusName(code: number): string {
    return String(this.#lib.skd_status_str(code));
  }

  /**
   * Bytes of one row of `cols` elements of `dtype` (skd_dtype_row_bytes);
   * throws naming the dtype's block when cols is not a multiple of it.
   *
   * @example
   * NativeBackend.get("cpu").rowBytes(DType.Q4_K, 4096); // 2304: 16 blocks of 144 bytes
   */
  rowBytes(dtype: DTypeCode, cols: number): number {
    checkDType("rowBytes", dtype);
    checkShape("rowBytes", dtype, 1, cols);
    const out = new BigInt64Array(1);
    this.check(`rowBytes(${DTYPE_NAMES[dtype]}, ${cols})`, this.#lib.skd_dtype_row_bytes(dtype, cols, out));
    return Number(out[0]);
  }

  /**
   * Encodes fp32 `f32` [rows, cols] (row-major) as `dtype` (skd_quantize):
   * rows × rowBytes(dtype, cols) bytes, ggml's block layout for the quantized
   * types. Throws naming a non-finite value or a block whose scale overflows.
   *
   * @example
   * const q = backend.quantize(DType.Q8_0, weights, 768, 768);
   * const back = backend.dequantize(DType.Q8_0, q, 768, 768); // ≈ weights
   */
  quantize(dtype: DTypeCode, f32: Float32Array, rows: number, cols: number): Uint8Array {
    checkDType("quantize", dtype);
    checkShape("quantize", dtype, rows, cols);
    if (f32.length !== rows * cols) throw new Error(`quantize: ${f32.length} values given for shape [${rows}, ${cols}] (${rows * cols} expected)`);
    const out = new Uint8Array(rows * this.rowBytes(dtype, cols));
    const src = f32.length <= 1024 ? new Float32Array(f32) : f32; // small arrays: storage that cannot move during the call
    this.check(`quantize [${rows}, ${cols}] to ${DTYPE_NAMES[dtype]}`, this.#lib.skd_quantize(dtype, src, rows, cols, out, out.byteLength));
    return out;
  }

  /**
   * Decodes rows × rowBytes(dtype, cols) bytes of `dtype` to fp32
   * (skd_dequantize): exactly ggml's values for the quantized types.
   */
  dequantize(dtype: DTypeCode, bytes: Uint8Array, rows: number, cols: number): Float32Array {
    checkDType("dequantize", dtype);
    checkShape("dequantize", dtype, rows, cols);
    const need = rows * this.rowBytes(dtype, cols);
    if (bytes.byteLength !== need) {
      throw new Error(`dequantize: ${bytes.byteLength} bytes given for [${rows}, ${cols}] of ${DTYPE_NAMES[dtype]} (${need} expected)`);
    }
    const out = new Float32Array(rows * cols);
    const src = bytes.byteLength <= 4096 ? new Uint8Array(bytes) : bytes;
    this.check(`dequantize [${rows}, ${cols}] of ${DTYPE_NAMES[dtype]}`, this.#lib.skd_dequantize(dtype, src, rows, cols, out));
    return out;
  }

  /** Creates an engine; `cfg` is indexed by {@link Cfg}. */
  createEngine(cfg: ArrayLike<number>): NativeEngine {
    if (cfg.length !== Cfg.COUNT) throw new Error(`engine config needs ${Cfg.COUNT} slots, got ${cfg.length}`);
    const c = new BigInt64Array(Cfg.COUNT);
    for (let i = 0; i < Cfg.COUNT; i++) {
      const v = cfg[i]!;
      if (!Number.isSafeInteger(v)) {
        const name = Object.keys(Cfg).find((k) => Cfg[k as keyof typeof Cfg] === i);
        throw new Error(`engine config ${name} (slot ${i}) is not an integer: ${v}`);
      }
      c[i] = BigInt(v);
    }
    const out = new BigUint64Array(1);
    this.check("skd_engine_create", this.#lib.skd_engine_create(c, Cfg.COUNT, out));
    return new NativeEngine(this, this.#lib, Number(out[0]) as Pointer, cfg[Cfg.VOCAB]!);
  }
}

/** The KV pool (skd_kv_stat of skipdecode.h): bytes, and blocks of `blockSize` positions. */
export interface KvPoolStats {
  poolBytes: number;
  /** Bytes of the blocks sequences own. */
  usedBytes: number;
  /** Bytes promised to sequences: per slot the larger of its reservation and what it owns. */
  reservedBytes: number;
  /** Positions per block. */
  blockSize: number;
  blockBytes: number;
  blocks: number;
  /** Blocks no sequence owns. */
  blocksFree: number;
  /** Blocks neither owned nor promised: the most a new reservation can take. */
  blocksAvailable: number;
  dtype: DTypeCode;
  /** false for a contiguous cache allocated whole at create (CUDA). */
  paged: boolean;
}

const registry = new FinalizationRegistry<{ free: () => void }>((h) => h.free());

/** The KV pool's stats from skd_engine_kv_stats' int64s (skipdecode.h's order). */
export function kvStatsOf(o: BigInt64Array): KvPoolStats {
  const n = (i: number) => Number(o[i]);
  return {
    poolBytes: n(KvStat.POOL_BYTES),
    usedBytes: n(KvStat.USED_BYTES),
    reservedBytes: n(KvStat.RESERVED_BYTES),
    blockSize: n(KvStat.BLOCK_SIZE),
    blockBytes: n(KvStat.BLOCK_BYTES),
    blocks: n(KvStat.BLOCKS),
    blocksFree: n(KvStat.BLOCKS_FREE),
    blocksAvailable: n(KvStat.BLOCKS_AVAILABLE),
    dtype: n(KvStat.DTYPE) as DTypeCode,
    paged: n(KvStat.PAGED) === 1,
  };
}

/** An engine handle (skd_engine*). `free()` is idempotent; use after free throws. */
export class NativeEngine {
  readonly backend: NativeBackend;
  /** Rows of the LM head (logits per row). */
  readonly vocab: number;
  readonly #lib: Lib;
  #handle: Pointer | null;
  readonly #token = {};

  /** @internal created by NativeBackend.createEngine */
  constructor(backend: NativeBackend, lib: Lib, handle: Pointer, vocab: number) {
    this.backend = backend;
    this.vocab = vocab;
    this.#lib = lib;
    this.#handle = handle;
    // Backstop only: callers free explicitly. The held object must not reference `this`.
    registry.register(this, { free: () => lib.skd_engine_free(handle) }, this.#token);
  }

  #h(what: string): Pointer {
    if (this.#handle === null) throw new Error(`skipdecode: ${what} on a freed engine`);
    return this.#handle;
  }

  /**
   * Copies one tensor in; `data` holds `numel` elements of `dtype` (for a
   * quantized dtype, rows × rowBytes(dtype, cols) bytes). A numel that is not
   * a multiple of the dtype's block goes to the engine, which refuses it
   * naming the tensor's shape.
   */
  setTensor(role: number, layer: number, dtype: DTypeCode, data: Uint8Array, numel: number): void {
    checkDType("setTensor", dtype);
    if (!Number.isSafeInteger(numel) || numel < 1) throw new Error(`setTensor: numel must be a positive integer, got ${numel}`);
    if (numel % DTYPE_BLOCK[dtype] === 0) {
      const bytes = this.backend.rowBytes(dtype, numel); // numel / block whole blocks
      if (data.byteLength !== bytes) {
        throw new Error(`setTensor: ${data.byteLength} bytes given for ${numel} elements of ${DTYPE_NAMES[dtype]} (${bytes} bytes expected)`);
      }
    }
    // Copy small buffers onto a fresh ArrayBuffer so their storage cannot move during the call.
    const buf = data.byteLength <= 4096 ? new Uint8Array(data) : data;
    this.backend.check(
      `set tensor role ${role} layer ${layer}`,
      this.#lib.skd_engine_set_tensor(this.#h("setTensor"), role, layer, dtype, buf, numel),
    );
  }

  finalize(): void {
    this.backend.check("finalize", this.#lib.skd_engine_finalize(this.#h("finalize")));
  }

  weightBytes(): number {
    const out = new BigInt64Array(1);
    this.backend.check("weight_bytes", this.#lib.skd_engine_weight_bytes(this.#h("weightBytes"), out));
    return Number(out[0]);
  }

  /**
   * Runs one batch step (skd_engine_step). `rows` holds nRows × Row.FIELDS
   * int32; `params` nRows × Param.FIELDS floats (or null when no row samples);
   * `logits` room for vocab floats per row flagged ROW_WANT_LOGITS; `tokens`
   * one int32 per row flagged ROW_SAMPLE. Null outputs are allowed when no row
   * asks for them (the library checks). Rows flagged ROW_LOGPROBS also get
   * `1 + nTop` floats in `lpValues` (log p of the sampled token, then the nTop
   * best) and `nTop` ids in `lpIds` (skd_engine_step_logprobs). Returns how
   * many tokens it sampled (into tokens[0 ..]).
   */
  step(
    rows: Int32Array,
    nRows: number,
    params: Float32Array | null = null,
    logits: Float32Array | null = null,
    tokens: Int32Array | null = null,
    nTop = 0,
    lpValues: Float32Array | null = null,
    lpIds: Int32Array | null = null,
  ): number {
    if (!Number.isInteger(nRows) || nRows < 0) throw new Error(`step: nRows must be a non-negative integer, got ${nRows}`);
    if (rows.length < nRows * Row.FIELDS) throw new Error(`step: rows holds ${rows.length} ints, ${nRows} rows need ${nRows * Row.FIELDS}`);
    if (params && params.length < nRows * Param.FIELDS) throw new Error(`step: params holds ${params.length} floats, ${nRows} rows need ${nRows * Param.FIELDS}`);
    let wantLogits = 0;
    let wantTokens = 0;
    let wantLp = 0;
    for (let i = 0; i < nRows; i++) {
      const f = rows[i * Row.FIELDS + Row.FLAGS]!;
      if (f & ROW_WANT_LOGITS) wantLogits++;
      if (f & ROW_SAMPLE) wantTokens++;
      if (f & ROW_LOGPROBS) wantLp++;
    }
    if (!Number.isInteger(nTop) || nTop < 0 || nTop > MAX_TOP_LOGPROBS) throw new Error(`step: nTop must be an integer in 0..${MAX_TOP_LOGPROBS}, got ${nTop}`);
    if (wantLp && (!lpValues || lpValues.length < wantLp * (1 + nTop))) {
      throw new Error(`step: ${wantLp} rows want logprobs; lpValues holds ${lpValues?.length ?? 0} floats, ${wantLp * (1 + nTop)} needed`);
    }
    if (wantLp && nTop > 0 && (!lpIds || lpIds.length < wantLp * nTop)) {
      throw new Error(`step: ${wantLp} rows want ${nTop} alternatives; lpIds holds ${lpIds?.length ?? 0} ids, ${wantLp * nTop} needed`);
    }
    if (wantLogits && (!logits || logits.length < wantLogits * this.vocab)) {
      throw new Error(`step: ${wantLogits} rows want logits; the buffer holds ${logits?.length ?? 0} floats, ${wantLogits * this.vocab} needed`);
    }
    if (wantTokens && (!tokens || tokens.length < wantTokens)) {
      throw new Error(`step: ${wantTokens} rows sample; the tokens buffer holds ${tokens?.length ?? 0}`);
    }
    if (wantLp) {
      const code = this.#lib.skd_engine_step_logprobs(this.#h("step"), rows, nRows, params, logits, tokens, nTop, lpValues, lpIds);
      this.backend.check("step", code);
    } else {
      this.backend.check("step", this.#lib.skd_engine_step(this.#h("step"), rows, nRows, params, logits, tokens));
    }
    return wantTokens;
  }

  resetSlot(slot: number): void {
    this.backend.check("reset_slot", this.#lib.skd_engine_reset_slot(this.#h("resetSlot"), slot));
  }

  /** Length of a slot's sequence and the KV length at one layer. */
  slotInfo(slot: number, layer: number): { len: number; kvLen: number } {
    const a = new Int32Array(1);
    const b = new Int32Array(1);
    this.backend.check("slot_info", this.#lib.skd_engine_slot_info(this.#h("slotInfo"), slot, layer, a, b));
    return { len: a[0]!, kvLen: b[0]! };
  }

  /** Sets a slot's KV reservation to `blocks` (skd_engine_kv_reserve); throws NativeError(KV_FULL) when the pool cannot promise them. */
  kvReserve(slot: number, blocks: number): void {
    if (!Number.isSafeInteger(blocks) || blocks < 0) throw new Error(`kvReserve: blocks must be a non-negative integer, got ${blocks}`);
    this.backend.check("kv_reserve", this.#lib.skd_engine_kv_reserve(this.#h("kvReserve"), slot, blocks));
  }

  /** The KV pool's numbers (skd_engine_kv_stats). */
  kvStats(): KvPoolStats {
    const o = new BigInt64Array(KvStat.STATS_COUNT);
    this.kvStatsInto(o);
    return kvStatsOf(o);
  }

  /** skd_engine_kv_stats into `out` (KvStat.STATS_COUNT int64s, skipdecode.h's order; shared memory is fine): one call, nothing allocated. */
  kvStatsInto(out: BigInt64Array): void {
    if (out.length < KvStat.STATS_COUNT) throw new Error(`kvStatsInto: ${out.length} slots, ${KvStat.STATS_COUNT} needed`);
    this.backend.check("kv_stats", this.#lib.skd_engine_kv_stats(this.#h("kvStats"), out, KvStat.STATS_COUNT));
  }

  /** One slot's KV blocks: owned now, peak since its last reset, reserved (skd_engine_kv_slot_stats). */
  kvSlotStats(slot: number): { owned: number; peak: number; reserved: number } {
    const o = new BigInt64Array(KvSlotStat.SLOT_STATS_COUNT);
    this.backend.check("kv_slot_stats", this.#lib.skd_engine_kv_slot_stats(this.#h("kvSlotStats"), slot, o, o.length));
    return { owned: Number(o[KvSlotStat.SLOT_OWNED]), peak: Number(o[KvSlotStat.SLOT_PEAK]), reserved: Number(o[KvSlotStat.SLOT_RESERVED]) };
  }

  /** Verifies the KV pool's invariants (skd_engine_kv_check); throws NativeError(STATE) naming the first violation. */
  kvCheck(): void {
    this.backend.check("kv_check", this.#lib.skd_engine_kv_check(this.#h("kvCheck")));
  }

  get freed(): boolean {
    return this.#handle === null;
  }

  free(): void {
    if (this.#handle === null) return;
    registry.unregister(this.#token);
    this.#lib.skd_engine_free(this.#handle);
    this.#handle = null;
  }
}

/**
 * Picks a backend: "cpu" and "cuda" as asked (cuda throws a NativeError with
 * SKD_ERR_NO_DEVICE where there is no GPU); "auto" picks CUDA when its library
 * is built and a device answers, else CPU.
 */
export function chooseBackend(requested: BackendName | "auto"): NativeBackend {
  if (requested === "cpu") return NativeBackend.get("cpu");
  const built = existsSync(libraryPath("cuda"));
  if (requested === "cuda") {
    // not built and no driver: building it (~25 s) could only end in this error
    if (!built && !gpuDriver()) throw new NativeError("skipdecode: backend \"cuda\"", Status.NO_DEVICE, "no CUDA device: no NVIDIA driver on this machine");
    const b = NativeBackend.get("cuda");
    b.deviceCount(); // throws the library's "no CUDA device" error
    return b;
  }
  // auto: CUDA when a GPU can run it (its library is built on first use), else the CPU
  if (built || gpuDriver()) {
    try {
      const b = NativeBackend.get("cuda");
      if (b.available()) return b;
    } catch {
      // an unloadable CUDA library falls back to the CPU
    }
  }
  return NativeBackend.get("cpu");
}
