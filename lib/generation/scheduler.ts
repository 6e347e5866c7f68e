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
 * gives its KV slot back at once (the reset is queued behind the steps already
 * posted) and the tokens they sample for it are dropped. With a target that
 * pipelines, the next steps are posted before those in flight are back (up
 * to MAX_AHEAD), each one's decode rows feeding the tokens of the step before
 * by reference (#loop; docs/DESIGN.md, "Threads").
 *
 * One sequence never fails another. Its options are checked before it is
 * queued with the native step's own rules (lib/generation/generate.ts), and should a
 * step still be refused, the refusal names the row (cuda/common/plan.h checks
 * every row before anything changes, so the engine is as it was): that row's
 * sequence fails alone, the others' prompt progress is put back, and the step
 * is built again without it. Only an error that names no row, or one from
 * after the checks (out of memory, a device fault, a dead engine thread),
 * fails every sequence of the step.
 *
 * KV admission (docs/kv-cache.md, "Reservation"): a policy fixes every
 * budget before a sequence starts, so its KV need — the blocks it owns at its
 * peak — is exact in advance (lib/engine/kv.ts sequenceKvBlocks). A waiting
 * sequence is admitted only when the decoder's ledger (KvBudget) can promise
 * that need; it is then promised to the engine too (skd_engine_kv_reserve,
 * queued before the sequence's first step), so no step of a running sequence
 * is ever refused for lack of KV, whatever else runs. Otherwise it waits,
 * in order: nothing behind it overtakes it (a large request is never
 * starved by small ones), and the queue moves again when blocks come back.
 * The whole promise comes back when the sequence ends — finished, stopped
 * early by EOS or a stop string, aborted or failed — because its slot is
 * reset; the engine queues that reset behind a step in flight. A sequence
 * whose need exceeds the whole pool is refused when it is submitted.
 */
import type { SkipTokenizer } from "../checkpoint/tokenizer.ts";
import { StreamDecoder } from "../checkpoint/tokenizer.ts";
import { type KvBudget, kvBlocksNeeded, sequenceKvBlocks } from "../engine/kv.ts";
import { NativeError } from "../engine/native.ts";
import { BOUND_SETS, STEP_SKIPPED } from "../engine/protocol.ts";
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
  /** The KV pool: the decoder's ledger, and the engine's reservation call (queued behind earlier requests). Absent: no KV admission. */
  readonly kv?: { budget: KvBudget; reserve(slot: number, blocks: number): Promise<void> };
  /** One native step on the engine thread; the buffers are SharedArrayBuffer views, untouched until it settles. */
  step(
    rows: Int32Array,
    n: number,
    params: Float32Array,
    tokens: Int32Array,
    lp?: { nTop: number; values: Float32Array; ids: Int32Array },
  ): Promise<void>;
  /**
   * Pipelining (EngineClient.postStep), optional: posts a step and returns its
   * id; with `follows` (the id of a step posted before and not yet settled), a
   * row whose token is -(k + 1) feeds the k-th token that step samples, and
   * the step rejects with an Error named STEP_SKIPPED, the engine untouched,
   * if that step fails or another runs between them; `done` resolves to the
   * milliseconds the engine spent on the step. `endIds`: skip it the same way
   * when every row feeds one of these ids (the rows' sequences all ended).
   * Absent: one step at a time.
   */
  post?(
    rows: Int32Array,
    n: number,
    params: Float32Array,
    tokens: Int32Array,
    lp: { nTop: number; values: Float32Array; ids: Int32Array } | null,
    follows: number | null,
    endIds?: readonly number[] | null,
  ): { id: number; done: Promise<number> };
}

/** The shared-memory views one step reads and writes; one set per step in flight (MAX_AHEAD), so steps can be built while others run. */
class StepBuffers {
  readonly rows: Int32Array;
  readonly params: Float32Array;
  readonly tokens: Int32Array;
  readonly lpValues: Float32Array;
  readonly lpIds: Int32Array;
  constructor(maxRows: number) {
    this.rows = new Int32Array(new SharedArrayBuffer(maxRows * Row.FIELDS * 4));
    this.params = new Float32Array(new SharedArrayBuffer(maxRows * Param.FIELDS * 4));
    this.tokens = new Int32Array(new SharedArrayBuffer(maxRows * 4));
    this.lpValues = new Float32Array(new SharedArrayBuffer(maxRows * (1 + MAX_TOP_LOGPROBS) * 4));
    this.lpIds = new Int32Array(new SharedArrayBuffer(maxRows * MAX_TOP_LOGPROBS * 4));
  }
}

/** What #build put in a step. */
interface Built {
  rows: number;
  decodeRows: number;
  seqs: Set<Sequence>;
  /** The sampling rows' sequences, in row order: the k-th gets the step's k-th token. */
  sampled: Sequence[];
  nTop: number;
  /** owners[i]: the sequence of row i. */
  owners: Sequence[];
  /** Prompt tokens fed before this step, of the sequences it feeds prompt rows. */
  fedBefore: Map<Sequence, number>;
  /** Its decode rows' sequences, with the index of the token each feeds: their Sequence.planned entries. */
  planned: [Sequence, number][];
  /** For each row feeding a token of the step before by reference, that token's index among its sampled ones. */
  refs: number[];
  /**
   * Every row feeds a token not yet back, of sequences with these EOS ids: if
   * each of those tokens is one, every sequence ended and the engine skips the
   * step (StepTarget.post `endIds`). Null otherwise.
   */
  endIds: readonly number[] | null;
  /** The next waiting sequence had a slot but not its KV blocks. */
  kvBlocked: boolean;
}

/** A step sent to the engine and not yet dispatched. */
interface Posted {
  built: Built;
  buf: StepBuffers;
  /** The target's id for it (-1 without pipelining). */
  id: number;
  /** Its error, or null once it succeeded, with the engine's own time for it when the target reports one. */
  settled: Promise<{ error: Error | null; engineMs: number | null }>;
  t0: number;
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
  /** Posted steps, not yet dispatched, in which it samples a token. */
  inFlight = 0;
  /** The budgets of the tokens that steps in flight feed, by token index (#build), until the token after each is back. */
  planned = new Map<number, number>();
  /** KV blocks it needs at its peak (the exact need), and whether they are promised now. */
  kvNeed = 0;
  kvPromised = false;

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

/**
 * Most steps in flight at once with a pipelining target (the buffer sets,
 * one each). How many the loop keeps in flight follows the step time
 * (#depth): enough for about AHEAD_MS of work, at least 2.
 */
const MAX_AHEAD = 4;
const AHEAD_MS = 12;
if (MAX_AHEAD > BOUND_SETS - 2) throw new Error("scheduler: MAX_AHEAD needs MAX_AHEAD + 2 bound sets (protocol.ts BOUND_SETS)");

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
  readonly #bufs: StepBuffers[];
  #maxRows: number;
  readonly #slowdown: number;
  /** Exponential averages: ms of a step with decode rows only, and ms each prefill row adds to one. */
  #decodeMs = NaN;
  #prefillRowMs = NaN;
  /** Steps that mixed decode and prefill rows since the last decode-only one. */
  #mixed = 0;
  /** While a step's tokens are handed out: the engine will skip the steps in flight after it (#dispatch). */
  #skipsNext = false;

  /**
   * `maxRows`: most rows a step carries. `slowdown`: while sequences decode,
   * a step with prefill rows should take at most this multiple of a
   * decode-only step, so a long prompt cannot stall running streams.
   */
  constructor(target: StepTarget, maxRows: number, slowdown = Infinity) {
    this.#t = target;
    target.kv?.budget.onRelease(() => {
      if (this.#waiting.length) this.#kick();
    });
    this.#maxRows = maxRows;
    this.#slowdown = slowdown;
    // shared with the engine thread: a step copies nothing; one set per step in flight
    this.#bufs = Array.from({ length: MAX_AHEAD }, () => new StepBuffers(maxRows));
  }

  /** Sequences admitted (running) and queued (waiting). */
  get counts(): { running: number; waiting: number } {
    return { running: this.#running.length, waiting: this.#waiting.length };
  }

  /**
   * KV blocks a sequence needs at its peak (0 without KV admission): its
   * prompt at full depth, then every generated token fed back with its budget.
   */
  kvNeed(spec: Pick<SequenceSpec, "prompt" | "maxNewTokens" | "policy">): number {
    const kv = this.#t.kv;
    if (!kv) return 0;
    return sequenceKvBlocks({
      numLayers: this.#t.numLayers,
      blockSize: kv.budget.blockSize,
      promptLen: spec.prompt.length,
      maxNewTokens: spec.maxNewTokens,
      maxSeqLen: this.#t.maxSeqLen,
      layersAt: (i) => spec.policy.layersAt(i),
      warmupLayers: spec.policy.warmupLayers,
    });
  }

  /** Throws when `blocks` could never be promised: more than the whole pool. */
  checkKvNeed(where: string, blocks: number, what: string): void {
    const budget = this.#t.kv?.budget;
    if (!budget || blocks <= budget.blocks) return;
    throw new Error(
      `${where}: ${what} needs ${blocks} KV blocks (${budget.mib(blocks)} MiB), more than the whole pool of ${budget.blocks} ` +
        `(${budget.mib(budget.blocks)} MiB; kvCacheBytes): shorten the prompt or maxNewTokens, or load with a larger kvCacheBytes`,
    );
  }

  /** Queues a sequence; the promise settles when it finishes. `cancel` ends it early ("abort"). */
  submit(spec: SequenceSpec, group: Group | null = null): { promise: Promise<GenerateResult>; cancel: () => void } {
    const s = new Sequence(spec, group, this.#t.tokenizer);
    try {
      s.kvNeed = this.kvNeed(spec);
      this.checkKvNeed("SkipDecoder.generate", s.kvNeed, `a prompt of ${spec.prompt.length} tokens with maxNewTokens ${spec.maxNewTokens}`);
    } catch (e) {
      this.#leavePrefill(s);
      s.reject(e as Error);
      return { promise: s.promise, cancel: () => {} };
    }
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

  /**
   * Builds and posts steps until nothing is left. With a target that can
   * pipeline, steps are posted while those before them still run (up to
   * #depth in flight): each one's decode rows feed the tokens the step
   * before it samples, by reference, so the engine thread goes from one step
   * to the next without waiting for this thread, which meanwhile hands out
   * the tokens of the steps that are back (the engine thread wakes it once
   * for a few of them, lib/engine/worker.ts). A sequence that stops by EOS, a
   * stop string or an abort still has rows in the steps posted after the
   * one that stopped it; their tokens are dropped (and their KV positions
   * freed with the slot, whose reset is queued behind them). A row is never
   * sent past maxNewTokens or maxSeqLen, so no step needs KV beyond the
   * sequence's reservation.
   */
  async #loop(): Promise<void> {
    const inFlight: Posted[] = [];
    try {
      while (this.#running.length || this.#waiting.length || inFlight.length) {
        const depth = this.#depth();
        while ((this.#running.length || this.#waiting.length) && inFlight.length < depth) {
          const last = inFlight.at(-1) ?? null;
          const buf = this.#bufs.find((b) => !inFlight.some((p) => p.buf === b))!;
          const built = this.#build(last, buf);
          if (built.rows > 0) {
            inFlight.push(this.#post(built, buf, last));
            continue;
          }
          if (!last && built.kvBlocked) break; // the queue waits for KV blocks: a release kicks the loop again
          if (!last) {
            // Nothing can move: every waiting sequence needs a slot and none is free,
            // and nothing runs that would free one. Cannot happen with sane sizes.
            const err = new Error(`scheduler: no progress possible (${this.#waiting.length} waiting, no free KV slot)`);
            for (const s of [...this.#waiting, ...this.#running]) this.#fail(s, err);
          }
          break;
        }
        const head = inFlight.shift();
        if (!head) break;
        const { error, engineMs } = await head.settled;
        if (error) {
          // every step after it follows it, so the engine thread skips them: their rows go again, then head's
          for (const p of inFlight.reverse()) this.#putBack(p.built);
          inFlight.length = 0;
          this.#failed(head.built, error);
        } else {
          // the engine's time for the step (a pipelined step waited for its turn; the wall time says little)
          this.#timed(head.built.decodeRows, head.built.rows - head.built.decodeRows, engineMs ?? performance.now() - head.t0);
          this.#dispatch(head.built, head.buf, inFlight[0]);
          // Let stream consumers and abort signals see this step's tokens before the next is built
          // (a step's reply can arrive without a trip through the event loop). With pipelining the
          // steps after it are already posted: a sequence aborted now still has rows there (their
          // tokens dropped), and its slot's reset follows them.
          await new Promise<void>((r) => setImmediate(r));
        }
      }
    } finally {
      this.#looping = false;
    }
  }

  /**
   * Steps to keep in flight: 1 without pipelining; else enough for about
   * AHEAD_MS of decode steps by the measured step time (2 until one is
   * timed), between 2 and MAX_AHEAD. More in flight means fewer wakes of
   * this thread per token but more steps still to run for a sequence that
   * stopped (a batch-1 decoder's next request starts after them).
   */
  #depth(): number {
    if (!this.#t.post) return 1;
    if (Number.isNaN(this.#decodeMs)) return 2;
    return Math.max(2, Math.min(MAX_AHEAD, 1 + Math.ceil(AHEAD_MS / Math.max(this.#decodeMs, 0.1))));
  }

  /** Sends a built step (following `ahead`, when given and the target pipelines). */
  #post(built: Built, buf: StepBuffers, ahead: Posted | null): Posted {
    // always a buffer set's own arrays (the engine client binds them once), nTop 0 when no row wants logprobs
    const lp = { nTop: Math.max(0, built.nTop), values: buf.lpValues, ids: buf.lpIds };
    let id = -1;
    let done: Promise<number | void>;
    const t0 = performance.now();
    try {
      if (this.#t.post) ({ id, done } = this.#t.post(buf.rows, built.rows, buf.params, buf.tokens, lp, ahead ? ahead.id : null, built.endIds));
      else done = this.#t.step(buf.rows, built.rows, buf.params, buf.tokens, lp);
    } catch (e) {
      done = Promise.reject(e); // a closed decoder throws at once
    }
    const settled = done.then(
      (ms) => ({ error: null, engineMs: typeof ms === "number" ? ms : null }),
      (e: unknown) => ({ error: e instanceof Error ? e : new Error(String(e)), engineMs: null }),
    );
    return { built, buf, id, settled, t0 };
  }

  /** A step that changed nothing: its sequences' prompt progress, and the tokens in flight, as before it was built. */
  #putBack(built: Built): void {
    for (const [s, fed] of built.fedBefore) s.fed = fed;
    for (const s of built.sampled) s.inFlight--;
    for (const [s, index] of built.planned) s.planned.delete(index);
  }

  /**
   * A step failed. Skipped (another step ran between it and the one it
   * follows): nothing failed, it goes again. Refused by the native checks
   * naming a row: that row's sequence fails alone, the others go again.
   * Anything else fails every sequence of the step.
   */
  #failed(built: Built, e: Error): void {
    this.#putBack(built); // none of its tokens comes back
    if (e.name === STEP_SKIPPED) return;
    const row = refusedRow(e, built.rows);
    if (row === null) for (const s of built.seqs) this.#fail(s, e);
    else this.#fail(built.owners[row]!, e); // nothing changed in the engine
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

  /**
   * Fills `buf` with the next step. With `ahead` (the last step posted, in
   * flight), a sequence that samples in it gets a row feeding that token by
   * reference (-(k + 1): ahead's k-th sampled token), with the budget the
   * policy gives it now, unless that token will be its last. A sequence with
   * tokens in flight but none in `ahead` waits for them.
   */
  #build(ahead: Posted | null, buf: StepBuffers): Built {
    const L = this.#t.numLayers;
    let n = 0;
    let nTop = -1; // alternatives per logprobs row this step; -1: no row wants logprobs
    const seqs = new Set<Sequence>();
    const sampled: Sequence[] = [];
    const owners: Sequence[] = [];
    const fedBefore = new Map<Sequence, number>();
    const planned: [Sequence, number][] = [];
    const refs: number[] = [];
    const row = (s: Sequence, token: number, pos: number, budget: number, sample: boolean, step: number) => {
      const r = n * Row.FIELDS;
      const rows = buf.rows;
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
      buf.params[n * Param.FIELDS + Param.TEMPERATURE] = s.spec.temperature;
      buf.params[n * Param.FIELDS + Param.TOP_P] = s.spec.topP;
      owners[n] = s;
      n++;
      seqs.add(s);
      if (sample) {
        sampled.push(s);
        s.inFlight++;
      }
    };
    // decode rows: process the last generated token with its budget
    const sampledAhead = new Map<Sequence, number>(ahead?.built.sampled.map((s, k) => [s, k]));
    for (const s of this.#running) {
      if (!s.prefilled || (s.group && s.group.prefilling > 0) || n >= this.#maxRows) continue;
      const k = sampledAhead.get(s);
      if (k === undefined) {
        if (s.inFlight > 0) continue; // its last token is in a step still in flight, and no row feeds it yet
        const t = s.tokens.length - 1;
        s.planned.set(t, s.budgets[t]!); // fed, not yet back (#kvBytes counts it should the sequence stop meanwhile)
        planned.push([s, t]);
        row(s, s.tokens[t]!, s.spec.prompt.length + t, s.budgets[t]!, true, t + 1);
        continue;
      }
      // the token `ahead` samples for it, the t-th: fed now, unless it ends the sequence by length
      const t = s.tokens.length + s.inFlight - 1;
      if (t + 1 >= s.spec.maxNewTokens || s.spec.prompt.length + t + 1 >= this.#t.maxSeqLen) continue;
      let layers: number;
      try {
        layers = this.#budgetAt(s, t);
      } catch {
        continue; // the policy's answer is refused: #dispatch fails the sequence when the token arrives
      }
      s.planned.set(t, layers);
      planned.push([s, t]);
      refs.push(k);
      row(s, -(k + 1), s.spec.prompt.length + t, layers, true, t + 1);
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
    let kvBlocked = false;
    while (this.#waiting.length && n < limit && this.#t.slots.free > 0) {
      const s = this.#waiting[0]!;
      if (!this.#promiseKv(s)) {
        kvBlocked = true; // in order: nothing behind it overtakes it
        break;
      }
      this.#waiting.shift();
      s.slot = this.#t.slots.acquire();
      this.#reserveInEngine(s);
      this.#running.push(s);
      admit(s);
    }
    // a step of references only, whose sequences share their EOS ids: after a step that ends them all
    // (batch 1: the EOS token), the engine skips it, and with it the steps posted after it
    const eos = owners[0]?.spec.eosIds ?? [];
    const sameEos = (s: Sequence) => s.spec.eosIds === eos || (s.spec.eosIds.length === eos.length && s.spec.eosIds.every((x, i) => x === eos[i]));
    const endIds = n > 0 && refs.length === n && eos.length > 0 && owners.every(sameEos) ? eos : null;
    return { rows: n, decodeRows, seqs, sampled, nTop, owners, fedBefore, planned, refs, endIds, kvBlocked };
  }

  /** Promises a waiting sequence its KV need in the decoder's ledger; false when the pool cannot yet. */
  #promiseKv(s: Sequence): boolean {
    const kv = this.#t.kv;
    if (!kv || s.kvPromised) return true;
    if (!kv.budget.tryReserve(s.kvNeed)) return false;
    s.kvPromised = true;
    return true;
  }

  /** Makes the same promise to the engine, queued before the sequence's first step. */
  #reserveInEngine(s: Sequence): void {
    const kv = this.#t.kv;
    if (!kv) return;
    const slot = s.slot;
    kv.reserve(slot, s.kvNeed).catch((e: Error) => {
      // the ledgers disagree (a raw step took blocks nobody promised): this sequence could be refused mid-run
      if (s.slot === slot) this.#fail(s, e);
    });
  }

  /**
   * The budget of a sequence's token `index` by its policy, checked: an
   * integer, at least max(1, warm-up), at most the one before (back, or
   * planned by a step in flight). Throws if not.
   */
  #budgetAt(s: Sequence, index: number): number {
    const layers = s.spec.policy.layersAt(index);
    const prev = index === 0 ? this.#t.numLayers : (s.budgets[index - 1] ?? s.planned.get(index - 1)!);
    if (!Number.isInteger(layers) || layers < Math.max(1, s.spec.policy.warmupLayers) || layers > prev) {
      throw new Error(`policy gave ${layers} layers at step ${index} after ${prev}: budgets must be integers, non-increasing, >= max(1, warm-up)`);
    }
    return layers;
  }

  /** Applies the sampled tokens of a step, in row order (and their logprobs: `nTop` alternatives per flagged row). */
  #dispatch(built: Built, buf: StepBuffers, next?: Posted): void {
    // the step after it feeds only tokens that end their sequences: the engine skips it and every step after
    // it, so the rows they gave a sequence ending now never hold KV (#kvBytes)
    const ends = next?.built.endIds;
    this.#skipsNext = !!ends && next!.built.refs.every((k) => ends.includes(buf.tokens[k]!));
    try {
      this.#hand(built, buf);
    } finally {
      this.#skipsNext = false;
    }
  }

  /** #dispatch's work: each sampling row's token to its sequence, in row order. */
  #hand(built: Built, buf: StepBuffers): void {
    const { sampled, nTop } = built;
    let k = 0; // index among the rows flagged for logprobs
    sampled.forEach((s, i) => {
      s.inFlight--;
      let lp: TokenLogprob | undefined;
      if (s.spec.logprobs !== null) {
        const v = k * (1 + nTop);
        const top = [];
        for (let j = 0; j < s.spec.logprobs; j++) top.push({ token: buf.lpIds[k * nTop + j]!, logprob: buf.lpValues[v + 1 + j]! });
        lp = { logprob: buf.lpValues[v]!, top };
        k++;
      }
      if (s.finish) return;
      const tok = buf.tokens[i]!;
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
        // a pipelined step may already have fed this token: with the budget it used
        layers = s.planned.get(idx) ?? this.#budgetAt(s, idx);
        s.planned.delete(idx - 1); // the row that fed the token before ran (it sampled this one): passes counts it now
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
    if (s.slot >= 0) this.#t.slots.release(s.slot); // the reset drops the engine's reservation and frees its blocks
    s.slot = -1;
    this.#leavePrefill(s);
    if (s.kvPromised) {
      s.kvPromised = false;
      this.#t.kv!.budget.release(s.kvNeed); // may kick the loop for a waiting sequence
    }
  }

  /** Bytes of KV the sequence held at its peak: its tables only grow while it runs, so the blocks of all it fed. */
  #kvBytes(s: Sequence): number {
    const kv = this.#t.kv;
    if (!kv) return 0;
    const fed = s.budgets.slice(0, s.passes);
    // stopped by EOS, a stop string or an abort while pipelined steps fed its next tokens: those rows' KV is held
    // too, unless the engine skips those steps (every row of the first of them feeds an EOS, #dispatch)
    if (!this.#skipsNext) for (let i = s.passes; s.planned.has(i); i++) fed.push(s.planned.get(i)!);
    return kvBlocksNeeded(this.#t.numLayers, kv.budget.blockSize, s.fed, fed, s.spec.policy.warmupLayers) * kv.budget.blockBytes;
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
        kvBytes: this.#kvBytes(s),
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
