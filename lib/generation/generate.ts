/**
 * Generation options: their defaults (one place) and their validation into
 * what the scheduler runs.
 *
 * Sampling parameters are checked in the units the engine reads them, float32
 * (skipdecode.h, `SKD_PARAM_*`; the native rules live in cuda/common/plan.h),
 * so a sequence the native step would refuse never joins a batch that others
 * share. Values float32 cannot carry follow one rule, the limit they stand for:
 *
 * - `temperature` whose float32 value is below 2^-126 (the smallest normal
 *   float32; it includes values that round to 0) samples greedily, as
 *   temperature 0 does: its reciprocal would overflow float32, and sampling
 *   as T → 0 is the argmax. (vLLM likewise treats temperatures below 1e-5 as
 *   greedy.) The engine refuses such a temperature rather than sampling from
 *   1/T = ∞.
 * - `topP` whose float32 value is 0 (below ~7e-46) keeps only the most likely
 *   token, which is greedy: every positive float32 top_p that small keeps
 *   exactly that one token.
 * - `topK` is an integer in 0..vocabSize (0 = no cut), so it always fits the
 *   engine's int32.
 *
 * Everything else out of range throws.
 */
import { randomBytes } from "node:crypto";
import type { ModelSpec } from "../checkpoint/spec.ts";
import type { SkipTokenizer } from "../checkpoint/tokenizer.ts";
import { MAX_TOP_LOGPROBS } from "../engine/abi.ts";
import { boolOpt, checkIds, checkKeys, intOpt, numOpt, show } from "../options.ts";
import { type ContextProblem, fitContext, leastTokens } from "./context.ts";
import { SkipPolicy } from "./policy.ts";
import type { StreamEvent } from "./results.ts";
import type { SequenceSpec } from "./scheduler.ts";

/** Options of generate, generateBatch and stream; defaults in {@link GENERATE_DEFAULTS}. */
export interface GenerateOptions {
  /**
   * Most tokens to generate. The prompt plus these must fit in the context
   * (maxSeqLen): one given that does not fit throws, naming what fits (as the
   * server answers 400); absent, the default is capped to what fits
   * (context.ts).
   */
  maxNewTokens?: number;
  /**
   * Instead of throwing when the prompt plus `maxNewTokens` exceed the
   * context, generate until the context is full and end with finishReason
   * "length" (default false).
   */
  stopAtContext?: boolean;
  /** Budget schedule; its numLayers must be the model's. Excludes `speedup`. */
  policy?: SkipPolicy;
  /** Target speedup: SkipPolicy.forSpeedup(speedup, { span: maxNewTokens }). Excludes `policy`. */
  speedup?: number;
  /** Warm-up layers for `speedup` (a policy carries its own). */
  warmupLayers?: number;
  /** 0 = greedy. */
  temperature?: number;
  /** 0 = no top-k cut. */
  topK?: number;
  /** 1 = no nucleus cut. */
  topP?: number;
  /** RNG seed (integer 0..2^53-1); drawn at random when absent and reported in stats. */
  seed?: number;
  /** Generation ends before the first occurrence of any of these. */
  stop?: string | string[];
  /** Keep generating past the end-of-sequence token (benchmarks). */
  ignoreEos?: boolean;
  /** Aborting ends the generation within one step, finishReason "abort". */
  signal?: AbortSignal;
  /** RNG sequence index (default 0): the same prompt, seed and sequence draw the same tokens. */
  sequence?: number;
  /**
   * Report each generated token's log-probability and the `logprobs` most
   * likely alternatives (0..20), computed in the native step from the model's
   * distribution before temperature, top-k and top-p. Absent: none.
   */
  logprobs?: number;
}

/** Defaults of {@link GenerateOptions}: greedy, full model, 64 tokens. */
export const GENERATE_DEFAULTS = {
  maxNewTokens: 64,
  temperature: 0,
  topK: 0,
  topP: 1,
  ignoreEos: false,
  stopAtContext: false,
} as const;

const KEYS = ["maxNewTokens", "stopAtContext", "policy", "speedup", "warmupLayers", "temperature", "topK", "topP", "seed", "stop", "ignoreEos", "signal", "sequence", "logprobs"];

/**
 * The smallest positive temperature the engine samples with: 2^-126, the
 * smallest normal float32 (below it 1/temperature overflows float32).
 */
export const MIN_TEMPERATURE = 2 ** -126;

/**
 * Temperature, top-k and top-p as the engine will read them (float32), by
 * the module comment's rules: a temperature under {@link MIN_TEMPERATURE} or
 * a top-p that rounds to 0 means greedy (temperature 0, top-p 1).
 *
 * @example
 * samplingParams("generate", { temperature: 1e-40 }, 50272); // { temperature: 0, topK: 0, topP: 1 }
 */
export function samplingParams(
  where: string,
  o: Pick<GenerateOptions, "temperature" | "topK" | "topP">,
  vocabSize: number,
): { temperature: number; topK: number; topP: number } {
  const t = Math.fround(numOpt(where, "temperature", o.temperature, 0, 100, GENERATE_DEFAULTS.temperature));
  const topK = intOpt(where, "topK", o.topK, 0, vocabSize, GENERATE_DEFAULTS.topK);
  const topP = Math.fround(numOpt(where, "topP", o.topP, 0, 1, GENERATE_DEFAULTS.topP, true));
  if (t < MIN_TEMPERATURE || topP === 0) return { temperature: 0, topK, topP: 1 };
  return { temperature: t, topK, topP };
}

/** A prompt: text (tokenised with BOS) or token ids (fed as given). */
export type Prompt = string | number[];

/** The library's words for a request that breaks the context rule (context.ts). */
function contextError(where: string, p: ContextProblem, context: number): Error {
  const ctx = `the context of ${context} (maxSeqLen)`;
  if (p.kind === "prompt") return new Error(`${where}: the prompt has ${p.atLeast ? "at least " : ""}${p.promptTokens} tokens, more than ${ctx}`);
  if (p.kind === "full") return new Error(`${where}: the prompt's ${p.promptTokens} tokens fill ${ctx}: no new token fits`);
  return new Error(
    `${where}: the prompt's ${p.promptTokens} tokens and maxNewTokens ${p.maxNewTokens} exceed ${ctx}: at most ${p.room} new tokens fit ` +
      `(lower maxNewTokens, or pass stopAtContext: true to stop when the context is full)`,
  );
}

/** Validates options and a prompt into a scheduler spec. */
export function sequenceSpec(
  where: string,
  prompt: Prompt,
  opts: GenerateOptions | undefined,
  ctx: { spec: ModelSpec; tokenizer: SkipTokenizer | null; maxSeqLen: number; seqOffset: number; onEvent?: (ev: StreamEvent) => void },
): SequenceSpec {
  const o = checkKeys(where, opts, KEYS);
  const L = ctx.spec.numLayers;
  let ids: number[];
  if (typeof prompt === "string") {
    if (!ctx.tokenizer) throw new Error(`${where}: this model folder has no tokenizer; pass the prompt as token ids`);
    // a text far over the context is refused before tokenising it (megabytes take seconds)
    const least = leastTokens(prompt, ctx.tokenizer.maxTokenBytes);
    if (least > ctx.maxSeqLen) throw contextError(where, { kind: "prompt", promptTokens: least, atLeast: true }, ctx.maxSeqLen);
    ids = ctx.tokenizer.encode(prompt, { addBos: true });
  } else {
    ids = checkIds(where, "prompt", prompt, ctx.spec.vocabSize);
  }
  if (ids.length === 0) throw new Error(`${where}: the prompt is empty`);
  const given = o.maxNewTokens === undefined ? undefined : intOpt(where, "maxNewTokens", o.maxNewTokens, 1, 1 << 24);
  const stopAtContext = boolOpt(where, "stopAtContext", o.stopAtContext, GENERATE_DEFAULTS.stopAtContext);
  const fit = fitContext(ids.length, GENERATE_DEFAULTS.maxNewTokens, given, ctx.maxSeqLen, stopAtContext);
  if (!fit.ok) throw contextError(where, fit.problem, ctx.maxSeqLen);
  const maxNewTokens = fit.maxNewTokens;
  let policy: SkipPolicy;
  if (o.policy !== undefined && o.speedup !== undefined) throw new Error(`${where}: give policy or speedup, not both`);
  if (o.policy !== undefined) {
    if (!(o.policy instanceof SkipPolicy)) throw new Error(`${where}: policy must be a SkipPolicy (SkipPolicy.linear(...) etc.)`);
    if (o.policy.numLayers !== L) throw new Error(`${where}: the policy is for ${o.policy.numLayers} layers, the model has ${L}`);
    if (o.warmupLayers !== undefined && o.warmupLayers !== o.policy.warmupLayers) {
      throw new Error(`${where}: warmupLayers ${o.warmupLayers} differs from the policy's ${o.policy.warmupLayers}`);
    }
    policy = o.policy;
  } else {
    const w = intOpt(where, "warmupLayers", o.warmupLayers, 0, L, Math.min(1, L));
    if (o.speedup === undefined) policy = SkipPolicy.full(L, { warmupLayers: w });
    else {
      if (typeof o.speedup !== "number") throw new Error(`${where}: speedup must be a number, got ${show(o.speedup)}`);
      policy = SkipPolicy.forSpeedup(o.speedup, { numLayers: L, span: maxNewTokens, warmupLayers: w });
    }
  }
  let stop: string[] = [];
  if (o.stop !== undefined) {
    stop = typeof o.stop === "string" ? [o.stop] : o.stop;
    if (!Array.isArray(stop) || stop.some((s) => typeof s !== "string" || s === "")) {
      throw new Error(`${where}: stop must be a non-empty string or an array of them`);
    }
    if (stop.length && !ctx.tokenizer) throw new Error(`${where}: stop strings need a tokenizer, and this model folder has none`);
  }
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw new Error(`${where}: signal must be an AbortSignal`);
  if (o.ignoreEos !== undefined && typeof o.ignoreEos !== "boolean") throw new Error(`${where}: ignoreEos must be true or false`);
  const seed =
    o.seed === undefined ? Number(randomBytes(6).readUIntLE(0, 6)) : intOpt(where, "seed", o.seed, 0, Number.MAX_SAFE_INTEGER);
  return {
    prompt: ids,
    maxNewTokens,
    policy,
    ...samplingParams(where, o, ctx.spec.vocabSize),
    seed,
    seq: intOpt(where, "sequence", o.sequence, 0, 2 ** 31 - 1 - ctx.seqOffset, 0) + ctx.seqOffset,
    stop,
    eosIds: o.ignoreEos ? [] : ctx.spec.eosTokenIds,
    logprobs: o.logprobs === undefined ? null : intOpt(where, "logprobs", o.logprobs, 0, MAX_TOP_LOGPROBS),
    signal: o.signal,
    onEvent: ctx.onEvent,
  };
}
