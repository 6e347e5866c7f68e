/**
 * Generation: greedy equals the float64 reference's argmax chain under
 * decaying budgets; batching, seeds, streaming, stop strings, abort, errors.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { type GenerateResult, SkipDecoder, SkipPolicy, type StreamEvent } from "../lib/index.ts";
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cleanupTemp, tempDir, tinyModel } from "./helpers.ts";
import { ReferenceOpt } from "./reference.ts";

afterAll(cleanupTemp);

const MODEL = { seed: 41, layers: 6, hidden: 48, heads: 4 } as const;
const PROMPTS = ["Hello world, this is", "The quick brown fox", "a", "Numbers: 1, 2, 3, 4, 5, 6, 7, 8, 9"];

function argmax(row: ArrayLike<number>): number {
  let b = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[b]!) b = i;
  return b;
}

describe("generate", () => {
  test("greedy under a decaying policy is exactly the reference's argmax chain", async () => {
    const dir = tinyModel(MODEL);
    const ref = ReferenceOpt.load(dir);
    using dec = await SkipDecoder.load(dir, { backend: "cpu" });
    const L = dec.spec.numLayers;
    const policies = [
      SkipPolicy.linear({ numLayers: L, maxLayers: L, minLayers: 1, span: 10, warmupLayers: 1 }),
      SkipPolicy.power({ numLayers: L, maxLayers: 5, minLayers: 2, span: 12, warmupLayers: 2, exponent: 2 }),
      SkipPolicy.forSpeedup(3, { numLayers: L, span: 16, warmupLayers: 0 }),
    ];
    for (const policy of policies) {
      const r = await dec.generate(PROMPTS[0]!, { maxNewTokens: 16, policy, ignoreEos: true });
      expect(r.tokens.length).toBe(16);
      expect(r.finishReason).toBe("length");
      // the passes that ran: every token's but the last
      expect(r.budgets).toEqual(r.tokens.slice(0, -1).map((_, i) => policy.layersAt(i)));
      expect(r.promptTokens[0]).toBe(2); // OPT's BOS </s>
      // positions: the prompt (full), then generated token i with budgets[i]
      const ids = [...r.promptTokens, ...r.tokens.slice(0, -1)];
      const budgets = [...r.promptTokens.map(() => L), ...r.budgets];
      const logits = ref.forward(ids, budgets, policy.warmupLayers);
      const P = r.promptTokens.length;
      const chain = r.tokens.map((_, i) => argmax(logits[P - 1 + i]!));
      expect(r.tokens).toEqual(chain);
      expect(r.stats.avgLayers).toBeCloseTo(r.budgets.reduce((a, b) => a + b, 0) / 15, 9);
      expect(r.stats.idealSpeedup).toBeCloseTo(L / r.stats.avgLayers, 9);
    }
  });

  test("budgets and ideal speedup describe only the passes that ran", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu" });
    const L = dec.spec.numLayers;
    // one token: predicted by the full-model prefill; no decode pass ran
    const one = await dec.generate(PROMPTS[0]!, { maxNewTokens: 1, speedup: 2, ignoreEos: true });
    expect(one.tokens.length).toBe(1);
    expect(one.budgets).toEqual([]);
    expect(one.stats.avgLayers).toBe(L);
    expect(one.stats.idealSpeedup).toBe(1);
    // a stop string ends the text early: the pass after the stopping token never ran
    const free = await dec.generate(PROMPTS[0]!, { maxNewTokens: 12, speedup: 2, ignoreEos: true });
    const stop = free.text.slice(3, 5);
    const cut = await dec.generate(PROMPTS[0]!, { maxNewTokens: 12, speedup: 2, ignoreEos: true, stop });
    expect(cut.finishReason).toBe("stop");
    expect(cut.budgets.length).toBe(cut.tokens.length - 1);
  });

  test("prompts as token ids are fed as given; text decodes the tokens", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu" });
    const ids = dec.tokenizer!.encode("The quick brown fox");
    const a = await dec.generate(ids, { maxNewTokens: 8, ignoreEos: true });
    const b = await dec.generate("The quick brown fox", { maxNewTokens: 8, ignoreEos: true });
    expect(a.promptTokens).toEqual(ids);
    expect(a.tokens).toEqual(b.tokens);
    expect(a.text).toBe(dec.tokenizer!.decode(a.tokens));
  });

  test("the same seed gives the same tokens alone or among 8 concurrent requests", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu", maxBatch: 8 });
    const opts = { maxNewTokens: 12, temperature: 1.1, topK: 50, topP: 0.95, seed: 1234, speedup: 2, ignoreEos: true };
    const alone = await dec.generate(PROMPTS[1]!, opts);
    const crowd = await Promise.all([
      dec.generate(PROMPTS[0]!, { ...opts, seed: 1 }),
      dec.generate(PROMPTS[2]!, { maxNewTokens: 20, temperature: 0.7, ignoreEos: true }),
      dec.generate(PROMPTS[1]!, opts),
      dec.generate(PROMPTS[3]!, { ...opts, seed: 99 }),
      dec.generate(PROMPTS[1]!, { ...opts, seed: 1235 }),
      dec.generate(PROMPTS[0]!, { maxNewTokens: 3 }),
      dec.generate(PROMPTS[2]!, opts),
      dec.generate(PROMPTS[3]!, opts),
    ]);
    expect(crowd[2]!.tokens).toEqual(alone.tokens);
    expect(crowd[2]!.stats.seed).toBe(1234);
    // sampling really samples: another seed differs somewhere
    expect(crowd[4]!.tokens).not.toEqual(alone.tokens);
    expect(dec.load).toEqual({ running: 0, waiting: 0 });
  });

  test("no seed: one is drawn and reported, and replaying it reproduces the tokens", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu" });
    const r = await dec.generate(PROMPTS[0]!, { maxNewTokens: 10, temperature: 1, ignoreEos: true });
    const again = await dec.generate(PROMPTS[0]!, { maxNewTokens: 10, temperature: 1, ignoreEos: true, seed: r.stats.seed });
    expect(again.tokens).toEqual(r.tokens);
  });

  test("a stop string ends the text before it, finishReason stop", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu" });
    const full = await dec.generate(PROMPTS[1]!, { maxNewTokens: 40, ignoreEos: true });
    // a clean two-character piece from the middle of the text
    let stop = "";
    for (let i = Math.floor(full.text.length / 3); i < full.text.length - 2 && !stop; i++) {
      const s = full.text.slice(i, i + 2);
      if (!s.includes("\uFFFD") && s.trim().length === 2) stop = s;
    }
    expect(stop).not.toBe("");
    const r = await dec.generate(PROMPTS[1]!, { maxNewTokens: 40, ignoreEos: true, stop: [stop, "never appears ~~~"] });
    expect(r.finishReason).toBe("stop");
    expect(r.text).toBe(full.text.slice(0, full.text.indexOf(stop)));
    expect(r.tokens).toEqual(full.tokens.slice(0, r.tokens.length));
  });

  test("EOS ends a generation unless ignoreEos", async () => {
    const dir = tinyModel(MODEL);
    using dec = await SkipDecoder.load(dir, { backend: "cpu" });
    const full = await dec.generate(PROMPTS[1]!, { maxNewTokens: 6, ignoreEos: true });
    // a copy of the model whose config names the 3rd generated token as EOS
    const eos = full.tokens[2]!;
    const copy = tempDir();
    cpSync(dir, copy, { recursive: true });
    const cfg = JSON.parse(readFileSync(join(copy, "config.json"), "utf8"));
    writeFileSync(join(copy, "config.json"), JSON.stringify({ ...cfg, eos_token_id: eos }));
    using custom = await SkipDecoder.load(copy, { backend: "cpu" });
    const r = await custom.generate(PROMPTS[1]!, { maxNewTokens: 6 });
    expect(r.finishReason).toBe("stop");
    expect(r.tokens).toEqual(full.tokens.slice(0, full.tokens.indexOf(eos)));
    const ignored = await custom.generate(PROMPTS[1]!, { maxNewTokens: 6, ignoreEos: true });
    expect(ignored.tokens).toEqual(full.tokens);
  });
});

describe("check and sequence", () => {
  test("check validates like generate and returns the prompt ids and policy", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu", maxSeqLen: 16 });
    const c = dec.check(PROMPTS[1]!, { maxNewTokens: 3, speedup: 2 });
    const r = await dec.generate(PROMPTS[1]!, { maxNewTokens: 3, speedup: 2, ignoreEos: true });
    expect(c.promptTokens).toEqual(r.promptTokens);
    expect(String(c.policy)).toBe(r.stats.policy);
    expect(() => dec.check("x y ".repeat(20))).toThrow(/SkipDecoder\.check: the prompt has \d+ tokens, more than the context of 16/);
    expect(() => dec.check("x".repeat(200))).toThrow(/SkipDecoder\.check: the prompt has at least \d+ tokens, more than the context of 16/);
    expect(() => dec.check("hi", { topP: 2 })).toThrow(/topP must be a number/);
    expect(dec.load).toEqual({ running: 0, waiting: 0 });
  });

  test("the RNG sequence index: batch prompt i draws like generate with sequence i", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu", maxBatch: 4 });
    const opts = { maxNewTokens: 10, temperature: 1.2, seed: 77, ignoreEos: true };
    const batch = await dec.generateBatch([PROMPTS[1]!, PROMPTS[1]!, PROMPTS[1]!], opts);
    for (let i = 0; i < 3; i++) {
      expect(batch[i]!.tokens).toEqual((await dec.generate(PROMPTS[1]!, { ...opts, sequence: i })).tokens);
    }
    // identical prompts with one seed still differ across sequence indices
    expect(new Set(batch.map((r) => r.tokens.join(","))).size).toBeGreaterThan(1);
    await expect(dec.generate("hi", { sequence: -1 })).rejects.toThrow(/sequence must be an integer/);
  });
});

describe("generateBatch", () => {
  test("each result equals generate for that prompt alone (greedy), prompts of different lengths", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu", maxBatch: 4 });
    for (const opts of [{ maxNewTokens: 10, ignoreEos: true }, { maxNewTokens: 10, speedup: 2, ignoreEos: true }]) {
      const batch = await dec.generateBatch(PROMPTS, opts);
      for (const [i, p] of PROMPTS.entries()) {
        const alone = await dec.generate(p, opts);
        expect(batch[i]!.tokens).toEqual(alone.tokens);
        expect(batch[i]!.budgets).toEqual(alone.budgets);
      }
    }
  });

  test("a prefill longer than one step still shares the step index, and finished rows stop costing", async () => {
    // maxBatchTokens 8 forces chunked prefill over several steps
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu", maxBatch: 4, maxBatchTokens: 8 });
    const opts = { maxNewTokens: 6, speedup: 2, ignoreEos: true };
    const rs = await dec.generateBatch(PROMPTS, opts);
    for (const [i, p] of PROMPTS.entries()) expect(rs[i]!.tokens).toEqual((await dec.generate(p, opts)).tokens);
    const mixed = await dec.generateBatch(PROMPTS.slice(0, 2), { maxNewTokens: 4, ignoreEos: true });
    expect(mixed.map((r) => r.tokens.length)).toEqual([4, 4]);
    await expect(dec.generateBatch(["a", "b", "c", "d", "e"])).rejects.toThrow(/5 prompts exceed maxBatch 4/);
  });
});

describe("stream", () => {
  test("pieces join to the result text; token events carry token and layers; one final event ends the stream", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu" });
    const opts = { maxNewTokens: 24, speedup: 2, ignoreEos: true, stop: "zzz-not-there" };
    const want = await dec.generate(PROMPTS[1]!, opts);
    const it = dec.stream(PROMPTS[1]!, opts);
    const events: StreamEvent[] = [];
    let res: IteratorResult<StreamEvent, GenerateResult>;
    while (!(res = await it.next()).done) events.push(res.value);
    const tokens = events.flatMap((e) => (e.type === "token" ? [e] : []));
    expect(tokens.map((e) => e.token)).toEqual(want.tokens);
    expect(tokens.map((e) => e.index)).toEqual(want.tokens.map((_, i) => i));
    // each token event carries its scheduled budget; the result keeps those of the passes that ran
    expect(tokens.map((e) => e.layers).slice(0, -1)).toEqual(want.budgets);
    const finals = events.filter((e) => e.type === "final");
    expect(finals.length).toBe(1);
    expect(events.at(-1)).toEqual({ type: "final", text: expect.any(String), finishReason: "length", index: 24 });
    expect("token" in events.at(-1)!).toBe(false);
    expect(events.map((e) => e.text).join("")).toBe(want.text);
    expect(res.value.text).toBe(want.text);
  });

  test("text held back for a stop string that never completes arrives in the final event", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu" });
    const free = await dec.generate(PROMPTS[1]!, { maxNewTokens: 10, ignoreEos: true });
    // a stop string that starts with the last 2 characters and goes on: held back to the end
    const stop = free.text.slice(-2) + "\u0000never";
    const events: StreamEvent[] = [];
    for await (const ev of dec.stream(PROMPTS[1]!, { maxNewTokens: 10, ignoreEos: true, stop })) events.push(ev);
    const last = events.at(-1)!;
    expect(last.type).toBe("final");
    expect(last.text.endsWith(free.text.slice(-2))).toBe(true);
    expect(events.map((e) => e.text).join("")).toBe(free.text);
  });

  test("breaking out of the loop frees the sequence's slot", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu", maxBatch: 1 });
    let n = 0;
    for await (const ev of dec.stream(PROMPTS[0]!, { maxNewTokens: 1000, stopAtContext: true, ignoreEos: true })) {
      expect(ev.token).toBeGreaterThanOrEqual(0);
      if (++n === 3) break;
    }
    expect(dec.load).toEqual({ running: 0, waiting: 0 });
    // the only slot is free again
    const r = await dec.generate(PROMPTS[0]!, { maxNewTokens: 2, ignoreEos: true });
    expect(r.tokens.length).toBe(2);
  });
});

describe("logprobs", () => {
  function logSoftmax(row: ArrayLike<number>): number[] {
    let mx = -Infinity;
    for (let i = 0; i < row.length; i++) mx = Math.max(mx, row[i]!);
    let sum = 0;
    for (let i = 0; i < row.length; i++) sum += Math.exp(row[i]! - mx);
    const lse = mx + Math.log(sum);
    return Array.from(row, (x) => x - lse);
  }

  test("each token's logprob and top alternatives equal the log-softmax of the engine's logits", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu" });
    const L = dec.spec.numLayers;
    const V = dec.spec.vocabSize;
    const policy = SkipPolicy.linear({ numLayers: L, maxLayers: L, minLayers: 2, span: 6 });
    for (const temperature of [0, 0.9]) {
      const r = await dec.generate(PROMPTS[0]!, { maxNewTokens: 8, policy, ignoreEos: true, logprobs: 4, temperature, seed: 3 });
      expect(r.logprobs!.length).toBe(8);
      // teacher-forced logits of the same passes: row P-1+i predicts token i
      const ids = [...r.promptTokens, ...r.tokens.slice(0, -1)];
      const logits = await dec.forward(ids, { budgets: [...r.promptTokens.map(() => L), ...r.budgets], warmupLayers: 1 });
      const P = r.promptTokens.length;
      r.tokens.forEach((tok, i) => {
        const ls = logSoftmax(logits.subarray((P - 1 + i) * V, (P + i) * V));
        const lp = r.logprobs![i]!;
        expect(Math.abs(lp.logprob - ls[tok]!)).toBeLessThan(1e-4);
        const order = ls.map((x, id) => ({ id, x })).sort((a, b) => b.x - a.x || a.id - b.id);
        expect(lp.top.map((t) => t.token)).toEqual(order.slice(0, 4).map((o) => o.id));
        lp.top.forEach((t, j) => expect(Math.abs(t.logprob - order[j]!.x)).toBeLessThan(1e-4));
        if (temperature === 0) expect(lp.top[0]!.token).toBe(tok);
      });
    }
  });

  test("streams carry them per token; 0 alternatives gives the chosen logprob only; bad values throw", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu" });
    const want = await dec.generate(PROMPTS[1]!, { maxNewTokens: 5, ignoreEos: true, logprobs: 0 });
    expect(want.logprobs!.every((l) => l.top.length === 0 && l.logprob <= 0)).toBe(true);
    const got: number[] = [];
    for await (const ev of dec.stream(PROMPTS[1]!, { maxNewTokens: 5, ignoreEos: true, logprobs: 0 })) if (ev.type === "token") got.push(ev.logprob!.logprob);
    expect(got).toEqual(want.logprobs!.map((l) => l.logprob));
    // batched with a sequence that asks for none: neither disturbs the other
    const [a, b] = await Promise.all([
      dec.generate(PROMPTS[1]!, { maxNewTokens: 5, ignoreEos: true, logprobs: 2 }),
      dec.generate(PROMPTS[2]!, { maxNewTokens: 5, ignoreEos: true }),
    ]);
    expect(a.logprobs!.map((l) => l.logprob)).toEqual(want.logprobs!.map((l) => l.logprob));
    expect(b.logprobs).toBeUndefined();
    await expect(dec.generate("x", { logprobs: 21 })).rejects.toThrow(/logprobs must be an integer in 0\.\.20, got 21/);
    await expect(dec.generate("x", { logprobs: -1 })).rejects.toThrow(/logprobs must be an integer in 0\.\.20/);
  });
});

describe("tokenize and detokenize", () => {
  test("tokenize gives what a string prompt feeds; detokenize gives generation's text", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu", maxSeqLen: 16 });
    const text = PROMPTS[1]!;
    expect(dec.tokenize(text)).toEqual(dec.check(text).promptTokens);
    expect(dec.tokenize(text, { bos: false })).toEqual(dec.tokenize(text).slice(1));
    expect(dec.tokenize(text)[0]).toBe(2);
    expect(dec.detokenize(dec.tokenize(text))).toBe(text);
    expect(dec.detokenize([2, ...dec.tokenize("Hi", { bos: false })], { skipSpecialTokens: false })).toBe("</s>Hi");
    // the byte bound used to refuse huge prompts untokenised is a lower bound on the token count
    const tok = dec.tokenizer!;
    for (const t of [text, "word ".repeat(50), "ü€𝄞 mixed ünïcödé", "x", "   ", PROMPTS[0]!.repeat(7)]) {
      expect(dec.tokenize(t, { bos: false }).length).toBeGreaterThanOrEqual(Math.ceil(Buffer.byteLength(t) / tok.maxTokenBytes));
    }
    // a prompt far over the context is refused by that bound, before tokenising
    await expect(dec.generate("The quick brown fox. ".repeat(50000))).rejects.toThrow(/the prompt has at least \d+ tokens, more than the context of 16/);
    // longer than the context: counted, not refused
    expect(dec.tokenize("word ".repeat(100)).length).toBeGreaterThan(16);
    const r = await dec.generate("Hello", { maxNewTokens: 6, ignoreEos: true });
    expect(dec.detokenize(r.tokens)).toBe(r.text);
    expect(dec.detokenize(new Int32Array(r.tokens))).toBe(r.text);
    expect(() => dec.tokenize(5 as never)).toThrow(/tokenize: text must be a string, got 5/);
    expect(() => dec.tokenize("x", { bos: 1 } as never)).toThrow(/bos must be true or false, got 1/);
    expect(() => dec.tokenize("x", { bso: true } as never)).toThrow(/unknown option "bso"/);
    expect(() => dec.detokenize([2, 99999])).toThrow(/ids\[1\] = 99999 is not a token id/);
    expect(() => dec.detokenize([2, NaN])).toThrow(/ids\[1\] = NaN is not a token id/);
    dec.close();
    expect(() => dec.tokenize("x")).toThrow(/closed/);
  });
});

describe("abort and errors", () => {
  test("an abort signal stops within one step, keeps the partial text, frees the slot", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu", maxBatch: 1 });
    const ac = new AbortController();
    let seen = 0;
    const pieces: string[] = [];
    let result;
    const it = dec.stream(PROMPTS[0]!, { maxNewTokens: 1000, stopAtContext: true, ignoreEos: true, signal: ac.signal });
    for (;;) {
      const r = await it.next();
      if (r.done) {
        result = r.value;
        break;
      }
      pieces.push(r.value.text);
      if (++seen === 5) ac.abort();
    }
    expect(result.finishReason).toBe("abort");
    expect(result.tokens.length).toBe(5);
    expect(result.text).toBe(pieces.join(""));
    expect(dec.load).toEqual({ running: 0, waiting: 0 });
    const pre = new AbortController();
    pre.abort();
    const r = await dec.generate(PROMPTS[0]!, { signal: pre.signal });
    expect(r.finishReason).toBe("abort");
    expect(r.tokens).toEqual([]);
  });

  test("bad options and prompts throw errors naming the problem", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu", maxSeqLen: 16 });
    const L = dec.spec.numLayers;
    const cases: [Parameters<SkipDecoder["generate"]>, RegExp][] = [
      [["hi", { maxNewTokens: 0 }], /maxNewTokens must be an integer in 1\.\./],
      [["hi", { temperature: -1 }], /temperature must be a number in \[0, 100\]/],
      [["hi", { topP: 0 }], /topP must be a number in \(0, 1\], got 0$/],
      [["hi", { temperature: NaN }], /temperature must be a number in \[0, 100\], got NaN$/],
      [["hi", { maxNewTokens: Infinity }], /maxNewTokens must be an integer in 1\.\.\d+, got Infinity$/],
      [["hi", { topK: "5" as never }], /topK must be an integer in 0\.\.\d+, got "5"$/],
      [["hi", { speedup: NaN }], /speedup must be a number in \[1, 6\].*got NaN$/],
      [["hi", { topK: -1 }], /topK must be an integer/],
      [["hi", { seed: 1.5 }], /seed must be an integer/],
      [["hi", { speedup: 0.5 }], /speedup must be a number in \[1, 6\]/],
      [["hi", { speedup: 2, policy: SkipPolicy.full(L) }], /give policy or speedup, not both/],
      [["hi", { policy: SkipPolicy.full(L + 1) }], /the policy is for 7 layers, the model has 6/],
      [["hi", { stop: [""] }], /stop must be a non-empty string/],
      [["hi", { bogus: 1 } as never], /unknown option "bogus"/],
      [[[2, 99999]], /prompt\[1\] = 99999 is not a token id/],
      [[[]], /the prompt is empty/],
      [["x".repeat(200)], /more than the context of 16/],
    ];
    for (const [args, re] of cases) await expect(dec.generate(...args)).rejects.toThrow(re);
    // the context rule (lib/generation/context.ts), as the server applies it: prompt + maxNewTokens <= maxSeqLen
    const n = dec.tokenize("Hello").length;
    await expect(dec.generate("Hello", { maxNewTokens: 100 })).rejects.toThrow(
      new RegExp(`the prompt's ${n} tokens and maxNewTokens 100 exceed the context of 16 \\(maxSeqLen\\): at most ${16 - n} new tokens fit`),
    );
    expect((await dec.generate("Hello", { maxNewTokens: 16 - n, ignoreEos: true })).tokens.length).toBe(16 - n);
    // absent, maxNewTokens defaults to 64 capped to what fits; stopAtContext runs until the context is full
    expect((await dec.generate("Hello", { ignoreEos: true })).tokens.length).toBe(16 - n);
    const r = await dec.generate("Hello", { maxNewTokens: 100, stopAtContext: true, ignoreEos: true });
    expect(r.finishReason).toBe("length");
    expect(r.promptTokens.length + r.tokens.length).toBe(16);
    await expect(dec.generate(new Array(16).fill(5))).rejects.toThrow(/the prompt's 16 tokens fill the context of 16 \(maxSeqLen\): no new token fits$/);
  });

  test("close aborts running generations and later calls throw", async () => {
    const dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu" });
    const p = dec.generate(PROMPTS[0]!, { maxNewTokens: 1000, stopAtContext: true, ignoreEos: true });
    dec.close();
    expect((await p).finishReason).toBe("abort");
    await expect(dec.generate("hi")).rejects.toThrow(/closed/);
  });
});
