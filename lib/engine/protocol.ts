/** The messages between lib/engine/client.ts and the engine thread (lib/engine/worker.ts). */
import type { MessagePort } from "node:worker_threads";
import type { ModelSpec } from "../checkpoint/config.ts";
import type { EngineOptions } from "./weights.ts";
import { KvStat } from "./abi.ts";
import type { KvPoolStats } from "./native.ts";

/** A request from the client; `id` orders replies. */
export type EngineRequest =
  | {
      id: number;
      op: "step";
      n: number;
      rows: Int32Array;
      params: Float32Array | null;
      logits: Float32Array | null;
      tokens: Int32Array | null;
      /** Logprobs of rows flagged ROW_LOGPROBS (skd_engine_step_logprobs). */
      lp?: { nTop: number; values: Float32Array; ids: Int32Array | null };
      /**
       * The id of the step this one continues (a pipelined step, posted before
       * that one's reply): a row whose token is -(k + 1) feeds the k-th token
       * that step sampled. Unless that step was the last to run and succeeded,
       * this one is skipped: it fails with {@link STEP_SKIPPED}, the engine untouched.
       */
      follows?: number;
    }
  | { id: number; op: "reset"; slot: number }
  | { id: number; op: "slotInfo"; slot: number; layer: number }
  /** Sets a slot's KV reservation (skd_engine_kv_reserve). */
  | { id: number; op: "kvReserve"; slot: number; blocks: number }
  | { id: number; op: "free" };

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
  /** Float64Array(KvStat.STATS_COUNT): the KV pool's stats, rewritten by the thread after every request that can change them. */
  kv: SharedArrayBuffer;
  port: MessagePort;
}

/** Where each KV stat sits in the shared Float64Array (EngineWorkerData.kv): skipdecode.h's skd_kv_stat order. */
const KV_FIELDS: [keyof KvPoolStats, number][] = [
  ["poolBytes", KvStat.POOL_BYTES],
  ["usedBytes", KvStat.USED_BYTES],
  ["reservedBytes", KvStat.RESERVED_BYTES],
  ["blockSize", KvStat.BLOCK_SIZE],
  ["blockBytes", KvStat.BLOCK_BYTES],
  ["blocks", KvStat.BLOCKS],
  ["blocksFree", KvStat.BLOCKS_FREE],
  ["blocksAvailable", KvStat.BLOCKS_AVAILABLE],
  ["dtype", KvStat.DTYPE],
  ["paged", KvStat.PAGED],
];

/** Writes the KV stats into shared memory (the engine thread, after each request that can change them). */
export function writeKvStats(kv: Float64Array, s: KvPoolStats): void {
  for (const [k, i] of KV_FIELDS) kv[i] = Number(s[k]);
}

/** Reads the KV stats from shared memory (the caller's thread, without waiting). */
export function readKvStats(kv: Float64Array): KvPoolStats {
  const o = Object.fromEntries(KV_FIELDS.map(([k, i]) => [k, kv[i]!])) as Record<keyof KvPoolStats, number>;
  return { ...o, dtype: o.dtype as KvPoolStats["dtype"], paged: o.paged === 1 };
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
/** How often an idle engine thread bumps BEAT. */
export const BEAT_MS = 250;

