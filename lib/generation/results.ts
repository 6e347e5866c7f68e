/**
 * What a generation gives back: the result of generate/generateBatch/chat,
 * its stats, and the events stream() yields (docs/api.md, "Results" and
 * "Events"). Types only; the scheduler (scheduler.ts) fills them in.
 */

/** Why a generation ended: EOS or a stop string, maxNewTokens (or the context), or an abort. */
export type FinishReason = "stop" | "length" | "abort";

/** What a generation reports besides its tokens. */
export interface GenerationStats {
  /**
   * numLayers / avgLayers: the speedup of the decode passes that ran if time
   * were proportional to layers (1 when none ran: maxNewTokens 1, or EOS first).
   */
  idealSpeedup: number;
  /** Mean of `budgets`; numLayers when it is empty (the only pass was the full-model prefill). */
  avgLayers: number;
  /** From submission to the first generated token (prompt processing, queueing included). */
  prefillMs: number;
  /** From the first generated token to the last. */
  decodeMs: number;
  /** Generated tokens after the first, per second of decodeMs. */
  tokensPerSecond: number;
  promptTokens: number;
  generatedTokens: number;
  /** The RNG seed used (given or drawn). */
  seed: number;
  /** The budget policy, described. */
  policy: string;
  /**
   * Bytes of KV cache the generation held at its peak (its prompt at every
   * layer, each fed-back token at the layers its budget computed, in whole
   * blocks; docs/kv-cache.md). Its reservation was this much or more. With
   * pipelined steps (the `pipeline` load option), a generation stopped by a
   * stop string or an abort, or by EOS beside other sequences, also fed the
   * tokens the steps already posted feed (up to three), whose samples were
   * dropped: counted here, so this can be a few positions' blocks more than
   * one step at a time would hold. (Steps that feed only EOS tokens are
   * skipped, so alone, EOS costs none.)
   */
  kvBytes: number;
}

/** A token's log-probability under the model (before temperature, top-k, top-p) and the most likely alternatives. */
export interface TokenLogprob {
  /** log p of the token chosen. */
  logprob: number;
  /** The `logprobs` most likely tokens, most likely first (ties: lower id first). */
  top: { token: number; logprob: number }[];
}

/** The result of one generation (docs/DESIGN.md, "The method"). */
export interface GenerateResult {
  text: string;
  /** Generated ids (EOS excluded). */
  tokens: number[];
  /** Prompt ids as fed, BOS included. */
  promptTokens: number[];
  finishReason: FinishReason;
  /** With the `logprobs` option: logprobs[i] belongs to tokens[i]. */
  logprobs?: TokenLogprob[];
  /**
   * budgets[i]: layers generated token i was processed with (policy.layersAt(i)),
   * for the passes that ran: every generated token but the last, whose pass
   * would only predict a token nobody asked for — and the last too when that
   * pass predicted EOS. So `budgets.length` is `tokens.length - 1`, or
   * `tokens.length` after EOS (0 when nothing was generated).
   */
  budgets: number[];
  stats: GenerationStats;
}

/** One generated token, with the text it completed (possibly "", when it ends inside a character or may begin a stop string). */
export interface TokenEvent {
  type: "token";
  token: number;
  text: string;
  /** The token's scheduled budget (policy.layersAt(index)). */
  layers: number;
  /** Index of the token among the generated ones. */
  index: number;
  /** With the `logprobs` option: the token's log-probability and the top alternatives. */
  logprob?: TokenLogprob;
}

/**
 * The last event of every stream: why it ended, and any text held back until
 * then (an unfinished character, a stop string's prefix that never completed).
 * It carries no token, so a loop collecting `ev.token` cannot take it for one:
 * narrow on `ev.type`.
 */
export interface FinalEvent {
  type: "final";
  text: string;
  finishReason: FinishReason;
  /** Number of tokens generated. */
  index: number;
  token?: undefined;
  layers?: undefined;
}

/**
 * What `SkipDecoder.stream` yields: a {@link TokenEvent} per generated token,
 * then one {@link FinalEvent}.
 *
 * @example
 * for await (const ev of dec.stream("Hi", { maxNewTokens: 8 })) {
 *   if (ev.type === "token") ids.push(ev.token);
 *   else console.log(ev.finishReason);
 *   process.stdout.write(ev.text);
 * }
 */
export type StreamEvent = TokenEvent | FinalEvent;
