/**
 * The checks every model family gets, written once and parameterised by the
 * family: the CPU engine against the family's own float64 reference (the
 * module its Family names in `reference`) under every budget schedule, an F32
 * file kept in 16 bits against the same reference, and step-by-step decoding
 * through the KV cache. test/engine.test.ts runs them for OPT,
 * test/llama.test.ts for the LLaMA family, test/cuda.test.ts reuses the
 * step-by-step decoder on the GPU.
 */
import { describe, expect, test } from "bun:test";
import { resolve } from "node:path";
import { readModelSpec } from "../lib/checkpoint/config.ts";
import { familyOf } from "../lib/checkpoint/family.ts";
import type { ModelSpec } from "../lib/checkpoint/spec.ts";
import { SkipDecoder } from "../lib/index.ts";
import { Row, ROW_WANT_LOGITS } from "../lib/engine/abi.ts";
import type { TinyModelOptions } from "../lib/tiny/model.ts";
import { decaying, maxDiff, tinyModel } from "./helpers.ts";

/** What a family's float64 reference module provides (its `loadReference`). */
export interface Reference {
  spec: ModelSpec;
  /** Logits of every position, position i computing budgets[i] layers with `warmup` warm-up layers. */
  forward(ids: number[], budgets: number[], warmup: number): Float64Array[];
}

/** The float64 reference of the model in `dir`, found through its family. */
export async function loadReference(dir: string): Promise<Reference> {
  const family = familyOf(readModelSpec(dir).arch, dir);
  const mod = (await import(resolve(import.meta.dir, "..", family.reference))) as { loadReference(dir: string): Reference };
  return mod.loadReference(dir);
}

/** Budget schedules over n positions: full, and for warm-ups 0..2 the minimal budget and a decay after `prompt` full positions. */
export function schedules(n: number, prompt: number, L: number): [string, number[], number][] {
  const out: [string, number[], number][] = [["full", new Array(n).fill(L), 1]];
  for (const w of [0, 1, 2].filter((x) => x <= L)) {
    const min = Math.max(1, w);
    out.push([`minimal, warm-up ${w}`, new Array(n).fill(min), w]);
    out.push([`decaying, warm-up ${w}`, decaying(n, prompt, L, min), w]);
  }
  return out;
}

/** An F32 case is loaded as F32 for the exact check (the CPU's "auto" would store it in 16 bits). */
const isF32 = (m: TinyModelOptions) => (m.dtype ?? "float32") === "float32";

/**
 * The reference-comparison matrix: for each case, the CPU engine's logits
 * under every schedule within `tol` × max|logit| of the family's reference
 * (the engine widens 16-bit weights exactly and computes in fp32, so one bound
 * serves F32, F16 and BF16 files); then every F32 case loaded as the CPU's
 * default keeps its matrices in 16 bits: half the bytes, within 1e-2.
 */
export function referenceMatrix(title: string, cases: [string, TinyModelOptions][], o: { ids: number[]; prompt: number; tol: number }): void {
  describe(title, () => {
    for (const [name, model] of cases) {
      test(name, async () => {
        const dir = tinyModel(model);
        const ref = await loadReference(dir);
        const V = ref.spec.vocabSize;
        using dec = await SkipDecoder.load(dir, { backend: "cpu", threads: 2, dtype: isF32(model) ? "float32" : "auto" });
        expect(dec.backend).toBe("cpu");
        for (const [label, budgets, w] of schedules(o.ids.length, o.prompt, ref.spec.numLayers)) {
          const { diff, scale, at } = maxDiff(await dec.forward(o.ids, { budgets, warmupLayers: w }), ref.forward(o.ids, budgets, w), V);
          if (diff > o.tol * scale) console.error(`${name} / ${label}: max |Δ| ${diff} (scale ${scale}) at ${at}`);
          expect(diff).toBeLessThanOrEqual(o.tol * scale);
        }
      });
    }

    test("an F32 file kept in 16 bits (the CPU default) stays within 1e-2 × max|logit|", async () => {
      // float16 weights carry 11 significant bits: each weight is off by <= 2^-12 relative,
      // which moves the logits by well under 1% of their range on these models
      for (const [, model] of cases.filter(([, m]) => isF32(m))) {
        const dir = tinyModel(model);
        const ref = await loadReference(dir);
        using dec = await SkipDecoder.load(dir, { backend: "cpu" });
        using full = await SkipDecoder.load(dir, { backend: "cpu", dtype: "float32" });
        expect(dec.weightBytes).toBe(full.weightBytes / 2);
        const budgets = decaying(o.ids.length, o.prompt, ref.spec.numLayers, 1);
        const { diff, scale } = maxDiff(await dec.forward(o.ids, { budgets }), ref.forward(o.ids, budgets, 1), ref.spec.vocabSize);
        expect(diff).toBeGreaterThan(0);
        expect(diff).toBeLessThanOrEqual(1e-2 * scale);
      }
    });
  });
}

/**
 * Logits of `ids` decoded step by step through the KV cache of one slot: the
 * first `prefill` positions in one step, then one position per step, position
 * t computing budgets[t] layers (warm-up 1). Compare with `dec.forward` over
 * the whole sequence.
 */
export function stepByStep(dec: SkipDecoder, ids: number[], budgets: number[], prefill = 1): Float32Array {
  const V = dec.spec.vocabSize;
  const out = new Float32Array(ids.length * V);
  const slot = dec.acquireSlot();
  try {
    for (let t = 0; t < ids.length; ) {
      const n = t === 0 ? Math.max(1, prefill) : 1;
      const rows = new Int32Array(n * Row.FIELDS);
      for (let i = 0; i < n; i++) rows.set([ids[t + i]!, t + i, slot, budgets[t + i]!, 1, ROW_WANT_LOGITS], i * Row.FIELDS);
      dec.stepRows(rows, n, out.subarray(t * V, (t + n) * V));
      t += n;
    }
  } finally {
    dec.releaseSlot(slot);
  }
  return out;
}
