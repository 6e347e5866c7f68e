/**
 * The HTTP API as a Hono app over one loaded {@link SkipDecoder}: OpenAI-style
 * completions (JSON or SSE), the model list, health and Prometheus metrics.
 * The app owns no process-level things (no port, no signal handlers); tests
 * call `app.request()` and `server/main.ts` puts it behind `Bun.serve`.
 */
import { basename, resolve } from "node:path";
import { Hono } from "hono";
import { createMiddleware } from "hono/factory";
import { HTTPException } from "hono/http-exception";
import { chatLimits } from "../lib/text/chat.ts";
import type { SkipDecoder } from "../lib/index.ts";
import { OffThreadTokenizer } from "../lib/text/tokenizer_client.ts";
import { accessLog } from "./access.ts";
import { chatFormat, prepareChat } from "./chat.ts";
import { Admission, closing, engineFailed } from "./admission.ts";
import { complete, type CompletionDeps } from "./completions.ts";
import { checkModel, prepare } from "./prepare.ts";
import { ApiError, errorResponse } from "./errors.ts";
import { type BodyKind, type BodyLimits, BodyThread, jsonBody } from "./json_body.ts";
import { PROMETHEUS_CONTENT_TYPE } from "./metrics.ts";
import { ServerMetrics } from "./observe.ts";

/** Options of {@link createApp}; defaults in {@link APP_DEFAULTS}. */
export interface AppOptions {
  /** The id clients name in `model` (default: the model folder's basename). */
  modelName?: string;
  /** Most sequences that may wait for a KV slot; more → 429. */
  maxQueue?: number;
  /** Largest request body in bytes; more → 413. */
  maxBodyBytes?: number;
  /** Where unexpected errors are logged (default console.error). */
  log?: (msg: string, err?: unknown) => void;
  /** Where the access log goes, one line per request (server/access.ts); none when absent. */
  accessLog?: ((line: string) => void) | null;
}

/** Defaults of {@link AppOptions}. */
export const APP_DEFAULTS = {
  maxQueue: 64,
  maxBodyBytes: 4 << 20,
} as const;

/** What {@link createApp} returns. */
export interface SkipApp {
  app: Hono;
  metrics: ServerMetrics;
  /** The model id served. */
  modelName: string;
  /** Refuses new requests (503) and aborts running generations. Does not close the decoder. */
  close(): void;
  /**
   * Graceful drain: from now on new requests get 503 with Retry-After;
   * requests in flight run to their end, or until `graceMs` has passed, when
   * they are aborted (streams end with finish_reason "abort"). Resolves once
   * none is left, with whether the deadline had to cut any. Does not close the decoder.
   */
  drain(graceMs: number): Promise<{ cut: boolean }>;
}

/**
 * Builds the app for a loaded decoder.
 *
 * @example
 * const dec = await SkipDecoder.load("models/opt-125m");
 * const { app } = createApp(dec, { maxQueue: 32 });
 * const res = await app.request("/v1/completions", {
 *   method: "POST",
 *   headers: { "Content-Type": "application/json" },
 *   body: JSON.stringify({ prompt: "Hello", max_tokens: 8, speedup: 2 }),
 * });
 */
export function createApp(dec: SkipDecoder, opts: AppOptions = {}): SkipApp {
  const modelName = opts.modelName ?? basename(resolve(dec.dir));
  const maxQueue = opts.maxQueue ?? APP_DEFAULTS.maxQueue;
  if (!Number.isInteger(maxQueue) || maxQueue < 0) throw new Error(`createApp: maxQueue must be an integer >= 0, got ${maxQueue}`);
  const log = opts.log ?? ((msg: string, err?: unknown) => console.error(`skipdecode server: ${msg}`, err ?? ""));
  const admission = new Admission(dec.options.maxBatch, maxQueue);
  const metrics = new ServerMetrics(dec, modelName, () => admission);
  const deps: CompletionDeps = { dec, modelName, metrics, admission, log };
  const created = Math.floor(Date.now() / 1000);
  const modelCard = () => ({ id: modelName, object: "model", created, owned_by: "skipdecode", max_model_len: dec.options.maxSeqLen });

  const app = new Hono();

  app.use(accessLog(opts.accessLog ?? null));
  app.use(async (c, next) => {
    await next();
    metrics.http.inc({ route: c.req.routePath === "/*" ? "other" : c.req.routePath, status: String(c.res.status) });
  });

  app.get("/health", (c) => {
    const failure = dec.engineFailure;
    if (failure) return c.json({ status: "engine_failed", error: engineFailed(failure).message, ...dec.load }, 503);
    if (admission.closed) {
      c.header("Retry-After", closing().headers["Retry-After"]!);
      return c.json({ status: "closing", ...dec.load }, 503);
    }
    return c.json({ status: "ok", model: modelName, ...dec.load });
  });

  app.get("/v1/models", (c) => c.json({ object: "list", data: [modelCard()] }));
  app.get("/v1/models/:model{.+}", (c) => {
    const m = c.req.param("model");
    if (m !== modelName) throw new ApiError(404, `The model \`${m}\` does not exist.`, { param: "model", code: "model_not_found" });
    return c.json(modelCard());
  });

  app.get("/metrics", (c) => c.body(metrics.render(), 200, { "Content-Type": PROMETHEUS_CONTENT_TYPE }));

  // JSON bodies: a live engine, then size, Content-Type, depth, counts and the schema (server/json_body.ts)
  const maxBody = opts.maxBodyBytes ?? APP_DEFAULTS.maxBodyBytes;
  const live = createMiddleware(async (_c, next) => {
    const failure = dec.engineFailure;
    if (failure) throw engineFailed(failure);
    await next();
  });
  const bodies = new BodyThread();
  const limits: BodyLimits = {
    chat: chatLimits(dec.options.maxSeqLen),
    maxSeqLen: dec.options.maxSeqLen,
    maxTokenBytes: dec.tokenizer?.maxTokenBytes ?? 0,
    vocabSize: dec.spec.vocabSize,
  };
  const body = <K extends BodyKind>(kind: K) => [live, ...jsonBody(kind, { maxBytes: maxBody, limits, bodies })] as const;
  // long texts are tokenised on their own thread, so a big prompt does not hold /health
  const offThread = dec.tokenizer ? new OffThreadTokenizer(dec.dir, dec.tokenizer) : null;
  // threads start now, not inside the first request that needs one (a start holds this thread for tens of ms)
  offThread?.warm();
  bodies.warm();
  const needTokenizer = () => {
    if (!dec.tokenizer) throw new ApiError(400, "this model has no tokenizer", { code: "no_tokenizer" });
    return dec.tokenizer;
  };

  app.post("/v1/completions", ...body("completion"), async (c) => {
    const t0 = performance.now();
    const p = await prepare(dec, modelName, c.req.valid("json"), (text) => offThread!.encode(text, true));
    const ac = admission.reserve(p.prompts.length);
    try {
      return complete(c, deps, p, ac, t0);
    } catch (e) {
      admission.release(p.prompts.length, ac);
      throw e;
    }
  });

  app.post("/v1/chat/completions", ...body("chat"), async (c) => {
    const t0 = performance.now();
    const p = await prepareChat(
      deps,
      c.req.valid("json"),
      (text) => offThread!.encode(text, false),
      // rendered on the tokenizer thread: a template's time is never the event loop's
      (messages, limits) => offThread!.renderChat(messages, { tokens: dec.chatTokens, addGenerationPrompt: true, limits }),
    );
    const ac = admission.reserve(p.prompts.length);
    try {
      return complete(c, deps, p, ac, t0, chatFormat(dec));
    } catch (e) {
      admission.release(p.prompts.length, ac);
      throw e;
    }
  });

  // vLLM's and llama.cpp's tokenizer endpoints (both spellings of the fields in, both out)
  app.post("/tokenize", ...body("tokenize"), async (c) => {
    const b = c.req.valid("json");
    checkModel(b.model, modelName);
    needTokenizer();
    // the ids come back as JSON text: a long list is neither rebuilt nor stringified on this thread
    const { json, count } = await offThread!.encodeJson((b.prompt ?? b.content)!, b.add_special_tokens ?? b.add_special ?? true);
    return c.body(`{"tokens":${json},"count":${count},"max_model_len":${dec.options.maxSeqLen}}`, 200, { "Content-Type": "application/json" });
  });
  app.post("/detokenize", ...body("detokenize"), async (c) => {
    const b = c.req.valid("json"); // ids below the vocabulary size (server/json_body.ts)
    checkModel(b.model, modelName);
    needTokenizer();
    const text = await offThread!.decode(b.tokens, { json: true }); // long lists decoded (and quoted) on the tokenizer thread
    return c.body(`{"prompt":${text},"content":${text}}`, 200, { "Content-Type": "application/json" });
  });

  for (const path of ["/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"]) {
    app.all(path, (c) => {
      throw new ApiError(405, `${c.req.method} is not allowed here; use POST`);
    });
  }

  app.notFound((c) => errorResponse(c, new ApiError(404, `no route ${c.req.method} ${c.req.path}`, { code: "not_found" })));

  app.onError((e, c) => {
    if (e instanceof ApiError) return errorResponse(c, e);
    if (e instanceof HTTPException && e.status < 500) {
      // Hono's own 4xx: malformed JSON in the validator, and the like
      return errorResponse(c, new ApiError(e.status as 400, e.message || "bad request"));
    }
    log(`${c.req.method} ${c.req.path} failed`, e);
    const failure = dec.engineFailure;
    return errorResponse(c, failure ? engineFailed(failure) : new ApiError(500, "internal server error"));
  });

  return {
    app,
    metrics,
    modelName,
    close: () => {
      admission.abortAll();
      offThread?.close();
      bodies.close();
    },
    async drain(graceMs: number) {
      admission.closed = true;
      let cut = false;
      const timer = setTimeout(() => {
        cut = true;
        admission.abortAll();
      }, graceMs);
      try {
        await admission.idle();
      } finally {
        clearTimeout(timer);
        offThread?.close();
        bodies.close();
      }
      return { cut };
    },
  };
}
