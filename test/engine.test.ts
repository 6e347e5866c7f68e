/**
 * The CPU engine against the float64 reference (test/reference.ts): logits,
 * layer skipping, KV bookkeeping, batching, and the library's errors.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { SkipDecoder } from "../lib/index.ts";
import { readModelSpec } from "../lib/checkpoint/config.ts";
import { Param, Row, ROW_LOGPROBS, ROW_SAMPLE, ROW_WANT_LOGITS } from "../lib/engine/abi.ts";
import { NativeBackend } from "../lib/engine/native.ts";
import { buildEngine } from "../lib/engine/weights.ts";
import type { TinyModelOptions } from "../lib/tiny/model.ts";
import { argmax, cleanupTemp, decaying, tinyModel } from "./helpers.ts";
import { referenceMatrix, stepByStep } from "./family-checks.ts";
import { sampleReference } from "./reference.ts";

afterAll(cleanupTemp);

// Tolerance vs the float64 reference: the engine widens 16-bit weights exactly
// and computes in fp32, so one bound serves F32, F16 and BF16 files; keys and
// values are stored in float16 (the KV cache's default: 11 significant bits),
// which moves these logits by at most 7.9e-4 × max|logit| (the float32 cache
// stays within 1e-4: test/kv.test.ts).
const TOL = 2e-3;

const IDS = [2, 17, 250, 31, 8, 99, 300, 5, 77, 140, 12, 260, 44];

/** Step rows from lists of leading fields (the rest stay 0). */
function rowsOf(list: number[][]): Int32Array {
  const r = new Int32Array(list.length * Row.FIELDS);
  list.forEach((x, i) => r.set(x, i * Row.FIELDS));
  return r;
}

interface Case {
  name: string;
  model: TinyModelOptions;
}

const CASES: Case[] = [
  { name: "pre-LN F32, tied head", model: { seed: 1, variant: "pre", dtype: "float32", tiedHead: true } },
  { name: "post-LN F32", model: { seed: 2, variant: "post", dtype: "float32" } },
  { name: "pre-LN F16", model: { seed: 3, variant: "pre", dtype: "float16" } },
  { name: "post-LN BF16", model: { seed: 4, variant: "post", dtype: "bfloat16" } },
  { name: "pre-LN BF16, project_in/out, tied head", model: { seed: 5, dtype: "bfloat16", hidden: 48, embedDim: 24, tiedHead: true } },
  { name: "post-LN project_in/out (opt-350m style), decoder.* names", model: { seed: 6, variant: "post", hidden: 64, embedDim: 32, prefix: "decoder." } },
  { name: "odd: hidden 52, ffn 100, 3 layers", model: { seed: 7, hidden: 52, heads: 4, ffn: 100, layers: 3 } },
  { name: "odd: one head, one layer, hidden 36", model: { seed: 8, hidden: 36, heads: 1, layers: 1, ffn: 70 } },
  { name: "vocab padded far past the tokenizer", model: { seed: 9, layers: 2, vocab: 1000 } },
];

referenceMatrix("CPU engine matches the float64 reference", CASES.map((c) => [c.name, c.model]), { ids: IDS, prompt: 4, tol: TOL });

describe("layer skipping", () => {
  test("skipping changes the logits (the budgets are really applied)", async () => {
    const dir = tinyModel(CASES[0]!.model);
    using dec = await SkipDecoder.load(dir, { backend: "cpu" });
    const L = dec.spec.numLayers;
    const full = await dec.forward(IDS);
    const skipped = await dec.forward(IDS, { budgets: decaying(IDS.length, 4, L, 1) });
    const V = dec.spec.vocabSize;
    // the prompt part is identical, the skipped part differs
    expect(Array.from(skipped.subarray(0, 4 * V))).toEqual(Array.from(full.subarray(0, 4 * V)));
    expect(Array.from(skipped.subarray(8 * V))).not.toEqual(Array.from(full.subarray(8 * V)));
  });
});

describe("KV cache and batching", () => {
  const model = { seed: 11, variant: "pre", layers: 4 } as const;

  test("token-by-token decoding through the KV cache equals forward over the whole sequence", async () => {
    const dir = tinyModel(model);
    using dec = await SkipDecoder.load(dir, { backend: "cpu", threads: 2 });
    const budgets = decaying(IDS.length, 3, dec.spec.numLayers, 1);
    const whole = await dec.forward(IDS, { budgets, warmupLayers: 1 });
    // prefill the first 3 in one step, then one token per step; every row is
    // computed the same way whatever else is in its step: bit-identical
    expect(Array.from(stepByStep(dec, IDS, budgets, 3))).toEqual(Array.from(whole));
  });

  test("a batch step mixing rows of several sequences equals running them apart", async () => {
    const dir = tinyModel(model);
    using dec = await SkipDecoder.load(dir, { backend: "cpu", threads: 2, maxBatch: 4 });
    const L = dec.spec.numLayers;
    const V = dec.spec.vocabSize;
    const seqs = [
      { ids: [2, 40, 41, 42, 43, 44, 45], budgets: [L, L, L, 3, 2, 2, 1], w: 1 },
      { ids: [2, 90, 91, 92, 93], budgets: [L, L, 2, 2, 2], w: 2 },
      { ids: [2, 7, 8, 9, 10, 11], budgets: [L, L, L, L, 1, 1], w: 0 },
    ];
    const alone = await Promise.all(seqs.map((s) => dec.forward(s.ids, { budgets: s.budgets, warmupLayers: s.w })));
    const slots = seqs.map(() => dec.acquireSlot());
    try {
      // step 1: seq 0 prefills 3, seq 1 prefills 2, seq 2 prefills 4 (interleaved rows)
      // then: each step carries one decode row per unfinished sequence
      const cursor = [0, 0, 0];
      const got = seqs.map((s) => new Float32Array(s.ids.length * V));
      const plan = [[3, 2, 4], [1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 0, 0]];
      for (const counts of plan) {
        const list: number[][] = [];
        const owners: [number, number][] = [];
        // interleave: round-robin one row per sequence while any has rows left
        const left = counts.slice();
        while (left.some((n) => n > 0)) {
          seqs.forEach((s, k) => {
            if (left[k]! <= 0) return;
            const t = cursor[k]!++;
            left[k]!--;
            list.push([s.ids[t]!, t, slots[k]!, s.budgets[t]!, s.w, ROW_WANT_LOGITS]);
            owners.push([k, t]);
          });
        }
        const logits = new Float32Array(list.length * V);
        dec.stepRows(rowsOf(list), list.length, logits);
        owners.forEach(([k, t], i) => got[k]!.set(logits.subarray(i * V, (i + 1) * V), t * V));
      }
      seqs.forEach((s, k) => {
        expect(cursor[k]).toBe(s.ids.length);
        // bit-identical: a row's arithmetic never depends on its batch-mates
        expect(Buffer.compare(Buffer.from(got[k]!.buffer), Buffer.from(alone[k]!.buffer))).toBe(0);
      });
    } finally {
      slots.forEach((s) => dec.releaseSlot(s));
    }
  });

  test("a budget that would read KV never written is refused, and nothing changes", async () => {
    const dir = tinyModel(model);
    using dec = await SkipDecoder.load(dir, { backend: "cpu" });
    const L = dec.spec.numLayers;
    await expect(dec.forward([2, 5, 6], { budgets: [L, 1, 2], warmupLayers: 1 })).rejects.toThrow(
      /computes layer 3, but positions 1\.\.1 skipped it.*SKD_ERR_KV_MISSING/,
    );
    const slot = dec.acquireSlot();
    try {
      dec.stepRows(rowsOf([[2, 0, slot, L, 1, 0], [5, 1, slot, 1, 1, 0]]), 2, null);
      const before = dec.slotInfo(slot, L - 2);
      expect(before).toEqual({ len: 2, kvLen: 1 });
      // position 1 (budget 1 = the warm-up layer) skipped layers 1..L-1; budget 3 at
      // position 2 computes layers 0, L-2, L-1 and so needs KV that was never written
      expect(() => dec.stepRows(rowsOf([[6, 2, slot, 3, 1, 0]]), 1, null)).toThrow(/SKD_ERR_KV_MISSING/);
      expect(dec.slotInfo(slot, L - 2)).toEqual(before);
      // an equal or smaller budget goes through
      dec.stepRows(rowsOf([[6, 2, slot, 1, 1, 0]]), 1, null);
      expect(dec.slotInfo(slot, 0)).toEqual({ len: 3, kvLen: 3 });
    } finally {
      dec.releaseSlot(slot);
    }
  });

  test("the engine refuses malformed rows with a message naming the field", async () => {
    const dir = tinyModel(model);
    using dec = await SkipDecoder.load(dir, { backend: "cpu", maxSeqLen: 32 });
    const L = dec.spec.numLayers;
    const V = dec.spec.vocabSize;
    const bad: [number[], RegExp][] = [
      [[V, 0, 0, L, 1, 0], /token \d+ out of range/],
      [[2, 32, 0, L, 1, 0], /position 32 out of range 0\.\.31/],
      [[2, 0, 99, L, 1, 0], /slot 99 out of range/],
      [[2, 0, 0, L + 1, 1, 0], /budget \d+ out of range/],
      [[2, 0, 0, 1, 2, 0], /budget 1 out of range 2\.\./],
      [[2, 5, 0, L, 1, 0], /skips ahead/],
      [[2, 0, 0, L, 1, 8], /unknown flag/],
    ];
    for (const [row, re] of bad) expect(() => dec.stepRows(rowsOf([row]), 1, null)).toThrow(re);
    expect(() => dec.stepRows(rowsOf([[2, 0, 0, L, 1, ROW_WANT_LOGITS]]), 1, null)).toThrow(/1 rows want logits; the buffer holds 0 floats/);
    expect(() => dec.stepRows(rowsOf([[2, 0, 0, L, 1, ROW_SAMPLE]]), 1, null, new Float32Array(2), null)).toThrow(/1 rows sample/);
    const params = (t: number, p: number) => new Float32Array([t, p]);
    const sampleRow = (topK: number) => rowsOf([[2, 0, 0, L, 1, ROW_SAMPLE, topK]]);
    const tok = new Int32Array(1);
    expect(() => dec.stepRows(sampleRow(0), 1, null, null, tok)).toThrow(/params pointer is NULL/);
    expect(() => dec.stepRows(sampleRow(0), 1, null, params(-1, 1), tok)).toThrow(/temperature -1 must be finite and >= 0/);
    expect(() => dec.stepRows(sampleRow(0), 1, null, params(NaN, 1), tok)).toThrow(/temperature nan must be finite/);
    expect(() => dec.stepRows(sampleRow(0), 1, null, params(1, 0), tok)).toThrow(/top_p 0 must be in \(0, 1\]/);
    expect(() => dec.stepRows(sampleRow(0), 1, null, params(1, 1.5), tok)).toThrow(/top_p 1.5 must be in/);
    expect(() => dec.stepRows(sampleRow(-3), 1, null, params(1, 1), tok)).toThrow(/top_k -3 must be >= 0/);
  });
});

describe("sampling in the engine follows the header's rules", () => {
  test("greedy is the argmax; seeded draws equal the reference sampler for every setting", async () => {
    const dir = tinyModel({ seed: 31, layers: 2 });
    using dec = await SkipDecoder.load(dir, { backend: "cpu", maxBatch: 8 });
    const L = dec.spec.numLayers;
    const V = dec.spec.vocabSize;
    const settings = [
      { temperature: 0, topK: 0, topP: 1 },
      { temperature: 1, topK: 1, topP: 1 },
      { temperature: 0.8, topK: 0, topP: 1 },
      { temperature: 1, topK: 40, topP: 1 },
      { temperature: 0.7, topK: 0, topP: 0.9 },
      { temperature: 1.3, topK: 20, topP: 0.95 },
      { temperature: 5, topK: 0, topP: 0.5 },
    ];
    // 8 sequences × 6 positions, each row flagged WANT_LOGITS | SAMPLE with its own key
    const n = 8;
    const slots = Array.from({ length: n }, () => dec.acquireSlot());
    let checked = 0;
    try {
      for (const [si, s] of settings.entries()) {
        for (let pos = 0; pos < 6; pos++) {
          const rows = new Int32Array(n * Row.FIELDS);
          const params = new Float32Array(n * Param.FIELDS);
          for (let k = 0; k < n; k++) {
            const r = k * Row.FIELDS;
            rows.set([(7 * k + 13 * pos + si) % V, pos, slots[k]!, L, 1, ROW_WANT_LOGITS | ROW_SAMPLE, s.topK, k, pos, 1000 + si, si], r);
            params.set([s.temperature, s.topP], k * Param.FIELDS);
          }
          const logits = new Float32Array(n * V);
          const tokens = new Int32Array(n);
          dec.stepRows(rows, n, logits, params, tokens);
          for (let k = 0; k < n; k++) {
            const row = logits.subarray(k * V, (k + 1) * V);
            const seed = BigInt(1000 + si) + (BigInt(si) << 32n);
            const want = sampleReference(row, { ...s, seed, seq: k, step: pos });
            expect(tokens[k]).toBe(want);
            if (s.temperature === 0 || s.topK === 1) expect(tokens[k]).toBe(argmax(row, 0, V));
            checked++;
          }
        }
      }
    } finally {
      slots.forEach((s) => dec.releaseSlot(s));
    }
    expect(checked).toBe(settings.length * 6 * n);
  });

  test("draw frequencies follow the softmax; top-k and top-p never leave their sets", async () => {
    const dir = tinyModel({ seed: 31, layers: 2 });
    using dec = await SkipDecoder.load(dir, { backend: "cpu", maxBatch: 1, maxBatchTokens: 512 });
    const L = dec.spec.numLayers;
    const V = dec.spec.vocabSize;
    const draws = 400;
    // the same context in one slot, re-run at position 0 with many RNG steps per step call
    const slot = dec.acquireSlot();
    try {
      const logits = new Float32Array(V);
      dec.stepRows(rowsOf([[2, 0, slot, L, 1, ROW_WANT_LOGITS]]), 1, logits);
      const T = 1.5;
      const mx = Math.max(...logits);
      const w = Array.from(logits, (x) => Math.exp((x - mx) / T));
      const z = w.reduce((a, b) => a + b, 0);
      const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]!);
      const counts = new Map<string, number[]>();
      for (const [name, topK, topP] of [["plain", 0, 1], ["top-k 5", 5, 1], ["top-p 0.6", 0, 0.6]] as const) {
        const c = new Array(V).fill(0);
        for (let d = 0; d < draws; d++) {
          const tokens = new Int32Array(1);
          // position 0 again: the slot rewinds, so every draw sees the same logits
          const rows = rowsOf([[2, 0, slot, L, 1, ROW_SAMPLE, topK, 0, d, 42, 0]]);
          dec.stepRows(rows, 1, null, new Float32Array([T, topP]), tokens);
          c[tokens[0]!]++;
        }
        counts.set(name, c);
      }
      // plain: the most likely token's frequency is near its probability (5 sigma)
      const top = order[0]!;
      const pTop = w[top]! / z;
      const sigma = Math.sqrt((pTop * (1 - pTop)) / draws);
      expect(Math.abs(counts.get("plain")![top] / draws - pTop)).toBeLessThan(5 * sigma + 1e-9);
      // top-k 5: only the 5 most likely ids appear
      const allowed = new Set(order.slice(0, 5));
      counts.get("top-k 5")!.forEach((n, i) => n > 0 && expect(allowed.has(i)).toBe(true));
      // top-p 0.6: only ids of the nucleus appear
      let cum = 0;
      const nucleus = new Set<number>();
      for (const i of order) {
        nucleus.add(i);
        cum += w[i]! / z;
        if (cum >= 0.6) break;
      }
      counts.get("top-p 0.6")!.forEach((n, i) => n > 0 && expect(nucleus.has(i)).toBe(true));
      expect(new Set(counts.get("plain")!.flatMap((n, i) => (n > 0 ? [i] : []))).size).toBeGreaterThan(nucleus.size);
    } finally {
      dec.releaseSlot(slot);
    }
  });
});

describe("skd_engine_step_logprobs", () => {
  test("the C ABI's logprobs: layout, ties to the lower id, and refusals that change nothing", () => {
    const dir = tinyModel({ seed: 9, layers: 2, hidden: 32, heads: 2 });
    const spec = readModelSpec(dir);
    const engine = buildEngine(dir, spec, { backend: "cpu", dtype: "float32", maxBatch: 2, maxSeqLen: 32, threads: 1, maxBatchTokens: 8, checkWeights: true });
    try {
      const V = spec.vocabSize;
      // two sampling rows of two sequences; the second also returns its logits
      const rows = rowsOf([
        [2, 0, 0, 2, 1, ROW_SAMPLE | ROW_LOGPROBS, 0, 0, 0, 7, 0],
        [5, 0, 1, 2, 1, ROW_SAMPLE | ROW_LOGPROBS | ROW_WANT_LOGITS, 0, 0, 0, 7, 0],
      ]);
      const params = new Float32Array([0, 1, 0, 1]);
      const logits = new Float32Array(V);
      const tokens = new Int32Array(2);
      const nTop = 3;
      const values = new Float32Array(2 * (1 + nTop));
      const ids = new Int32Array(2 * nTop);
      engine.step(rows, 2, params, logits, tokens, nTop, values, ids);
      // row 1 against its logits
      let mx = -Infinity;
      for (const x of logits) mx = Math.max(mx, x);
      let sum = 0;
      for (const x of logits) sum += Math.exp(x - mx);
      const lse = mx + Math.log(sum);
      const order = Array.from(logits, (x, id) => ({ id, x })).sort((a, b) => b.x - a.x || a.id - b.id);
      expect(Array.from(ids.subarray(nTop))).toEqual(order.slice(0, nTop).map((o) => o.id));
      expect(tokens[1]).toBe(order[0]!.id); // greedy
      expect(Math.abs(values[1 + nTop]! - (logits[tokens[1]!]! - lse))).toBeLessThan(1e-5);
      for (let j = 0; j < nTop; j++) expect(Math.abs(values[1 + nTop + 1 + j]! - (order[j]!.x - lse))).toBeLessThan(1e-5);
      expect(values[0]).toBeLessThanOrEqual(0);
      // refusals: the KV state is untouched after each
      const before = engine.slotInfo(0, 0);
      const next = (flags: number) => rowsOf([[tokens[0]!, 1, 0, 2, 1, flags, 0, 0, 1, 7, 0]]);
      expect(() => engine.step(next(ROW_LOGPROBS), 1, params, null, tokens, 1, values, ids)).toThrow(/row 0 asks for logprobs but does not sample/);
      expect(() => engine.step(next(ROW_SAMPLE | ROW_LOGPROBS), 1, params, null, tokens, 21, values, ids)).toThrow(/nTop must be an integer in 0\.\.20, got 21/);
      // no buffer for the values: refused before the call
      expect(() => engine.step(next(ROW_SAMPLE | ROW_LOGPROBS), 1, params, null, tokens, 0, null, null)).toThrow(/lpValues holds 0 floats/);
      expect(engine.slotInfo(0, 0)).toEqual(before);
    } finally {
      engine.free();
    }
  });
});

describe("the bandwidth measures (bench membw's roofline)", () => {
  const cpu = NativeBackend.get("cpu");
  test("skd_membw_passes gives one positive rate per pass", () => {
    const rates = cpu.membwPasses(2 ** 20, 1, 5);
    expect(rates).toHaveLength(5);
    for (const r of rates) expect(r).toBeGreaterThan(0.01);
    for (const r of rates) expect(Number.isFinite(r)).toBe(true);
  });
  test("bad sizes and counts are refused by name", () => {
    expect(() => cpu.membwPasses(1000, 1, 5)).toThrow(/bytes must be in 1 MiB .. 64 GiB, got 1000/);
    expect(() => cpu.membwPasses(2 ** 20, 1, 0)).toThrow(/passes must be in 1..100000, got 0/);
    expect(() => cpu.membwPasses(2 ** 20, -1, 2)).toThrow(/threads must be >= 0, got -1/);
    expect(() => cpu.membw(2 ** 20, 1, 0)).toThrow(/reps must be in 1..1000, got 0/);
  });
});
