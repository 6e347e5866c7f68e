/**
 * Chat: the model's Jinja chat template (rendered by @huggingface/jinja),
 * dec.applyChatTemplate, dec.chat and dec.chatStream on tiny Llama 3-,
 * Mistral- and Qwen2-style models, and their errors.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { SkipDecoder } from "../lib/index.ts";
import { cleanupTemp, tinyModel } from "./helpers.ts";

afterAll(cleanupTemp);

const convo = [
  { role: "user", content: "Hello there" },
  { role: "assistant", content: "Hi." },
  { role: "user", content: "Name a colour" },
];

describe("chat", () => {
  test("each family's template renders its own format", async () => {
    using llama = await SkipDecoder.load(tinyModel({ family: "llama", seed: 60, layers: 1 }), { backend: "cpu" });
    expect(llama.applyChatTemplate(convo)).toBe(
      "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|>" +
        "<|start_header_id|>assistant<|end_header_id|>\n\nHi.<|eot_id|>" +
        "<|start_header_id|>user<|end_header_id|>\n\nName a colour<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    );
    using mistral = await SkipDecoder.load(tinyModel({ family: "mistral", seed: 61, layers: 1 }), { backend: "cpu" });
    expect(mistral.applyChatTemplate(convo)).toBe("<s>[INST] Hello there [/INST] Hi.</s>[INST] Name a colour [/INST]");
    using qwen = await SkipDecoder.load(tinyModel({ family: "qwen2", seed: 62, layers: 1 }), { backend: "cpu" });
    expect(qwen.applyChatTemplate(convo, { addGenerationPrompt: false })).toBe(
      "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\nHi.<|im_end|>\n<|im_start|>user\nName a colour<|im_end|>\n",
    );
  });

  test("chat = generate over the rendered prompt, with one BOS; chatStream streams the same text", async () => {
    for (const family of ["llama", "mistral", "qwen2"] as const) {
      using dec = await SkipDecoder.load(tinyModel({ family, seed: 63, layers: 2 }), { backend: "cpu" });
      const opts = { maxNewTokens: 10, ignoreEos: true, speedup: 2 };
      const r = await dec.chat(convo, opts);
      const ids = dec.tokenizer!.encode(dec.applyChatTemplate(convo), { addBos: false });
      expect(r.promptTokens).toEqual(ids);
      const bos = dec.tokenizer!.bosId;
      if (bos !== null) expect(r.promptTokens.filter((i) => i === bos).length).toBe(1);
      expect((await dec.generate(ids, opts)).tokens).toEqual(r.tokens);
      let text = "";
      const it = dec.chatStream(convo, opts);
      for (;;) {
        const n = await it.next();
        if (n.done) {
          expect(n.value.tokens).toEqual(r.tokens);
          break;
        }
        text += n.value.text;
      }
      expect(text).toBe(r.text);
    }
  });

  test("errors: no template, bad messages, a template that refuses", async () => {
    using opt = await SkipDecoder.load(tinyModel({ seed: 64, layers: 1 }), { backend: "cpu" });
    await expect(opt.chat(convo)).rejects.toThrow(/SkipDecoder\.chat: the model has no chat template/);
    using dec = await SkipDecoder.load(tinyModel({ family: "mistral", seed: 65, layers: 1 }), { backend: "cpu" });
    expect(() => dec.applyChatTemplate([])).toThrow(/messages must be a non-empty array/);
    expect(() => dec.applyChatTemplate([{ role: "user" } as never])).toThrow(/messages\[0\]\.content must be a string, got null/);
    expect(() => dec.applyChatTemplate(convo, { addGenerationPromt: true } as never)).toThrow(/addGenerationPromt/);
    expect(() => dec.applyChatTemplate([{ role: "system", content: "x" }])).toThrow(
      /the chat template refused these messages: Only user and assistant roles are supported!/,
    );
  });
});
