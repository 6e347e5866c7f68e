/**
 * `POST /v1/chat/completions` on a tiny Llama 3-style model: JSON and SSE in
 * OpenAI's chat shapes, chat logprobs, and the errors (no template, a template
 * that refuses, strict fields, context).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { SkipDecoder } from "../lib/index.ts";
import { createApp, type SkipApp } from "../server/app.ts";
import { copyFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cleanupTemp, tempDir, tinyModel } from "./helpers.ts";

let dec: SkipDecoder;
let srv: SkipApp;
let opt: SkipDecoder;
let optSrv: SkipApp;

beforeAll(async () => {
  dec = await SkipDecoder.load(tinyModel({ family: "llama", seed: 80, layers: 2 }), { backend: "cpu", maxBatch: 2, threads: 1, maxSeqLen: 128 });
  srv = createApp(dec, { modelName: "tiny-llama", log: () => {} });
  opt = await SkipDecoder.load(tinyModel({ seed: 81, layers: 1 }), { backend: "cpu", maxBatch: 1, threads: 1 });
  optSrv = createApp(opt, { modelName: "tiny-opt", log: () => {} });
});

afterAll(() => {
  srv.close();
  optSrv.close();
  dec.close();
  opt.close();
  cleanupTemp();
});

type Json = Record<string, any>;
const messages = [
  { role: "system", content: "Be brief." },
  { role: "user", content: "Hello there" },
];

function chat(app: SkipApp["app"], body: unknown): Promise<Response> {
  return Promise.resolve(
    app.request("/v1/chat/completions", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) }),
  );
}

describe("POST /v1/chat/completions", () => {
  test("JSON: the assistant's message, as dec.chat writes it", async () => {
    const res = await chat(srv.app, { messages, max_tokens: 8, temperature: 0, ignore_eos: true, speedup: 2 });
    expect(res.status).toBe(200);
    const j = (await res.json()) as Json;
    expect(j.object).toBe("chat.completion");
    expect(j.id).toMatch(/^chatcmpl-/);
    const want = await dec.chat(messages, { maxNewTokens: 8, ignoreEos: true, speedup: 2 });
    expect(j.choices).toEqual([{ index: 0, message: { role: "assistant", content: want.text }, logprobs: null, finish_reason: "length" }]);
    expect(j.usage.prompt_tokens).toBe(want.promptTokens.length);
    expect(j.usage.completion_tokens).toBe(8);
    expect(j.skipdecode.ideal_speedup).toBeGreaterThan(1);
  });

  test("SSE: a role delta first, content deltas, the finish, [DONE]; the same text as JSON", async () => {
    const body = { messages, max_tokens: 8, temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true } };
    const res = await chat(srv.app, body);
    expect(res.headers.get("Content-Type")).toMatch(/text\/event-stream/);
    const events = (await res.text()).split("\n\n").filter((e) => e.startsWith("data: ")).map((e) => e.slice(6));
    expect(events.at(-1)).toBe("[DONE]");
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as Json);
    for (const c of chunks) expect(c.object).toBe("chat.completion.chunk");
    expect(chunks[0]!.choices[0].delta).toEqual({ role: "assistant", content: "" });
    const usage = chunks.at(-1)!;
    expect(usage.choices).toEqual([]);
    expect(usage.usage.completion_tokens).toBe(8);
    const finish = chunks.at(-2)!.choices[0];
    expect([finish.delta, finish.finish_reason]).toEqual([{}, "length"]);
    const text = chunks.slice(1, -2).map((c) => c.choices[0].delta.content as string).join("");
    const whole = (await (await chat(srv.app, { ...body, stream: false, stream_options: undefined })).json()) as Json;
    expect(text).toBe(whole.choices[0].message.content);
  });

  test("logprobs: true with top_logprobs: OpenAI's chat logprobs, per token", async () => {
    const j = (await (await chat(srv.app, { messages, max_tokens: 4, temperature: 0, ignore_eos: true, logprobs: true, top_logprobs: 2 })).json()) as Json;
    const content = j.choices[0].logprobs.content as Json[];
    expect(content.length).toBe(4);
    for (const t of content) {
      expect(t.logprob).toBeLessThanOrEqual(0);
      expect(t.bytes).toEqual(Array.from(new TextEncoder().encode(t.token)));
      expect(t.top_logprobs.length).toBe(2);
      expect(t.top_logprobs[0].logprob).toBeGreaterThanOrEqual(t.top_logprobs[1].logprob);
    }
    expect(content.map((t) => t.token).join("")).toBe(j.choices[0].message.content);
  });

  test("errors in OpenAI's shape", async () => {
    const cases: [SkipApp, unknown, number, RegExp, string | null][] = [
      [optSrv, { messages }, 400, /this model has no chat template/, "messages"],
      [srv, { messages, max_token: 2 }, 400, /Unrecognized request argument supplied: max_token/, null],
      [srv, { messages: [] }, 400, /messages must not be empty/, "messages"],
      [srv, { messages: [{ role: "user" }] }, 400, /content must be a string or a list/, "messages[0].content"],
      [srv, { messages, max_tokens: 2, max_completion_tokens: 2 }, 400, /max_tokens or max_completion_tokens, not both/, "max_completion_tokens"],
      [srv, { messages, top_logprobs: 2 }, 400, /top_logprobs needs logprobs: true/, "top_logprobs"],
      [srv, { messages, max_tokens: 120 }, 400, /maximum context length is 128 tokens/, "max_tokens"],
      [srv, { messages: [{ role: "user", content: "x ".repeat(200) }] }, 400, /the messages \(as the chat template renders them\) has/, "messages"],
      [srv, { messages, model: "other" }, 404, /The model `other` does not exist/, "model"],
    ];
    for (const [app, body, status, msg, param] of cases) {
      const res = await chat(app.app, body);
      const j = (await res.json()) as Json;
      expect({ status: res.status, message: j.error?.message }).toEqual({ status, message: expect.stringMatching(msg) });
      expect(j.error.param).toBe(param);
    }
    const get = await srv.app.request("/v1/chat/completions");
    expect(get.status).toBe(405);
  });
});

describe("chat limits", () => {
  test("too many messages, parts or characters: a 400 naming the limit, before anything renders", async () => {
    const many = Array.from({ length: 65 }, () => ({ role: "user", content: "x" }));
    const parts = [{ role: "user", content: Array.from({ length: 300 }, () => ({ type: "text", text: "x" })) }];
    const big = [{ role: "user", content: "x".repeat(70_000) }];
    for (const [body, re] of [
      [{ messages: many }, /^65 messages; at most 64 messages \(and 256 content parts\) are accepted$/],
      [{ messages: parts }, /^300 content parts; at most 64 messages/],
      [{ messages: big }, /^the messages hold 70004 characters; at most 65536 are accepted \(8 × the context of 128 tokens, at least 65536\)$/],
    ] as const) {
      const res = await chat(srv.app, body);
      expect(res.status).toBe(400);
      const e = ((await res.json()) as Json).error;
      expect(e.message).toMatch(re);
      expect([e.param, e.code]).toEqual(["messages", "chat_too_large"]);
    }
  });

  test("a template that runs away or refuses: a 400 naming the limit or the refusal; the server goes on serving", async () => {
    const dir = tempDir("skd-evil-chat-");
    const src = tinyModel({ family: "llama", seed: 80, layers: 2 });
    for (const f of readdirSync(src)) copyFileSync(join(src, f), join(dir, f));
    writeFileSync(join(dir, "chat_template.jinja"), "{% if messages[0].content == 'boom' %}{{ range(50000000)|join(',') }}{% endif %}{% if messages[0].content == 'no' %}{{ raise_exception('No, never.') }}{% endif %}{{ messages[0].content }}");
    using evil = await SkipDecoder.load(dir, { backend: "cpu", maxBatch: 1, threads: 1, maxSeqLen: 128 });
    const app = createApp(evil, { modelName: "evil", log: () => {} });
    try {
      const res = await chat(app.app, { messages: [{ role: "user", content: "boom" }], max_tokens: 2 });
      expect(res.status).toBe(400);
      const e = ((await res.json()) as Json).error;
      expect(e.message).toMatch(/the chat template built more than \d+ characters .* \(the work limit, 64 × the output limit\)/);
      expect([e.param, e.code]).toEqual(["messages", "chat_template_limit"]);
      const no = await chat(app.app, { messages: [{ role: "user", content: "no" }], max_tokens: 2 });
      expect(no.status).toBe(400);
      expect(((await no.json()) as Json).error).toMatchObject({ message: "the chat template refused these messages: No, never.", param: "messages", code: null });
      const ok = await chat(app.app, { messages: [{ role: "user", content: "hello" }], max_tokens: 2, ignore_eos: true });
      expect(ok.status).toBe(200);
      expect(((await ok.json()) as Json).usage.completion_tokens).toBe(2);
    } finally {
      app.close();
    }
  });
});
