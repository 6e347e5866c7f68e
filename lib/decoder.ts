/**
 * SkipDecoder: loads a model folder into a native engine and runs it with
 * SkipDecode's per-token layer budgets (docs/DESIGN.md).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { readModelSpec, type ModelSpec } from "./checkpoint/config.ts";
import { familyOf } from "./checkpoint/family.ts";
import { isModelFile, openGgufModel } from "./checkpoint/gguf-model.ts";
import { SkipTokenizer } from "./checkpoint/tokenizer.ts";
import { EngineClient } from "./engine/client.ts";
import { type GenerateOptions, type Prompt, sequenceSpec } from "./generation/generate.ts";
import { type BackendName } from "./engine/native.ts";
import { Row, ROW_WANT_LOGITS } from "./engine/abi.ts";
import { type ChatMessage, ChatTemplate, type ChatTemplateOptions, chatLimits, checkChatSize, checkMessages } from "./text/chat.ts";
import { boolOpt, checkIds, checkKeys, choiceOpt, intOpt, numOpt, show } from "./options.ts";
import type { SkipPolicy } from "./generation/policy.ts";
import type { GenerateResult, StreamEvent } from "./generation/results.ts";
import { Group, Scheduler } from "./generation/scheduler.ts";
import { SlotPool } from "./generation/slots.ts";
import { type LoadSummary, maxStepRows, WEIGHT_DTYPES, type WeightDType } from "./engine/weights.ts";
import { KV_BLOCK_SIZE, KvBudget, kvBlockBytes, kvBlocksNeeded, type KvDType } from "./engine/kv.ts";
import { DType } from "./engine/abi.ts";

export type { LoadSummary, WeightDType } from "./engine/weights.ts";

/** Options of {@link SkipDecoder.load}; defaults in {@link LOAD_DEFAULTS}. */
export interface LoadOptions {
  /** "auto" picks CUDA when a GPU is usable, else CPU. */
  backend?: BackendName | "auto";
  /**
   * Weight storage. "auto": the CPU keeps F16/BF16 checkpoints as they are and
   * stores F32 matrices as float16 (bfloat16 if a value exceeds float16's
   * range), computing in fp32; CUDA computes in fp16 (bf16 when asked).
   * "float32" keeps full precision on the CPU at twice the memory traffic.
   * "q8_0", "q4_0", "q4_k" quantize the matrices as they load (ggml's block
   * formats; the rule, its fallbacks for rows K-quants cannot take, and which
   * tensors fell back: {@link SkipDecoder.loadSummary}, docs/quantization.md).
   */
  dtype?: WeightDType;
  /** Sequences that can be in flight at once (KV-cache slots). */
  maxBatch?: number;
  /** KV capacity per sequence, at most the model's max positions. */
  maxSeqLen?: number;
  /** CPU worker threads; 0 = all cores. */
  threads?: number;
  /** Most rows (tokens) one native step carries; longer prefills are chunked. */
  maxBatchTokens?: number;
  /**
   * While sequences decode, a step that also feeds new prompts may take at
   * most this multiple of a decode-only step (measured as it runs): prompts
   * are then fed in smaller chunks, so a long prompt does not stall running
   * streams. `Infinity`: always feed up to maxBatchTokens rows.
   */
  decodeSlowdown?: number;
  /**
   * Send each step to the engine thread while the step before it still runs,
   * its rows feeding the tokens that step samples (lib/generation/scheduler.ts):
   * the engine goes from step to step without waiting for this thread's turn
   * (two thread hand-offs, ~0.6 ms a token on a 2-core VM); with short steps
   * up to 4 are in flight (about 12 ms of work), and this thread is woken
   * once for a few replies. Results are the same either way; a sequence that
   * stops by a stop string or an abort costs a row in each step already
   * posted (up to three; by EOS too, unless those steps hold only EOS-fed
   * rows, which the engine skips), and a waiting request starts up to three
   * steps later than it would one step at a time. Measured (`bun run bench pipeline`,
   * docs/performance.md "Pipelined steps"): +5–8% tokens/s where a core is
   * free for this thread, −3 to +12% when the engine's threads take every
   * core. false: one step at a time.
   */
  pipeline?: boolean;
  /**
   * Scan every weight for NaN/Inf at load and refuse a damaged checkpoint,
   * naming the tensor (~1–2.5 GB/s of weights on a 2-core VM); false skips
   * the scan for huge models.
   */
  checkWeights?: boolean;
  /**
   * Bytes of the KV cache pool (docs/kv-cache.md). Default 0: what maxBatch
   * sequences of maxSeqLen positions need at full depth, so nothing that fits
   * the slots is ever queued for KV. Smaller pools admit a request only when
   * its exact need can be reserved; the rest wait. Rounded down to whole
   * blocks, at most the default; the CUDA engine takes only the default.
   */
  kvCacheBytes?: number;
  /**
   * Storage of keys/values. "auto": float16 on the CPU (attention still
   * accumulates in fp32), the compute dtype on CUDA. "float32" keeps full
   * precision at twice the bytes; "bfloat16" is offered too.
   */
  kvDtype?: "auto" | KvDType;
}

/** The KV pool as {@link SkipDecoder.kvStats} reports it. */
export interface KvStats {
  /** Bytes of the whole pool. */
  poolBytes: number;
  /** Bytes of the blocks sequences hold now. */
  usedBytes: number;
  /** Bytes promised to sequences (their reservations, or what they hold if more). */
  reservedBytes: number;
  /** Positions per block. */
  blockSize: number;
  /** Blocks no sequence holds. */
  blocksFree: number;
  /** Bytes of one block. */
  blockBytes: number;
  /** Blocks in the pool. */
  blocks: number;
  /** Storage of keys/values. */
  dtype: KvDType;
  /** false for the CUDA engine's contiguous cache, allocated whole at load. */
  paged: boolean;
}

const KV_DTYPE_NAMES: Record<number, KvDType> = { [DType.F16]: "float16", [DType.BF16]: "bfloat16", [DType.F32]: "float32" };

/**
 * maxSeqLen: at most the model's positions and, for sliding-window models,
 * the window (attention is exact while a sequence fits in it; past it the
 * engine would attend to more than the model was trained to). Default:
 * LOAD_DEFAULTS.maxSeqLen capped by both.
 */
function maxSeqLenOpt(where: string, v: unknown, spec: ModelSpec): number {
  const win = spec.slidingWindow;
  const most = win === null ? spec.maxPositions : Math.min(spec.maxPositions, win);
  if (win !== null && typeof v === "number" && Number.isInteger(v) && v > win && v <= spec.maxPositions) {
    throw new Error(
      `${where}: maxSeqLen ${v} exceeds the model's sliding_window of ${win}; skipdecode attends to the whole ` +
        `context, which matches the model only while a sequence fits in the window (use maxSeqLen <= ${win})`,
    );
  }
  return intOpt(where, "maxSeqLen", v, 1, most, Math.min(most, LOAD_DEFAULTS.maxSeqLen));
}

/**
 * Blocks of the KV pool for `kvCacheBytes` (0: the engine's default, every
 * slot at full depth and length): whole blocks, at least one per layer, at
 * most the default (a larger pool could never be used).
 */
function kvPoolBlocks(where: string, v: unknown, spec: ModelSpec, o: { maxBatch: number; maxSeqLen: number; kvDtype: "auto" | KvDType }): number {
  if (v === undefined || v === 0) return 0;
  const B = Math.min(KV_BLOCK_SIZE, o.maxSeqLen);
  const blockBytes = kvBlockBytes(spec.numKvHeads * spec.headDim, o.kvDtype === "float32" ? "float32" : "float16", B);
  const full = o.maxBatch * spec.numLayers * Math.ceil(o.maxSeqLen / B);
  const bytes = intOpt(where, "kvCacheBytes", v, 0, Number.MAX_SAFE_INTEGER, 0);
  const least = spec.numLayers * blockBytes;
  if (bytes < least) {
    throw new Error(
      `${where}: kvCacheBytes ${bytes} cannot hold one block per layer (${spec.numLayers} layers × ${blockBytes} bytes = ${least}); ` +
        `0 gives the default, ${full * blockBytes} bytes`,
    );
  }
  return Math.min(full, Math.floor(bytes / blockBytes));
}

/** Defaults of {@link LoadOptions}, in one place. */
export const LOAD_DEFAULTS = {
  backend: "auto",
  dtype: "auto",
  maxBatch: 8,
  maxSeqLen: 2048,
  threads: 0,
  maxBatchTokens: 512,
  decodeSlowdown: 1.5,
  pipeline: true,
  checkWeights: true,
  kvCacheBytes: 0,
  kvDtype: "auto",
} as const;

const LOAD_KEYS = Object.keys(LOAD_DEFAULTS);

/** Options of {@link SkipDecoder.forward}. */
export interface ForwardOptions {
  /** budgets[i]: layers position i computes (default: all). */
  budgets?: ArrayLike<number>;
  /** Warm-up layers every token computes (default 1). */
  warmupLayers?: number;
}

/**
 * A loaded model. Create with {@link SkipDecoder.load}; free with `close()`
 * (or `using dec = await SkipDecoder.load(...)`).
 *
 * @example
 * const dec = await SkipDecoder.load("models/tiny", { backend: "cpu" });
 * const logits = await dec.forward([2, 10, 11], { budgets: [2, 2, 1] });
 * dec.close();
 */
export class SkipDecoder {
  /** Model shape from config.json. */
  readonly spec: ModelSpec;
  /** The backend actually used. */
  readonly backend: BackendName;
  /** The model folder, or the GGUF file. */
  readonly dir: string;
  /** Effective load options. */
  readonly options: Required<LoadOptions>;
  /** The model's tokenizer, or null when the folder has none (then prompts must be token ids). */
  readonly tokenizer: SkipTokenizer | null;
  readonly #engine: EngineClient;
  /** The engine's KV slots: taken by the scheduler's sequences, forward() and the tests' raw steps, all through here. */
  readonly #slots: SlotPool;
  readonly #scheduler: Scheduler;
  /** KV blocks promised to sequences (the scheduler's and forward()'s), mirrored in the engine's reservations. */
  readonly #kv: KvBudget;
  /** The tokenizer's chat template, parsed on first use (it never changes). */
  #template: ChatTemplate | null = null;

  private constructor(
    dir: string,
    spec: ModelSpec,
    engine: EngineClient,
    options: Required<LoadOptions>,
    tokenizer: SkipTokenizer | null,
  ) {
    this.dir = dir;
    this.spec = spec;
    this.#engine = engine;
    this.backend = engine.backend;
    this.options = options;
    this.tokenizer = tokenizer;
    this.#slots = new SlotPool(options.maxBatch, engine);
    const kv = engine.kvStats();
    this.#kv = new KvBudget(kv.blocks, kv.blockSize, kv.blockBytes);
    this.#scheduler = new Scheduler(
      {
        numLayers: spec.numLayers,
        maxSeqLen: options.maxSeqLen,
        tokenizer,
        slots: this.#slots,
        kv: { budget: this.#kv, reserve: (slot, blocks) => this.#live("generate").kvReserve(slot, blocks) },
        step: (rows, n, params, tokens, lp) => this.#live("generate").step(rows, n, params, null, tokens, lp),
        ...(options.pipeline && {
          post: (rows, n, params, tokens, lp, follows, endIds) => this.#live("generate").postStep(rows, n, params, null, tokens, lp, follows, endIds),
        }),
      },
      maxStepRows(options),
      options.decodeSlowdown,
    );
    // a dead engine thread ends every generation with its error at once
    engine.onFailure((e) => this.#scheduler.failAll(e));
  }

  /**
   * Loads a Hugging Face model folder (config.json + safetensors) or a GGUF
   * file (docs/gguf.md): a path to a file is read as GGUF.
   *
   * @example
   * const dec = await SkipDecoder.load("models/opt-125m", { backend: "cpu", threads: 4 });
   * const q = await SkipDecoder.load("models/llama-q4_k_m.gguf");
   */
  static async load(dir: string, opts?: LoadOptions): Promise<SkipDecoder> {
    const where = "SkipDecoder.load";
    if (typeof dir !== "string" || dir === "") throw new Error(`${where}: dir must be a model folder or GGUF file path`);
    const o = checkKeys(where, opts, LOAD_KEYS);
    const gguf = isModelFile(dir) ? openGgufModel(dir) : null;
    const spec = gguf ? gguf.spec : readModelSpec(dir);
    const options: Required<LoadOptions> = {
      backend: choiceOpt(where, "backend", o.backend, ["auto", "cpu", "cuda"] as const, LOAD_DEFAULTS.backend),
      dtype: choiceOpt(where, "dtype", o.dtype, WEIGHT_DTYPES, LOAD_DEFAULTS.dtype),
      maxBatch: intOpt(where, "maxBatch", o.maxBatch, 1, 4096, LOAD_DEFAULTS.maxBatch),
      maxSeqLen: maxSeqLenOpt(where, o.maxSeqLen, spec),
      threads: intOpt(where, "threads", o.threads, 0, 1024, LOAD_DEFAULTS.threads),
      maxBatchTokens: intOpt(where, "maxBatchTokens", o.maxBatchTokens, 1, 1 << 20, LOAD_DEFAULTS.maxBatchTokens),
      decodeSlowdown:
        o.decodeSlowdown === Infinity ? Infinity : numOpt(where, "decodeSlowdown", o.decodeSlowdown, 1, 1e6, LOAD_DEFAULTS.decodeSlowdown),
      pipeline: boolOpt(where, "pipeline", o.pipeline, LOAD_DEFAULTS.pipeline),
      checkWeights: boolOpt(where, "checkWeights", o.checkWeights, LOAD_DEFAULTS.checkWeights),
      kvCacheBytes: 0, // set below
      kvDtype: choiceOpt(where, "kvDtype", o.kvDtype, ["auto", "float16", "bfloat16", "float32"] as const, LOAD_DEFAULTS.kvDtype),
    };
    const kvBlocks = kvPoolBlocks(where, o.kvCacheBytes, spec, options);
    // the engine thread builds the engine: reading and converting weights never blocks this thread,
    // which meanwhile builds the tokenizer
    const { kvDtype, ...engineOptions } = options;
    const starting = EngineClient.start(dir, spec, { ...engineOptions, ...(kvDtype !== "auto" && { kvDtype }), kvBlocks });
    let tokenizer: SkipTokenizer | null;
    try {
      const hasTokenizer = !gguf && ["tokenizer.json", "vocab.json"].some((f) => existsSync(join(dir, f)));
      tokenizer = gguf ? (gguf.tokenizer()?.tokenizer ?? null) : hasTokenizer ? await SkipTokenizer.load(dir, { bos: familyOf(spec.arch, dir).bos }) : null;
      if (tokenizer && tokenizer.vocabSize > spec.vocabSize) {
        throw new Error(
          `${where}: the tokenizer in ${dir} has ids up to ${tokenizer.vocabSize - 1}, beyond the model's vocabulary of ` +
            `${spec.vocabSize} (${gguf ? "the token embedding's rows" : "config.json vocab_size"}): those ids have no embedding`,
        );
      }
    } catch (e) {
      starting.then((engine) => engine.free(), () => {}); // the tokenizer's error is the one reported
      throw e;
    }
    const engine = await starting;
    const kv = engine.kvStats();
    options.kvCacheBytes = kv.poolBytes;
    options.kvDtype = KV_DTYPE_NAMES[kv.dtype] ?? options.kvDtype;
    const family = familyOf(spec.arch, dir);
    if (engine.backend === "cuda" && !family.cudaVerified) {
      console.warn(
        `skipdecode: the ${family.name} family's block on the CUDA backend has never run on a GPU (docs/cuda.md); ` +
          `check its output against backend: "cpu" before relying on it`,
      );
    }
    // the CUDA engine runs quantized weights dequantized to fp16 (no quantized CUDA kernel): say so at load
    if (engine.loadSummary.note) console.warn(`skipdecode: ${engine.loadSummary.note}`);
    return new SkipDecoder(dir, spec, engine, options, tokenizer);
  }

  #live(what: string): EngineClient {
    if (this.#engine.freed) throw new Error(`SkipDecoder.${what}: the decoder is closed`);
    const failure = this.#engine.failure;
    if (failure) throw new Error(`SkipDecoder.${what}: ${failure.message.replace(/^skipdecode: /, "")}`);
    return this.#engine;
  }

  /**
   * Why the engine thread ended unasked, or null while it runs. Once set,
   * every generation in flight has failed with it and every call that needs
   * the engine throws: the decoder is done (close it; load the model again).
   */
  get engineFailure(): Error | null {
    return this.#engine.failure;
  }

  /**
   * Calls `listener` once if the engine thread ends unasked (see
   * {@link engineFailure}); at once if it already has.
   *
   * @example
   * dec.onEngineFailure((e) => { console.error(e.message); process.exit(1); });
   */
  onEngineFailure(listener: (e: Error) => void): void {
    this.#engine.onFailure(listener);
  }

  /** @internal Test-only: ends the engine thread as a crash would, so a test can see what follows. */
  killEngineThread(): Promise<number> {
    return this.#engine.killForTest();
  }

  /** Bytes of weights one full step reads (linear layers and LM head). */
  get weightBytes(): number {
    return this.#live("weightBytes").weightBytes;
  }

  /**
   * What the load stored: each tensor's type and bytes, totals per type, the
   * tensors whose quantized type fell back (quant-plan.ts), and the backend's
   * note (the CUDA engine dequantizes quantized weights on load).
   * `describeLoad(dec.loadSummary)` renders it as text.
   */
  get loadSummary(): LoadSummary {
    return this.#live("loadSummary").loadSummary;
  }

  /** Description of the device ("AMD EPYC, 2 threads", "NVIDIA H200, …"). */
  get deviceName(): string {
    return this.#live("deviceName").deviceName;
  }

  /**
   * The KV cache pool now (docs/kv-cache.md): its size, what sequences hold
   * and what is promised to them. Never waits for a step in flight: the
   * numbers are as of the last step the engine finished.
   *
   * @example
   * const { usedBytes, poolBytes } = dec.kvStats();
   * console.log(`KV ${((100 * usedBytes) / poolBytes).toFixed(1)}% used`);
   */
  kvStats(): KvStats {
    const k = this.#live("kvStats").kvStats();
    return {
      poolBytes: k.poolBytes,
      usedBytes: k.usedBytes,
      reservedBytes: k.reservedBytes,
      blockSize: k.blockSize,
      blocksFree: k.blocksFree,
      blockBytes: k.blockBytes,
      blocks: k.blocks,
      dtype: KV_DTYPE_NAMES[k.dtype] ?? "float16",
      paged: k.paged,
    };
  }

  /** @internal takes a free KV slot. */
  acquireSlot(): number {
    this.#live("acquireSlot");
    return this.#slots.acquire();
  }

  /** @internal returns a slot taken with acquireSlot. */
  releaseSlot(slot: number): void {
    this.#slots.release(slot);
  }

  /**
   * @internal One raw native step (see skipdecode.h `skd_engine_step`), blocking
   * until the engine thread is done: rows of Row.FIELDS int32 each; logits
   * receive vocab floats per row flagged ROW_WANT_LOGITS. Used by the tests;
   * generation steps without blocking.
   */
  stepRows(
    rows: Int32Array,
    nRows: number,
    logits: Float32Array | null,
    params: Float32Array | null = null,
    tokens: Int32Array | null = null,
  ): void {
    this.#live("stepRows").stepSync(rows, nRows, params, logits, tokens);
  }

  /** @internal KV bookkeeping of a slot (sequence length, KV length at a layer). */
  slotInfo(slot: number, layer: number): { len: number; kvLen: number } {
    return this.#live("slotInfo").slotInfo(slot, layer);
  }

  /**
   * Teacher-forced logits over a fresh sequence: `ids` are fed exactly as given
   * (no BOS added) at positions 0..n-1, position i with `budgets[i]` layers.
   * Returns n × vocabSize floats, row i predicting token i+1.
   *
   * @example
   * const logits = await dec.forward([2, 100, 200], { budgets: [12, 12, 6], warmupLayers: 1 });
   * const row1 = logits.subarray(dec.spec.vocabSize, 2 * dec.spec.vocabSize);
   */
  async forward(ids: ArrayLike<number>, opts?: ForwardOptions): Promise<Float32Array> {
    const where = "SkipDecoder.forward";
    const engine = this.#live("forward");
    const o = checkKeys(where, opts, ["budgets", "warmupLayers"]);
    const L = this.spec.numLayers;
    const V = this.spec.vocabSize;
    const toks = checkIds(where, "ids", Array.isArray(ids) ? ids : Array.from(ids), V);
    const n = toks.length;
    if (n === 0) throw new Error(`${where}: ids is empty`);
    if (n > this.options.maxSeqLen) {
      throw new Error(`${where}: ${n} ids exceed the context of ${this.options.maxSeqLen} positions (maxSeqLen)`);
    }
    const w = intOpt(where, "warmupLayers", o.warmupLayers, 0, L, 1);
    let budgets: number[];
    if (o.budgets === undefined) {
      budgets = new Array(n).fill(L);
    } else {
      budgets = Array.from(o.budgets);
      if (budgets.length !== n) throw new Error(`${where}: budgets has ${budgets.length} entries for ${n} ids`);
      budgets.forEach((b, i) => intOpt(where, `budgets[${i}]`, b, Math.max(1, w), L));
    }
    const out = new Float32Array(n * V);
    const chunk = this.options.maxBatchTokens;
    const rows = new Int32Array(Math.min(chunk, n) * Row.FIELDS);
    // reserved like a generation's: exact, and waiting (not failing) while the pool is promised to others
    const need = kvBlocksNeeded(L, this.#kv.blockSize, 0, budgets, w);
    this.#scheduler.checkKvNeed(where, need, `${n} ids`);
    while (!this.#kv.tryReserve(need)) {
      await new Promise<void>((r) => {
        const off = this.#kv.onRelease(() => {
          off();
          r();
        });
      });
      this.#live("forward");
    }
    let slot: number;
    try {
      slot = this.acquireSlot();
    } catch (e) {
      this.#kv.release(need);
      throw e;
    }
    try {
      await engine.kvReserve(slot, need);
      for (let start = 0; start < n; start += chunk) {
        const m = Math.min(chunk, n - start);
        for (let i = 0; i < m; i++) {
          const r = i * Row.FIELDS;
          rows[r + Row.TOKEN] = toks[start + i]!;
          rows[r + Row.POS] = start + i;
          rows[r + Row.SLOT] = slot;
          rows[r + Row.BUDGET] = budgets[start + i]!;
          rows[r + Row.WARMUP] = w;
          rows[r + Row.FLAGS] = ROW_WANT_LOGITS;
        }
        await engine.step(rows, m, null, out.subarray(start * V, (start + m) * V), null);
      }
    } finally {
      this.releaseSlot(slot);
      this.#kv.release(need);
    }
    return out;
  }

  #spec(where: string, prompt: Prompt, opts: GenerateOptions | undefined, seqOffset: number, onEvent?: (ev: StreamEvent) => void) {
    this.#live(where);
    const spec = sequenceSpec(`SkipDecoder.${where}`, prompt, opts, {
      spec: this.spec,
      tokenizer: this.tokenizer,
      maxSeqLen: this.options.maxSeqLen,
      seqOffset,
      onEvent,
    });
    // refused here, not in a step that other sequences share
    if (spec.logprobs !== null && this.backend === "cuda") {
      throw new Error(`SkipDecoder.${where}: logprobs are computed by the CPU engine only so far; the CUDA engine does not compute them yet`);
    }
    // a need beyond the whole pool could never be admitted: refused now, not queued forever
    const what = `a prompt of ${spec.prompt.length} tokens with maxNewTokens ${spec.maxNewTokens}`;
    this.#scheduler.checkKvNeed(`SkipDecoder.${where}`, this.#scheduler.kvNeed(spec), what);
    return spec;
  }

  /**
   * Token ids of a text, as a string prompt would be fed: with `bos` (default
   * true) OPT's BOS `</s>` comes first, added once (through the tokenizer's
   * own post-processor when it has one); `bos: false` gives the raw ids. No
   * length limit: use it to count tokens before generating.
   *
   * @example
   * dec.tokenize("Hello world");                 // [2, 31414, 232]
   * dec.tokenize("Hello world", { bos: false }); // [31414, 232]
   */
  tokenize(text: string, opts?: { bos?: boolean }): number[] {
    const where = "SkipDecoder.tokenize";
    this.#live("tokenize");
    const o = checkKeys(where, opts, ["bos"]);
    if (typeof text !== "string") throw new Error(`${where}: text must be a string, got ${show(text)}`);
    if (o.bos !== undefined && typeof o.bos !== "boolean") throw new Error(`${where}: bos must be true or false, got ${show(o.bos)}`);
    if (!this.tokenizer) throw new Error(`${where}: this model folder has no tokenizer (tokenizer.json or vocab.json + merges.txt)`);
    return this.tokenizer.encode(text, { addBos: o.bos ?? true });
  }

  /**
   * The text of token ids, as generation decodes it: special tokens such as
   * `</s>` are left out unless `skipSpecialTokens: false`.
   *
   * @example
   * dec.detokenize([2, 31414, 232]);                               // "Hello world"
   * dec.detokenize([2, 31414], { skipSpecialTokens: false });      // "</s>Hello"
   */
  detokenize(ids: ArrayLike<number>, opts?: { skipSpecialTokens?: boolean }): string {
    const where = "SkipDecoder.detokenize";
    this.#live("detokenize");
    const o = checkKeys(where, opts, ["skipSpecialTokens"]);
    if (o.skipSpecialTokens !== undefined && typeof o.skipSpecialTokens !== "boolean") {
      throw new Error(`${where}: skipSpecialTokens must be true or false, got ${show(o.skipSpecialTokens)}`);
    }
    const toks = checkIds(where, "ids", ids, this.spec.vocabSize);
    if (!this.tokenizer) throw new Error(`${where}: this model folder has no tokenizer (tokenizer.json or vocab.json + merges.txt)`);
    return this.tokenizer.decode(toks, { skipSpecialTokens: o.skipSpecialTokens ?? true });
  }

  /**
   * Validates a prompt and generation options exactly as generate would,
   * without running anything: throws the same errors, returns the prompt's
   * token ids (BOS included) and the budget policy that would be used.
   *
   * @example
   * const { promptTokens, policy } = dec.check("Hello", { maxNewTokens: 32, speedup: 2 });
   */
  check(prompt: Prompt, opts?: GenerateOptions): { promptTokens: number[]; policy: SkipPolicy } {
    const s = this.#spec("check", prompt, opts, 0);
    return { promptTokens: s.prompt, policy: s.policy };
  }

  /**
   * Generates a continuation of one prompt. Concurrent calls are batched
   * together step by step (continuous batching); each keeps its own budgets.
   *
   * @example
   * const r = await dec.generate("The capital of France is", { maxNewTokens: 20, speedup: 2 });
   * console.log(r.text, r.stats.idealSpeedup, r.budgets);
   */
  async generate(prompt: Prompt, opts?: GenerateOptions): Promise<GenerateResult> {
    return this.#scheduler.submit(this.#spec("generate", prompt, opts, 0)).promise;
  }

  /**
   * Generates for several prompts as one batch that shares the step index
   * (the paper's mode): all are prefilled before any decodes, so row i of
   * every decode step has the same budget. Prompt i draws with RNG sequence
   * index `sequence` + i. At most maxBatch prompts.
   *
   * @example
   * const [a, b] = await dec.generateBatch(["Hello", "Goodbye, cruel"], { maxNewTokens: 16, speedup: 3 });
   */
  async generateBatch(prompts: Prompt[], opts?: GenerateOptions): Promise<GenerateResult[]> {
    if (!Array.isArray(prompts) || prompts.length === 0) throw new Error("SkipDecoder.generateBatch: prompts must be a non-empty array");
    if (prompts.length > this.options.maxBatch) {
      throw new Error(`SkipDecoder.generateBatch: ${prompts.length} prompts exceed maxBatch ${this.options.maxBatch}`);
    }
    const specs = prompts.map((p, i) => this.#spec("generateBatch", p, opts, i));
    // its members decode together, so together they must fit the pool
    const need = specs.reduce((a, s) => a + this.#scheduler.kvNeed(s), 0);
    this.#scheduler.checkKvNeed("SkipDecoder.generateBatch", need, `this batch of ${specs.length} prompts`);
    const group = new Group(specs.length);
    return Promise.all(specs.map((s) => this.#scheduler.submit(s, group).promise));
  }

  /**
   * Streams a generation token by token. `text` pieces never split a
   * character; a piece that could begin a stop string is held back until it
   * cannot. Breaking out of the loop ends the generation and frees its KV slot.
   * The iterator's return value is the full result.
   *
   * @example
   * for await (const ev of dec.stream("Once upon a time", { maxNewTokens: 50 })) process.stdout.write(ev.text);
   */
  async *stream(prompt: Prompt, opts?: GenerateOptions): AsyncGenerator<StreamEvent, GenerateResult, undefined> {
    const queue: StreamEvent[] = [];
    let wake: (() => void) | null = null;
    const spec = this.#spec("stream", prompt, opts, 0, (ev) => {
      queue.push(ev);
      wake?.();
    });
    const run = this.#scheduler.submit(spec);
    let done = false;
    let result: GenerateResult | undefined;
    let error: unknown;
    run.promise.then(
      (r) => {
        result = r;
        done = true;
        wake?.();
      },
      (e) => {
        error = e;
        done = true;
        wake?.();
      },
    );
    try {
      for (;;) {
        while (queue.length) yield queue.shift()!;
        if (done) break;
        await new Promise<void>((r) => (wake = r));
        wake = null;
      }
      if (error) throw error;
      return result!;
    } finally {
      if (!done) run.cancel(); // the consumer left early: free the slot now
    }
  }

  /**
   * The prompt text the model's chat template makes of `messages`
   * (lib/text/chat.ts). Throws when the model has no template, the template
   * refuses the messages, or a chat limit is exceeded (lib/text/chat.ts
   * `chatLimits`: message count and size; the render's time, output and
   * work). It renders on this thread, synchronously: at most about a second.
   *
   * @example
   * dec.applyChatTemplate([{ role: "user", content: "Hi" }]);
   * // "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant..."
   */
  applyChatTemplate(messages: ChatMessage[], opts: ChatTemplateOptions = {}): string {
    return this.#chatPrompt("applyChatTemplate", messages, opts).text;
  }

  #chatPrompt(fn: string, messages: ChatMessage[], opts: ChatTemplateOptions): { text: string; ids: number[] } {
    const where = `SkipDecoder.${fn}`;
    const tok = this.tokenizer;
    if (!tok) throw new Error(`${where}: the model folder has no tokenizer, so it has no chat template`);
    const src = tok.chatTemplate;
    if (src === null) throw new Error(`${where}: the model has no chat template (no chat_template in tokenizer_config.json or chat_template.jinja)`);
    checkKeys(where, opts, ["addGenerationPrompt"]);
    const list = checkMessages(where, messages);
    const limits = chatLimits(this.options.maxSeqLen);
    checkChatSize(where, list, limits);
    this.#template ??= new ChatTemplate(src, where);
    const text = this.#template.render(list, { ...this.chatTokens, addGenerationPrompt: opts.addGenerationPrompt ?? true }, where, limits);
    // the template writes the BOS where the model wants one: tokenize without adding another
    return { text, ids: tok.encode(text, { addBos: false }) };
  }

  /** @internal The special tokens a chat template is given (`bos_token`, `eos_token`; "" when the model has none). */
  get chatTokens(): { bosToken: string; eosToken: string } {
    const tok = this.tokenizer;
    const token = (id: number | null) => (id === null || !tok ? "" : (tok.idToToken(id) ?? ""));
    return { bosToken: token(tok?.bosId ?? null), eosToken: token(tok?.eosId ?? null) };
  }

  /**
   * Replies to a conversation: the messages go through the model's chat
   * template (applyChatTemplate), and the reply is generated as by
   * {@link generate} (same options); generation ends at any of the model's
   * EOS ids (e.g. `<|eot_id|>`, `<|im_end|>`).
   *
   * @example
   * const r = await dec.chat([{ role: "user", content: "Name three colours." }], { maxNewTokens: 32 });
   * console.log(r.text);
   */
  async chat(messages: ChatMessage[], opts?: GenerateOptions): Promise<GenerateResult> {
    return this.generate(this.#chatPrompt("chat", messages, {}).ids, opts);
  }

  /**
   * {@link chat}, streamed as {@link stream} streams.
   *
   * @example
   * for await (const ev of dec.chatStream([{ role: "user", content: "Hi" }])) process.stdout.write(ev.text);
   */
  chatStream(messages: ChatMessage[], opts?: GenerateOptions): AsyncGenerator<StreamEvent, GenerateResult, undefined> {
    return this.stream(this.#chatPrompt("chatStream", messages, {}).ids, opts);
  }

  /** Sequences generating and queued. */
  get load(): { running: number; waiting: number } {
    return this.#scheduler.counts;
  }

  /** Ends all generations ("abort") and frees the native engine. Safe to call twice; any later use throws. */
  close(): void {
    if (this.#engine.freed) return;
    this.#scheduler.abortAll();
    this.#engine.free();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
