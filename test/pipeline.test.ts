/**
 * Pipelined steps (lib/generation/scheduler.ts, lib/engine/worker.ts): a step
 * sent while the one before it still runs, its rows feeding that step's
 * sampled tokens by reference, gives exactly what one step at a time gives —
 * tokens, text, logprobs, budgets, finish reasons, stream events — through
 * joins, stops, EOS and batches; it really runs ahead (up to 4 steps); a step
 * it follows that fails, or a raw step between the two, skips it without
 * harm; the steps posted after a sequence's EOS are skipped; and the worker
 * refuses a reference that points nowhere.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { type GenerateResult, SkipDecoder, SkipPolicy, type StreamEvent } from "../lib/index.ts";
import { Row, ROW_SAMPLE } from "../lib/engine/abi.ts";
import { EngineClient } from "../lib/engine/client.ts";
import { STEP_SKIPPED } from "../lib/engine/protocol.ts";
import { Scheduler, type SequenceSpec, type StepTarget } from "../lib/generation/scheduler.ts";
import { SlotPool } from "../lib/generation/slots.ts";
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cleanupTemp, tempDir, tinyModel } from "./helpers.ts";

afterAll(cleanupTemp);

const MODEL = { seed: 41, layers: 6, hidden: 48, heads: 4 } as const;
const PROMPTS = ["Hello world, this is", "The quick brown fox", "a", "Numbers: 1, 2, 3, 4, 5, 6, 7, 8, 9"];

/** A result without its timings and KV peak (compared by {@link sameResults}). */
function strip(r: GenerateResult): Omit<GenerateResult, "stats"> & { stats: Partial<GenerateResult["stats"]> } {
  const { prefillMs: _p, decodeMs: _d, tokensPerSecond: _t, seed: _s, kvBytes: _k, ...stats } = r.stats; // seed: drawn when not given
  return { ...r, stats };
}

/**
 * Pipelined results equal one-step ones; the KV peak too, except that a
 * generation stopped by a stop string (or by EOS beside other sequences) fed
 * the tokens of the steps already posted (their samples dropped), so it may
 * have held a few positions' blocks more.
 */
function sameResults(piped: GenerateResult[], one: GenerateResult[]): void {
  expect(piped.map(strip)).toEqual(one.map(strip));
  piped.forEach((p, i) => {
    const o = one[i]!;
    if (p.finishReason === "length") expect(p.stats.kvBytes).toBe(o.stats.kvBytes);
    else expect(p.stats.kvBytes).toBeGreaterThanOrEqual(o.stats.kvBytes);
  });
}

/** KV bytes in use once the resets queued behind the last step have run (the stats are as of the last request finished). */
async function usedAfterResets(e: { kvStats(): { usedBytes: number } }): Promise<number> {
  for (let i = 0; i < 200 && e.kvStats().usedBytes > 0; i++) await Bun.sleep(5);
  return e.kvStats().usedBytes;
}

/** One mixed workload: concurrent requests that join and leave, sampled and greedy, logprobs, stops, a batch, a stream. */
async function workload(dec: SkipDecoder): Promise<{ results: GenerateResult[]; events: StreamEvent[] }> {
  const L = dec.spec.numLayers;
  const free = await dec.generate(PROMPTS[1]!, { maxNewTokens: 24, ignoreEos: true });
  const stop = free.text.slice(9, 11);
  const events: StreamEvent[] = [];
  const streamed = (async () => {
    const it = dec.stream(PROMPTS[0]!, { maxNewTokens: 9, speedup: 2, ignoreEos: true, logprobs: 2 });
    for (;;) {
      const n = await it.next();
      if (n.done) return n.value;
      events.push(n.value);
    }
  })();
  const runs = await Promise.all([
    dec.generate(PROMPTS[0]!, { maxNewTokens: 12, temperature: 1.1, topK: 40, topP: 0.95, seed: 7, speedup: 2, ignoreEos: true }),
    dec.generate(PROMPTS[1]!, { maxNewTokens: 24, stop, ignoreEos: true }),
    dec.generate(PROMPTS[2]!, { maxNewTokens: 1, ignoreEos: true }),
    dec.generate(PROMPTS[2]!, { maxNewTokens: 2, ignoreEos: true, logprobs: 3 }),
    dec.generate(PROMPTS[3]!, { maxNewTokens: 17, policy: SkipPolicy.linear({ numLayers: L, maxLayers: L, minLayers: 1, span: 6, warmupLayers: 1 }), ignoreEos: true }),
    dec.generateBatch([PROMPTS[1]!, PROMPTS[3]!, PROMPTS[2]!], { maxNewTokens: 6, temperature: 0.8, seed: 3, speedup: 3, ignoreEos: true }),
    streamed,
  ]);
  // and one that starts while the others run
  const late = await dec.generate(PROMPTS[0]!, { maxNewTokens: 5, ignoreEos: true });
  const flat = runs.flatMap((r) => (Array.isArray(r) ? r : [r])) as GenerateResult[];
  return { results: [free, ...flat, late], events };
}

describe("pipelined steps", () => {
  test("give what one step at a time gives, through joins, stops and batches; the KV pool ends empty", async () => {
    const dir = tinyModel(MODEL);
    using one = await SkipDecoder.load(dir, { backend: "cpu", maxBatch: 8, pipeline: false });
    using piped = await SkipDecoder.load(dir, { backend: "cpu", maxBatch: 8, pipeline: true });
    expect(one.options.pipeline).toBe(false);
    expect(piped.options.pipeline).toBe(true);
    const a = await workload(one);
    const b = await workload(piped);
    sameResults(b.results, a.results);
    expect(b.events).toEqual(a.events);
    // the stop string did stop it: one row of one extra step ran, and its KV went back with the slot
    expect(a.results[2]!.finishReason).toBe("stop");
    expect(await usedAfterResets(piped)).toBe(0);
    expect(piped.load).toEqual({ running: 0, waiting: 0 });
  });

  test("EOS mid-run: the same tokens; the steps posted after it are skipped, so the KV peak is the same too", async () => {
    const dir = tinyModel(MODEL);
    using plain = await SkipDecoder.load(dir, { backend: "cpu", pipeline: false });
    const full = await plain.generate(PROMPTS[1]!, { maxNewTokens: 8, speedup: 2, ignoreEos: true });
    const eos = full.tokens[3]!;
    const copy = tempDir();
    cpSync(dir, copy, { recursive: true });
    const cfg = JSON.parse(readFileSync(join(copy, "config.json"), "utf8"));
    writeFileSync(join(copy, "config.json"), JSON.stringify({ ...cfg, eos_token_id: eos }));
    using one = await SkipDecoder.load(copy, { backend: "cpu", pipeline: false });
    using piped = await SkipDecoder.load(copy, { backend: "cpu", pipeline: true });
    const r = await piped.generate(PROMPTS[1]!, { maxNewTokens: 8, speedup: 2 });
    expect(r.finishReason).toBe("stop");
    expect(r.tokens).toEqual(full.tokens.slice(0, full.tokens.indexOf(eos)));
    const want = await one.generate(PROMPTS[1]!, { maxNewTokens: 8, speedup: 2 });
    sameResults([r], [want]);
    expect(r.stats.kvBytes).toBe(want.stats.kvBytes);
    expect(await usedAfterResets(piped)).toBe(0);
  });

  test("prompts fed in chunks, the context's end, aborts and early-closed streams whose slots others take", async () => {
    const dir = tinyModel(MODEL);
    const opts = { backend: "cpu", maxBatch: 2, maxBatchTokens: 5, maxSeqLen: 48 } as const;
    using one = await SkipDecoder.load(dir, { ...opts, pipeline: false });
    using piped = await SkipDecoder.load(dir, { ...opts, pipeline: true });
    const run = async (dec: SkipDecoder) => {
      const ctl = new AbortController();
      // aborted once the stream below has its tokens: between two steps, wherever they are
      const aborted = dec.generate(PROMPTS[3]!, { maxNewTokens: 10, ignoreEos: true, signal: ctl.signal, logprobs: 1 });
      const closed = (async () => {
        const got: StreamEvent[] = [];
        for await (const ev of dec.stream(PROMPTS[0]!, { maxNewTokens: 10, speedup: 2, ignoreEos: true })) {
          got.push(ev);
          if (got.length === 3) break; // leaves early: its slot goes back
        }
        return got;
      })();
      // waiting for a slot while the two above run; the first runs into the context's end
      const atEnd = dec.generate(PROMPTS[1]!, { maxNewTokens: 40, stopAtContext: true, ignoreEos: true, temperature: 0.7, seed: 9 });
      const queued = dec.generate(PROMPTS[2]!, { maxNewTokens: 6, speedup: 3, ignoreEos: true, logprobs: 2 });
      const first = await closed;
      ctl.abort();
      const gone = await aborted;
      return { first, gone: gone.finishReason, results: await Promise.all([atEnd, queued]) };
    };
    const a = await run(one);
    const b = await run(piped);
    expect(b.first).toEqual(a.first);
    expect(b.gone).toBe("abort");
    expect(a.results[0]!.finishReason).toBe("length");
    expect(a.results[0]!.promptTokens.length + a.results[0]!.tokens.length).toBe(48);
    sameResults(b.results, a.results);
    expect(await usedAfterResets(piped)).toBe(0);
  });

  test("pipelined by default; pipeline: false runs one step at a time; a bad value is refused by name", async () => {
    const dir = tinyModel(MODEL);
    using dflt = await SkipDecoder.load(dir, { backend: "cpu" });
    expect(dflt.options.pipeline).toBe(true);
    await expect(SkipDecoder.load(dir, { backend: "cpu", pipeline: "yes" as never })).rejects.toThrow(/pipeline must be true or false, got "yes"/);
  });
});

describe("the scheduler over a raw engine", () => {
  /** A scheduler over its own engine thread; `post` counted, and able to slip raw steps in between. */
  async function rig(opts: { pipeline: boolean; maxRows?: number }) {
    const dir = tinyModel(MODEL);
    using dec = await SkipDecoder.load(dir, { backend: "cpu", maxBatch: 4 });
    const tokenizer = dec.tokenizer;
    const engine = await EngineClient.start(dir, dec.spec, { ...dec.options, maxBatch: 5, kvDtype: undefined, kvBlocks: 0 });
    const slots = new SlotPool(4, engine); // slot 4 is the raw steps'
    const seen = { posted: 0, follows: 0, skipped: 0, inFlight: 0, mostInFlight: 0 };
    let between: (() => void) | null = null;
    const target: StepTarget = {
      numLayers: dec.spec.numLayers,
      maxSeqLen: dec.options.maxSeqLen,
      tokenizer,
      slots,
      step: (rows, n, params, tokens, lp) => engine.step(rows, n, params, null, tokens, lp),
      ...(opts.pipeline && {
        post: (rows, n, params, tokens, lp, follows, endIds) => {
          seen.posted++;
          if (follows !== null) seen.follows++;
          const h = engine.postStep(rows, n, params, null, tokens, lp, follows, endIds);
          seen.mostInFlight = Math.max(seen.mostInFlight, ++seen.inFlight);
          h.done.then(
            () => seen.inFlight--,
            (e: Error) => (seen.inFlight--, e.name === STEP_SKIPPED && seen.skipped++),
          );
          between?.(); // a raw step posted right after: the next pipelined step no longer follows the last to run
          return h;
        },
      }),
    };
    const sched = new Scheduler(target, opts.maxRows ?? 64);
    const spec = (prompt: number[], over: Partial<SequenceSpec> = {}): SequenceSpec => ({
      prompt, maxNewTokens: 10, policy: SkipPolicy.forSpeedup(2, { numLayers: dec.spec.numLayers, span: 8 }), temperature: 0, topK: 0, topP: 1,
      seed: 1, seq: 0, stop: [], eosIds: [], logprobs: null, ...over,
    });
    /** A raw one-row step on slot 4, from an empty slot; its errors kept. */
    const rawErrors: Error[] = [];
    const raw = () => {
      const rows = new Int32Array(Row.FIELDS);
      rows.set([2, 0, 4, dec.spec.numLayers, 1, 0]);
      engine.resetSlot(4);
      engine.step(rows, 1, null, null, null).catch((e: Error) => rawErrors.push(e));
    };
    return { sched, spec, seen, engine, setBetween: (f: (() => void) | null) => (between = f), raw, rawErrors };
  }

  test("runs ahead: most steps follow the one before, several in flight when steps are short", async () => {
    const r = await rig({ pipeline: true });
    try {
      const out = await r.sched.submit(r.spec([2, 10, 11, 12], { maxNewTokens: 20 })).promise;
      expect(out.tokens.length).toBe(20);
      // 20 tokens: the prefill, then 19 decode steps, each posted while the step before it ran
      expect(r.seen.posted).toBe(20);
      expect(r.seen.follows).toBe(19);
      expect(r.seen.skipped).toBe(0);
      // a tiny model's steps take well under AHEAD_MS: the scheduler keeps its most (MAX_AHEAD) in flight
      expect(r.seen.mostInFlight).toBe(4);
    } finally {
      r.engine.free();
    }
  });

  test("a sequence ended by EOS: the engine skips the steps posted after it, and the next request runs as alone", async () => {
    const r = await rig({ pipeline: true });
    try {
      const free = await r.sched.submit(r.spec([2, 10, 11, 12], { maxNewTokens: 20 })).promise;
      const eos = free.tokens[6]!;
      const posted = r.seen.posted;
      const ended = await r.sched.submit(r.spec([2, 10, 11, 12], { maxNewTokens: 20, eosIds: [eos] })).promise;
      expect(ended.finishReason).toBe("stop");
      expect(ended.tokens).toEqual(free.tokens.slice(0, free.tokens.indexOf(eos)));
      // steps went ahead of the EOS token; every one of them was skipped, and nothing of theirs counts as KV held
      const ran = free.tokens.indexOf(eos) + 1; // the prefill, then one decode step per token up to the EOS
      const sent = r.seen.posted - posted;
      expect(sent).toBeGreaterThan(ran);
      for (let i = 0; i < 200 && r.seen.inFlight > 0; i++) await Bun.sleep(5); // the skipped ones settle after the result
      expect(r.seen.skipped).toBe(sent - ran);
      const plain = await rig({ pipeline: false });
      try {
        const want = await plain.sched.submit(plain.spec([2, 10, 11, 12], { maxNewTokens: 20, eosIds: [eos] })).promise;
        expect(ended.stats.kvBytes).toBe(want.stats.kvBytes);
        expect(ended.budgets).toEqual(want.budgets);
      } finally {
        plain.engine.free();
      }
      const after = await r.sched.submit(r.spec([2, 30, 31], { maxNewTokens: 6 })).promise;
      const r2 = await rig({ pipeline: false });
      try {
        expect(after.tokens).toEqual((await r2.sched.submit(r2.spec([2, 30, 31], { maxNewTokens: 6 })).promise).tokens);
      } finally {
        r2.engine.free();
      }
      expect(await usedAfterResets(r.engine)).toBe(0);
    } finally {
      r.engine.free();
    }
  });

  test("a raw step slipped in between skips the next pipelined step; it goes again and the tokens are the same", async () => {
    const plain = await rig({ pipeline: false });
    const r = await rig({ pipeline: true });
    try {
      const prompts = [[2, 10, 11, 12], [2, 30, 31], [2, 5]];
      const want = await Promise.all(prompts.map((p, i) => plain.sched.submit(plain.spec(p, { maxNewTokens: 12 + i, temperature: 0.9, seed: 5 + i, logprobs: i })).promise));
      let every = 0;
      r.setBetween(() => ++every % 3 === 0 && r.raw());
      const got = await Promise.all(prompts.map((p, i) => r.sched.submit(r.spec(p, { maxNewTokens: 12 + i, temperature: 0.9, seed: 5 + i, logprobs: i })).promise));
      r.setBetween(null);
      expect(r.rawErrors).toEqual([]);
      expect(r.seen.skipped).toBeGreaterThan(0);
      expect(got.map((x) => x.tokens)).toEqual(want.map((x) => x.tokens));
      expect(got.map((x) => x.budgets)).toEqual(want.map((x) => x.budgets));
      expect(got.map((x) => x.logprobs)).toEqual(want.map((x) => x.logprobs));
    } finally {
      plain.engine.free();
      r.engine.free();
    }
  });

  test.each([64, 3])("a refused row fails its own sequence; the step after it is skipped and the others finish as alone (%d rows a step)", async (maxRows) => {
    // 3 rows a step: prompts are fed in chunks, so the refused step and the one after it both put prompt progress back
    const r = await rig({ pipeline: true, maxRows });
    try {
      const alone = [];
      for (const p of [[2, 10, 11], [2, 30, 31, 32]]) alone.push((await r.sched.submit(r.spec(p)).promise).tokens);
      const a = r.sched.submit(r.spec([2, 10, 11]));
      const b = r.sched.submit(r.spec([2, 30, 31, 32]));
      const started = Promise.withResolvers<void>();
      const c = r.sched.submit(r.spec([2, 10, 11], { maxNewTokens: 16, onEvent: (ev) => ev.type === "token" && ev.index === 3 && started.resolve() }));
      await started.promise;
      // joins while c decodes ahead: its last prompt row samples with top_p 0, refused by the engine
      const bad = r.sched.submit(r.spec([2, 5, 6], { temperature: 1, topP: 0 }));
      await expect(bad.promise).rejects.toThrow(/row \d+: top_p 0 must be in \(0, 1\]/);
      expect((await a.promise).tokens).toEqual(alone[0]!);
      expect((await b.promise).tokens).toEqual(alone[1]!);
      expect((await c.promise).tokens.slice(0, 10)).toEqual(alone[0]!);
      expect(r.seen.skipped).toBeGreaterThan(0);
      expect(await usedAfterResets(r.engine)).toBe(0);
    } finally {
      r.engine.free();
    }
  });
});

describe("the engine thread's references", () => {
  test("a step that follows a failed one is skipped; a reference past the tokens is refused by name; one feeding only end ids is skipped; the engine is unchanged", async () => {
    const dir = tinyModel(MODEL);
    using dec = await SkipDecoder.load(dir, { backend: "cpu", maxBatch: 2 });
    const engine = await EngineClient.start(dir, dec.spec, { ...dec.options, kvDtype: undefined, kvBlocks: 0 });
    try {
      const L = dec.spec.numLayers;
      const row = (token: number, pos: number, flags: number) => {
        const rows = new Int32Array(new SharedArrayBuffer(Row.FIELDS * 4));
        rows.set([token, pos, 0, L, 1, flags]);
        return rows;
      };
      const params = new Float32Array(new SharedArrayBuffer(8));
      params.set([0, 1]);
      const tokens = new Int32Array(new SharedArrayBuffer(16)); // 4 slots; each step here samples one row
      const settle = (h: { done: Promise<unknown> }) => h.done.then(() => null, (e: Error) => e);
      const fresh = () => new Int32Array(new SharedArrayBuffer(4));
      // a refused first step (position 5 of an empty slot), then one that follows it
      const bad = engine.postStep(row(2, 5, ROW_SAMPLE), 1, params, null, tokens, null, null);
      const next = engine.postStep(row(-1, 0, ROW_SAMPLE), 1, params, null, fresh(), null, bad.id);
      const [badErr, nextErr] = await Promise.all([settle(bad), settle(next)]);
      expect(String(badErr)).toMatch(/row 0: position 5 skips ahead of slot 0's length 0/);
      expect(nextErr).toMatchObject({ name: STEP_SKIPPED, message: expect.stringMatching(/skipped, the step it follows \(\d+\) failed/) });
      // a good step, then one whose reference points past that step's tokens, then one that follows the good one
      const ok = engine.postStep(row(2, 0, ROW_SAMPLE), 1, params, null, tokens, null, null);
      const far = engine.postStep(row(-3, 1, ROW_SAMPLE), 1, params, null, fresh(), null, ok.id);
      const late = engine.postStep(row(-1, 1, ROW_SAMPLE), 1, params, null, fresh(), null, ok.id);
      const [okErr, farErr, lateErr] = await Promise.all([settle(ok), settle(far), settle(late)]);
      expect(okErr).toBeNull();
      expect(String(farErr)).toMatch(/step: row 0: token -3 refers to sampled token 2 of step \d+, which sampled 1/); // the buffer has 4 slots
      expect(lateErr).toMatchObject({ name: STEP_SKIPPED, message: expect.stringMatching(/was not the last step to run/) }); // `far` ran (and failed) between
      // none of those wrote anything: position 1 of slot 0 is next
      const fedAt1 = tokens[0]!;
      await engine.step(row(fedAt1, 1, ROW_SAMPLE), 1, params, null, tokens);
      expect(engine.slotInfo(0, 0)).toEqual({ len: 2, kvLen: 2 });
      // endIds: a step whose rows all feed one of them is skipped, rows untouched; one whose row feeds another token runs.
      // Greedy, so the step at position 2 samples the same token each time it runs from the same history.
      const at2 = () => engine.postStep(row(tokens[0]!, 2, ROW_SAMPLE), 1, params, null, fresh(), null, null);
      const first = at2();
      const feeds = row(-1, 3, 0);
      const runs = engine.postStep(feeds, 1, null, null, null, null, first.id, [-7]);
      expect(await settle(first)).toBeNull();
      expect(await settle(runs)).toBeNull();
      expect(engine.slotInfo(0, 0)).toEqual({ len: 4, kvLen: 4 });
      await engine.resetSlot(0);
      await engine.step(row(2, 0, 0), 1, null, null, null);
      await engine.step(row(fedAt1, 1, 0), 1, null, null, null);
      const again = at2(); // the same history as `first`
      const fed = feeds[Row.TOKEN]!; // the step that ran wrote the token it fed in place of -1
      const endRows = row(-1, 3, 0);
      const skipped = engine.postStep(endRows, 1, null, null, null, null, again.id, [1, fed]);
      expect(await settle(again)).toBeNull();
      expect(await settle(skipped)).toMatchObject({ name: STEP_SKIPPED, message: expect.stringMatching(/every row feeds a token that ends its sequence/) });
      expect(endRows[Row.TOKEN]).toBe(-1);
      expect(engine.slotInfo(0, 0)).toEqual({ len: 3, kvLen: 3 });
    } finally {
      engine.free();
    }
  });
});
