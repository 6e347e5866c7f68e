/** The messages between lib/engine/client.ts and the engine thread (lib/engine/worker.ts). */
import type { MessagePort } from "node:worker_threads";
import type { ModelSpec } from "../checkpoint/config.ts";
import type { EngineOptions } from "./weights.ts";

/** A request from the client; `id` orders replies. */
export type EngineRequest =
  | {
      id: number;
      op: "step";
      n: number;
      /** The step's arrays, or the number of a set bound earlier ("bind"). */
      arrays: StepArrays | number;
      /** Alternatives per row flagged ROW_LOGPROBS (skd_engine_step_logprobs); 0 when none. */
      nTop: number;
      /**
       * The id of the step this one continues (a pipelined step, posted before
       * that one's reply): a row whose token is -(k + 1) feeds the k-th token
       * that step sampled. Unless that step was the last to run and succeeded,
       * this one is skipped: it fails with {@link STEP_SKIPPED}, the engine untouched.
       */
      follows?: number;
      /**
       * With `follows`: when every row feeds a token of that step and each of
       * those tokens is one of these ids (the sequences' EOS ids: each ended
       * with it), this step is skipped as above: nothing in it would be kept.
       */
      endIds?: readonly number[];
    }
  /**
   * Keep these arrays as set `set` (0..{@link BOUND_SETS}-1, replacing what was
   * there) for later steps to name: a step message with views of shared memory
   * costs tens of microseconds to send and to receive, a number next to nothing.
   */
  | { id: number; op: "bind"; set: number; arrays: StepArrays }
  | { id: number; op: "reset"; slot: number }
  | { id: number; op: "slotInfo"; slot: number; layer: number }
  /** Sets a slot's KV reservation (skd_engine_kv_reserve). */
  | { id: number; op: "kvReserve"; slot: number; blocks: number }
  | { id: number; op: "free" };

/** The arrays a step reads and writes, in shared memory (rows, params: in; logits, tokens, logprobs: out). */
export interface StepArrays {
  rows: Int32Array;
  params: Float32Array | null;
  logits: Float32Array | null;
  tokens: Int32Array | null;
  /** Logprobs of rows flagged ROW_LOGPROBS: 1 + nTop values and nTop ids each. */
  lpValues: Float32Array | null;
  lpIds: Int32Array | null;
}

/**
 * Sets of step arrays the engine thread keeps ("bind"): the scheduler's
 * (MAX_AHEAD, 4, in lib/generation/scheduler.ts) and room for two more
 * callers' own, so those do not push the scheduler's out.
 */
export const BOUND_SETS = 6;

/** The error name of a step skipped because the step it follows failed or was not the last to run. */
export const STEP_SKIPPED = "StepSkipped";

/** An error as it crosses threads. */
export interface WireError {
  name: string;
  message: string;
  status?: string;
  code?: number;
}

/** A reply; id 0 answers the load. */
export type EngineReply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: WireError };

/** What the worker is started with. */
export interface EngineWorkerData {
  dir: string;
  spec: ModelSpec;
  options: EngineOptions;
  /** Int32Array(CTRL_SLOTS) over a SharedArrayBuffer, indexed by REQ, DONE, ENDED, BEAT, BUSY. */
  ctrl: SharedArrayBuffer;
  /**
   * BigInt64Array(KvStat.STATS_COUNT): the KV pool's stats as skd_engine_kv_stats writes them (skipdecode.h's
   * order), rewritten by the thread after every request that can change them (native.ts kvStatsOf reads them).
   */
  kv: SharedArrayBuffer;
  port: MessagePort;
}

/** Requests posted. */
export const REQ = 0;
/** Replies posted. */
export const DONE = 1;
/** 1 once the thread has ended (set by the thread as it ends, or by the client when it sees the thread exit). */
export const ENDED = 2;
/** Heartbeat: the idle thread bumps it every {@link BEAT_MS}, so a blocking caller can tell a live thread from a dead one. */
export const BEAT = 3;
/** 1 while the thread handles a request (a native call beats no heart). */
export const BUSY = 4;
export const CTRL_SLOTS = 5;
/**
 * A successful step's reply stays quiet (worker.ts `reply`) only within this
 * long of the last wake, so a caller with steps queued waits at most this
 * plus one step for its replies.
 */
export const WAKE_MS = 20;
/** How often an idle engine thread bumps BEAT. */
export const BEAT_MS = 250;

