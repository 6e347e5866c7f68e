/**
 * The engine thread: a Worker that owns one native engine. It builds the
 * engine from the model folder (so loading never blocks the caller), then
 * serves requests from lib/engine/client.ts until "free": a native step, a
 * slot reset, a KV reservation, a slot query. After each request that can
 * change the KV pool it rewrites the pool's stats in shared memory, before
 * it replies. Requests and replies travel over a MessagePort read with
 * receiveMessageOnPort, and two counters in a SharedArrayBuffer wake
 * each side (Atomics.wait here, Atomics.waitAsync or Atomics.wait there); two
 * more, a heartbeat while idle and a busy flag, let a caller blocked in
 * Atomics.wait tell a dead thread from a busy one.
 * Row, parameter and output buffers are SharedArrayBuffer views, bound once
 * ("bind") and then named by number, so a step copies nothing and its message
 * is a few numbers. Why a Worker and not a native thread: docs/DESIGN.md, "Threads".
 */
import { receiveMessageOnPort, workerData } from "node:worker_threads";
import {
  BEAT,
  BEAT_MS,
  BOUND_SETS,
  BUSY,
  DONE,
  type EngineReply,
  type EngineRequest,
  type EngineWorkerData,
  ENDED,
  REQ,
  type StepArrays,
  STEP_SKIPPED,
  WAKE_MS,
  type WireError,
} from "./protocol.ts";
import { Row } from "./abi.ts";
import { NativeError, type NativeEngine } from "./native.ts";
import { buildEngine, type LoadSummary } from "./weights.ts";

function wire(e: unknown): WireError {
  if (e instanceof NativeError) return { name: e.name, message: e.message, status: e.status, code: e.code };
  if (e instanceof Error) return { name: e.name, message: e.message };
  return { name: "Error", message: String(e) };
}

/** The last step this thread ran: whether it succeeded, where its sampled tokens are and how many it sampled. */
interface LastStep {
  id: number;
  ok: boolean;
  tokens: Int32Array | null;
  sampled: number;
}

type StepRequest = Extract<EngineRequest, { op: "step" }>;

/** A step that runs nothing (protocol.ts STEP_SKIPPED). */
function skipped(q: StepRequest, why: string): Error {
  const e = new Error(`step ${q.id}: skipped, ${why}`);
  e.name = STEP_SKIPPED;
  return e;
}

/**
 * A pipelined step's rows (protocol.ts `follows`): each token -(k + 1) becomes
 * the k-th token `last` sampled. Throws, rows untouched, when `last` is not the
 * step it follows or failed, or every row feeds one of `endIds` (STEP_SKIPPED),
 * or a reference is out of range.
 */
function resolveFollows(q: StepRequest, a: StepArrays, last: LastStep | null): void {
  if (q.follows === undefined) return;
  if (!last || last.id !== q.follows || !last.ok) {
    throw skipped(q, `the step it follows (${q.follows}) ${!last || last.id !== q.follows ? "was not the last step to run" : "failed"}`);
  }
  const refs: [number, number][] = [];
  let ended = q.endIds !== undefined && q.n > 0;
  for (let i = 0; i < q.n; i++) {
    const t = a.rows[i * Row.FIELDS + Row.TOKEN]!;
    if (t >= 0) {
      ended = false;
      continue;
    }
    const k = -t - 1;
    if (!last.tokens || k >= last.sampled) {
      throw new Error(`step: row ${i}: token ${t} refers to sampled token ${k} of step ${q.follows}, which sampled ${last.sampled}`);
    }
    const tok = last.tokens[k]!;
    if (ended && !q.endIds!.includes(tok)) ended = false;
    refs.push([i, tok]);
  }
  if (ended) throw skipped(q, "every row feeds a token that ends its sequence");
  for (const [i, tok] of refs) a.rows[i * Row.FIELDS + Row.TOKEN] = tok;
}

function run(d: EngineWorkerData): void {
  const ctrl = new Int32Array(d.ctrl);
  let handled = 0;
  let wokeAt = 0;
  /**
   * Posts a reply, and wakes the caller for it unless `quiet` (a step that
   * succeeded) and at least two more requests are queued behind it and the
   * last wake was less than WAKE_MS ago. A caller that posts steps ahead
   * (lib/generation/scheduler.ts) then takes their replies a few at a time
   * while the engine runs the last one queued, instead of waking for each,
   * each wake taking a core from the engine for a while. The last request
   * queued always wakes it.
   */
  const reply = (r: EngineReply, quiet = false) => {
    d.port.postMessage(r);
    if (quiet && Atomics.load(ctrl, REQ) - handled >= 2 && performance.now() - wokeAt < WAKE_MS) return;
    wokeAt = performance.now();
    Atomics.add(ctrl, DONE, 1);
    Atomics.notify(ctrl, DONE);
  };
  let engine: NativeEngine;
  const loadSummary = {} as LoadSummary;
  try {
    engine = buildEngine(d.dir, d.spec, d.options, loadSummary);
  } catch (e) {
    reply({ id: 0, ok: false, error: wire(e) });
    return;
  }
  // the KV stats live in shared memory, so reading them never waits for a step
  const kv = new BigInt64Array(d.kv);
  const publishKv = () => engine.kvStatsInto(kv); // straight into shared memory: one call, nothing allocated
  publishKv();
  reply({ id: 0, ok: true, value: { backend: engine.backend.name, weightBytes: engine.weightBytes(), deviceName: engine.backend.deviceName(0), loadSummary } });
  let last: LastStep | null = null;
  const bound: (StepArrays | undefined)[] = [];
  for (;;) {
    // idle: wake now and then to show this thread is alive (lib/engine/client.ts waits on it)
    Atomics.wait(ctrl, REQ, handled, BEAT_MS);
    Atomics.add(ctrl, BEAT, 1);
    while (handled < Atomics.load(ctrl, REQ)) {
      const m = receiveMessageOnPort(d.port);
      if (!m) {
        // the counter moved before the message became visible: let it land
        Atomics.wait(ctrl, REQ, Atomics.load(ctrl, REQ), 1);
        continue;
      }
      handled++;
      const q = m.message as EngineRequest;
      Atomics.store(ctrl, BUSY, 1);
      try {
        switch (q.op) {
          case "bind":
            if (!Number.isInteger(q.set) || q.set < 0 || q.set >= BOUND_SETS) throw new Error(`bind: set ${q.set} out of range 0..${BOUND_SETS - 1}`);
            bound[q.set] = q.arrays;
            reply({ id: q.id, ok: true, value: null });
            break;
          case "step": {
            const a = typeof q.arrays === "number" ? bound[q.arrays] : q.arrays;
            if (!a) throw new Error(`step: no arrays bound as set ${q.arrays}`);
            if (!Number.isInteger(q.n) || q.n < 0 || a.rows.length < q.n * Row.FIELDS) {
              throw new Error(`step: rows holds ${a.rows.length} ints, ${q.n} rows need ${q.n * Row.FIELDS}`);
            }
            const follows = last;
            last = { id: q.id, ok: false, tokens: a.tokens, sampled: 0 };
            resolveFollows(q, a, follows);
            const t0 = performance.now();
            last.sampled = engine.step(a.rows, q.n, a.params, a.logits, a.tokens, q.nTop, a.lpValues, a.lpIds);
            const ms = performance.now() - t0;
            last.ok = true;
            publishKv();
            reply({ id: q.id, ok: true, value: ms }, true); // the engine's own time: the client's wall time includes waiting for its turn
            break;
          }
          case "reset":
            engine.resetSlot(q.slot);
            publishKv();
            reply({ id: q.id, ok: true, value: null });
            break;
          case "kvReserve":
            engine.kvReserve(q.slot, q.blocks);
            publishKv();
            reply({ id: q.id, ok: true, value: null });
            break;
          case "slotInfo":
            reply({ id: q.id, ok: true, value: engine.slotInfo(q.slot, q.layer) });
            break;
          case "free":
            engine.free();
            reply({ id: q.id, ok: true, value: null });
            d.port.close();
            return;
          default:
            reply({ id: (q as { id: number }).id, ok: false, error: { name: "Error", message: `engine thread: unknown request ${JSON.stringify((q as { op: unknown }).op)}` } });
        }
      } catch (e) {
        reply({ id: q.id, ok: false, error: wire(e) });
      } finally {
        Atomics.store(ctrl, BUSY, 0);
      }
    }
  }
}

const data = workerData as EngineWorkerData;
try {
  run(data);
} finally {
  // however the thread ends, a caller waiting for a reply must not wait forever
  const ctrl = new Int32Array(data.ctrl);
  Atomics.store(ctrl, ENDED, 1);
  Atomics.add(ctrl, DONE, 1);
  Atomics.notify(ctrl, DONE);
}
