/**
 * The caller's side of the engine thread (lib/engine/worker.ts): a
 * {@link EngineClient} starts the Worker that builds and owns the native
 * engine, and sends it steps. `step()` returns a promise and leaves the event
 * loop free while the engine computes; the `*Sync` calls block (they serve the
 * tests' raw access and `close()`). Requests run in the order they are sent,
 * one at a time; `postStep` can send a step that feeds the tokens of the one
 * before it, so the engine thread never waits for this one between steps.
 * docs/DESIGN.md, "Threads", says why a Worker.
 *
 * A thread that ends unasked (a bug, an out-of-memory error, Worker.terminate;
 * a native fault ends the whole process) is a visible failure, never a hang:
 * every call in flight and every later one rejects with
 * {@link EngineClient.failure}, and {@link EngineClient.onFailure} listeners
 * hear of it once. What to do then is the owner's choice (`skipdecode serve`
 * exits non-zero for its supervisor; server/main.ts). The blocking calls give
 * up too: they see an ended thread at once, presume an idle thread that has
 * not beaten its heart for {@link STALL_MS} dead, and `free()` waits at most
 * {@link FREE_WAIT_MS} for a call in flight.
 */
import { MessageChannel, type MessagePort, receiveMessageOnPort, Worker } from "node:worker_threads";
import type { ModelSpec } from "../checkpoint/config.ts";
import {
  BEAT,
  BUSY,
  CTRL_SLOTS,
  DONE,
  type EngineReply,
  type EngineRequest,
  type EngineWorkerData,
  ENDED,
  REQ,
  BOUND_SETS,
  type StepArrays,
  type WireError,
} from "./protocol.ts";
import { KvStat } from "./abi.ts";
import { type BackendName, type KvPoolStats, kvStatsOf, NativeError } from "./native.ts";
import type { EngineOptions, LoadSummary } from "./weights.ts";

type Body = EngineRequest extends infer R ? (R extends { id: number } ? Omit<R, "id"> : never) : never;

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

function revive(w: WireError): Error {
  if (w.name === "NativeError" && w.code !== undefined) return NativeError.revive(w.message, w.code);
  const e = new Error(w.message);
  if (w.name !== "Error") e.name = w.name;
  return e;
}

const sharedViews = new WeakSet<Int32Array | Float32Array>();
const NOTHING = () => {};

/**
 * `a` in shared memory the engine thread can read and write: `a` itself when
 * it already is, else a copy (`input`: filled from `a`; `back()` copies the
 * results out).
 */
function shared<T extends Int32Array | Float32Array>(a: T | null, input: boolean): { view: T | null; back: () => void } {
  if (a === null || sharedViews.has(a)) return { view: a, back: NOTHING };
  if (a.buffer instanceof SharedArrayBuffer) {
    sharedViews.add(a); // a view's buffer never changes: checked once (the scheduler passes the same few every step)
    return { view: a, back: NOTHING };
  }
  const Ctor = a.constructor as new (b: SharedArrayBuffer) => T;
  const view = new Ctor(new SharedArrayBuffer(a.byteLength));
  if (input) view.set(a);
  return { view, back: () => a.set(view) };
}

/** A blocking call presumes an idle engine thread dead after this long without a heartbeat. */
export const STALL_MS = 2000;
/** `free()` waits at most this long for the call in flight, then gives the thread up (its engine is not freed). */
export const FREE_WAIT_MS = 60_000;

// Backstop only: a decoder that was never closed asks its worker to free the engine.
const registry = new FinalizationRegistry<{ port: MessagePort; ctrl: Int32Array; worker: Worker }>((h) => {
  h.port.postMessage({ id: -1, op: "free" });
  Atomics.add(h.ctrl, REQ, 1);
  Atomics.notify(h.ctrl, REQ);
});

/** What the engine thread answers a load with. */
interface LoadInfo {
  backend: BackendName;
  weightBytes: number;
  deviceName: string;
  loadSummary: LoadSummary;
}

/** A native engine running on its own thread. */
export class EngineClient {
  /** The backend the worker picked. */
  readonly backend: BackendName;
  /** Bytes of weights one full step reads. */
  readonly weightBytes: number;
  /** Description of the device. */
  readonly deviceName: string;
  /** What the load stored (types, fallbacks, backend note). */
  readonly loadSummary: LoadSummary;
  readonly #worker: Worker;
  readonly #port: MessagePort;
  readonly #ctrl: Int32Array;
  /** The KV pool's stats, kept current by the engine thread (protocol.ts). */
  readonly #kv: BigInt64Array;
  readonly #pending = new Map<number, Pending>();
  /** The step arrays bound on the engine thread, by set number (protocol.ts "bind"), and the set to replace next. */
  readonly #sets: StepArrays[] = [];
  #nextSet = 0;
  #nextId = 1;
  #pumping = false;
  #freed = false;
  /** free() has begun: the thread ending from now on is no failure. */
  #freeing = false;
  #failure: Error | null = null;
  #listeners: ((e: Error) => void)[] = [];
  readonly #token = {};

  private constructor(
    worker: Worker,
    port: MessagePort,
    ctrl: Int32Array,
    kv: BigInt64Array,
    info: LoadInfo,
  ) {
    this.#worker = worker;
    this.#port = port;
    this.#ctrl = ctrl;
    this.#kv = kv;
    this.backend = info.backend;
    this.weightBytes = info.weightBytes;
    this.deviceName = info.deviceName;
    this.loadSummary = info.loadSummary;
    registry.register(this, { port, ctrl, worker }, this.#token);
    // weakly: a running worker must not keep an unreachable client (and the registry's backstop) from being collected
    const self = new WeakRef(this);
    const ended = (how: string) => {
      const client = self.deref();
      if (client) client.#ended(how);
    };
    worker.on("error", (e) => ended(`failed (${(e as Error)?.message ?? e})`));
    worker.on("exit", (code) => ended(`exited (code ${code})`));
  }

  /** The thread is gone: unless free() ended it, that is the engine's failure; every waiting call fails with it. */
  #ended(how: string): void {
    if (this.#freeing || this.#failure) return;
    this.#failure = new Error(`skipdecode: the engine thread ${how}; this decoder can run no more steps (load the model again)`);
    Atomics.store(this.#ctrl, ENDED, 1);
    Atomics.add(this.#ctrl, DONE, 1);
    Atomics.notify(this.#ctrl, DONE); // wakes #pump, whose #drain fails what is pending
    this.#drain();
    for (const f of this.#listeners.splice(0)) queueMicrotask(() => f(this.#failure!));
  }

  /** Why the engine thread ended unasked, or null while it runs (or after a clean free()). */
  get failure(): Error | null {
    return this.#failure;
  }

  /** Calls `listener` once if the engine thread ends unasked (at once, on the next tick, if it already has). */
  onFailure(listener: (e: Error) => void): void {
    if (this.#failure) {
      const e = this.#failure;
      queueMicrotask(() => listener(e));
    } else {
      this.#listeners.push(listener);
    }
  }

  /** @internal Test-only: ends the engine thread as a crash would (Worker.terminate), so a test can see what follows. */
  killForTest(): Promise<number> {
    return this.#worker.terminate();
  }

  /**
   * Starts the engine thread and builds the engine there; rejects with the
   * load error (the same message a synchronous load would give).
   *
   * @example
   * const engine = await EngineClient.start(dir, spec, options);
   */
  static async start(dir: string, spec: ModelSpec, options: EngineOptions): Promise<EngineClient> {
    const ctrl = new Int32Array(new SharedArrayBuffer(CTRL_SLOTS * 4));
    const kv = new BigInt64Array(new SharedArrayBuffer(KvStat.STATS_COUNT * 8));
    const { port1, port2 } = new MessageChannel();
    const data: EngineWorkerData = { dir, spec, options, ctrl: ctrl.buffer as SharedArrayBuffer, kv: kv.buffer as SharedArrayBuffer, port: port2 };
    const worker = new Worker(new URL("./worker.ts", import.meta.url), { workerData: data, transferList: [port2] });
    let exited: number | null = null;
    worker.once("exit", (code) => (exited = code));
    let reply: EngineReply | undefined;
    for (;;) {
      const seen = Atomics.load(ctrl, DONE);
      const m = receiveMessageOnPort(port1);
      if (m) {
        reply = m.message as EngineReply;
        break;
      }
      if (exited !== null) break;
      const w = Atomics.waitAsync(ctrl, DONE, seen, 200);
      if (w.async) await w.value;
    }
    if (!reply || !reply.ok) {
      await worker.terminate();
      port1.close();
      if (!reply) throw new Error(`skipdecode: the engine thread exited (code ${exited}) while loading ${dir}`);
      throw revive((reply as { error: WireError }).error);
    }
    worker.unref();
    return new EngineClient(worker, port1, ctrl, kv, reply.value as LoadInfo);
  }

  get freed(): boolean {
    return this.#freed;
  }

  #post(body: Body): number {
    if (this.#failure) throw this.#failure;
    if (this.#freed || Atomics.load(this.#ctrl, ENDED)) throw new Error("skipdecode: the engine is freed");
    const id = this.#nextId++;
    this.#port.postMessage({ ...body, id });
    Atomics.add(this.#ctrl, REQ, 1);
    Atomics.notify(this.#ctrl, REQ);
    return id;
  }

  /** Settles every reply that has arrived; if the thread has ended, fails what is left. */
  #drain(): void {
    for (let m = receiveMessageOnPort(this.#port); m; m = receiveMessageOnPort(this.#port)) {
      const r = m.message as EngineReply;
      const p = this.#pending.get(r.id);
      if (!p) continue;
      this.#pending.delete(r.id);
      if (this.#pending.size === 0) this.#worker.unref();
      if (r.ok) p.resolve(r.value);
      else p.reject(revive(r.error));
    }
    if (Atomics.load(this.#ctrl, ENDED) && this.#pending.size) {
      if (!this.#freeing && !this.#failure) this.#ended("ended"); // it ended by itself (its own last words set ENDED)
      const left = [...this.#pending.values()];
      this.#pending.clear();
      this.#worker.unref();
      const e = this.#failure ?? new Error("skipdecode: the engine thread has ended (the engine is freed)");
      for (const p of left) p.reject(e);
    }
  }

  #track(id: number): Pending & { promise: Promise<unknown> } {
    let p!: Pending;
    const promise = new Promise<unknown>((resolve, reject) => (p = { resolve, reject }));
    if (this.#pending.size === 0) this.#worker.ref(); // an engine call in flight keeps the process alive
    this.#pending.set(id, p);
    return { ...p, promise };
  }

  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (this.#pending.size) {
        const seen = Atomics.load(this.#ctrl, DONE);
        this.#drain();
        if (!this.#pending.size) break;
        const w = Atomics.waitAsync(this.#ctrl, DONE, seen);
        if (w.async) await w.value;
      }
    } finally {
      this.#pumping = false;
    }
  }

  #call(body: Body): Promise<unknown> {
    const id = this.#post(body);
    const t = this.#track(id);
    void this.#pump();
    return t.promise;
  }

  /**
   * Posts a request and blocks until its reply. Never forever: an ended
   * thread fails it at once, an idle thread silent for STALL_MS is presumed
   * dead, and after `limitMs` it throws.
   */
  #callSync(body: Body, limitMs = Infinity): unknown {
    const id = this.#post(body);
    let out: { ok: true; value: unknown } | { ok: false; error: Error } | undefined;
    this.#pending.set(id, { resolve: (value) => (out = { ok: true, value }), reject: (error) => (out = { ok: false, error }) });
    const t0 = performance.now();
    let beat = Atomics.load(this.#ctrl, BEAT);
    let beatAt = t0;
    while (!out) {
      const seen = Atomics.load(this.#ctrl, DONE);
      this.#drain();
      if (out) break;
      Atomics.wait(this.#ctrl, DONE, seen, 100);
      const now = performance.now();
      const b = Atomics.load(this.#ctrl, BEAT);
      if (b !== beat || Atomics.load(this.#ctrl, BUSY)) {
        beat = b;
        beatAt = now;
      } else if (now - beatAt > STALL_MS) {
        // gone without a word: a failure, or during free() simply the end (nothing is left to free)
        this.#ended(`stopped answering (no heartbeat for ${STALL_MS} ms while idle)`);
        Atomics.store(this.#ctrl, ENDED, 1);
        this.#drain();
      }
      if (!out && now - t0 > limitMs) {
        this.#pending.delete(id);
        throw new Error(`skipdecode: the engine thread did not answer "${body.op}" within ${limitMs} ms`);
      }
    }
    if (!out.ok) throw out.error;
    return out.value;
  }

  /**
   * One batch step (skd_engine_step) on the engine thread. The buffers must
   * not be touched until the promise settles; SharedArrayBuffer views are
   * written in place, other arrays are copied in and out.
   */
  async step(
    rows: Int32Array,
    n: number,
    params: Float32Array | null,
    logits: Float32Array | null,
    tokens: Int32Array | null,
    lp?: { nTop: number; values: Float32Array; ids: Int32Array | null },
  ): Promise<void> {
    await this.postStep(rows, n, params, logits, tokens, lp ?? null, null).done;
  }

  /**
   * {@link EngineClient.step}, with the request's id, and pipelining: with
   * `follows` the id of an earlier step (posted, its reply not yet needed),
   * a row whose token is -(k + 1) feeds the k-th token that step samples, so
   * this step can be sent before that one's tokens are back and the engine
   * thread starts it the moment that one ends. Should that step fail, or
   * another step run between the two, this one is skipped: it rejects with an
   * Error named STEP_SKIPPED (protocol.ts) and the engine is untouched;
   * likewise when `endIds` is given and every row feeds one of those ids
   * (its sequence ended with it, so nothing in this step would be kept).
   * `done` resolves to the milliseconds the native step itself took.
   */
  postStep(
    rows: Int32Array,
    n: number,
    params: Float32Array | null,
    logits: Float32Array | null,
    tokens: Int32Array | null,
    lp: { nTop: number; values: Float32Array; ids: Int32Array | null } | null,
    follows: number | null,
    endIds: readonly number[] | null = null,
  ): { id: number; done: Promise<number> } {
    const r = shared(rows, true);
    const p = shared(params, true);
    const l = shared(logits, false);
    const t = shared(tokens, false);
    const lv = shared(lp?.values ?? null, false);
    const li = shared(lp?.ids ?? null, false);
    const views = [r, p, l, t, lv, li];
    const arrays: StepArrays = { rows: r.view!, params: p.view, logits: l.view, tokens: t.view, lpValues: lv.view, lpIds: li.view };
    // the caller's own shared arrays (the scheduler's sets, every step): bound once, then named by number;
    // copies made for this step alone travel with it
    const copied = r.view !== rows || p.view !== params || l.view !== logits || t.view !== tokens || lv.view !== (lp?.values ?? null) || li.view !== (lp?.ids ?? null);
    const id = this.#post({ op: "step", n, arrays: copied ? arrays : this.#bound(arrays), nTop: lp?.nTop ?? 0, ...(follows !== null && { follows, ...(endIds && { endIds }) }) });
    const done = this.#track(id).promise.then((ms) => {
      for (const v of views) v.back();
      return ms as number;
    });
    void this.#pump();
    return { id, done };
  }

  /** The number of a bound set holding exactly these arrays, binding them (in place of the oldest) if none does. */
  #bound(a: StepArrays): number {
    const same = (b: StepArrays | undefined) =>
      !!b && b.rows === a.rows && b.params === a.params && b.logits === a.logits && b.tokens === a.tokens && b.lpValues === a.lpValues && b.lpIds === a.lpIds;
    const have = this.#sets.findIndex(same);
    if (have >= 0) return have;
    const set = this.#nextSet;
    this.#nextSet = (set + 1) % BOUND_SETS;
    this.#sets[set] = a;
    const id = this.#post({ op: "bind", set, arrays: a });
    this.#track(id).promise.catch(() => {}); // a failed bind fails the step that names it, which is reported
    return set;
  }

  /** {@link EngineClient.step}, blocking until it is done. */
  stepSync(rows: Int32Array, n: number, params: Float32Array | null, logits: Float32Array | null, tokens: Int32Array | null): void {
    const r = shared(rows, true);
    const p = shared(params, true);
    const l = shared(logits, false);
    const t = shared(tokens, false);
    this.#callSync({ op: "step", n, arrays: { rows: r.view!, params: p.view, logits: l.view, tokens: t.view, lpValues: null, lpIds: null }, nTop: 0 });
    l.back();
    t.back();
  }

  /** Forgets a slot's sequence. Queued: it happens before any later step; a failure is reported by the next call. */
  resetSlot(slot: number): void {
    if (this.#failure) return; // no engine left to forget anything
    const id = this.#post({ op: "reset", slot });
    const t = this.#track(id);
    t.promise.catch(() => {}); // slots are managed by the decoder: a reset cannot fail
    void this.#pump();
  }

  /**
   * Sets a slot's KV reservation to `blocks` (skd_engine_kv_reserve). Queued
   * like a reset: it takes effect before any later step; the promise rejects
   * with NativeError(KV_FULL) when the pool cannot promise them.
   */
  kvReserve(slot: number, blocks: number): Promise<void> {
    return this.#call({ op: "kvReserve", slot, blocks }) as Promise<void>;
  }

  /**
   * The KV pool's stats as of the last request the engine thread finished.
   * Never blocks: the thread keeps them in shared memory.
   */
  kvStats(): KvPoolStats {
    return kvStatsOf(this.#kv);
  }

  /** Length of a slot's sequence and its KV length at one layer (blocking). */
  slotInfo(slot: number, layer: number): { len: number; kvLen: number } {
    return this.#callSync({ op: "slotInfo", slot, layer }) as { len: number; kvLen: number };
  }

  /**
   * Waits for calls in flight (at most FREE_WAIT_MS), frees the engine and
   * ends the thread. Safe to call twice, and after the thread has failed.
   */
  free(): void {
    if (this.#freed) return;
    registry.unregister(this.#token);
    this.#freeing = true;
    try {
      if (!Atomics.load(this.#ctrl, ENDED) && !this.#failure) this.#callSync({ op: "free" }, FREE_WAIT_MS);
    } catch {
      // the thread died or hangs: there is nothing it can free now; ending it is all that is left
    } finally {
      this.#freed = true;
      this.#port.close();
      void this.#worker.terminate();
    }
  }
}
