/**
 * Request preparation: a validated completions body checked against the
 * loaded model — its name, the context, the vocabulary, the layers — and
 * turned into token ids and library options. Every limit that depends on the
 * model is checked here, before anything is queued, so bad input is a 400 and
 * never a 500. Chat completions (chat.ts) render their messages and then come
 * through the same {@link prepare}.
 */
import type { GenerateOptions, SkipDecoder } from "../lib/index.ts";
import { SkipPolicy } from "../lib/index.ts";
import { type ContextProblem, fitContext, leastTokens } from "../lib/generation/context.ts";
import { ApiError } from "./errors.ts";
import { overContext } from "./json_body.ts";
import type { CompletionRequest } from "./schema.ts";

/** OpenAI's default `max_tokens` for completions. */
export const DEFAULT_MAX_TOKENS = 16;

/** OpenAI's words (as vLLM gives them) for a request that breaks the context rule (lib/generation/context.ts). */
function contextError(p: ContextProblem, context: number, prompt: string, param: string): ApiError {
  const max = `This model's maximum context length is ${context} tokens`;
  const code = "context_length_exceeded";
  if (p.kind === "prompt") return overContext(context, `${prompt} has`, `${p.atLeast ? "at least " : ""}${p.promptTokens}`, param);
  if (p.kind === "full") return new ApiError(400, `${max}, and ${prompt}'s ${p.promptTokens} tokens leave no room for a completion.`, { param, code });
  return new ApiError(
    400,
    `${max}. However, you requested ${p.promptTokens + p.maxNewTokens} tokens (${p.promptTokens} in ${prompt}, ${p.maxNewTokens} for the completion). ` +
      `Please reduce the prompt or max_tokens (max_tokens <= ${p.room} here).`,
    { param: "max_tokens", code },
  );
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
  // prompts: text (tokenised once, BOS added) or token ids (fed as given)
  const raw = body.prompt;
  const list: (string | number[])[] =
    typeof raw === "string" ? [raw] : typeof raw[0] === "number" ? [raw as number[]] : (raw as (string | number[])[]);
  const which = (i: number) => (list.length > 1 ? `prompt ${i}` : "the prompt");
  const prompts = await Promise.all(list.map(async (p, i) => {
    const param = list.length > 1 ? `prompt[${i}]` : "prompt";
    if (typeof p === "string") {
      if (!dec.tokenizer) throw new ApiError(400, "this model has no tokenizer: send prompts as token ids", { param });
      // far over the context: refused without tokenising (a 3 MB prompt would hold the event loop for a second)
      const least = leastTokens(p, dec.tokenizer.maxTokenBytes);
      if (least > ctxLen) throw contextError({ kind: "prompt", promptTokens: least, atLeast: true }, ctxLen, which(i), param);
      return encode(p); // long texts off the event loop
    }
    const bad = p.findIndex((t) => t >= V);
    if (bad >= 0) throw new ApiError(400, `token id ${p[bad]} is outside the vocabulary (0..${V - 1})`, { param });
    return p;
  }));
  // the context rule (lib/generation/context.ts): a given max_tokens must fit after every prompt; the default is capped to what fits
  let maxTokens = Infinity;
  prompts.forEach((ids, i) => {
    const fit = fitContext(ids.length, DEFAULT_MAX_TOKENS, body.max_tokens ?? undefined, ctxLen);
    if (!fit.ok) throw contextError(fit.problem, ctxLen, which(i), list.length > 1 ? `prompt[${i}]` : "prompt");
    maxTokens = Math.min(maxTokens, fit.maxNewTokens);
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
