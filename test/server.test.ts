/**
 * The HTTP server: OpenAI-style completions (JSON and SSE), models, health,
 * metrics; continuous batching gives the same tokens as running alone;
 * bad input is a 4xx with an OpenAI error body, never a 500; a full queue is
 * a 429; a client that disconnects frees its slot.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { SkipDecoder, SkipPolicy } from "../lib/index.ts";
import { createApp, type SkipApp } from "../server/app.ts";
import { serve } from "../server/main.ts";
import { IGNORED_FIELDS } from "../server/schema.ts";
import { cleanupTemp, tinyModel, timerProbe } from "./helpers.ts";

const MODEL = { seed: 5, layers: 4, hidden: 64, heads: 4 } as const;
/** Long context, small width: generations long enough to abort mid-way. */
const LONG = { seed: 6, layers: 4, hidden: 64, heads: 4, maxPositions: 2048 } as const;
const quiet = () => {};

let dec: SkipDecoder;
let srv: SkipApp;

beforeAll(async () => {
  dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu", maxBatch: 4, threads: 1 });
  srv = createApp(dec, { modelName: "tiny", maxQueue: 32, log: quiet });
});

afterAll(() => {
  srv.close();
  dec.close();
  cleanupTemp();
});

type Json = Record<string, any>;

async function json(r: Response | Promise<Response>): Promise<Json> {
  return (await (await r).json()) as Json;
}

function post(app: SkipApp["app"], body: unknown, init: RequestInit = {}): Promise<Response> {
  return Promise.resolve(
    app.request("/v1/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: typeof body === "string" ? body : JSON.stringify(body),
      ...init,
    }),
  );
}

/** The `data:` payloads of an SSE body. */
async function sse(res: Response): Promise<string[]> {
  const text = await res.text();
  return text
    .split("\n\n")
    .filter((e) => e.startsWith("data: "))
    .map((e) => e.slice(6));
}

/** Text per choice index, finish reasons and the usage chunk of a streamed completion. */
function collect(events: string[]): { texts: string[]; finish: string[]; usage: Json | null; done: boolean } {
  const texts: string[] = [];
  const finish: string[] = [];
  let usage: Json | null = null;
  for (const e of events.filter((x) => x !== "[DONE]")) {
    const j = JSON.parse(e);
    expect(j.object).toBe("text_completion");
    if (j.choices.length === 0) usage = j;
    for (const ch of j.choices) {
      texts[ch.index] = (texts[ch.index] ?? "") + ch.text;
      if (ch.finish_reason) finish[ch.index] = ch.finish_reason;
    }
  }
  return { texts, finish, usage, done: events.at(-1) === "[DONE]" };
}

async function waitFor(cond: () => boolean, what: string, ms = 8000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}

/** Value of one sample line in a Prometheus text. */
function sample(text: string, name: string): number {
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  if (!line) throw new Error(`no sample ${name}`);
  return Number(line.slice(name.length + 1));
}

describe("server: endpoints", () => {
  test("health, models, unknown routes", async () => {
    const h = await srv.app.request("/health");
    expect(h.status).toBe(200);
    expect((await json(h)).status).toBe("ok");
    const m = await json(srv.app.request("/v1/models"));
    expect(m).toMatchObject({ object: "list", data: [{ id: "tiny", object: "model", owned_by: "skipdecode", max_model_len: 256 }] });
    expect((await srv.app.request("/v1/models/tiny")).status).toBe(200);
    const other = await srv.app.request("/v1/models/gpt-4");
    expect(other.status).toBe(404);
    expect((await json(other)).error.code).toBe("model_not_found");
    const nf = await srv.app.request("/v2/nothing");
    expect(nf.status).toBe(404);
    expect((await json(nf)).error.type).toBe("not_found_error");
    expect((await srv.app.request("/v1/completions")).status).toBe(405);
  });

  test("a completion carries usage and the skipdecode object, and matches the library", async () => {
    const body = { model: "tiny", prompt: "The quick brown fox", max_tokens: 12, speedup: 2, temperature: 0, ignore_eos: true };
    const res = await post(srv.app, body);
    expect(res.status).toBe(200);
    const j = await json(res);
    expect(j.id).toMatch(/^cmpl-/);
    expect(j).toMatchObject({ object: "text_completion", model: "tiny", choices: [{ index: 0, logprobs: null, finish_reason: "length" }] });
    const ids = dec.tokenizer!.encode(body.prompt);
    const lib = await dec.generate(ids, { maxNewTokens: 12, speedup: 2, ignoreEos: true });
    expect(j.choices[0].text).toBe(lib.text);
    expect(j.usage).toEqual({ prompt_tokens: ids.length, completion_tokens: 12, total_tokens: ids.length + 12 });
    expect(j.skipdecode.num_layers).toBe(4);
    expect(j.skipdecode.mean_layers).toBeCloseTo(lib.stats.avgLayers, 9);
    expect(j.skipdecode.ideal_speedup).toBeCloseTo(lib.stats.idealSpeedup, 9);
    expect(j.skipdecode.policy).toBe(lib.stats.policy);
    // a missing model field means the loaded one; skip maps to a linear policy
    const k = await json(post(srv.app, { prompt: "Hi", max_tokens: 8, skip: { min_layers: 1, max_layers: 3, span: 4 }, ignore_eos: true }));
    expect(k.skipdecode.policy).toBe("linear 3→1 over 4 steps, warm-up 1");
    const policy = SkipPolicy.linear({ numLayers: 4, maxLayers: 3, minLayers: 1, span: 4, warmupLayers: 1 });
    // 8 tokens, 7 decode passes (the 8th token's pass never runs)
    expect(k.skipdecode.layers_computed).toBe([0, 1, 2, 3, 4, 5, 6].reduce((a, i) => a + policy.layersAt(i), 0));
    expect(k.skipdecode.layers_full).toBe(7 * 4);
  });

  test("streaming: OpenAI chunks, one final chunk per choice, usage, [DONE]; several prompts keep their index", async () => {
    const prompts = ["Hello there", "a", "Numbers: 1, 2, 3"];
    const base = { max_tokens: 10, temperature: 0.9, seed: 11, ignore_eos: true, speedup: 1.5 };
    const whole = await json(post(srv.app, { ...base, prompt: prompts }));
    const res = await post(srv.app, { ...base, prompt: prompts, stream: true, stream_options: { include_usage: true } });
    expect(res.headers.get("content-type")).toContain("text/event-stream");
    const got = collect(await sse(res));
    expect(got.done).toBe(true);
    expect(got.texts).toEqual(whole.choices.map((c: Json) => c.text));
    expect(got.finish).toEqual(["length", "length", "length"]);
    expect(got.usage!.usage).toEqual(whole.usage);
    expect(got.usage!.skipdecode).toEqual(whole.skipdecode);
    // without include_usage there is no usage chunk
    const plain = collect(await sse(await post(srv.app, { ...base, prompt: "x", stream: true })));
    expect(plain.usage).toBeNull();
    expect(plain.done).toBe(true);
    // stop strings end the text before them
    const full = whole.choices[0].text as string;
    const at = Array.from({ length: full.length - 2 }, (_, k) => k).find((k) => k >= 2 && full.indexOf(full.slice(k, k + 2)) === k);
    expect(at).toBeDefined();
    const stop = full.slice(at!, at! + 2);
    for (const stream of [false, true]) {
      const res = await post(srv.app, { ...base, prompt: prompts[0], stop: ["never-there", stop], stream });
      const text = stream ? collect(await sse(res)).texts[0] : (await json(res)).choices[0].text;
      expect(text).toBe(full.slice(0, at));
    }
  });
});

describe("server: continuous batching", () => {
  test("16 concurrent requests (seeded and greedy, streamed and not) give what each gives alone", async () => {
    const texts = ["Hello world, this is", "The quick brown fox", "a", "Numbers: 1, 2, 3, 4, 5, 6, 7, 8, 9", "Once upon", "zz top"];
    const reqs = Array.from({ length: 16 }, (_, i) => ({
      prompt: texts[i % texts.length]! + " ".repeat(i % 3),
      max_tokens: 6 + ((i * 5) % 17),
      temperature: i % 2 ? 0.8 : 0,
      top_p: i % 4 === 1 ? 0.9 : 1,
      top_k: i % 4 === 3 ? 20 : 0,
      ...(i % 2 ? { seed: 1000 + i } : {}),
      ...(i % 3 === 0 ? { speedup: 2 } : i % 3 === 1 ? { skip: { min_layers: 1, max_layers: 3 } } : {}),
      ignore_eos: i % 5 !== 0,
      stream: i % 4 >= 2,
    }));
    const run = async (r: (typeof reqs)[number]) => {
      const res = await post(srv.app, r);
      expect(res.status).toBe(200);
      if (r.stream) {
        const c = collect(await sse(res));
        return { text: c.texts[0], finish: c.finish[0] };
      }
      const j = await json(res);
      return { text: j.choices[0].text, finish: j.choices[0].finish_reason };
    };
    const alone: { text: string; finish: string }[] = [];
    for (const r of reqs) alone.push(await run(r));
    let maxRunning = 0;
    let maxWaiting = 0;
    const watch = setInterval(() => {
      maxRunning = Math.max(maxRunning, dec.load.running);
      maxWaiting = Math.max(maxWaiting, dec.load.waiting);
    }, 0);
    const together = await Promise.all(reqs.map(run));
    clearInterval(watch);
    expect(together).toEqual(alone);
    expect(maxRunning).toBeGreaterThan(1); // they did share steps
    expect(dec.load).toEqual({ running: 0, waiting: 0 });
  }, 60000);
});

describe("server: logprobs", () => {
  test("completions carry OpenAI's logprobs object, equal to the library's, streamed or not", async () => {
    const body = { prompt: "Hello", max_tokens: 6, ignore_eos: true, temperature: 0, logprobs: 2 };
    const lib = await dec.generate("Hello", { maxNewTokens: 6, ignoreEos: true, temperature: 0, logprobs: 2 });
    const j = await json(post(srv.app, body));
    const lp = j.choices[0].logprobs;
    const texts = lib.tokens.map((t) => dec.detokenize([t], { skipSpecialTokens: false }));
    expect(lp.tokens).toEqual(texts);
    expect(lp.token_logprobs).toEqual(lib.logprobs!.map((l) => l.logprob));
    expect(lp.top_logprobs.length).toBe(6);
    lp.top_logprobs.forEach((top: Record<string, number>, i: number) => {
      const want = lib.logprobs![i]!.top;
      // two alternatives, keyed by their text (unless two decode to the same text)
      expect(Object.keys(top).length).toBe(new Set(want.map((a) => dec.detokenize([a.token], { skipSpecialTokens: false }))).size);
      for (const a of want) expect(top[dec.detokenize([a.token], { skipSpecialTokens: false })]).toBeDefined();
    });
    let off = 0;
    expect(lp.text_offset).toEqual(texts.map((t) => ((off += t.length), off - t.length)));
    // streamed: one chunk per token, each with its own logprobs; the final chunk has none
    const events = await sse(await post(srv.app, { ...body, stream: true }));
    const chunks = events.filter((e) => e !== "[DONE]").map((e) => JSON.parse(e));
    const withLp = chunks.filter((c) => c.choices[0]?.logprobs);
    expect(withLp.length).toBe(6);
    expect(withLp.flatMap((c) => c.choices[0].logprobs.token_logprobs)).toEqual(lp.token_logprobs);
    expect(withLp.flatMap((c) => c.choices[0].logprobs.text_offset)).toEqual(lp.text_offset);
    expect(chunks.at(-1).choices[0].finish_reason).toBe("length");
    expect(chunks.at(-1).choices[0].logprobs).toBeNull();
    // without the field: null, as before
    expect((await json(post(srv.app, { prompt: "Hello", max_tokens: 2 }))).choices[0].logprobs).toBeNull();
  });
});

describe("server: tokenize and detokenize", () => {
  function postTo(path: string, body: unknown): Promise<Response> {
    return Promise.resolve(srv.app.request(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) }));
  }

  test("vLLM's and llama.cpp's shapes agree with the library", async () => {
    const text = "The quick brown fox";
    const want = dec.tokenize(text);
    const v = await json(postTo("/tokenize", { prompt: text }));
    expect(v).toEqual({ tokens: want, count: want.length, max_model_len: 256 });
    const l = await json(postTo("/tokenize", { content: text, add_special: false }));
    expect(l.tokens).toEqual(dec.tokenize(text, { bos: false }));
    expect((await json(postTo("/tokenize", { prompt: text, add_special_tokens: false, model: "tiny" }))).tokens).toEqual(l.tokens);
    // no context limit: counting is what it is for
    const long = "word ".repeat(400);
    expect((await json(postTo("/tokenize", { prompt: long }))).count).toBeGreaterThan(256);
    const d = await json(postTo("/detokenize", { tokens: want }));
    expect(d).toEqual({ prompt: text, content: text });
  });

  test("long texts are tokenised on their own thread: same ids, and timers keep firing meanwhile", async () => {
    const text = "The quick brown fox jumps over the lazy dog, again and again. ".repeat(16000); // ~1 MB
    const want = dec.tokenize(text);
    const probe = timerProbe();
    const t0 = performance.now();
    const j = await json(postTo("/tokenize", { prompt: text }));
    const ms = performance.now() - t0;
    const { ticks, worst } = probe.stop();
    expect(j.tokens).toEqual(want);
    // encoding ~1 MB takes hundreds of ms; on this thread no timer could fire during it
    expect(ticks).toBeGreaterThanOrEqual(Math.min(5, Math.floor(ms / 20)));
    expect(worst).toBeLessThan(Math.max(ms / 2, 60));
  });

  test("bad tokenizer requests are 4xx in OpenAI's error shape", async () => {
    const cases: [string, unknown, number, RegExp][] = [
      ["/tokenize", {}, 400, /prompt \(vLLM\) or content \(llama\.cpp\)/],
      ["/tokenize", { prompt: "a", content: "b" }, 400, /one of them/],
      ["/tokenize", { prompt: 5 }, 400, /prompt must be a string/],
      ["/tokenize", { prompt: "a", add_special: true, add_special_tokens: true }, 400, /not both/],
      ["/tokenize", { prompt: "a", with_piece: true }, 400, /^Unrecognized request argument supplied: with_piece$/],
      ["/tokenize", { prompt: "a", model: "gpt-4" }, 404, /does not exist/],
      ["/detokenize", {}, 400, /tokens is required/],
      ["/detokenize", { tokens: [1, -1] }, 400, /must be >= 0/],
      ["/detokenize", { tokens: [2, 99999] }, 400, /tokens\[1\] = 99999 is outside the vocabulary/],
    ];
    for (const [path, body, status, re] of cases) {
      const res = await postTo(path, body);
      expect(res.status).toBe(status);
      expect((await json(res)).error.message).toMatch(re);
    }
    expect((await srv.app.request("/tokenize")).status).toBe(405);
  });
});

describe("server: access log", () => {
  test("one line per request: method, path, status, prompt+completion tokens, ms; a stream's when it ends", async () => {
    const lines: string[] = [];
    const app = createApp(dec, { modelName: "tiny", log: quiet, accessLog: (l) => lines.push(l) });
    await (await app.app.request("/health")).text();
    const n = dec.tokenize("Hello").length;
    await json(post(app.app, { prompt: "Hello", max_tokens: 4, ignore_eos: true, temperature: 0 }));
    const res = await post(app.app, { prompt: "Hello", max_tokens: 3, ignore_eos: true, stream: true });
    const before = lines.length;
    await res.text();
    await post(app.app, { prompt: "Hello", max_token: 3 });
    const ts = String.raw`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z`;
    expect(lines[0]).toMatch(new RegExp(`^${ts} GET /health 200 - [\\d.]+ ms$`));
    expect(lines[1]).toMatch(new RegExp(`^${ts} POST /v1/completions 200 ${n}\\+4 tokens [\\d.]+ ms$`));
    expect(before).toBe(2); // the stream's line waits for its end
    expect(lines[2]).toMatch(new RegExp(`^${ts} POST /v1/completions 200 ${n}\\+3 tokens [\\d.]+ ms$`));
    expect(lines[3]).toMatch(new RegExp(`^${ts} POST /v1/completions 400 - [\\d.]+ ms$`));
    expect(lines.length).toBe(4);
    app.close();
  });
});

describe("server: bad input", () => {
  const cases: [string, unknown, number, string | null, RegExp?][] = [
    ["malformed JSON", '{"prompt": "x",', 400, null, /Malformed JSON/],
    ["a JSON array", "[1, 2]", 400, null, /JSON object/],
    ["null body", "null", 400, null],
    ["missing prompt", { max_tokens: 4 }, 400, "prompt", /required/],
    ["prompt of the wrong type", { prompt: 42 }, 400, "prompt"],
    ["empty prompt array", { prompt: [] }, 400, "prompt"],
    ["max_tokens negative", { prompt: "x", max_tokens: -5 }, 400, "max_tokens"],
    ["max_tokens fractional", { prompt: "x", max_tokens: 2.5 }, 400, "max_tokens"],
    ["max_tokens absurd", { prompt: "x", max_tokens: 1e15 }, 400, "max_tokens"],
    ["max_tokens as a string", { prompt: "x", max_tokens: "8" }, 400, "max_tokens"],
    ["temperature negative", { prompt: "x", temperature: -1 }, 400, "temperature"],
    ["temperature absurd", { prompt: "x", temperature: 1e9 }, 400, "temperature"],
    ["top_p zero", { prompt: "x", top_p: 0 }, 400, "top_p"],
    ["top_k above the vocabulary", { prompt: "x", top_k: 100000 }, 400, "top_k"],
    ["seed negative", { prompt: "x", seed: -1 }, 400, "seed"],
    ["stop empty", { prompt: "x", stop: "" }, 400, "stop"],
    ["too many stops", { prompt: "x", stop: ["a", "b", "c", "d", "e"] }, 400, "stop"],
    ["speedup below 1", { prompt: "x", speedup: 0.5 }, 400, "speedup"],
    ["speedup beyond the model", { prompt: "x", speedup: 50 }, 400, "speedup", /speedup must be a number in \[1, 4\]/],
    ["speedup and skip", { prompt: "x", speedup: 2, skip: { min_layers: 1, max_layers: 2 } }, 400, "skip"],
    ["skip min > max", { prompt: "x", skip: { min_layers: 3, max_layers: 2 } }, 400, "skip", /min_layers \(3\) must not exceed max_layers \(2\)/],
    ["skip above the layers", { prompt: "x", skip: { min_layers: 1, max_layers: 9 } }, 400, "skip", /max_layers/],
    ["skip unknown key", { prompt: "x", skip: { min_layers: 1, max_layers: 2, foo: 1 } }, 400, "skip", /^Unrecognized request argument supplied: skip\.foo$/],
    ["a misspelt field", { prompt: "x", max_token: 2 }, 400, null, /^Unrecognized request argument supplied: max_token$/],
    ["two unknown fields", { prompt: "x", max_token: 2, temprature: 0 }, 400, null, /^Unrecognized request arguments supplied: max_token, temprature$/],
    ["stream_options unknown key", { prompt: "x", stream: true, stream_options: { include_usgae: true } }, 400, "stream_options", /stream_options\.include_usgae/],
    ["n > 1", { prompt: "x", n: 3 }, 400, "n"],
    ["logprobs above 20", { prompt: "x", logprobs: 21 }, 400, "logprobs", /logprobs must be at most 20/],
    ["echo", { prompt: "x", echo: true }, 400, "echo", /echo is not supported/],
    ["stream_options without stream", { prompt: "x", stream_options: { include_usage: true } }, 400, "stream_options"],
    ["token id outside the vocabulary", { prompt: [2, 99999] }, 400, "prompt"],
    ["prompt longer than the context", { prompt: "word ".repeat(400) }, 400, "prompt", /maximum context length is 256 tokens/],
    ["a megabyte prompt (refused untokenised)", { prompt: "The quick brown fox. ".repeat(50000) }, 400, "prompt", /maximum context length is 256 tokens, but the prompt has at least \d+ tokens/],
    ["max_tokens beyond the context", { prompt: "Hello", max_tokens: 255 }, 400, "max_tokens", /context length is 256 tokens.*you requested 2\d\d tokens/],
    ["a prompt that fills the context", { prompt: new Array(256).fill(5) }, 400, "prompt", /context length is 256 tokens, and the prompt's 256 tokens leave no room for a completion/],
    ["unknown model", { prompt: "x", model: "gpt-4" }, 404, "model"],
  ];
  for (const [name, body, status, param, message] of cases) {
    test(name, async () => {
      const res = await post(srv.app, body);
      expect(res.status).toBe(status);
      const j = await json(res);
      expect(Object.keys(j.error).sort()).toEqual(["code", "message", "param", "type"]);
      expect(j.error.type).toBe(status === 404 ? "not_found_error" : "invalid_request_error");
      expect(j.error.param).toBe(param);
      if (message) expect(j.error.message).toMatch(message);
      expect(j.error.message).not.toMatch(/\n\s+at /); // no stack
    });
  }

  test("OpenAI fields that are accepted and ignored", async () => {
    for (const k of IGNORED_FIELDS) {
      const res = await post(srv.app, { prompt: "Hello", max_tokens: 2, temperature: 0, [k]: "someone" });
      expect(res.status).toBe(200);
      expect((await json(res)).usage.completion_tokens).toBeLessThanOrEqual(2);
    }
  });

  test("the wrong Content-Type and an oversized body are 4xx with an error body", async () => {
    const form = await post(srv.app, '{"prompt":"x"}', { headers: { "Content-Type": "application/x-www-form-urlencoded" } });
    expect(form.status).toBe(400);
    expect((await json(form)).error.message).toMatch(/Content-Type must be application\/json/);
    const big = await post(srv.app, { prompt: "x".repeat(5 << 20) });
    expect(big.status).toBe(413);
    expect((await json(big)).error.type).toBe("invalid_request_error");
  });

  test("max_tokens up to the context is accepted (prompt + max_tokens <= max_model_len)", async () => {
    const n = dec.tokenizer!.encode("Hello").length;
    const j = await json(post(srv.app, { prompt: "Hello", max_tokens: 256 - n, ignore_eos: true, temperature: 0 }));
    expect(j.usage.total_tokens).toBe(256);
  });

  test("without max_tokens, the default (16) is capped to what fits after the prompt, as the library caps its own", async () => {
    const prompt = new Array(250).fill(5);
    const j = await json(post(srv.app, { prompt, ignore_eos: true, temperature: 0 }));
    expect(j.usage.completion_tokens).toBe(6);
    using again = await SkipDecoder.load(dec.dir, { backend: "cpu", maxSeqLen: 256 });
    expect((await again.generate(prompt, { ignoreEos: true })).tokens.length).toBe(6);
  });
});

describe("server: limits and disconnects", () => {
  test("a full queue is a 429 with Retry-After; aborting a non-streamed request frees its slot", async () => {
    using long = await SkipDecoder.load(tinyModel(LONG), { backend: "cpu", maxBatch: 1, threads: 1 });
    const s = createApp(long, { maxQueue: 1, log: quiet });
    const body = { prompt: "Hello", max_tokens: 2000, ignore_eos: true };
    const a = new AbortController();
    const b = new AbortController();
    const ra = post(s.app, body, { signal: a.signal }).catch(() => null);
    const rb = post(s.app, body, { signal: b.signal }).catch(() => null);
    await waitFor(() => long.load.running === 1 && long.load.waiting === 1, "one running, one waiting");
    const c = await post(s.app, body);
    expect(c.status).toBe(429);
    expect(c.headers.get("retry-after")).toBe("1");
    expect((await json(c)).error).toMatchObject({ type: "rate_limit_error", code: "queue_full" });
    // too many prompts for max batch + max queue at all: 400
    expect((await post(s.app, { prompt: ["a", "b", "c"] })).status).toBe(400);
    a.abort();
    b.abort();
    await waitFor(() => long.load.running === 0 && long.load.waiting === 0, "the slot to be freed");
    await Promise.all([ra, rb]);
    const m = await (await s.app.request("/metrics")).text();
    expect(sample(m, 'skipdecode_sequences_finished_total{finish_reason="abort"}')).toBe(2);
    expect(sample(m, "skipdecode_sequences_accepted")).toBe(0);
    expect(sample(m, "skipdecode_generation_tokens_total")).toBeLessThan(2000);
    // the queue is usable again
    expect((await post(s.app, { prompt: "Hi", max_tokens: 3 })).status).toBe(200);
    s.close();
    expect((await post(s.app, { prompt: "Hi", max_tokens: 3 })).status).toBe(503);
  }, 30000);

  test("a real server: a client that disconnects mid-stream cancels its generation and frees its slot", async () => {
    const running = await serve({ model: tinyModel(LONG), host: "127.0.0.1", port: 0, maxQueue: 4, backend: "cpu", threads: 1, log: quiet });
    try {
      const dec2 = running.decoder;
      const ac = new AbortController();
      const res = await fetch(`${running.url}/v1/completions`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prompt: "Hello", max_tokens: 2000, ignore_eos: true, stream: true }),
        signal: ac.signal,
      });
      expect(res.status).toBe(200);
      const reader = res.body!.getReader();
      const first = await reader.read(); // at least one chunk arrived: it is generating
      expect(new TextDecoder().decode(first.value)).toContain("data: ");
      ac.abort();
      await reader.cancel().catch(() => {});
      await waitFor(() => dec2.load.running === 0 && dec2.load.waiting === 0, "the slot to be freed");
      let m = "";
      const end = Date.now() + 8000;
      while (Date.now() < end) {
        m = await (await fetch(`${running.url}/metrics`)).text();
        if (sample(m, "skipdecode_sequences_accepted") === 0) break; // the handler has let go too
        await Bun.sleep(5);
      }
      expect(sample(m, "skipdecode_sequences_accepted")).toBe(0);
      expect(sample(m, "skipdecode_requests_running")).toBe(0);
      expect(sample(m, "skipdecode_requests_waiting")).toBe(0);
      expect(sample(m, 'skipdecode_sequences_finished_total{finish_reason="abort"}')).toBe(1);
      expect(sample(m, "skipdecode_generation_tokens_total")).toBeLessThan(2000);
      // the server still answers
      const ok = await fetch(`${running.url}/v1/completions`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prompt: "Hi", max_tokens: 4, ignore_eos: true }),
      });
      expect((await json(ok)).usage.completion_tokens).toBe(4);
    } finally {
      await running.stop();
      await running.stop(); // twice is fine
    }
  }, 30000);
});

describe("server: metrics", () => {
  test("Prometheus text: counters agree with the responses, histograms are cumulative", async () => {
    const s = createApp(dec, { log: quiet });
    const js = await Promise.all(
      ["one", "two two", "three three three"].map(async (prompt, i) =>
        json(post(s.app, { prompt, max_tokens: 5 + i, ignore_eos: true, speedup: 2 })),
      ),
    );
    const res = await s.app.request("/metrics");
    expect(res.headers.get("content-type")).toContain("text/plain; version=0.0.4");
    const m = await res.text();
    const sum = (f: (j: Json) => number) => js.reduce((a, j) => a + f(j), 0);
    expect(sample(m, "skipdecode_prompt_tokens_total")).toBe(sum((j) => j.usage.prompt_tokens));
    expect(sample(m, "skipdecode_generation_tokens_total")).toBe(sum((j) => j.usage.completion_tokens));
    expect(sample(m, "skipdecode_layers_computed_total")).toBe(sum((j) => j.skipdecode.layers_computed));
    expect(sample(m, "skipdecode_layers_full_total")).toBe(sum((j) => j.skipdecode.layers_full));
    expect(sample(m, 'skipdecode_http_requests_total{route="/v1/completions",status="200"}')).toBe(3);
    expect(sample(m, "skipdecode_time_to_first_token_seconds_count")).toBe(3);
    expect(sample(m, "skipdecode_inter_token_latency_seconds_count")).toBe(sum((j) => j.usage.completion_tokens - 1));
    for (const h of ["skipdecode_time_to_first_token_seconds", "skipdecode_inter_token_latency_seconds"]) {
      const buckets = m.split("\n").filter((l) => l.startsWith(`${h}_bucket`)).map((l) => Number(l.split(" ")[1]));
      expect(buckets.length).toBeGreaterThan(5);
      for (let i = 1; i < buckets.length; i++) expect(buckets[i]!).toBeGreaterThanOrEqual(buckets[i - 1]!);
      expect(buckets.at(-1)).toBe(sample(m, `${h}_count`));
    }
    expect(m).toMatch(/^skipdecode_model_info\{model="skd-tiny-\w+",backend="cpu",num_layers="4",max_seq_len="256"\} 1$/m);
    expect(sample(m, "process_resident_memory_bytes")).toBeGreaterThan(0);
    // every line is a comment or `name{labels} value`
    for (const l of m.trim().split("\n")) expect(l).toMatch(/^(# (HELP|TYPE) \w+ .+|[a-z_0-9]+(\{[^}]*\})? [-+\d.eE]+|[a-z_0-9]+(\{[^}]*\})? \+Inf)$/);
  });
});
