/**
 * The request bodies of `POST /v1/completions` and `/v1/chat/completions`, as zod schemas: OpenAI's
 * fields (the ones vLLM and llama.cpp's server take), SkipDecode's `speedup`
 * and `skip`, and vLLM's `ignore_eos`. Unknown fields are refused as OpenAI
 * refuses them (400, `Unrecognized request argument supplied: max_token`), so
 * a misspelt option never silently does nothing; {@link IGNORED_FIELDS} lists
 * the OpenAI fields accepted and ignored. Fields of features we don't have
 * (`n`, `best_of`, `echo`, `suffix`, penalties, `logit_bias`) are accepted
 * only at their neutral values, so a client relying on them gets a 400 rather
 * than a silently different answer. Limits that depend on the loaded model
 * (context, vocabulary, layers) are checked by the handler.
 *
 * Sampling fields reach the engine as float32, and the library
 * (lib/generation/generate.ts `samplingParams`) applies its one rule to values float32
 * cannot carry, so no request can hand the native step a row it refuses (which
 * would fail its batch-mates) or one it samples wrongly: a `temperature` in
 * (0, 2^-126) — its reciprocal overflows float32 — and a `top_p` that rounds
 * to 0 in float32 (below ~7e-46) both mean greedy, the limit they stand for;
 * `top_k` must be an integer (400 otherwise) and at most the vocabulary size.
 */
import { z } from "zod";
import { MAX_TOP_LOGPROBS } from "../lib/engine/abi.ts";

/**
 * OpenAI fields that are accepted and have no effect here: `user` (an
 * end-user id for abuse monitoring; nothing is monitored here).
 */
export const IGNORED_FIELDS = ["user"] as const;

/** Most prompts one request may carry (the queue limit usually bites first). */
export const MAX_PROMPTS = 256;
/** Most stop strings (OpenAI's limit). */
export const MAX_STOPS = 4;

const int = (name: string, min: number, max = Number.MAX_SAFE_INTEGER) =>
  z.int({ error: (iss) => (iss.input === undefined ? `${name} is required` : `${name} must be an integer`) }).min(min, `${name} must be at least ${min}`).max(max, `${name} must be at most ${max}`);

const stopString = z.string().min(1, "stop strings must not be empty");

/**
 * A list of token ids, checked in one loop: a body may carry hundreds of
 * thousands, and zod's per-element parse cost ~0.5 µs each on the event
 * loop. `notList` is the message for anything but a list (`undefined`: the
 * field is missing).
 */
const ids = (notList: (input: unknown) => string, min = 0) =>
  z.custom<number[]>().check((ctx) => {
    const v = ctx.value as unknown;
    const issue = (message: string, at?: number): void =>
      void ctx.issues.push({ code: "custom", message, input: at === undefined ? v : (v as unknown[])[at], ...(at !== undefined && { path: [at] }) });
    if (!Array.isArray(v)) return issue(notList(v));
    if (v.length < min) return issue("a prompt of token ids must not be empty");
    for (let i = 0; i < v.length; i++) {
      const t = v[i];
      if (typeof t !== "number" || !Number.isInteger(t)) return issue("token ids must be integers", i);
      if (t < 0) return issue("token ids must be >= 0", i);
    }
  });
const tokenIds = ids(() => "a prompt of token ids must be a list", 1);

/** SkipDecode's explicit linear policy: `max_layers` at step 0 down to `min_layers` at step `span`. */
export const SkipSchema = z.strictObject({
  min_layers: int("skip.min_layers", 1),
  max_layers: int("skip.max_layers", 1),
  /** Steps over which the budget decays (default: max_tokens). */
  span: int("skip.span", 1, 1e9).optional(),
  /** Bottom layers every token computes (default 1). */
  warmup_layers: int("skip.warmup_layers", 0).optional(),
});

/**
 * `POST /v1/completions` request body.
 *
 * @example
 * CompletionSchema.parse({ prompt: "Hello", max_tokens: 8, speedup: 2 });
 */
/** Fields that completions and chat completions share (sampling, SkipDecode, streaming, refusals). */
const SHARED = {
  model: z.string().nullish(),
  max_tokens: int("max_tokens", 1, 1 << 24).nullish(),
  temperature: z.number().min(0, "temperature must be in [0, 2]").max(2, "temperature must be in [0, 2]").nullish(),
  top_p: z.number().gt(0, "top_p must be in (0, 1]").max(1, "top_p must be in (0, 1]").nullish(),
  /** 0 or -1 = off (OpenAI has no top_k; vLLM uses -1, llama.cpp 0). */
  top_k: int("top_k", -1).nullish(),
  seed: int("seed", 0).nullish(),
  stop: z
    .union([stopString, z.array(stopString).max(MAX_STOPS)], { error: `stop must be a non-empty string or an array of at most ${MAX_STOPS} of them` })
    .nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.strictObject({ include_usage: z.boolean().nullish() }).nullish(),
  speedup: z.number().min(1, "speedup must be at least 1").nullish(),
  skip: SkipSchema.nullish(),
  ignore_eos: z.boolean().nullish(),
  user: z.string().nullish(),
  n: z.literal(1, "n: only 1 completion per prompt is supported").nullish(),
  presence_penalty: z.literal(0, "presence_penalty is not supported (must be 0)").nullish(),
  frequency_penalty: z.literal(0, "frequency_penalty is not supported (must be 0)").nullish(),
  logit_bias: z.record(z.string(), z.never({ error: "logit_bias is not supported" })).nullish(),
};

/** The cross-field rules both endpoints share. */
function sharedChecks(ctx: z.core.ParsePayload<{ speedup?: number | null; skip?: unknown; stream?: boolean | null; stream_options?: unknown }>): void {
  const v = ctx.value;
  if (v.speedup != null && v.skip != null) {
    ctx.issues.push({ code: "custom", message: "speedup and skip exclude each other: give one", path: ["skip"], input: v.skip });
  }
  if (v.stream_options != null && v.stream !== true) {
    ctx.issues.push({ code: "custom", message: "stream_options is only allowed with stream: true", path: ["stream_options"], input: v.stream_options });
  }
}

export const CompletionSchema = z
  .strictObject({
    ...SHARED,
    prompt: z.union([z.string(), z.array(z.string()).min(1).max(MAX_PROMPTS), tokenIds, z.array(tokenIds).min(1).max(MAX_PROMPTS)], {
      error: (iss) =>
        iss.input === undefined
          ? "prompt is required"
          : `prompt must be a string, an array of 1..${MAX_PROMPTS} strings, an array of token ids or an array of such arrays`,
    }),
    best_of: z.literal(1, "best_of: only 1 is supported").nullish(),
    echo: z.literal(false, "echo is not supported").nullish(),
    /** Alternatives per token besides the chosen one's logprob (OpenAI allows up to 5, vLLM 20). */
    logprobs: int("logprobs", 0, MAX_TOP_LOGPROBS).nullish(),
    suffix: z.null({ error: "suffix is not supported" }).optional(),
  })
  .check(sharedChecks);

/** One chat message: `content` a string or OpenAI's list of text parts. */
const ChatMessageSchema = z.strictObject({
  role: z.string({ error: "each message needs a role (a string)" }).min(1, "a message's role must not be empty"),
  content: z.union(
    [z.string(), z.array(z.strictObject({ type: z.literal("text", "only text content parts are supported"), text: z.string() })).min(1)],
    { error: "a message's content must be a string or a list of { type: \"text\", text } parts" },
  ),
  name: z.string().nullish(),
});

/**
 * `POST /v1/chat/completions` request body: OpenAI's chat fields (messages
 * rendered with the model's chat template), and the same sampling and
 * SkipDecode fields as completions. `max_completion_tokens` is OpenAI's newer
 * name for `max_tokens`; `logprobs: true` with `top_logprobs` asks for
 * OpenAI's chat logprobs.
 *
 * @example
 * ChatCompletionSchema.parse({ messages: [{ role: "user", content: "Hi" }], max_tokens: 8 });
 */
export const ChatCompletionSchema = z
  .strictObject({
    ...SHARED,
    messages: z.array(ChatMessageSchema, { error: "messages must be an array of { role, content }" }).min(1, "messages must not be empty"),
    max_completion_tokens: int("max_completion_tokens", 1, 1 << 24).nullish(),
    logprobs: z.boolean().nullish(),
    top_logprobs: int("top_logprobs", 0, MAX_TOP_LOGPROBS).nullish(),
    response_format: z.strictObject({ type: z.literal("text", "response_format: only { type: \"text\" } is supported") }).nullish(),
  })
  .check(sharedChecks)
  .check((ctx) => {
    const v = ctx.value;
    if (v.max_tokens != null && v.max_completion_tokens != null) {
      ctx.issues.push({ code: "custom", message: "give max_tokens or max_completion_tokens, not both", path: ["max_completion_tokens"], input: v.max_completion_tokens });
    }
    if (v.top_logprobs != null && v.logprobs !== true) {
      ctx.issues.push({ code: "custom", message: "top_logprobs needs logprobs: true", path: ["top_logprobs"], input: v.top_logprobs });
    }
  });

/** A validated chat completion request. */
export type ChatCompletionRequest = z.infer<typeof ChatCompletionSchema>;

/**
 * `POST /tokenize`, in vLLM's shape (`prompt`, `add_special_tokens`) or
 * llama.cpp's (`content`, `add_special`). Special tokens (OPT's BOS) are
 * added unless turned off.
 *
 * @example
 * TokenizeSchema.parse({ prompt: "Hello", add_special_tokens: false });
 */
export const TokenizeSchema = z
  .strictObject({
    model: z.string().nullish(),
    prompt: z.string({ error: "prompt must be a string" }).optional(),
    content: z.string({ error: "content must be a string" }).optional(),
    add_special_tokens: z.boolean().nullish(),
    add_special: z.boolean().nullish(),
  })
  .check((ctx) => {
    const v = ctx.value;
    if ((v.prompt === undefined) === (v.content === undefined)) {
      ctx.issues.push({ code: "custom", message: "give the text as prompt (vLLM) or content (llama.cpp), one of them", path: ["prompt"], input: v.prompt });
    }
    if (v.add_special_tokens != null && v.add_special != null) {
      ctx.issues.push({ code: "custom", message: "give add_special_tokens or add_special, not both", path: ["add_special"], input: v.add_special });
    }
  });

/**
 * `POST /detokenize`: `{"tokens": [...]}` (vLLM's and llama.cpp's shape).
 *
 * @example
 * DetokenizeSchema.parse({ tokens: [2, 31414] });
 */
export const DetokenizeSchema = z.strictObject({
  model: z.string().nullish(),
  tokens: ids((input) => (input === undefined ? "tokens is required" : "tokens must be an array of token ids")),
});

/** A validated completion request. */
export type CompletionRequest = z.infer<typeof CompletionSchema>;

/**
 * The first issue of a failed parse as `{ message, param }`: `param` is the
 * field path (`skip.min_layers`, `prompt[1]`), null for the body itself.
 *
 * @example
 * const r = CompletionSchema.safeParse(body);
 * if (!r.success) firstIssue(r.error); // { message: "max_tokens must be at least 1", param: "max_tokens" }
 */
export function firstIssue(error: { issues: readonly z.core.$ZodIssue[] }): { message: string; param: string | null } {
  const iss = error.issues[0];
  if (!iss) return { message: "invalid request body", param: null };
  let param = "";
  for (const p of iss.path) param += typeof p === "number" ? `[${p}]` : param ? `.${String(p)}` : String(p);
  if (iss.code === "unrecognized_keys") {
    // OpenAI's wording; nested keys are named by their path
    const keys = iss.keys.map((k) => (param ? `${param}.${k}` : k));
    return { message: `Unrecognized request argument${keys.length > 1 ? "s" : ""} supplied: ${keys.join(", ")}`, param: param || null };
  }
  const message = iss.code === "invalid_type" && iss.path.length === 0 ? "the request body must be a JSON object" : iss.message;
  // zod's own messages ("Invalid input: …", "Unrecognized key: …") don't name the field; ours do
  const builtin = /^[A-Z]/.test(message);
  return { message: param && builtin ? `${param}: ${message}` : message, param: param || null };
}
