/**
 * Chat: messages rendered with the model's own Jinja chat template
 * (`chat_template.jinja` or tokenizer_config.json's `chat_template`) through
 * @huggingface/jinja — the implementation transformers.js uses — then
 * generated like any prompt. The template is given what transformers gives
 * it: `messages`, `add_generation_prompt`, `bos_token`, `eos_token`; it adds
 * the BOS itself where the model wants one, so the rendered text is
 * tokenized without adding another (as `apply_chat_template` does).
 */
import { Template } from "@huggingface/jinja";
import type { SkipTokenizer } from "./checkpoint/tokenizer.ts";

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

/** A parsed chat template. */
export class ChatTemplate {
  readonly #template: Template;

  /** Parses `source`; a syntax error is reported with `where`. */
  constructor(source: string, where: string) {
    try {
      this.#template = new Template(source);
    } catch (e) {
      throw new Error(`${where}: the model's chat_template does not parse: ${(e as Error).message}`);
    }
  }

  /**
   * The prompt text for `messages`.
   *
   * @example
   * new ChatTemplate("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}", "x")
   *   .render([{ role: "user", content: "Hi" }], { bosToken: "<s>", eosToken: "</s>" }); // "user: Hi\n"
   */
  render(messages: ChatMessage[], o: { bosToken: string; eosToken: string; addGenerationPrompt?: boolean }, where = "chat"): string {
    try {
      return this.#template.render({
        messages,
        add_generation_prompt: o.addGenerationPrompt ?? true,
        bos_token: o.bosToken,
        eos_token: o.eosToken,
      });
    } catch (e) {
      throw new Error(`${where}: the chat template refused these messages: ${(e as Error).message}`);
    }
  }

  /**
   * {@link render} with the BOS and EOS token strings of `tok`, as the
   * model's own prompts are made (SkipDecoder.applyChatTemplate, and the
   * trainer's chat data in train/tokenize.ts).
   *
   * @example
   * template.renderFor(tok, [{ role: "user", content: "Hi" }], true, "chat");
   */
  renderFor(tok: SkipTokenizer, messages: ChatMessage[], addGenerationPrompt: boolean, where: string): string {
    const token = (id: number | null) => (id === null ? "" : (tok.idToToken(id) ?? ""));
    return this.render(messages, { bosToken: token(tok.bosId), eosToken: token(tok.eosId), addGenerationPrompt }, where);
  }
}
