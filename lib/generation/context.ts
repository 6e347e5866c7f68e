/**
 * The context rule, decided in one place for the library (generate.ts) and
 * the server (server/prepare.ts), which only phrase it differently.
 *
 * A sequence's prompt plus the tokens it may generate must fit in the context
 * (`maxSeqLen`): promptTokens + maxNewTokens <= context, the rule vLLM and
 * OpenAI apply to `max_tokens`. So:
 *
 * - a prompt longer than the context is refused — a text so long that it
 *   cannot fit whatever its tokens (at least ⌈bytes ÷ the longest token's
 *   bytes⌉ of them) before it is tokenised at all, since megabytes take
 *   seconds to tokenise;
 * - a maxNewTokens (max_tokens) that was given and does not fit after the
 *   prompt is refused, naming the largest that fits;
 * - when none was given, the default is capped to what fits (a prompt that
 *   fills the whole context leaves no room and is refused);
 * - the library's `stopAtContext: true` asks instead for generation to stop
 *   when the context is full, with finishReason "length" — never silently.
 */

/** Fewest tokens `text` can be: every token spells at most `maxTokenBytes` UTF-8 bytes. */
export function leastTokens(text: string, maxTokenBytes: number): number {
  return Math.ceil(Buffer.byteLength(text) / Math.max(1, maxTokenBytes));
}

/** New tokens that fit after a prompt of `promptTokens` in a context of `context` (0 when none). */
export function contextRoom(promptTokens: number, context: number): number {
  return Math.max(0, context - promptTokens);
}

/** What breaks the rule, for the caller to phrase; null when the request fits. */
export type ContextProblem =
  /** The prompt alone is longer than the context (`atLeast`: counted from its bytes, before tokenising). */
  | { kind: "prompt"; promptTokens: number; atLeast: boolean }
  /** The prompt fills the context: no new token fits. */
  | { kind: "full"; promptTokens: number }
  /** A given maxNewTokens does not fit after the prompt; `room` does. */
  | { kind: "total"; promptTokens: number; maxNewTokens: number; room: number };

/**
 * Checks a request against the context: `maxNewTokens` as given (undefined:
 * the caller's default, capped to what fits). Returns the number of new
 * tokens to run with, or the problem.
 *
 * @example
 * fitContext(100, 64, undefined, 128); // { ok: true, maxNewTokens: 28 }  (the default 64, capped)
 * fitContext(100, 64, 50, 128);        // { ok: false, problem: { kind: "total", promptTokens: 100, maxNewTokens: 50, room: 28 } }
 */
export function fitContext(
  promptTokens: number,
  defaultNewTokens: number,
  given: number | undefined,
  context: number,
  stopAtContext = false,
): { ok: true; maxNewTokens: number } | { ok: false; problem: ContextProblem } {
  if (promptTokens > context) return { ok: false, problem: { kind: "prompt", promptTokens, atLeast: false } };
  const room = contextRoom(promptTokens, context);
  if (room === 0) return { ok: false, problem: { kind: "full", promptTokens } };
  if (given === undefined) return { ok: true, maxNewTokens: Math.min(defaultNewTokens, room) };
  if (given > room && !stopAtContext) return { ok: false, problem: { kind: "total", promptTokens, maxNewTokens: given, room } };
  return { ok: true, maxNewTokens: given };
}
