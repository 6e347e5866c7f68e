/** The messages between lib/engine_client.ts and the engine thread (lib/engine_worker.ts). */
import type { MessagePort } from "node:worker_threads";
import type { ModelSpec } from "./checkpoint/config.ts";
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
  /** Int32Array(3) over a SharedArrayBuffer: [requests posted, replies posted, thread ended (1)]. */
  ctrl: SharedArrayBuffer;
  port: MessagePort;
}

export const REQ = 0;
export const DONE = 1;
export const ENDED = 2;

