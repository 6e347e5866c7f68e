/**
 * The tokenizer thread: a Worker holding a second copy of a model folder's
 * tokenizer, so work whose cost a request controls runs without holding the
 * caller's event loop: encoding long texts (tokenising runs at ~2 MB/s),
 * decoding long id lists, and rendering chat templates under their limits
 * (lib/text/chat.ts). Used by lib/text/tokenizer_client.ts, which ends and restarts the
 * thread if a render outlives its time limit.
 */
import { parentPort, workerData } from "node:worker_threads";
import type { TemplateLimits } from "./bounded_template.ts";
import { type ChatMessage, ChatTemplate } from "./chat.ts";
import { SkipTokenizer } from "../checkpoint/tokenizer.ts";

/** A request: encode `text` (BOS first when `bos`), decode `ids`, or render a chat. */
export type TokenizeRequest =
  | { id: number; op: "encode"; text: string; bos: boolean }
  | { id: number; op: "encodeJson"; text: string; bos: boolean }
  | { id: number; op: "decode"; ids: Int32Array; skipSpecialTokens: boolean; json: boolean }
  | {
      id: number;
      op: "chat";
      messages: ChatMessage[];
      tokens: { bosToken: string; eosToken: string };
      addGenerationPrompt: boolean;
      limits: TemplateLimits;
    };

/**
 * A reply: ids, text, or the error's message — with the limit when a render
 * hit one, and `template: true` when the template refused the messages.
 */
export type TokenizeReply =
  | { id: number; ids: number[] }
  | { id: number; json: string; count: number }
  | { id: number; text: string }
  | { id: number; error: string; limit?: string; template?: boolean };

const port = parentPort!;
let tok: SkipTokenizer | null = null;
let template: ChatTemplate | null = null;
let loadError = "";
try {
  const { dir, bos } = workerData as { dir: string; bos: "always" | "config" };
  tok = await SkipTokenizer.load(dir, { bos }); // the family's BOS rule, as the caller's copy
  if (tok.chatTemplate !== null) template = new ChatTemplate(tok.chatTemplate, "");
} catch (e) {
  loadError = (e as Error).message;
}

function answer(q: TokenizeRequest): TokenizeReply {
  if (!tok) return { id: q.id, error: loadError };
  switch (q.op) {
    case "encode":
      return { id: q.id, ids: tok.encode(q.text, { addBos: q.bos }) };
    case "encodeJson": {
      const ids = tok.encode(q.text, { addBos: q.bos });
      return { id: q.id, json: JSON.stringify(ids), count: ids.length };
    }
    case "decode": {
      const text = tok.decode(Array.from(q.ids), { skipSpecialTokens: q.skipSpecialTokens });
      return { id: q.id, text: q.json ? JSON.stringify(text) : text };
    }
    case "chat":
      if (!template) return { id: q.id, error: "the model has no chat template" };
      return { id: q.id, text: template.render(q.messages, { ...q.tokens, addGenerationPrompt: q.addGenerationPrompt }, "", q.limits) };
  }
}

port.on("message", (q: TokenizeRequest) => {
  try {
    port.postMessage(answer(q) satisfies TokenizeReply);
  } catch (e) {
    const err = e as Error;
    const limit = err.name === "TemplateLimitError" ? (err as Error & { limit: string }).limit : undefined;
    port.postMessage({ id: q.id, error: err.message, ...(limit ? { limit } : q.op === "chat" && tok && { template: true }) } satisfies TokenizeReply);
  }
});
