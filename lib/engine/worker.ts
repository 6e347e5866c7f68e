/**
 * The engine thread: a Worker that owns one native engine. It builds the
 * engine from the model folder (so loading never blocks the caller), then
 * serves requests from lib/engine/client.ts until "free": a native step, a
 * slot reset, a slot query. Requests and replies travel over a MessagePort
 * read with receiveMessageOnPort, and two counters in a SharedArrayBuffer wake
 * each side (Atomics.wait here, Atomics.waitAsync or Atomics.wait there); two
 * more, a heartbeat while idle and a busy flag, let a caller blocked in
 * Atomics.wait tell a dead thread from a busy one.
 * Row, parameter and output buffers are SharedArrayBuffer views, so a step
 * copies nothing. Why a Worker and not a native thread: docs/DESIGN.md, "Threads".
 */
import { receiveMessageOnPort, workerData } from "node:worker_threads";
import { BEAT, BEAT_MS, BUSY, DONE, type EngineReply, type EngineRequest, type EngineWorkerData, ENDED, REQ, type WireError } from "./protocol.ts";
import { NativeError, type NativeEngine } from "./native.ts";
import { buildEngine } from "./weights.ts";

function wire(e: unknown): WireError {
  if (e instanceof NativeError) return { name: e.name, message: e.message, status: e.status, code: e.code };
  if (e instanceof Error) return { name: e.name, message: e.message };
  return { name: "Error", message: String(e) };
}

function run(d: EngineWorkerData): void {
  const ctrl = new Int32Array(d.ctrl);
  const reply = (r: EngineReply) => {
    d.port.postMessage(r);
    Atomics.add(ctrl, DONE, 1);
    Atomics.notify(ctrl, DONE);
  };
  let engine: NativeEngine;
  try {
    engine = buildEngine(d.dir, d.spec, d.options);
  } catch (e) {
    reply({ id: 0, ok: false, error: wire(e) });
    return;
  }
  reply({ id: 0, ok: true, value: { backend: engine.backend.name, weightBytes: engine.weightBytes(), deviceName: engine.backend.deviceName(0) } });
  let handled = 0;
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
          case "step":
            engine.step(q.rows, q.n, q.params, q.logits, q.tokens, q.lp?.nTop ?? 0, q.lp?.values ?? null, q.lp?.ids ?? null);
            reply({ id: q.id, ok: true, value: null });
            break;
          case "reset":
            engine.resetSlot(q.slot);
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
