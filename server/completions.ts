/**
 * `POST /v1/completions`: a validated body becomes one generation per prompt
 * on the shared decoder (whose scheduler batches them continuously with
 * everything else in flight), answered as one JSON object or as SSE chunks in
 * OpenAI's format. Every limit that depends on the model is checked here,
 * before anything is queued, so bad input is a 400 and never a 500.
 */
import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import type { GenerateOptions, GenerateResult, SkipDecoder, TokenEvent, TokenLogprob } from "../lib/index.ts";
import { SkipPolicy } from "../lib/index.ts";
import { accessEntry } from "./access.ts";
import { ApiError } from "./errors.ts";
import { overContext } from "./json_body.ts";
import type { ServerMetrics } from "./observe.ts";
import type { CompletionRequest } from "./schema.ts";

/** OpenAI's default `max_tokens` for completions. */
export const DEFAULT_MAX_TOKENS = 16;
/** Seconds without a byte after which an SSE stream gets a `: keep-alive` comment. */
export const KEEP_ALIVE_S = 15;

/** What a completion handler needs from the app. */
export interface CompletionDeps {
  dec: SkipDecoder;
  modelName: string;
  metrics: ServerMetrics;
  admission: Admission;
  /** Logs unexpected errors (never shown to the client). */
  log: (msg: string, err?: unknown) => void;
}

/**
 * Counts the sequences the server has accepted and not finished, and turns
 * away requests whose sequences would make more than `maxQueue` wait for a
 * KV slot. Each prompt of a request is one sequence.
 *
 * @example
 * const a = new Admission(8, 64);
 * a.reserve(2); // throws ApiError 429 when the queue is full
 * a.release(2);
 */
export class Admission {
  #inFlight = 0;
  /** Controllers of running requests, aborted by {@link Admission.abortAll}. */
  readonly #controllers = new Set<AbortController>();
  /** Resolved each time the last request in flight ends. */
  #idle: (() => void)[] = [];
  closed = false;

  constructor(
    /** Sequences the decoder runs at once (its maxBatch). */
    readonly slots: number,
    /** Most sequences that may wait for a slot. */
    readonly maxQueue: number,
  ) {}

  /** Sequences accepted and not finished. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Sequences accepted beyond the free slots. */
  get waiting(): number {
    return Math.max(0, this.#inFlight - this.slots);
  }

  /** Accounts for `n` new sequences or throws 503 / 400 / 429. */
  reserve(n: number): AbortController {
    if (this.closed) throw closing();
    const most = this.slots + this.maxQueue;
    if (n > most) {
      throw new ApiError(400, `the request has ${n} prompts; at most ${most} sequences can be in flight (max batch ${this.slots} + max queue ${this.maxQueue})`, {
        param: "prompt",
      });
    }
    const waiting = this.#inFlight + n - this.slots;
    if (waiting > this.maxQueue) {
      throw new ApiError(429, `the queue is full (${this.waiting} sequences waiting, max queue ${this.maxQueue}); retry later`, {
        code: "queue_full",
        headers: { "Retry-After": "1" },
      });
    }
    this.#inFlight += n;
    const ac = new AbortController();
    this.#controllers.add(ac);
    return ac;
  }

  /** Gives back what {@link Admission.reserve} took. */
  release(n: number, ac: AbortController): void {
    this.#inFlight -= n;
    this.#controllers.delete(ac);
    if (this.#controllers.size === 0) for (const f of this.#idle.splice(0)) f();
  }

  /** Resolves when no request is in flight. */
  idle(): Promise<void> {
    if (this.#controllers.size === 0) return Promise.resolve();
    return new Promise((r) => this.#idle.push(r));
  }

  /** Refuses new work and aborts everything running. */
  abortAll(): void {
    this.closed = true;
    for (const ac of this.#controllers) ac.abort();
  }
}

/** Seconds a client is told to wait (Retry-After) while the server shuts down. */
export const CLOSING_RETRY_AFTER_S = 5;

/** The 503 a request gets while the server drains or after it closed. */
export function closing(): ApiError {
  return new ApiError(503, "the server is shutting down", {
    type: "server_error",
    code: "server_closing",
    headers: { "Retry-After": String(CLOSING_RETRY_AFTER_S) },
  });
}

/**
 * The 503 once the engine thread has died: requests in flight end with it
 * (a stream as an error event), new ones get it, and `/health` reports it.
 */
export function engineFailed(e: Error): ApiError {
  return new ApiError(503, `the inference engine has failed: ${e.message.replace(/^skipdecode: /, "")}`, {
    type: "server_error",
    code: "engine_failed",
  });
}

/** A request's `model` must be the one this server serves (absent: it is); else a 404 in OpenAI's words. */
export function checkModel(model: string | null | undefined, modelName: string): void {
  if (model != null && model !== modelName) {
    throw new ApiError(404, `The model \`${model}\` does not exist (this server serves \`${modelName}\`).`, {
      param: "model",
      code: "model_not_found",
    });
  }
}

/** A request checked against the model: prompts as token ids and library options. */
export interface Prepared {
  prompts: number[][];
  opts: GenerateOptions;
  policy: SkipPolicy;
  stream: boolean;
  includeUsage: boolean;
}

const API_NAMES: Record<string, string> = {
  minLayers: "min_layers",
  maxLayers: "max_layers",
  warmupLayers: "warmup_layers",
  maxNewTokens: "max_tokens",
  topK: "top_k",
  topP: "top_p",
};

/** Library errors (option checks) as a 400 naming `param`, in the API's field names. */
function libraryError(e: unknown, param: string | null): ApiError {
  const msg = ((e as Error)?.message ?? String(e))
    .replace(/^SkipPolicy(\.\w+)?: |^request: /, "")
    .replace(/\b(minLayers|maxLayers|warmupLayers|maxNewTokens|topK|topP)\b/g, (m) => API_NAMES[m]!);
  return new ApiError(400, msg, { param });
}

/**
 * Checks a validated body against the loaded model and tokenises its prompts.
 * Throws {@link ApiError} 404 for another model, 400 for anything the model
 * cannot do (context, vocabulary, layers).
 *
 * @example
 * const p = await prepare(dec, "opt-125m", { prompt: "Hi", max_tokens: 8 });
 * p.prompts; // [[2, 30086]]
 */
export async function prepare(
  dec: SkipDecoder,
  modelName: string,
  body: CompletionRequest,
  encode: (text: string) => Promise<number[]> = async (text) => dec.tokenizer!.encode(text),
): Promise<Prepared> {
  checkModel(body.model, modelName);
  const L = dec.spec.numLayers;
  const V = dec.spec.vocabSize;
  const ctxLen = dec.options.maxSeqLen;
  const maxTokens = body.max_tokens ?? DEFAULT_MAX_TOKENS;

  // prompts: text (tokenised once, BOS added) or token ids (fed as given)
  const raw = body.prompt;
  const list: (string | number[])[] =
    typeof raw === "string" ? [raw] : typeof raw[0] === "number" ? [raw as number[]] : (raw as (string | number[])[]);
  const prompts = await Promise.all(list.map(async (p, i) => {
    const param = list.length > 1 ? `prompt[${i}]` : "prompt";
    if (typeof p === "string") {
      if (!dec.tokenizer) throw new ApiError(400, "this model has no tokenizer: send prompts as token ids", { param });
      // far over the context: refused without tokenising (a 3 MB prompt would hold the event loop for a second)
      const least = Math.ceil(Buffer.byteLength(p) / dec.tokenizer.maxTokenBytes);
      if (least > ctxLen) throw overContext(ctxLen, list.length > 1 ? `prompt ${i} has` : "the prompt has", `at least ${least}`, param);
      return encode(p); // long texts off the event loop
    }
    const bad = p.findIndex((t) => t >= V);
    if (bad >= 0) throw new ApiError(400, `token id ${p[bad]} is outside the vocabulary (0..${V - 1})`, { param });
    return p;
  }));
  prompts.forEach((ids, i) => {
    const param = list.length > 1 ? `prompt[${i}]` : "prompt";
    const which = list.length > 1 ? `prompt ${i} has` : "the prompt has";
    if (ids.length > ctxLen) throw overContext(ctxLen, which, String(ids.length), param);
    if (ids.length + maxTokens > ctxLen) {
      throw new ApiError(
        400,
        `This model's maximum context length is ${ctxLen} tokens. However, you requested ${ids.length + maxTokens} tokens ` +
          `(${ids.length} in ${list.length > 1 ? `prompt ${i}` : "the prompt"}, ${maxTokens} for the completion). ` +
          `Please reduce the prompt or max_tokens (max_tokens <= ${ctxLen - ids.length} here).`,
        { param: "max_tokens", code: "context_length_exceeded" },
      );
    }
  });

  // the budget policy: speedup, skip, or the full model
  let policy: SkipPolicy;
  if (body.speedup != null) {
    try {
      policy = SkipPolicy.forSpeedup(body.speedup, { numLayers: L, span: maxTokens });
    } catch (e) {
      throw libraryError(e, "speedup");
    }
  } else if (body.skip != null) {
    const s = body.skip;
    try {
      policy = SkipPolicy.linear({
        numLayers: L,
        maxLayers: s.max_layers,
        minLayers: s.min_layers,
        span: s.span ?? maxTokens,
        warmupLayers: s.warmup_layers ?? 1,
      });
    } catch (e) {
      throw libraryError(e, "skip");
    }
  } else {
    policy = SkipPolicy.full(L);
  }

  const topK = body.top_k == null || body.top_k < 0 ? 0 : body.top_k;
  if (topK > V) throw new ApiError(400, `top_k must be at most the vocabulary size ${V} (0 or -1 = off)`, { param: "top_k" });
  const opts: GenerateOptions = {
    maxNewTokens: maxTokens,
    policy,
    temperature: body.temperature ?? 1,
    topP: body.top_p ?? 1,
    topK,
    ignoreEos: body.ignore_eos ?? false,
  };
  if (body.seed != null) opts.seed = body.seed;
  if (body.logprobs != null) opts.logprobs = body.logprobs;
  if (body.stop != null) opts.stop = body.stop;
  // the library's own checks, run now (they would otherwise surface mid-stream)
  for (const ids of prompts) {
    try {
      dec.check(ids, opts);
    } catch (e) {
      throw libraryError(e, null);
    }
  }
  return { prompts, opts, policy, stream: body.stream ?? false, includeUsage: body.stream_options?.include_usage ?? false };
}

/**
 * Runs one sequence through `dec.stream`, calling `onText` for every piece of
 * text and recording time to first token and inter-token gaps. Returns the
 * library's result (finishReason "abort" when `signal` fired).
 *
 * @example
 * const r = await runSequence(deps, ids, opts, ac.signal, performance.now(), (t) => out.push(t));
 */
export async function runSequence(
  deps: CompletionDeps,
  ids: number[],
  opts: GenerateOptions,
  signal: AbortSignal,
  t0: number,
  onText: (text: string, token?: TokenEvent) => void,
): Promise<GenerateResult> {
  const it = deps.dec.stream(ids, { ...opts, signal });
  let last = 0;
  let done = false;
  try {
    for (;;) {
      const r = await it.next();
      if (r.done) {
        done = true;
        deps.metrics.finished(r.value, performance.now() - t0);
        return r.value;
      }
      const ev = r.value;
      if (ev.type === "token") {
        const now = performance.now();
        if (last === 0) deps.metrics.ttft.observe((now - t0) / 1000);
        else deps.metrics.itl.observe((now - last) / 1000);
        last = now;
      }
      // with logprobs every token is a chunk (its logprob must not be lost); else only text is
      if (ev.text || (ev.type === "token" && ev.logprob)) onText(ev.text, ev.type === "token" ? ev : undefined);
    }
  } finally {
    if (!done) await it.return(undefined as never).catch(() => {});
  }
}

/** OpenAI's `logprobs` object of a completion choice (or of the tokens of one chunk). */
interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[];
  text_offset: number[];
}

/**
 * Tokens and their logprobs in OpenAI's completions shape: each token as its
 * own text (special tokens spelt out; a token that ends inside a character
 * shows U+FFFD), `text_offset` counted from `offset` along those texts.
 */
function completionLogprobs(dec: SkipDecoder, tokens: number[], lps: TokenLogprob[], offset = 0): CompletionLogprobs {
  const text = (id: number) => dec.detokenize([id], { skipSpecialTokens: false });
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  tokens.forEach((id, i) => {
    const t = text(id);
    out.tokens.push(t);
    out.token_logprobs.push(lps[i]!.logprob);
    out.top_logprobs.push(Object.fromEntries(lps[i]!.top.map((a) => [text(a.token), a.logprob])));
    out.text_offset.push(offset);
    offset += t.length;
  });
  return out;
}

/** OpenAI's finish_reason values (see {@link finishReason}). */
export type ApiFinish = "stop" | "length" | "abort";

/**
 * The shape of a response: OpenAI's text completions ({@link completionFormat})
 * or chat completions (server/chat.ts). One instance per request: it may keep
 * state (the text offsets of streamed logprobs).
 */
export interface ResponseFormat {
  /** The id's prefix ("cmpl", "chatcmpl"). */
  idPrefix: string;
  /** `object` of a whole response, and of a stream chunk. */
  object: string;
  chunkObject: string;
  /** A choice of a whole response. */
  choice(index: number, r: GenerateResult, finish: ApiFinish): Record<string, unknown>;
  /** A choice of a stream chunk: a text piece (with its token event when logprobs are on), or, text null, the end. */
  delta(index: number, text: string | null, token: TokenEvent | undefined, finish: ApiFinish | null): Record<string, unknown>;
  /** A choice to send before any text (chat: the assistant's role), or null. */
  opening(index: number): Record<string, unknown> | null;
}

/**
 * Text completions: `choices[i].text`, and `logprobs` in the completions
 * shape (tokens, token_logprobs, top_logprobs, text_offset).
 *
 * @example
 * complete(c, deps, p, ac, t0, completionFormat(dec, p.prompts.length));
 */
export function completionFormat(dec: SkipDecoder, choices: number): ResponseFormat {
  const offsets = new Array<number>(choices).fill(0); // text_offset of the next streamed token, per choice
  return {
    idPrefix: "cmpl",
    object: "text_completion",
    chunkObject: "text_completion",
    choice: (index, r, finish) => ({
      index,
      text: r.text,
      logprobs: r.logprobs ? completionLogprobs(dec, r.tokens, r.logprobs) : null,
      finish_reason: finish,
    }),
    delta: (index, text, ev, finish) => {
      let lp: CompletionLogprobs | null = null;
      if (ev?.logprob) {
        lp = completionLogprobs(dec, [ev.token], [ev.logprob], offsets[index]);
        offsets[index]! += lp.tokens[0]!.length;
      }
      return { index, text: text ?? "", logprobs: lp, finish_reason: finish };
    },
    opening: () => null,
  };
}

interface Totals {
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  skipdecode: { num_layers: number; policy: string; mean_layers: number; ideal_speedup: number; layers_computed: number; layers_full: number };
}

/** usage and the skipdecode object over all choices. */
function totals(dec: SkipDecoder, policy: SkipPolicy, prompts: number[][], results: (GenerateResult | undefined)[]): Totals {
  const L = dec.spec.numLayers;
  const promptTokens = prompts.reduce((a, p) => a + p.length, 0);
  let completion = 0;
  let computed = 0;
  let steps = 0;
  for (const r of results) {
    if (!r) continue;
    completion += r.tokens.length;
    computed += r.budgets.reduce((a, b) => a + b, 0);
    steps += r.budgets.length;
  }
  const mean = steps ? computed / steps : L;
  return {
    usage: { prompt_tokens: promptTokens, completion_tokens: completion, total_tokens: promptTokens + completion },
    skipdecode: {
      num_layers: L,
      policy: String(policy),
      mean_layers: mean,
      ideal_speedup: L / mean,
      layers_computed: computed,
      layers_full: steps * L,
    },
  };
}

/**
 * OpenAI's finish_reason: "stop" or "length"; "abort" (as vLLM says it) when
 * the server's shutdown deadline cut the generation.
 */
const finishReason = (r: GenerateResult): ApiFinish => (r.finishReason === "length" ? "length" : r.finishReason === "abort" ? "abort" : "stop");

/**
 * Answers a prepared request in `format` (text completions by default): JSON,
 * or SSE when `stream` is set. The sequences are already reserved in
 * `deps.admission` under `ac`; this releases them when they end, whatever
 * happens.
 *
 * @example
 * app.post("/v1/completions", async (c) => complete(c, deps, await prepare(dec, name, body), ac, performance.now()));
 */
export function complete(
  c: Context,
  deps: CompletionDeps,
  p: Prepared,
  ac: AbortController,
  t0: number,
  format: ResponseFormat = completionFormat(deps.dec, p.prompts.length),
): Promise<Response> | Response {
  const id = `${format.idPrefix}-${crypto.randomUUID().replace(/-/g, "")}`;
  const created = Math.floor(Date.now() / 1000);
  const head: Head = { id, created, model: deps.modelName, format };
  const clientGone = () => ac.abort();
  c.req.raw.signal.addEventListener("abort", clientGone, { once: true });
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    c.req.raw.signal.removeEventListener("abort", clientGone);
    deps.admission.release(p.prompts.length, ac);
  };
  if (p.stream) accessEntry(c).hold(); // logged when the stream ends
  return p.stream ? streamed(c, deps, p, ac, t0, head, release) : whole(c, deps, p, ac, t0, head, release);
}

/** What every response and chunk of a request starts with. */
interface Head {
  id: string;
  created: number;
  model: string;
  format: ResponseFormat;
}

/** Prompt and completion tokens over the choices that got anywhere. */
function counts(p: Prepared, results: (GenerateResult | undefined)[]): { prompt: number; completion: number } {
  return { prompt: p.prompts.reduce((a, x) => a + x.length, 0), completion: results.reduce((a, r) => a + (r?.tokens.length ?? 0), 0) };
}

async function whole(
  c: Context,
  deps: CompletionDeps,
  p: Prepared,
  ac: AbortController,
  t0: number,
  head: Head,
  release: () => void,
): Promise<Response> {
  let results: GenerateResult[];
  try {
    results = await Promise.all(p.prompts.map((ids, i) => runSequence(deps, ids, { ...p.opts, sequence: i }, ac.signal, t0, () => {})));
  } catch (e) {
    ac.abort(); // stop the other prompts of this request
    throw e;
  } finally {
    release();
  }
  accessEntry(c).end(counts(p, results));
  if (results.some((r) => r.finishReason === "abort")) {
    if (c.req.raw.signal.aborted) return new Response(null, { status: 499 }); // nobody is listening
    throw closing(); // cut at the shutdown deadline: nothing partial is passed off as whole
  }
  const t = totals(deps.dec, p.policy, p.prompts, results);
  return c.json({
    id: head.id,
    object: head.format.object,
    created: head.created,
    model: head.model,
    choices: results.map((r, index) => head.format.choice(index, r, finishReason(r))),
    usage: t.usage,
    skipdecode: t.skipdecode,
  });
}

function streamed(
  c: Context,
  deps: CompletionDeps,
  p: Prepared,
  ac: AbortController,
  t0: number,
  head: Head,
  release: () => void,
): Response {
  return streamSSE(c, async (stream) => {
    // the client leaving aborts the generation silently; a shutdown deadline ends it with finish_reason "abort"
    let clientGone = c.req.raw.signal.aborted;
    const gone = () => {
      clientGone = true;
      ac.abort();
    };
    stream.onAbort(gone);
    c.req.raw.signal.addEventListener("abort", gone, { once: true });
    let lastWrite = Date.now();
    // one chain of writes, so chunks of several prompts never interleave mid-event
    let chain = Promise.resolve();
    const send = (data: string) => {
      lastWrite = Date.now();
      chain = chain.then(() => stream.writeSSE({ data }));
      return chain;
    };
    const top = { id: head.id, object: head.format.chunkObject, created: head.created, model: head.model };
    const chunk = (choice: Record<string, unknown>) => send(JSON.stringify({ ...top, choices: [choice] }));
    const keepAlive = setInterval(() => {
      if (Date.now() - lastWrite >= KEEP_ALIVE_S * 1000) {
        lastWrite = Date.now();
        chain = chain.then(() => stream.write(": keep-alive\n\n")).then(() => {});
      }
    }, 1000);
    const results: (GenerateResult | undefined)[] = new Array(p.prompts.length);
    try {
      await Promise.all(
        p.prompts.map(async (ids, index) => {
          const opening = head.format.opening(index);
          if (opening) void chunk(opening);
          const r = await runSequence(deps, ids, { ...p.opts, sequence: index }, ac.signal, t0, (text, ev) => {
            void chunk(head.format.delta(index, text, ev, null));
          });
          results[index] = r;
          if (!clientGone) await chunk(head.format.delta(index, null, undefined, finishReason(r)));
        }),
      );
      if (clientGone) return; // nobody is listening: no epilogue
      if (p.includeUsage) {
        const t = totals(deps.dec, p.policy, p.prompts, results);
        await send(JSON.stringify({ ...top, choices: [], usage: t.usage, skipdecode: t.skipdecode }));
      }
      await send("[DONE]");
    } catch (e) {
      ac.abort();
      deps.log(`${head.id}: generation failed`, e);
      const failure = deps.dec.engineFailure;
      await send(JSON.stringify((failure ? engineFailed(failure) : new ApiError(500, "internal error during generation")).body));
      await send("[DONE]");
    } finally {
      clearInterval(keepAlive);
      c.req.raw.signal.removeEventListener("abort", gone);
      // the last chunks are written before the request counts as done (a drain waits for it)
      await chain.catch(() => {});
      release();
      accessEntry(c).end(counts(p, results));
    }
  });
}
