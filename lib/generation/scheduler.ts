/**
 * The generation loop: a scheduler that turns active sequences into native
 * batch steps. Every sequence keeps its own step index and budget, so requests
 * can join and leave between steps (continuous batching, docs/DESIGN.md's
 * generalisation); a group of sequences submitted together waits until all of
 * its members are prefilled before any decodes, so they share the step index
 * (the paper's batched mode).
 *
 * One step carries, in order: one decode row per running sequence, then as
 * many prompt rows of waiting sequences as fit in `maxBatchTokens` (chunked
 * prefill) — while sequences decode, only as many as keep the step within
 * `decodeSlowdown` × a decode-only step (#prefillBudget). Sampling happens in the native step; only token ids come back.
 * A step runs on the engine thread (lib/engine/client.ts) while this thread
 * keeps serving; a sequence cancelled meanwhile (abort, a stream closed early)
 * gives its KV slot back at once (the reset is queued behind the running step)
 * and the token the step sampled for it is dropped.
 *
 * One sequence never fails another. Its options are checked before it is
 * queued with the native step's own rules (lib/generation/generate.ts), and should a
 * step still be refused, the refusal names the row (cuda/common/plan.h checks
 * every row before anything changes, so the engine is as it was): that row's
 * sequence fails alone, the others' prompt progress is put back, and the step
 * is built again without it. Only an error that names no row, or one from
 * after the checks (out of memory, a device fault, a dead engine thread),
 * fails every sequence of the step.
 */
import type { SkipTokenizer } from "../checkpoint/tokenizer.ts";
import { StreamDecoder } from "../checkpoint/tokenizer.ts";
import { NativeError } from "../engine/native.ts";
import { MAX_TOP_LOGPROBS, Param, Row, ROW_LOGPROBS, ROW_SAMPLE } from "../engine/abi.ts";
import type { SkipPolicy } from "./policy.ts";
import type { FinishReason, GenerateResult, StreamEvent, TokenLogprob } from "./results.ts";
import type { SlotPool } from "./slots.ts";

/** Everything the scheduler needs to run one sequence. */
export interface SequenceSpec {
  prompt: number[];
  maxNewTokens: number;
  policy: SkipPolicy;
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
  /** RNG sequence index (position within its request). */
  seq: number;
  stop: string[];
  /** Ids that end the generation (the model's EOS ids; none with ignoreEos). */
  eosIds: readonly number[];
  /** Alternatives to report with each token's logprob (0..MAX_TOP_LOGPROBS); null: no logprobs. */
  logprobs: number | null;
  signal?: AbortSignal;
  onEvent?: (ev: StreamEvent) => void;
}

/** The slice of SkipDecoder the scheduler drives. */
export interface StepTarget {
  readonly numLayers: number;
  readonly maxSeqLen: number;
  readonly tokenizer: SkipTokenizer | null;
  /** The engine's KV slots (slots.ts), shared with the decoder's other users. */
  readonly slots: Pick<SlotPool, "acquire" | "release" | "free">;
  /** One native step on the engine thread; the buffers are SharedArrayBuffer views, untouched until it settles. */
  step(
    rows: Int32Array,
    n: number,
    params: Float32Array,
    tokens: Int32Array,
    lp?: { nTop: number; values: Float32Array; ids: Int32Array },
  ): Promise<void>;
}

/** Members of one generateBatch call: none decodes until all are prefilled. */
export class Group {
  prefilling: number;
  constructor(size: number) {
    this.prefilling = size;
  }
}

class Sequence {
  readonly spec: SequenceSpec;
  readonly group: Group | null;
  slot = -1;
  /** Prompt tokens already fed. */
  fed = 0;
  tokens: number[] = [];
  /** Budgets by the schedule, one per generated token; the last may never run. */
  budgets: number[] = [];
  /** Decode passes that ran (each returned the next token). */
  passes = 0;
  logprobs: TokenLogprob[] = [];
  finish: FinishReason | null = null;
  /** Full decoded text so far, and how much of it has been emitted. */
  text = "";
  emitted = 0;
  readonly stream: StreamDecoder | null;
  readonly t0 = performance.now();
  tFirst = 0;
  tEnd = 0;
  resolve!: (r: GenerateResult) => void;
  reject!: (e: Error) => void;
  readonly promise: Promise<GenerateResult>;
  onAbort: (() => void) | null = null;
  /** A stop string completed: the text ends before it. */
  hitStop = false;
  /** Counted out of its group's prefilling members. */
  leftPrefill = false;

  constructor(spec: SequenceSpec, group: Group | null, tokenizer: SkipTokenizer | null) {
    this.spec = spec;
    this.group = group;
    this.stream = tokenizer ? new StreamDecoder(tokenizer) : null;
    this.promise = new Promise((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
  }

  get prefilled(): boolean {
    return this.fed === this.spec.prompt.length;
  }
}

/** Longest suffix of `text` that is a proper prefix of some stop string. */
function heldBack(text: string, stops: string[]): number {
  let hold = 0;
  for (const s of stops) {
    for (let k = Math.min(s.length - 1, text.length); k > hold; k--) {
      if (text.endsWith(s.slice(0, k))) {
        hold = k;
        break;
      }
    }
  }
  return hold;
}

/** Statuses of a step refused by its checks, before anything changed (skipdecode.h). */
const REFUSED = new Set(["SKD_ERR_INVALID_ARG", "SKD_ERR_KV_MISSING", "SKD_ERR_UNSUPPORTED"]);

/** The row a refused step names ("step: row 3: top_p 0 must be in (0, 1]"), or null when it names none. */
function refusedRow(e: unknown, rows: number): number | null {
  if (!(e instanceof NativeError) || !REFUSED.has(e.status)) return null;
  const m = /^step: row (\d+)\b/.exec(e.message);
  const row = m ? Number(m[1]) : -1;
  return row >= 0 && row < rows ? row : null;
}

/** Runs sequences through a decoder's engine, a step at a time. */
export class Scheduler {
  readonly #t: StepTarget;
  #waiting: Sequence[] = [];
  #running: Sequence[] = [];
  #looping = false;
  #rows: Int32Array;
  #params: Float32Array;
  #tokens: Int32Array;
  #lpValues: Float32Array;
  #lpIds: Int32Array;
  #maxRows: number;
  readonly #slowdown: number;
  /** Exponential averages: ms of a step with decode rows only, and ms each prefill row adds to one. */
  #decodeMs = NaN;
  #prefillRowMs = NaN;
  /** Steps that mixed decode and prefill rows since the last decode-only one. */
  #mixed = 0;

  /**
   * `maxRows`: most rows a step carries. `slowdown`: while sequences decode,
   * a step with prefill rows should take at most this multiple of a
   * decode-only step, so a long prompt cannot stall running streams.
   */
  constructor(target: StepTarget, maxRows: number, slowdown = Infinity) {
    this.#t = target;
    this.#maxRows = maxRows;
    this.#slowdown = slowdown;
    // shared with the engine thread: a step copies nothing
    this.#rows = new Int32Array(new SharedArrayBuffer(maxRows * Row.FIELDS * 4));
    this.#params = new Float32Array(new SharedArrayBuffer(maxRows * Param.FIELDS * 4));
    this.#tokens = new Int32Array(new SharedArrayBuffer(maxRows * 4));
    this.#lpValues = new Float32Array(new SharedArrayBuffer(maxRows * (1 + MAX_TOP_LOGPROBS) * 4));
    this.#lpIds = new Int32Array(new SharedArrayBuffer(maxRows * MAX_TOP_LOGPROBS * 4));
  }

  /** Sequences admitted (running) and queued (waiting). */
  get counts(): { running: number; waiting: number } {
    return { running: this.#running.length, waiting: this.#waiting.length };
  }

  /** Queues a sequence; the promise settles when it finishes. `cancel` ends it early ("abort"). */
  submit(spec: SequenceSpec, group: Group | null = null): { promise: Promise<GenerateResult>; cancel: () => void } {
    const s = new Sequence(spec, group, this.#t.tokenizer);
    const cancel = () => this.#finish(s, "abort");
    if (spec.signal) {
      if (spec.signal.aborted) {
        queueMicrotask(cancel);
      } else {
        s.onAbort = cancel;
        spec.signal.addEventListener("abort", cancel, { once: true });
      }
    }
    this.#waiting.push(s);
    this.#kick();
    return { promise: s.promise, cancel };
  }

  /** Ends every sequence with "abort" (used by close). */
  abortAll(): void {
    for (const s of [...this.#running, ...this.#waiting]) this.#finish(s, "abort");
  }

  /** Fails every sequence with `e` (the engine thread died: nothing can run). */
  failAll(e: Error): void {
    for (const s of [...this.#running, ...this.#waiting]) this.#fail(s, e);
  }

  #kick(): void {
    if (this.#looping) return;
    this.#looping = true;
    setImmediate(() => void this.#loop());
  }

  async #loop(): Promise<void> {
    try {
      while (this.#running.length || this.#waiting.length) {
        const n = this.#build();
        if (n.rows === 0) {
          // Nothing can move: every waiting sequence needs a slot and none is free,
          // and nothing runs that would free one. Cannot happen with sane sizes.
          const err = new Error(`scheduler: no progress possible (${this.#waiting.length} waiting, no free KV slot)`);
          for (const s of [...this.#waiting, ...this.#running]) this.#fail(s, err);
          break;
        }
        const t0 = performance.now();
        try {
          const lp = n.nTop >= 0 ? { nTop: n.nTop, values: this.#lpValues, ids: this.#lpIds } : undefined;
          await this.#t.step(this.#rows, n.rows, this.#params, this.#tokens, lp);
          this.#timed(n.decodeRows, n.rows - n.decodeRows, performance.now() - t0);
        } catch (e) {
          const row = refusedRow(e, n.rows);
          if (row === null) {
            for (const s of n.seqs) this.#fail(s, e as Error);
          } else {
            // nothing changed in the engine: the named row's sequence fails alone, the rest goes again
            for (const [s, fed] of n.fedBefore) s.fed = fed;
            this.#fail(n.owners[row]!, e as Error);
          }
          continue;
        }
        this.#dispatch(n.sampled, n.nTop);
        // Let stream consumers and abort signals see this step's tokens before the next is built
        // (a step's reply can arrive without a trip through the event loop).
        await new Promise<void>((r) => setImmediate(r));
      }
    } finally {
      this.#looping = false;
    }
  }

  /** Updates the step-time averages that size prefill chunks while sequences decode. */
  #timed(decodeRows: number, prefillRows: number, ms: number): void {
    const avg = (old: number, x: number) => (Number.isNaN(old) ? x : 0.7 * old + 0.3 * x);
    if (decodeRows === 0) return;
    if (prefillRows === 0) {
      this.#decodeMs = avg(this.#decodeMs, ms);
      this.#mixed = 0;
    } else if (!Number.isNaN(this.#decodeMs)) {
      this.#prefillRowMs = avg(this.#prefillRowMs, Math.max(0, ms - this.#decodeMs) / prefillRows);
      this.#mixed++;
    }
  }

  /**
   * Prefill rows the next step may carry besides `decodeRows` decode rows.
   * None decode: a whole chunk (fastest first token). Otherwise as many as
   * keep the step within `slowdown` × a decode-only step, by the measured
   * averages, and at least one so prefill always moves; until a decode-only
   * step has been timed (and every 64 mixed steps, to follow the load) the
   * step carries decode rows only.
   */
  #prefillBudget(decodeRows: number): number {
    const room = this.#maxRows - decodeRows;
    if (decodeRows === 0 || this.#slowdown === Infinity) return room;
    if (Number.isNaN(this.#decodeMs) || this.#mixed >= 64) return 0;
    if (Number.isNaN(this.#prefillRowMs) || this.#prefillRowMs <= 0) return Math.min(room, 8);
    const fit = Math.floor(((this.#slowdown - 1) * this.#decodeMs) / this.#prefillRowMs);
    return Math.max(1, Math.min(room, fit));
  }

  /** Fills the row buffers for the next step. */
  #build(): {
    rows: number;
    decodeRows: number;
    seqs: Set<Sequence>;
    sampled: Sequence[];
    nTop: number;
    /** owners[i]: the sequence of row i. */
    owners: Sequence[];
    /** Prompt tokens fed before this step, of the sequences it feeds prompt rows. */
    fedBefore: Map<Sequence, number>;
  } {
    const L = this.#t.numLayers;
    let n = 0;
    let nTop = -1; // alternatives per logprobs row this step; -1: no row wants logprobs
    const seqs = new Set<Sequence>();
    const sampled: Sequence[] = [];
    const owners: Sequence[] = [];
    const fedBefore = new Map<Sequence, number>();
    const row = (s: Sequence, token: number, pos: number, budget: number, sample: boolean, step: number) => {
      const r = n * Row.FIELDS;
      const rows = this.#rows;
      rows[r + Row.TOKEN] = token;
      rows[r + Row.POS] = pos;
      rows[r + Row.SLOT] = s.slot;
      rows[r + Row.BUDGET] = budget;
      rows[r + Row.WARMUP] = s.spec.policy.warmupLayers;
      const lp = sample && s.spec.logprobs !== null;
      if (lp) nTop = Math.max(nTop, s.spec.logprobs!);
      rows[r + Row.FLAGS] = sample ? ROW_SAMPLE | (lp ? ROW_LOGPROBS : 0) : 0;
      rows[r + Row.TOP_K] = s.spec.topK;
      rows[r + Row.SEQ] = s.spec.seq;
      rows[r + Row.STEP] = step;
      rows[r + Row.SEED_LO] = s.spec.seed % 2 ** 32 | 0;
      rows[r + Row.SEED_HI] = Math.floor(s.spec.seed / 2 ** 32) | 0;
      this.#params[n * Param.FIELDS + Param.TEMPERATURE] = s.spec.temperature;
      this.#params[n * Param.FIELDS + Param.TOP_P] = s.spec.topP;
      owners[n] = s;
      n++;
      seqs.add(s);
      if (sample) sampled.push(s);
    };
    // decode rows: process the last generated token with its budget
    for (const s of this.#running) {
      if (!s.prefilled || (s.group && s.group.prefilling > 0) || n >= this.#maxRows) continue;
      const t = s.tokens.length - 1;
      row(s, s.tokens[t]!, s.spec.prompt.length + t, s.budgets[t]!, true, t + 1);
    }
    // prefill rows: continue partial prefills first, then admit waiting sequences
    const decodeRows = n;
    const limit = n + this.#prefillBudget(decodeRows);
    const admit = (s: Sequence): boolean => {
      const left = s.spec.prompt.length - s.fed;
      const take = Math.min(left, limit - n);
      if (take <= 0) return false;
      fedBefore.set(s, s.fed);
      for (let i = 0; i < take; i++) {
        const pos = s.fed + i;
        const last = pos === s.spec.prompt.length - 1;
        row(s, s.spec.prompt[pos]!, pos, L, last, 0);
      }
      s.fed += take;
      return true;
    };
    for (const s of this.#running) if (!s.prefilled && !seqs.has(s)) admit(s);
    while (this.#waiting.length && n < limit && this.#t.slots.free > 0) {
      const s = this.#waiting.shift()!;
      s.slot = this.#t.slots.acquire();
      this.#running.push(s);
      admit(s);
    }
    return { rows: n, decodeRows, seqs, sampled, nTop, owners, fedBefore };
  }

  /** Applies the sampled tokens of the last step, in row order (and their logprobs: `nTop` alternatives per flagged row). */
  #dispatch(sampled: Sequence[], nTop: number): void {
    let k = 0; // index among the rows flagged for logprobs
    sampled.forEach((s, i) => {
      let lp: TokenLogprob | undefined;
      if (s.spec.logprobs !== null) {
        const v = k * (1 + nTop);
        const top = [];
        for (let j = 0; j < s.spec.logprobs; j++) top.push({ token: this.#lpIds[k * nTop + j]!, logprob: this.#lpValues[v + 1 + j]! });
        lp = { logprob: this.#lpValues[v]!, top };
        k++;
      }
      if (s.finish) return;
      const tok = this.#tokens[i]!;
      if (s.tokens.length > 0) s.passes++; // sampled by the decode pass of the last token
      if (s.tokens.length === 0) {
        s.tFirst = performance.now();
        this.#leavePrefill(s);
      }
      if (s.spec.eosIds.includes(tok)) {
        this.#finish(s, "stop");
        return;
      }
      const idx = s.tokens.length;
      let layers: number;
      try {
        layers = s.spec.policy.layersAt(idx);
        const prev = idx > 0 ? s.budgets[idx - 1]! : this.#t.numLayers;
        if (!Number.isInteger(layers) || layers < Math.max(1, s.spec.policy.warmupLayers) || layers > prev) {
          throw new Error(`policy gave ${layers} layers at step ${idx} after ${prev}: budgets must be integers, non-increasing, >= max(1, warm-up)`);
        }
      } catch (e) {
        this.#fail(s, e as Error);
        return;
      }
      s.tokens.push(tok);
      s.budgets.push(layers);
      if (lp) s.logprobs.push(lp);
      const stopped = this.#appendText(s, tok, layers, idx, lp);
      if (stopped) return this.#finish(s, "stop");
      // the context is full only with stopAtContext: otherwise prompt + maxNewTokens fit (context.ts)
      if (s.tokens.length >= s.spec.maxNewTokens || s.spec.prompt.length + s.tokens.length >= this.#t.maxSeqLen) {
        this.#finish(s, "length");
      }
    });
  }

  /** Decodes a token's text, holds back a possible stop-string prefix, emits the event. True when a stop string completed. */
  #appendText(s: Sequence, tok: number, layers: number, index: number, lp: TokenLogprob | undefined): boolean {
    if (s.stream) s.text += s.stream.push(tok);
    const stops = s.spec.stop;
    if (stops.length) {
      let cut = -1;
      const from = Math.max(0, s.emitted - Math.max(...stops.map((x) => x.length)));
      for (const x of stops) {
        const at = s.text.indexOf(x, from);
        if (at >= 0 && (cut < 0 || at < cut)) cut = at;
      }
      if (cut >= 0) {
        s.text = s.text.slice(0, cut);
        s.hitStop = true;
        this.#emit(s, tok, layers, index, s.text.length, lp);
        return true;
      }
    }
    this.#emit(s, tok, layers, index, s.text.length - heldBack(s.text, stops), lp);
    return false;
  }

  #emit(s: Sequence, token: number, layers: number, index: number, upTo: number, logprob: TokenLogprob | undefined): void {
    const text = s.text.slice(s.emitted, Math.max(s.emitted, upTo));
    s.emitted = Math.max(s.emitted, upTo);
    s.spec.onEvent?.({ type: "token", token, text, layers, index, ...(logprob && { logprob }) });
  }

  #release(s: Sequence): void {
    if (s.onAbort) s.spec.signal?.removeEventListener("abort", s.onAbort);
    s.onAbort = null;
    const w = this.#waiting.indexOf(s);
    if (w >= 0) this.#waiting.splice(w, 1);
    const r = this.#running.indexOf(s);
    if (r >= 0) this.#running.splice(r, 1);
    if (s.slot >= 0) this.#t.slots.release(s.slot);
    s.slot = -1;
    this.#leavePrefill(s);
  }

  #leavePrefill(s: Sequence): void {
    if (s.group && !s.leftPrefill) s.group.prefilling--;
    s.leftPrefill = true;
  }

  #finish(s: Sequence, reason: FinishReason): void {
    if (s.finish) return;
    s.finish = reason;
    this.#release(s);
    s.tEnd = performance.now();
    if (!s.tFirst) s.tFirst = s.tEnd;
    // flush text held back for a stop string that never completed, or by the UTF-8 decoder
    if (s.stream && !s.hitStop) s.text += s.stream.flush();
    s.spec.onEvent?.({ type: "final", text: s.text.slice(s.emitted), finishReason: reason, index: s.tokens.length });
    s.emitted = s.text.length;
    const L = this.#t.numLayers;
    const budgets = s.budgets.slice(0, s.passes); // the passes that ran
    const n = budgets.length;
    const avg = n ? budgets.reduce((a, b) => a + b, 0) / n : L;
    const decodeMs = s.tEnd - s.tFirst;
    s.resolve({
      text: s.text,
      tokens: s.tokens,
      promptTokens: s.spec.prompt,
      finishReason: reason,
      ...(s.spec.logprobs !== null && { logprobs: s.logprobs }),
      budgets,
      stats: {
        idealSpeedup: L / avg,
        avgLayers: avg,
        prefillMs: s.tFirst - s.t0,
        decodeMs,
        tokensPerSecond: s.tokens.length > 1 && decodeMs > 0 ? ((s.tokens.length - 1) * 1000) / decodeMs : 0,
        promptTokens: s.spec.prompt.length,
        generatedTokens: s.tokens.length,
        seed: s.spec.seed,
        policy: String(s.spec.policy),
      },
    });
  }

  #fail(s: Sequence, e: Error): void {
    if (s.finish) return;
    s.finish = "abort";
    this.#release(s);
    s.reject(e);
  }
}
