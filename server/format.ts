/**
 * Response formatting: how a finished or streaming generation becomes
 * OpenAI's JSON — the choice and chunk shapes of text completions
 * ({@link completionFormat}; chat.ts has the chat ones), the logprobs object,
 * finish reasons, and the usage and `skipdecode` totals over all choices.
 */
import type { GenerateResult, SkipDecoder, TokenEvent, TokenLogprob } from "../lib/index.ts";
import type { SkipPolicy } from "../lib/index.ts";
import type { SkipStats } from "./openai.ts";

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
  skipdecode: SkipStats;
}

/** usage and the skipdecode object over all choices. */
export function totals(dec: SkipDecoder, policy: SkipPolicy, prompts: number[][], results: (GenerateResult | undefined)[]): Totals {
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
export const finishReason = (r: GenerateResult): ApiFinish => (r.finishReason === "length" ? "length" : r.finishReason === "abort" ? "abort" : "stop");
