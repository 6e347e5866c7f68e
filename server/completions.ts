/**
 * `POST /v1/completions` (and chat completions, chat.ts): a prepared request
 * (prepare.ts) becomes one generation per prompt on the shared decoder, whose
 * scheduler batches them continuously with everything else in flight, and is
 * answered as one JSON object or as SSE chunks (format.ts) while admission
 * (admission.ts) counts it.
 */
import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import type { GenerateOptions, GenerateResult, SkipDecoder, TokenEvent } from "../lib/index.ts";
import { accessEntry } from "./access.ts";
import { type Admission, closing, engineFailed } from "./admission.ts";
import { ApiError } from "./errors.ts";
import { completionFormat, finishReason, type ResponseFormat, totals } from "./format.ts";
import type { ServerMetrics } from "./observe.ts";
import type { Prepared } from "./prepare.ts";

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
  const run: Run = { c, deps, p, ac, t0, head, release };
  return p.stream ? streamed(run) : whole(run);
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

/** One request being answered: its context, the app's parts, the prepared request, its abort controller, start time, head and admission release. */
interface Run {
  c: Context;
  deps: CompletionDeps;
  p: Prepared;
  ac: AbortController;
  t0: number;
  head: Head;
  release: () => void;
}

async function whole({ c, deps, p, ac, t0, head, release }: Run): Promise<Response> {
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

function streamed({ c, deps, p, ac, t0, head, release }: Run): Response {
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
