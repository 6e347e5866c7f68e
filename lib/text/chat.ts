/**
 * Chat: messages rendered with the model's own Jinja chat template
 * (`chat_template.jinja` or tokenizer_config.json's `chat_template`) through
 * @huggingface/jinja — the implementation transformers.js uses — then
 * generated like any prompt. The template is given what transformers gives
 * it: `messages`, `add_generation_prompt`, `bos_token`, `eos_token`; it adds
 * the BOS itself where the model wants one, so the rendered text is
 * tokenized without adding another (as `apply_chat_template` does).
 *
 * A template is a file from the model folder fed by request messages, so it
 * is bounded (lib/text/bounded_template.ts): one that does not parse is refused
 * when the tokenizer loads, with the parser's own error, and every render
 * runs under {@link chatLimits}:
 * - before rendering, at most `maxMessages` messages (half the context: any
 *   template spends at least two tokens a message; never more than 4096)
 *   holding at most `maxChars` characters;
 * - rendering takes at most 1 s (`timeMs`), writes at most `maxChars`
 *   characters — 8 × the context in tokens, at least 64 Ki, so a prompt that
 *   could fit the context always fits — and builds at most 64 × that in
 *   intermediate values.
 * Exceeding one is an Error naming the limit (the server answers 400).
 *
 * Where it renders: the library's `applyChatTemplate` / `chat` render on the
 * caller's thread, synchronously, under these limits — at most about a
 * second of the caller's time. The server renders on its tokenizer thread
 * (lib/text/tokenizer_client.ts), which a watchdog ends and restarts if a render
 * outlives the time limit by a second, so its event loop never waits on a
 * template.
 */
import { BoundedTemplate, type TemplateLimits } from "./bounded_template.ts";

/** One chat message; extra string fields (such as `name`) reach the template too. */
export interface ChatMessage {
  role: string;
  content: string;
  [key: string]: string;
}

/** Options of applyChatTemplate. */
export interface ChatTemplateOptions {
  /** End with the header of an assistant turn, so the model writes the reply (default true). */
  addGenerationPrompt?: boolean;
}

/** What one chat may carry and cost (module comment). */
export interface ChatLimits extends TemplateLimits {
  /** Most messages. */
  maxMessages: number;
}

/** Time one render may take, ms. */
export const CHAT_TIME_MS = 1000;
/** Most messages in any chat, whatever the context. */
export const MAX_CHAT_MESSAGES = 4096;

/**
 * The limits of a chat on a model with a context of `maxSeqLen` tokens.
 *
 * @example
 * chatLimits(2048); // { timeMs: 1000, maxChars: 65536, maxMessages: 1024, maxCharsWhy: "…" }
 */
export function chatLimits(maxSeqLen: number): ChatLimits {
  const maxChars = Math.max(1 << 16, 8 * maxSeqLen);
  return {
    timeMs: CHAT_TIME_MS,
    maxChars,
    maxCharsWhy: `8 × the context of ${maxSeqLen} tokens, at least 65536`,
    maxMessages: Math.min(MAX_CHAT_MESSAGES, Math.max(16, Math.floor(maxSeqLen / 2))),
  };
}

/** Validates a message list; errors name the index and field. */
export function checkMessages(where: string, messages: unknown): ChatMessage[] {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new Error(`${where}: messages must be a non-empty array of { role, content }`);
  }
  return messages.map((m, i) => {
    if (typeof m !== "object" || m === null || Array.isArray(m)) throw new Error(`${where}: messages[${i}] must be an object`);
    const o = m as Record<string, unknown>;
    for (const key of ["role", "content"]) {
      if (typeof o[key] !== "string") throw new Error(`${where}: messages[${i}].${key} must be a string, got ${JSON.stringify(o[key] ?? null)}`);
    }
    for (const [k, v] of Object.entries(o)) {
      if (typeof v !== "string") throw new Error(`${where}: messages[${i}].${k} must be a string, got ${JSON.stringify(v)}`);
    }
    return o as ChatMessage;
  });
}

/**
 * Throws when a conversation is over {@link chatLimits}' message count or
 * size, before anything renders it; counts every string field's characters.
 */
export function checkChatSize(where: string, messages: readonly Record<string, unknown>[], limits: ChatLimits): void {
  const at = where ? `${where}: ` : "";
  if (messages.length > limits.maxMessages) {
    throw new Error(`${at}${messages.length} messages; at most ${limits.maxMessages} are accepted (half the context, at most ${MAX_CHAT_MESSAGES})`);
  }
  let chars = 0;
  for (const m of messages) for (const v of Object.values(m)) if (typeof v === "string") chars += v.length;
  if (chars > limits.maxChars) {
    throw new Error(`${at}the messages hold ${chars} characters; at most ${limits.maxChars} are accepted (${limits.maxCharsWhy ?? "the chat output limit"})`);
  }
}

/** A parsed chat template. */
export class ChatTemplate {
  readonly #template: BoundedTemplate;

  /** Parses `source`; a syntax error (or a source over 256 KiB) is reported with `where`. */
  constructor(source: string, where: string) {
    try {
      this.#template = new BoundedTemplate(source);
    } catch (e) {
      throw new Error(`${where}: the model's chat_template does not parse: ${(e as Error).message}`);
    }
  }

  /**
   * The prompt text for `messages`, rendered under `limits` (a limit error
   * keeps its class, TemplateLimitError, and names the limit). Errors start
   * with `where: ` (nothing when `where` is "").
   *
   * @example
   * new ChatTemplate("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}", "x")
   *   .render([{ role: "user", content: "Hi" }], { bosToken: "<s>", eosToken: "</s>" }, "x", chatLimits(2048)); // "user: Hi\n"
   */
  render(
    messages: ChatMessage[],
    o: { bosToken: string; eosToken: string; addGenerationPrompt?: boolean },
    where: string,
    limits: TemplateLimits,
  ): string {
    try {
      return this.#template.render(
        {
          messages,
          add_generation_prompt: o.addGenerationPrompt ?? true,
          bos_token: o.bosToken,
          eos_token: o.eosToken,
        },
        limits,
      );
    } catch (e) {
      const err = e as Error;
      const at = where ? `${where}: ` : "";
      if (err.name === "TemplateLimitError") {
        err.message = `${at}${err.message}`;
        throw err;
      }
      throw new Error(`${at}the chat template refused these messages: ${err.message}`);
    }
  }
}
