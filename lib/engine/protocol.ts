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
      rows: Int32Array;
      params: Float32Array | null;
      logits: Float32Array | null;
      tokens: Int32Array | null;
      /** Logprobs of rows flagged ROW_LOGPROBS (skd_engine_step_logprobs). */
      lp?: { nTop: number; values: Float32Array; ids: Int32Array | null };
    }
  | { id: number; op: "reset"; slot: number }
  | { id: number; op: "slotInfo"; slot: number; layer: number }
  | { id: number; op: "free" };

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
/** How often an idle engine thread bumps BEAT. */
export const BEAT_MS = 250;

