/**
 * The body thread: reads large JSON request bodies (server/json_body.ts
 * `readBody`: depth, JSON.parse, counts, schema) off the event loop and
 * sends back the validated value — the ids to detokenize, checked against
 * the vocabulary already, as an Int32Array moved without a copy — or the
 * refusal.
 */
import { parentPort } from "node:worker_threads";
import { ApiError } from "./errors.ts";
import { type BodyKind, type BodyLimits, type BodyReply, readBody } from "./json_body.ts";

const port = parentPort!;
const decoder = new TextDecoder();

port.on("message", (q: { id: number; kind: BodyKind; bytes: ArrayBuffer; limits: BodyLimits }) => {
  try {
    const value = readBody(q.kind, decoder.decode(q.bytes), q.limits) as Record<string, unknown>;
    if (q.kind === "detokenize") {
      const ids = Int32Array.from(value.tokens as number[]);
      port.postMessage({ id: q.id, value: { ...value, tokens: ids } } satisfies BodyReply, [ids.buffer]);
      return;
    }
    port.postMessage({ id: q.id, value } satisfies BodyReply);
  } catch (e) {
    if (e instanceof ApiError) {
      port.postMessage({ id: q.id, error: { status: e.status, message: e.message, param: e.param, code: e.code } } satisfies BodyReply);
    } else {
      port.postMessage({ id: q.id, crash: (e as Error)?.message ?? String(e) } satisfies BodyReply);
    }
  }
});
