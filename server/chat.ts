/**
 * `POST /v1/chat/completions`: the messages go through the model's chat
 * template (lib/text/chat.ts), and the rendered prompt runs exactly as a
 * completion does (server/completions.ts: the same checks, admission,
 * batching, streaming and drain), answered in OpenAI's chat shapes —
 * `choices[i].message`, and as SSE `chat.completion.chunk`s whose first delta
 * carries the assistant's role, ending with `[DONE]`. `logprobs: true` (with
 * `top_logprobs`) gives OpenAI's chat logprobs: per token its text, logprob,
 * UTF-8 bytes and the alternatives. A model without a chat template gets a
 * 400 that says so. `max_tokens` / `max_completion_tokens` default to what is
 * left of the context after the prompt (as vLLM does).
 *
 * The template is bounded (lib/text/chat.ts `chatLimits`): too many messages or
 * characters are refused before rendering, the render runs on the tokenizer
 * thread under a time, output and work limit, and the rendered text is
 * checked against the context on a cheap estimate before it is tokenised.
 * Each refusal is a 400 naming its limit (code `chat_too_large` before
 * rendering, `chat_template_limit` during it).
 */
import { type ChatLimits, type ChatMessage, chatLimits, checkChatSize } from "../lib/text/chat.ts";
import type { SkipDecoder, TokenLogprob } from "../lib/index.ts";
import { contextRoom, leastTokens } from "../lib/generation/context.ts";
import type { CompletionDeps } from "./completions.ts";
import type { ResponseFormat } from "./format.ts";
import { overContext } from "./json_body.ts";
import { checkModel, type Prepared, prepare } from "./prepare.ts";
import { ApiError } from "./errors.ts";
import type { ChatCompletionRequest } from "./schema.ts";

/** One entry of OpenAI's chat `logprobs.content`. */
interface ChatTokenLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

function chatLogprobs(dec: SkipDecoder, tokens: number[], lps: TokenLogprob[]): { content: ChatTokenLogprob[] } {
  const entry = (id: number, logprob: number) => {
    const token = dec.detokenize([id], { skipSpecialTokens: false });
    return { token, logprob, bytes: Array.from(new TextEncoder().encode(token)) };
  };
  return {
    content: tokens.map((id, i) => ({ ...entry(id, lps[i]!.logprob), top_logprobs: lps[i]!.top.map((a) => entry(a.token, a.logprob)) })),
  };
}

/**
 * Chat completions: `message` / `delta` choices and chat logprobs.
 *
 * @example
 * complete(c, deps, prepareChat(dec, name, body), ac, t0, chatFormat(dec));
 */
export function chatFormat(dec: SkipDecoder): ResponseFormat {
  return {
    idPrefix: "chatcmpl",
    object: "chat.completion",
    chunkObject: "chat.completion.chunk",
    choice: (index, r, finish) => ({
      index,
      message: { role: "assistant", content: r.text },
      logprobs: r.logprobs ? chatLogprobs(dec, r.tokens, r.logprobs) : null,
      finish_reason: finish,
    }),
    delta: (index, text, ev, finish) =>
      text === null
        ? { index, delta: {}, logprobs: null, finish_reason: finish }
        : { index, delta: { content: text }, logprobs: ev?.logprob ? chatLogprobs(dec, [ev.token], [ev.logprob]) : null, finish_reason: null },
    opening: (index) => ({ index, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }),
  };
}

/**
 * Renders the messages with the model's chat template and checks the rest
 * as {@link prepare} does. Throws ApiError 400 when the model has no template,
 * the template refuses the messages, or the prompt does not fit.
 *
 * @example
 * const p = await prepareChat(deps, { messages: [{ role: "user", content: "Hi" }], max_tokens: 16 });
 */
export async function prepareChat(
  deps: CompletionDeps,
  body: ChatCompletionRequest,
  encode: (text: string) => Promise<number[]> = async (text) => deps.dec.tokenizer!.encode(text, { addBos: false }),
  render: (messages: ChatMessage[], limits: ChatLimits) => Promise<string> = async (messages) => deps.dec.applyChatTemplate(messages),
): Promise<Prepared> {
  const { dec, modelName } = deps;
  checkModel(body.model, modelName);
  if (!dec.tokenizer?.chatTemplate) {
    throw new ApiError(400, "this model has no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja): use /v1/completions", {
      param: "messages",
      code: "no_chat_template",
    });
  }
  const messages = body.messages.map((m) => ({
    role: m.role,
    content: typeof m.content === "string" ? m.content : m.content.map((part) => part.text).join(""),
    ...(m.name != null ? { name: m.name } : {}),
  }));
  const ctxLen = dec.options.maxSeqLen;
  const limits = chatLimits(ctxLen);
  try {
    checkChatSize("", messages, limits);
  } catch (e) {
    throw new ApiError(400, (e as Error).message, { param: "messages", code: "chat_too_large" });
  }
  let text: string;
  try {
    text = await render(messages, limits);
  } catch (e) {
    // the template's refusals and limits are the request's fault (400); anything else is ours
    const err = e as Error;
    const library = err.message.startsWith("SkipDecoder.applyChatTemplate: ");
    if (err.name !== "TemplateLimitError" && err.name !== "TemplateRefusal" && !library) throw err;
    throw new ApiError(400, err.message.replace(/^SkipDecoder\.applyChatTemplate: /, ""), {
      param: "messages",
      ...(err.name === "TemplateLimitError" && { code: "chat_template_limit" }),
    });
  }
  // far over the context: refused without tokenising (as completions do)
  const least = leastTokens(text, dec.tokenizer.maxTokenBytes);
  if (least > ctxLen) throw overContext(ctxLen, "the messages (as the chat template renders them) have", `at least ${least}`, "messages");
  const ids = await encode(text); // the template wrote the BOS: none added; long texts off the event loop
  const left = contextRoom(ids.length, ctxLen);
  const { messages: _m, max_completion_tokens, logprobs, top_logprobs, response_format: _r, ...rest } = body;
  try {
    return await prepare(dec, modelName, {
      ...rest,
      prompt: ids,
      max_tokens: max_completion_tokens ?? body.max_tokens ?? Math.max(1, left),
      logprobs: logprobs ? (top_logprobs ?? 0) : null,
    });
  } catch (e) {
    if (!(e instanceof ApiError) || e.param !== "prompt") throw e;
    // the rendered conversation is what did not fit: say so in the request's terms
    throw new ApiError(e.status, e.message.replace(/the prompt/g, "the messages (as the chat template renders them)"), {
      param: "messages",
      code: e.code,
    });
  }
}
