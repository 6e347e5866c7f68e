/**
 * The one module that talks to the native libraries (cuda/include/skipdecode.h)
 * through bun:ffi. It lists the symbols in header order, validates arguments
 * before they cross (bun:ffi silently turns missing arguments into 0), turns
 * status codes into thrown {@link NativeError}s carrying the library's own
 * message, and keeps raw pointers to itself: callers see {@link NativeEngine}.
 * The ABI's constants are in abi.ts.
 */
import { dlopen, FFIType, type Pointer } from "bun:ffi";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { ABI_VERSION, Cfg, DType, type DTypeCode, MAX_TOP_LOGPROBS, Param, Row, ROW_LOGPROBS, ROW_SAMPLE, ROW_WANT_LOGITS, Status } from "./abi.ts";
import { BUILD_COMMAND, ensureLibrary, gpuDriver } from "./build.ts";

/** Backends the library can run on. */
export type BackendName = "cpu" | "cuda";

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

  statusName(code: number): string {
    return String(this.#lib.skd_status_str(code));
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

const registry = new FinalizationRegistry<{ free: () => void }>((h) => h.free());

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

  /** Copies one tensor in; `data` holds `numel` elements of `dtype`. */
  setTensor(role: number, layer: number, dtype: DTypeCode, data: Uint8Array, numel: number): void {
    const bytes = numel * (dtype === DType.F32 ? 4 : 2);
    if (data.byteLength !== bytes) {
      throw new Error(`setTensor: ${data.byteLength} bytes given for ${numel} elements (${bytes} bytes expected)`);
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
   * best) and `nTop` ids in `lpIds` (skd_engine_step_logprobs).
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
  ): void {
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
