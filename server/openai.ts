/**
 * Typed access to the server's extensions from OpenAI-compatible clients.
 *
 * The server takes OpenAI's request fields plus SkipDecode's `speedup` and
 * `skip`, `top_k` and vLLM's `ignore_eos` (server/schema.ts), and answers with
 * OpenAI's shapes plus a `skipdecode` object (layers computed, ideal
 * speedup). The `openai` SDK sends unknown fields as they are, but its types
 * refuse them: {@link withSkip} adds them to a request without a cast, and
 * {@link skipStats} reads the extra response object with its type. Nothing
 * here imports the SDK or zod at run time.
 *
 * @example
 * import OpenAI from "openai";
 * import { skipStats, withSkip } from "skipdecode/server/openai.ts";
 * const client = new OpenAI({ baseURL: "http://localhost:8080/v1", apiKey: "none" });
 * const r = await client.completions.create(withSkip({ model: "brown-opt-12l", prompt: "The jury said", max_tokens: 16 }, { speedup: 2 }));
 * console.log(r.choices[0]!.text, skipStats(r)?.ideal_speedup);
 */
import type { z } from "zod";
import type { SkipSchema } from "./schema.ts";

/** The request fields skipdecode's server takes beyond OpenAI's. */
export interface SkipRequestFields {
  /** Target speedup: the linear decay whose mean budget is numLayers / speedup (excludes `skip`). */
  speedup?: number | null;
  /** An explicit linear policy: `max_layers` at step 0 down to `min_layers` at step `span` (excludes `speedup`). */
  skip?: z.input<typeof SkipSchema> | null;
  /** Top-k sampling; 0 or -1 = off. */
  top_k?: number | null;
  /** Keep generating past the end-of-sequence token (vLLM's field). */
  ignore_eos?: boolean | null;
}

/** The `skipdecode` object of every completion and chat completion response (the last chunk's, when streamed). */
export interface SkipStats {
  /** Layers of the model. */
  num_layers: number;
  /** The budget policy used, described ("linear 9→3 over 16 steps, warm-up 1"). */
  policy: string;
  /** Mean budget of the decode passes that ran. */
  mean_layers: number;
  /** num_layers / mean_layers. */
  ideal_speedup: number;
  /** Layer passes computed over all prompts and generated tokens, and what a full model would have computed. */
  layers_computed: number;
  layers_full: number;
}

/**
 * `params` with skipdecode's fields added, typed as `params` so an OpenAI SDK
 * call accepts it.
 *
 * @example
 * client.chat.completions.create(withSkip({ model: "m", messages: [{ role: "user", content: "Hi" }] }, { speedup: 2, top_k: 40 }));
 */
export function withSkip<P extends object>(params: P, fields: SkipRequestFields): P {
  return { ...params, ...fields };
}

/**
 * The `skipdecode` object of a response (or of a stream's last chunk), or
 * undefined when it has none.
 *
 * @example
 * skipStats(await client.completions.create(withSkip(params, { speedup: 3 })))?.mean_layers;
 */
export function skipStats(response: object): SkipStats | undefined {
  const v = (response as { skipdecode?: unknown }).skipdecode;
  return v !== null && typeof v === "object" ? (v as SkipStats) : undefined;
}
