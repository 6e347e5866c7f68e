/**
 * JSON request bodies, read so that no body can hold the event loop. Each
 * body goes through, in order: a size limit (413), the Content-Type, a scan
 * of the nesting depth *before* JSON.parse (a body of a million `[` took half
 * a second to parse; it is refused in microseconds), JSON.parse, cheap
 * structural checks of the parsed value ({@link precheck}: counts of
 * messages, content parts and prompt ids, before the schema walks them),
 * then the route's zod schema. Every refusal is an ApiError in OpenAI's
 * shape; handlers read the result with `c.req.valid("json")`.
 *
 * Bodies of {@link OFF_THREAD_BODY_BYTES} or more (or of unknown length) take
 * all those steps on a body thread (server/body_worker.ts), which receives the
 * bytes without a copy and sends back only the validated value — id lists as
 * Int32Arrays, which cross as one copy instead of a JavaScript array to
 * rebuild — or the refusal. Parsing a 4 MB body costs tens of milliseconds,
 * which on the event loop would be a stall of every stream and of /health.
 */
import { Worker } from "node:worker_threads";
import { bodyLimit } from "hono/body-limit";
import { createMiddleware } from "hono/factory";
import type { MiddlewareHandler } from "hono";
import type { z } from "zod";
import { leastTokens } from "../lib/generation/context.ts";
import { type ChatLimits, checkChatSize } from "../lib/text/chat.ts";
import { ApiError } from "./errors.ts";
import { ChatCompletionSchema, CompletionSchema, DetokenizeSchema, firstIssue, TokenizeSchema } from "./schema.ts";

/** Deepest nesting of arrays and objects a body may have (OpenAI's bodies need 4). */
export const MAX_JSON_DEPTH = 64;
/** Bodies at least this long are read on the body thread. */
export const OFF_THREAD_BODY_BYTES = 256 << 10;

const JSON_TYPE = /^application\/([\w.-]+\+)?json$/i;

/** The request bodies, by route. */
export const SCHEMAS = {
  completion: CompletionSchema,
  chat: ChatCompletionSchema,
  tokenize: TokenizeSchema,
  detokenize: DetokenizeSchema,
} as const;
export type BodyKind = keyof typeof SCHEMAS;

/** What {@link precheck} bounds, from the loaded model. */
export interface BodyLimits {
  /** lib/text/chat.ts `chatLimits`: most messages (content parts may number 4 × that) and characters. */
  chat: ChatLimits;
  /** The context: a prompt of more token ids, or of more bytes than this × maxTokenBytes, is refused early. */
  maxSeqLen: number;
  /** The tokenizer's longest token in bytes (SkipTokenizer.maxTokenBytes); 0 without a tokenizer. */
  maxTokenBytes: number;
  /** Ids to detokenize must be below it. */
  vocabSize: number;
}

/**
 * The 400 of a prompt over the context: `tokens` is its token count, or
 * "at least N" from the cheap estimate (bytes / maxTokenBytes).
 */
export function overContext(maxSeqLen: number, which: string, tokens: string, param: string): ApiError {
  return new ApiError(400, `This model's maximum context length is ${maxSeqLen} tokens, but ${which} ${tokens} tokens.`, {
    param,
    code: "context_length_exceeded",
  });
}

/**
 * Whether JSON text nests arrays and objects more than `max` deep (brackets
 * inside strings do not count). Stops at the first bracket past `max`; one
 * pass without allocating, strings skipped natively.
 *
 * @example
 * nestsDeeper("[[[1]]]", 2); // true
 * nestsDeeper('{"a": "[[[["}', 2); // false
 */
export function nestsDeeper(text: string, max: number): boolean {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // skip the string (indexOf runs natively): to the next quote not escaped by an odd run of backslashes
      for (;;) {
        i = text.indexOf('"', i + 1);
        if (i < 0) return false; // unterminated: JSON.parse will say so
        let back = 0;
        while (text.charCodeAt(i - 1 - back) === 0x5c) back++;
        if (back % 2 === 0) break;
      }
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return false;
}

/** Counts the schema would otherwise walk element by element: refused first. */
/**
 * Sizes the schema would otherwise walk element by element, or that are
 * refused whatever else the body says, are checked first: a chat's message,
 * part and character counts (lib/text/chat.ts `checkChatSize`), a prompt's ids
 * beyond the context, a text prompt over it by the cheap estimate. On the
 * body thread this also means a refused megabyte never reaches the event loop.
 */
export function precheck(kind: BodyKind, value: unknown, limits: BodyLimits): void {
  const v = value as Record<string, unknown> | null;
  if (kind === "chat" && Array.isArray(v?.messages)) {
    const messages = v.messages as unknown[];
    const { maxMessages } = limits.chat;
    let parts = 0;
    for (const m of messages) {
      const content = (m as { content?: unknown } | null)?.content;
      if (Array.isArray(content)) parts += content.length;
    }
    if (messages.length > maxMessages || parts > 4 * maxMessages) {
      const what = messages.length > maxMessages ? `${messages.length} messages` : `${parts} content parts`;
      throw new ApiError(400, `${what}; at most ${maxMessages} messages (and ${4 * maxMessages} content parts) are accepted`, {
        param: "messages",
        code: "chat_too_large",
      });
    }
    // the characters the template will see: string fields, and the text of content parts
    const sized = messages.map((m) => {
      const o = (typeof m === "object" && m !== null ? m : {}) as Record<string, unknown>;
      const content = Array.isArray(o.content) ? o.content.map((x) => String((x as { text?: unknown } | null)?.text ?? "")).join("") : o.content;
      return { ...o, content };
    });
    try {
      checkChatSize("", sized, limits.chat);
    } catch (e) {
      throw new ApiError(400, (e as Error).message, { param: "messages", code: "chat_too_large" });
    }
  }
  if (kind === "completion" && (typeof v?.prompt === "string" || Array.isArray(v?.prompt))) {
    const p = v.prompt as unknown;
    const list = typeof p === "string" || typeof (p as unknown[])[0] === "number" ? [p] : (p as unknown[]);
    list.forEach((one, i) => {
      const which = list.length > 1 ? `prompt ${i} has` : "the prompt has";
      const param = list.length > 1 ? `prompt[${i}]` : "prompt";
      if (Array.isArray(one) && one.length > limits.maxSeqLen) throw overContext(limits.maxSeqLen, which, String(one.length), param);
      if (typeof one === "string" && limits.maxTokenBytes > 0) {
        const least = leastTokens(one, limits.maxTokenBytes);
        if (least > limits.maxSeqLen) throw overContext(limits.maxSeqLen, which, `at least ${least}`, param);
      }
    });
  }
}

/** Depth, JSON.parse, precheck and schema, on whatever thread runs it; throws ApiError. */
export function readBody(kind: BodyKind, text: string, limits: BodyLimits): unknown {
  if (nestsDeeper(text, MAX_JSON_DEPTH)) throw new ApiError(400, `the JSON body nests deeper than ${MAX_JSON_DEPTH} levels`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ApiError(400, "Malformed JSON in request body");
  }
  precheck(kind, value, limits);
  const r = SCHEMAS[kind].safeParse(value);
  if (!r.success) {
    const { message, param } = firstIssue(r.error);
    throw new ApiError(400, message, { param });
  }
  if (kind === "detokenize") {
    const ids = (r.data as { tokens: number[] }).tokens;
    const bad = ids.findIndex((t) => t >= limits.vocabSize);
    if (bad >= 0) throw new ApiError(400, `tokens[${bad}] = ${ids[bad]} is outside the vocabulary (0..${limits.vocabSize - 1})`, { param: "tokens" });
  }
  return r.data;
}

/** An ApiError as it crosses from the body thread. */
export interface WireApiError {
  status: number;
  message: string;
  param: string | null;
  code: string | null;
}

/** The body thread's reply. */
export type BodyReply = { id: number; value: unknown } | { id: number; error: WireApiError } | { id: number; crash: string };

/**
 * The body thread of one app: started on first use (or `warm()`), idle
 * without keeping the process alive, restarted if it ever ends.
 *
 * @example
 * const bodies = new BodyThread();
 * const value = await bodies.read("detokenize", await c.req.arrayBuffer(), limits);
 */
export class BodyThread {
  #worker: Worker | null = null;
  #nextId = 1;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  #thread(): Worker {
    if (this.#worker) return this.#worker;
    const w = new Worker(new URL("./body_worker.ts", import.meta.url));
    w.unref();
    w.on("message", (r: BodyReply) => {
      const p = this.#pending.get(r.id);
      if (!p) return;
      this.#pending.delete(r.id);
      if (this.#pending.size === 0) w.unref();
      if ("value" in r) p.resolve(r.value);
      else if ("error" in r) p.reject(new ApiError(r.error.status as 400, r.error.message, { param: r.error.param, code: r.error.code }));
      else p.reject(new Error(`body thread: ${r.crash}`));
    });
    const fail = (e: Error) => {
      if (this.#worker !== w) return;
      this.#worker = null;
      const left = [...this.#pending.values()];
      this.#pending.clear();
      for (const p of left) p.reject(e);
    };
    w.on("error", (e) => fail(e as Error));
    w.on("exit", () => fail(new Error("body thread ended")));
    this.#worker = w;
    return w;
  }

  /** Starts the thread now (starting one holds the caller for tens of ms: better before serving than during a request). */
  warm(): void {
    this.#thread();
  }

  /** {@link readBody} on the thread; `bytes` moves there (it is detached here). */
  read(kind: BodyKind, bytes: ArrayBuffer, limits: BodyLimits): Promise<unknown> {
    const w = this.#thread();
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      if (this.#pending.size === 1) w.ref();
      w.postMessage({ id, kind, bytes, limits }, [bytes]);
    });
  }

  /** Ends the thread (a later read starts another). */
  close(): void {
    const w = this.#worker;
    this.#worker = null;
    if (w) void w.terminate();
  }
}

/**
 * The middleware chain of a JSON route: size limit, Content-Type, then
 * {@link readBody} — inline for small bodies, on `bodies` for large ones.
 *
 * @example
 * app.post("/tokenize", ...jsonBody("tokenize", { maxBytes, limits, bodies }), (c) => c.json(c.req.valid("json")));
 */
export function jsonBody<K extends BodyKind>(kind: K, opts: { maxBytes: number; limits: BodyLimits; bodies: BodyThread }) {
  type S = (typeof SCHEMAS)[K];
  const read: MiddlewareHandler<any, string, { in: { json: z.input<S> }; out: { json: z.output<S> } }> = createMiddleware(async (c, next) => {
    const type = (c.req.header("Content-Type") ?? "").split(";")[0]!.trim();
    if (!JSON_TYPE.test(type)) throw new ApiError(400, `Content-Type must be application/json, got ${JSON.stringify(type || "(none)")}`);
    const length = Number(c.req.header("Content-Length"));
    const value =
      length < OFF_THREAD_BODY_BYTES
        ? readBody(kind, await c.req.text(), opts.limits)
        : await opts.bodies.read(kind, await c.req.arrayBuffer(), opts.limits);
    c.req.addValidatedData("json", value as {});
    await next();
  });
  return [
    bodyLimit({
      maxSize: opts.maxBytes,
      onError: () => {
        throw new ApiError(413, `the request body is larger than ${opts.maxBytes} bytes`);
      },
    }),
    read,
  ] as const;
}
