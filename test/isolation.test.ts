/**
 * One request never harms another: sampling parameters are checked in the
 * engine's float32 units before a sequence joins a batch, a row the native
 * step refuses fails its own sequence only, and the server answers such
 * requests without touching the streams running beside them.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import fc from "fast-check";
import { SkipDecoder, SkipPolicy } from "../lib/index.ts";
import { MIN_TEMPERATURE, samplingParams } from "../lib/generation/generate.ts";
import { Scheduler, type SequenceSpec } from "../lib/generation/scheduler.ts";
import { STALL_MS } from "../lib/engine/client.ts";
import { createApp, type SkipApp } from "../server/app.ts";
import { serve } from "../server/main.ts";
import { cleanupTemp, tinyModel } from "./helpers.ts";

const MODEL = { family: "llama", seed: 21, layers: 3 } as const;
/** Long context: generations that run long enough to be cut. */
const LONG = { family: "llama", seed: 22, layers: 2, maxPositions: 8192 } as const;
const quiet = () => {};

let dec: SkipDecoder;
let srv: SkipApp;

beforeAll(async () => {
  dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu", maxBatch: 4, threads: 1 });
  srv = createApp(dec, { modelName: "tiny", maxQueue: 16, log: quiet });
});

afterAll(() => {
  srv.close();
  dec.close();
  cleanupTemp();
});

type Json = Record<string, any>;

function post(path: string, body: unknown): Promise<Response> {
  return Promise.resolve(
    srv.app.request(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) }),
  );
}

describe("sampling parameters in float32", () => {
  test("values float32 cannot carry mean greedy; the rest pass as float32", () => {
    const V = 1000;
    expect(samplingParams("x", { temperature: 1e-40 }, V)).toEqual({ temperature: 0, topK: 0, topP: 1 });
    expect(samplingParams("x", { temperature: 1e-45, topK: 5 }, V)).toEqual({ temperature: 0, topK: 5, topP: 1 });
    expect(samplingParams("x", { temperature: 0.7, topP: 1e-300 }, V)).toEqual({ temperature: 0, topK: 0, topP: 1 });
    expect(samplingParams("x", { temperature: MIN_TEMPERATURE, topP: 1e-45 }, V)).toEqual({ temperature: MIN_TEMPERATURE, topK: 0, topP: Math.fround(1e-45) });
    expect(samplingParams("x", { temperature: 0.7, topP: 0.9 }, V)).toEqual({ temperature: Math.fround(0.7), topK: 0, topP: Math.fround(0.9) });
    expect(() => samplingParams("x", { topK: 2.5 }, V)).toThrow(/topK must be an integer in 0..1000/);
    expect(() => samplingParams("x", { topK: V + 1 }, V)).toThrow(/topK/);
    expect(() => samplingParams("x", { topP: 0 }, V)).toThrow(/topP must be a number in \(0, 1\]/);
    expect(() => samplingParams("x", { temperature: Number.NaN }, V)).toThrow(/temperature/);
  });

  test("a tiny temperature or top_p generates the greedy tokens, never token 0 from 1/T = inf", async () => {
    const greedy = await dec.generate("Hello", { maxNewTokens: 6, ignoreEos: true, temperature: 0 });
    for (const o of [{ temperature: 1e-40 }, { temperature: 1e-45 }, { temperature: 0.8, topP: 1e-300 }]) {
      const r = await dec.generate("Hello", { maxNewTokens: 6, ignoreEos: true, seed: 3, ...o });
      expect(r.tokens).toEqual(greedy.tokens);
    }
  });

  test("the engine refuses a subnormal temperature by name (the library never sends one)", () => {
    const slot = dec.acquireSlot();
    try {
      const rows = new Int32Array(11);
      rows.set([2, 0, slot, MODEL.layers, 1, 2 /* ROW_SAMPLE */]);
      const params = new Float32Array([1e-40, 1]);
      expect(() => dec.stepRows(rows, 1, null, params, new Int32Array(1))).toThrow(/row 0: temperature .* is below FLT_MIN/);
    } finally {
      dec.releaseSlot(slot);
    }
  });
});

describe("a refused row fails its own sequence only", () => {
  test("the scheduler: the others finish with the tokens they get alone", async () => {
    // a scheduler over the decoder's engine, fed specs directly: the library's own checks would refuse the bad one
    const free = Array.from({ length: 4 }, (_, i) => i);
    const sched = new Scheduler(
      {
        numLayers: dec.spec.numLayers,
        maxSeqLen: dec.options.maxSeqLen,
        tokenizer: dec.tokenizer,
        slots: {
          acquire: () => free.pop()!,
          release: (s) => void free.push(s),
          get free() {
            return free.length;
          },
        },
        step: async (rows, n, params, tokens) => dec.stepRows(rows, n, null, params, tokens),
      },
      64,
    );
    const spec = (prompt: number[], over: Partial<SequenceSpec> = {}): SequenceSpec => ({
      prompt,
      maxNewTokens: 8,
      policy: SkipPolicy.full(dec.spec.numLayers),
      temperature: 0,
      topK: 0,
      topP: 1,
      seed: 1,
      seq: 0,
      stop: [],
      eosIds: [],
      logprobs: null,
      ...over,
    });
    const alone = [];
    for (const p of [[2, 10, 11], [2, 30, 31, 32]]) alone.push((await sched.submit(spec(p)).promise).tokens);
    // decoding rows, then a prompt whose last row samples with top_p 0: refused in a shared step
    const a = sched.submit(spec([2, 10, 11]));
    const b = sched.submit(spec([2, 30, 31, 32]));
    const bad = sched.submit(spec([2, 5, 6], { temperature: 1, topP: 0 }));
    const badTemp = sched.submit(spec([2, 7], { temperature: 1e-40 }));
    const [ra, rb, rBad, rBadTemp] = await Promise.allSettled([a.promise, b.promise, bad.promise, badTemp.promise]);
    expect(rBad.status === "rejected" && String(rBad.reason)).toMatch(/row \d+: top_p 0 must be in \(0, 1\]/);
    expect(rBadTemp.status === "rejected" && String(rBadTemp.reason)).toMatch(/row \d+: temperature .* below FLT_MIN/);
    expect(ra.status === "fulfilled" && ra.value.tokens).toEqual(alone[0]!);
    expect(rb.status === "fulfilled" && rb.value.tokens).toEqual(alone[1]!);
    // a refused row joining while another sequence decodes
    const started = Promise.withResolvers<void>();
    const c = sched.submit(spec([2, 10, 11], { onEvent: (ev) => ev.type === "token" && started.resolve() }));
    await started.promise;
    const late = sched.submit(spec([2, 5], { temperature: 1, topP: 0 }));
    await expect(late.promise).rejects.toThrow(/top_p 0/);
    expect((await c.promise).tokens).toEqual(alone[0]!);
    expect(free.length).toBe(4);
  });

  test("the server: top_p 1e-300 and temperature 1e-40 are answered greedily while other streams run on", async () => {
    const body = { prompt: "Once upon", max_tokens: 24, temperature: 0, ignore_eos: true };
    const ref = (await (await post("/v1/completions", body)).json()) as Json;
    const streams = [0, 1].map(() => post("/v1/completions", { ...body, stream: true }).then((r) => r.text()));
    const tiny = await Promise.all([
      post("/v1/completions", { prompt: "x", max_tokens: 2, top_p: 1e-300, temperature: 1 }),
      post("/v1/chat/completions", { messages: [{ role: "user", content: "x" }], max_tokens: 2, temperature: 1e-40 }),
      post("/v1/completions", { ...body, top_p: 1e-300, temperature: 1.5, seed: 9 }),
    ]);
    expect(tiny[0]!.status).toBe(200);
    expect(tiny[1]!.status).toBe(200);
    const greedyTwin = (await tiny[2]!.json()) as Json;
    expect(greedyTwin.choices[0].text).toBe(ref.choices[0].text);
    for (const text of await Promise.all(streams)) {
      const events = text.split("\n\n").filter((e) => e.startsWith("data: ")).map((e) => e.slice(6));
      expect(events.at(-1)).toBe("[DONE]");
      const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as Json);
      expect(chunks.some((c) => c.error)).toBe(false);
      expect(chunks.map((c) => c.choices[0]?.text ?? "").join("")).toBe(ref.choices[0].text);
      expect(chunks.at(-1)!.choices[0].finish_reason).toBe("length");
    }
  });
});

describe("a dead engine thread is a visible failure, never a hang", () => {
  const DEAD = /engine thread exited/;

  test("the library: generations in flight fail at once, later calls throw, close() returns", async () => {
    const d = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu", maxBatch: 2, threads: 1 });
    const heard: Error[] = [];
    d.onEngineFailure((e) => heard.push(e));
    const long = d.generate([2, 5, 6], { maxNewTokens: 5000, stopAtContext: true, ignoreEos: true }).catch((e: Error) => e);
    const it = d.stream([2, 7], { maxNewTokens: 5000, stopAtContext: true, ignoreEos: true });
    await it.next(); // streaming
    const queued = d.generate([2, 8], { maxNewTokens: 4 }).catch((e: Error) => e); // waits for a slot
    const t0 = performance.now();
    await d.killEngineThread();
    expect(String(await long)).toMatch(DEAD);
    expect(String(await queued)).toMatch(DEAD);
    // the stream ends with the failure, after at most the tokens of the two steps in flight (pipelined) as the kill lands
    const rest = (async () => {
      for (let i = 0; i < 3; i++) if ((await it.next()).done) return "ended without the failure";
      return "still streaming";
    })();
    await expect(rest).rejects.toThrow(DEAD);
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(d.engineFailure?.message).toMatch(DEAD);
    expect(heard.length).toBe(1);
    await expect(d.generate("x")).rejects.toThrow(/SkipDecoder.generate: the engine thread exited/);
    const t1 = performance.now();
    d.close();
    d.close();
    expect(performance.now() - t1).toBeLessThan(500);
  });

  test("close() right after the thread is killed, before anyone noticed, returns (heartbeat)", async () => {
    const d = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu", maxBatch: 1, threads: 1 });
    void d.killEngineThread();
    Bun.sleepSync(600); // the thread is gone, and this thread has not run its event loop to hear of it
    const t0 = performance.now();
    d.close(); // blocks: misses the heartbeat and gives up
    expect(performance.now() - t0).toBeLessThan(STALL_MS + 3000);
  });

  test("the app: in flight → 503 / an error event; new requests and /health → 503", async () => {
    const d = await SkipDecoder.load(tinyModel(LONG), { backend: "cpu", maxBatch: 2, threads: 1, maxSeqLen: 8192 });
    const app = createApp(d, { modelName: "tiny", log: quiet });
    try {
      const req = (path: string, body: unknown) =>
        Promise.resolve(app.app.request(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) }));
      const body = { prompt: "Hello", max_tokens: 8000, ignore_eos: true, temperature: 0 };
      const whole = req("/v1/completions", body);
      const stream = await req("/v1/completions", { ...body, stream: true });
      const reader = stream.body!.getReader();
      await reader.read(); // the first chunk: generating
      await d.killEngineThread();
      const w = await whole;
      expect(w.status).toBe(503);
      expect(((await w.json()) as Json).error.code).toBe("engine_failed");
      let rest = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        rest += new TextDecoder().decode(value);
      }
      expect(rest).toMatch(/"code":"engine_failed"/);
      expect(rest.trimEnd().endsWith("data: [DONE]")).toBe(true);
      const health = await app.app.request("/health");
      expect(health.status).toBe(503);
      expect(((await health.json()) as Json).status).toBe("engine_failed");
      for (const [path, b] of [["/v1/completions", { prompt: "x" }], ["/v1/chat/completions", { messages: [{ role: "user", content: "x" }] }], ["/tokenize", { prompt: "x" }]] as const) {
        const r = await req(path, b);
        expect(r.status).toBe(503);
        expect(((await r.json()) as Json).error.code).toBe("engine_failed");
      }
    } finally {
      app.close();
      d.close();
    }
  });

  test("serve(): stops listening and reports the failure to its owner (skipdecode serve exits 1 there)", async () => {
    let reported: Error | null = null;
    const done = Promise.withResolvers<void>();
    const s = await serve({
      model: tinyModel(MODEL),
      host: "127.0.0.1",
      port: 0,
      maxQueue: 4,
      backend: "cpu",
      threads: 1,
      accessLog: false,
      log: quiet,
      onEngineFailure: (e) => {
        reported = e;
        done.resolve();
      },
    });
    try {
      expect((await fetch(`${s.url}/health`)).status).toBe(200);
      await s.decoder.killEngineThread();
      await done.promise;
      expect(String(reported)).toMatch(DEAD);
      await expect(fetch(`${s.url}/health`)).rejects.toThrow();
    } finally {
      await s.stop();
    }
  });
});

describe("request fuzz: chat, tokenize, detokenize", () => {
  /** Every answer is JSON with a 2xx or 4xx status; an error carries a message; never a 500. */
  async function answered(path: string, body: unknown): Promise<void> {
    const res = await post(path, body);
    const text = await res.text();
    if (![200, 400, 404, 413].includes(res.status)) throw new Error(`${path} answered ${res.status} to ${JSON.stringify(body).slice(0, 300)}: ${text.slice(0, 300)}`);
    const j = JSON.parse(text) as Json;
    if (res.status !== 200 && typeof j.error?.message !== "string") throw new Error(`${path}: no error message in ${text.slice(0, 200)}`);
  }
  const text = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: "grapheme", maxLength: 20 }), fc.constantFrom("{{ messages }}", "{% for %}", "</s>", "<|eot_id|>", "\u0000\uffff", "x".repeat(5000)));
  const number = fc.oneof(fc.integer({ min: -5, max: 300 }), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.constantFrom(0, 1e-300, 1e-45, 1e-40, 2 ** 31, 1e300, -0));
  const junk = fc.jsonValue({ maxDepth: 3 });
  const message = fc.record(
    {
      role: fc.oneof(fc.constantFrom("user", "assistant", "system", "tool"), text, number as fc.Arbitrary<unknown>),
      content: fc.oneof(text, fc.array(fc.record({ type: fc.constantFrom("text", "image_url"), text }), { maxLength: 3 }), junk),
      name: fc.option(text, { nil: undefined }),
    },
    { requiredKeys: [] },
  );
  const sampling = fc.record(
    { max_tokens: fc.oneof(fc.integer({ min: 1, max: 3 }), number), temperature: number, top_p: number, top_k: number, seed: number, stream: fc.boolean(), logprobs: fc.boolean(), top_logprobs: number, stop: fc.oneof(text, fc.array(text, { maxLength: 5 })) },
    { requiredKeys: [] },
  );

  test("/v1/chat/completions", async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(junk, fc.tuple(fc.array(message, { maxLength: 4 }), sampling, fc.dictionary(fc.string({ maxLength: 8 }), junk, { maxKeys: 1 })).map(([messages, s, extra]) => ({ messages, ...s, ...extra }))), (body) =>
        answered("/v1/chat/completions", body),
      ),
      { numRuns: 150, seed: 15 },
    );
  });

  test("/tokenize and /detokenize", async () => {
    const ids = fc.array(fc.oneof(fc.integer({ min: 0, max: 600 }), number), { maxLength: 30 });
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(junk, fc.record({ prompt: fc.oneof(text, junk), content: fc.oneof(text, junk), add_special_tokens: fc.oneof(fc.boolean(), junk), add_special: fc.boolean(), model: fc.constantFrom("tiny", "other") }, { requiredKeys: [] })),
        fc.oneof(junk, fc.record({ tokens: fc.oneof(ids, junk), model: fc.constantFrom("tiny", "other") }, { requiredKeys: [] })),
        async (tok, detok) => {
          await answered("/tokenize", tok);
          await answered("/detokenize", detok);
        },
      ),
      { numRuns: 150, seed: 16 },
    );
    expect((await srv.app.request("/health")).status).toBe(200);
  });
});
