/**
 * The CPU engine's paged KV cache (skipdecode.h, "the KV cache";
 * docs/kv-cache.md), through the C ABI (lib/engine/native.ts): numerics of each
 * storage dtype against the float64 reference, blocks held only where
 * layers compute, the pool's invariants over thousands of random
 * operations (a leak check), reservations equal to actual use on random
 * policies, refusals that change nothing, and batch invariance on a
 * fragmented pool.
 *
 * Tolerances vs the float64 reference: float32 keys/values 1e-4 × max|logit|
 * (fp32 arithmetic, as test/engine.test.ts had before 16-bit storage);
 * float16 2e-3 (measured at most 7.9e-4 on these models); bfloat16 2e-2
 * (measured at most 7.4e-3: 8 significant bits against float16's 11).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { readModelSpec } from "../lib/checkpoint/config.ts";
import { computesLayer, kvBlockBytes, kvBlocksNeeded, type KvDType } from "../lib/engine/kv.ts";
import { DType, Row, ROW_WANT_LOGITS } from "../lib/engine/abi.ts";
import { type NativeEngine, NativeError } from "../lib/engine/native.ts";
import { SkipPolicy } from "../lib/generation/policy.ts";
import { Rng, type TinyModelOptions } from "../lib/tiny/model.ts";
import { buildEngine } from "../lib/engine/weights.ts";
import { cleanupTemp, decaying, maxDiff, tinyModel } from "./helpers.ts";
import { ReferenceOpt } from "./reference.ts";
import { ReferenceLlama } from "./reference-llama.ts";

afterAll(cleanupTemp);

interface Built {
  e: NativeEngine;
  L: number;
  V: number;
  kd: number;
}

function engine(
  model: TinyModelOptions,
  o: { maxBatch?: number; maxSeqLen?: number; kvDtype?: KvDType; kvBlocks?: number; kvBlockSize?: number; threads?: number } = {},
): Built {
  const dir = tinyModel(model);
  const spec = readModelSpec(dir);
  const e = buildEngine(dir, spec, {
    backend: "cpu",
    dtype: "float32",
    maxBatch: o.maxBatch ?? 1,
    maxSeqLen: o.maxSeqLen ?? 64,
    // one thread unless asked: thousands of tiny steps, and a loaded machine makes every hand-off to a worker slow
    threads: o.threads ?? 1,
    maxBatchTokens: 64,
    checkWeights: false,
    kvDtype: o.kvDtype,
    kvBlocks: o.kvBlocks,
    kvBlockSize: o.kvBlockSize,
  });
  return { e, L: spec.numLayers, V: spec.vocabSize, kd: spec.numKvHeads * spec.headDim };
}

/** One step: rows [token, pos, slot, budget, warmup] (logits for every row). */
function step(b: Built, rows: [number, number, number, number, number][]): Float32Array {
  const r = new Int32Array(rows.length * Row.FIELDS);
  rows.forEach((x, i) => r.set([...x, ROW_WANT_LOGITS], i * Row.FIELDS));
  const out = new Float32Array(rows.length * b.V);
  b.e.step(r, rows.length, null, out, null);
  return out;
}

/** Teacher-forced logits of a fresh sequence in `slot`. */
function forward(b: Built, ids: number[], budgets: number[], w: number, slot = 0): Float32Array {
  b.e.resetSlot(slot);
  return step(b, ids.map((t, i) => [t, i, slot, budgets[i]!, w]));
}

/** A seeded uniform generator in [0, 1). */
function rng(seed: number): () => number {
  const g = new Rng(seed);
  return () => g.next();
}

const IDS = [2, 17, 250, 31, 8, 99, 300, 5, 77, 140, 12, 260, 44, 7, 190];
const SMALL: TinyModelOptions = { seed: 31, layers: 4, hidden: 32, heads: 2, ffn: 48 };

describe("storage dtypes against the float64 reference", () => {
  const CASES: [string, TinyModelOptions][] = [
    ["OPT pre-LN", { seed: 1, variant: "pre", dtype: "float32" }],
    ["OPT post-LN, project_in/out", { seed: 6, variant: "post", hidden: 64, embedDim: 32 }],
    ["OPT odd: hidden 52, 3 layers", { seed: 7, hidden: 52, heads: 4, ffn: 100, layers: 3 }],
    ["llama GQA 4:2", { family: "llama", seed: 21, heads: 4, kvHeads: 2 }],
    ["llama head_dim 24, one KV head", { family: "llama", seed: 22, heads: 4, kvHeads: 1, headDim: 24, tiedHead: true }],
    ["qwen2 biases, GQA 4:2", { family: "qwen2", seed: 25, heads: 4, kvHeads: 2, tiedHead: true }],
  ];
  const TOLS: [KvDType, number][] = [
    ["float32", 1e-4],
    ["float16", 2e-3],
    ["bfloat16", 2e-2],
  ];
  for (const [name, model] of CASES) {
    test(name, () => {
      const dir = tinyModel(model);
      const ref = model.family ? ReferenceLlama.load(dir) : ReferenceOpt.load(dir);
      for (const [kvDtype, tol] of TOLS) {
        // block size 3 (not a divisor of anything here): positions straddle blocks
        const b = engine(model, { kvDtype, kvBlockSize: 3 });
        try {
          expect(b.e.kvStats().dtype).toBe(kvDtype === "float32" ? DType.F32 : kvDtype === "float16" ? DType.F16 : DType.BF16);
          for (const w of [0, 1, 2].filter((x) => x <= b.L)) {
            for (const budgets of [IDS.map(() => b.L), decaying(IDS.length, 5, b.L, Math.max(1, w))]) {
              const { diff, scale, at } = maxDiff(forward(b, IDS, budgets, w), ref.forward(IDS, budgets, w), b.V);
              if (diff > tol * scale) console.error(`${name} / ${kvDtype} / warm-up ${w}: max |Δ| ${diff} (scale ${scale}) at ${at}`);
              expect(diff).toBeLessThanOrEqual(tol * scale);
            }
          }
        } finally {
          b.e.free();
        }
      }
    });
  }

  test("the block size changes where keys live, never the numbers", () => {
    for (const kvDtype of ["float32", "float16"] as KvDType[]) {
      const outs = [1, 3, 16, 64].map((kvBlockSize) => {
        const b = engine({ family: "llama", seed: 21, heads: 4, kvHeads: 2 }, { kvDtype, kvBlockSize });
        try {
          return forward(b, IDS, decaying(IDS.length, 5, b.L, 1), 1);
        } finally {
          b.e.free();
        }
      });
      for (const o of outs.slice(1)) expect(o).toEqual(outs[0]!);
    }
  });
});

describe("the pool", () => {
  test("stats of a fresh engine: the default pool holds every slot at full depth", () => {
    const b = engine(SMALL, { maxBatch: 3, maxSeqLen: 40 });
    try {
      const s = b.e.kvStats();
      const blockBytes = kvBlockBytes(b.kd, "float16", 16);
      expect(s).toEqual({
        poolBytes: 3 * b.L * 3 * blockBytes, // ceil(40 / 16) = 3 blocks per (slot, layer)
        usedBytes: 0,
        reservedBytes: 0,
        blockSize: 16,
        blockBytes,
        blocks: 3 * b.L * 3,
        blocksFree: 3 * b.L * 3,
        blocksAvailable: 3 * b.L * 3,
        dtype: DType.F16,
        paged: true,
      });
      // the pool in float16 is half of what the float32 cache of the same shape holds
      const f = engine(SMALL, { maxBatch: 3, maxSeqLen: 40, kvDtype: "float32" });
      expect(f.e.kvStats().poolBytes).toBe(2 * s.poolBytes);
      f.e.free();
    } finally {
      b.e.free();
    }
  });

  test("a layer holds blocks only for the positions that computed it", () => {
    const b = engine(SMALL, { kvBlockSize: 4 });
    try {
      const L = b.L;
      // 6 prompt positions at full depth, then budgets 3, 3, 2, 2, 2, 1, 1, 1, 1 with warm-up 1
      const budgets = [L, L, L, L, L, L, 3, 3, 2, 2, 2, 1, 1, 1, 1];
      forward(b, IDS, budgets, 1);
      for (let l = 0; l < L; l++) {
        const n = budgets.filter((x) => computesLayer(l, L, x, 1)).length;
        expect(b.e.slotInfo(0, l).kvLen).toBe(n);
      }
      // layer 0 (warm-up): 15 positions → 4 blocks; layer 1, computed only by the prompt: 6 → 2;
      // layer 2, by budgets >= 3: 8 → 2; layer 3, by budgets >= 2: 11 → 3
      const want = kvBlocksNeeded(L, 4, 6, budgets.slice(6), 1);
      expect(want).toBe(4 + 2 + 2 + 3);
      const s = b.e.kvSlotStats(0);
      expect(s).toEqual({ owned: want, peak: want, reserved: 0 });
      expect(b.e.kvStats().usedBytes).toBe(want * kvBlockBytes(b.kd, "float16", 4));
      b.e.kvCheck();
    } finally {
      b.e.free();
    }
  });

  test("a rewind and a reset give blocks back at once; the peak remembers", () => {
    const b = engine(SMALL, { kvBlockSize: 4, maxSeqLen: 64 });
    try {
      const L = b.L;
      const ids = Array.from({ length: 40 }, (_, i) => (i * 7) % 300);
      forward(b, ids, ids.map(() => L), 1);
      expect(b.e.kvSlotStats(0).owned).toBe(L * 10);
      step(b, [[5, 10, 0, L, 1]]); // rewind: positions 10.. forgotten, position 10 rewritten → 11 positions
      expect(b.e.kvSlotStats(0)).toEqual({ owned: L * 3, peak: L * 10, reserved: 0 });
      expect(b.e.kvStats().blocksFree).toBe(b.e.kvStats().blocks - L * 3);
      b.e.kvCheck();
      b.e.resetSlot(0);
      expect(b.e.kvSlotStats(0)).toEqual({ owned: 0, peak: 0, reserved: 0 });
      expect(b.e.kvStats().usedBytes).toBe(0);
      b.e.kvCheck();
    } finally {
      b.e.free();
    }
  });

  test("a step the pool cannot hold is refused whole, changing nothing; a reservation protects its slot", () => {
    // 2 slots, a pool of 12 blocks of 4 positions; 4 layers
    const b = engine(SMALL, { maxBatch: 2, kvBlocks: 12, kvBlockSize: 4 });
    try {
      const L = b.L;
      b.e.kvReserve(0, 8); // slot 0 will hold 8 positions at full depth: 2 blocks × 4 layers
      expect(b.e.kvStats().blocksAvailable).toBe(4);
      // slot 1 (unreserved) may take the 4 unpromised blocks: 4 positions at 4 layers
      step(b, [0, 1, 2, 3].map((p) => [10 + p, p, 1, L, 1]));
      expect(b.e.kvStats().blocksAvailable).toBe(0);
      const before = { stats: b.e.kvStats(), s0: b.e.slotInfo(0, 0), s1: b.e.slotInfo(1, 0) };
      // slot 1's fifth position needs 4 more blocks: refused, even mixed with slot 0's rows
      let err: unknown;
      try {
        step(b, [
          [20, 0, 0, L, 1],
          [21, 4, 1, L, 1],
        ]);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(NativeError);
      expect((err as NativeError).status).toBe("SKD_ERR_KV_FULL");
      expect((err as Error).message).toContain("slot 1 would own 8 blocks (reservation 0)");
      expect({ stats: b.e.kvStats(), s0: b.e.slotInfo(0, 0), s1: b.e.slotInfo(1, 0) }).toEqual(before);
      b.e.kvCheck();
      // slot 0 grows into its reservation whatever slot 1 holds
      for (let p = 0; p < 8; p++) step(b, [[30 + p, p, 0, L, 1]]);
      expect(b.e.kvSlotStats(0)).toEqual({ owned: 8, peak: 8, reserved: 8 });
      // and a ninth position is past its promise, with nothing unpromised left
      expect(() => step(b, [[40, 8, 0, L, 1]])).toThrow(/SKD_ERR_KV_FULL/);
      // a reservation the pool cannot promise is refused, changing nothing; shrinking always works
      expect(() => b.e.kvReserve(1, 5)).toThrow(/cannot reserve 5 KV blocks: 8 of the pool's 12 are promised/);
      expect(b.e.kvSlotStats(1).reserved).toBe(0);
      b.e.kvReserve(1, 4); // exactly what it owns: no new promise
      b.e.kvReserve(0, 0); // the promise goes, the owned blocks stay counted
      expect(b.e.kvStats().reservedBytes).toBe(b.e.kvStats().usedBytes);
      b.e.resetSlot(1);
      expect(b.e.kvSlotStats(1)).toEqual({ owned: 0, peak: 0, reserved: 0 });
      step(b, [[40, 8, 0, L, 1]]); // slot 1's blocks came back: slot 0 grows
      b.e.kvCheck();
      expect(() => b.e.kvReserve(2, 1)).toThrow(/slot 2 out of range/);
      expect(() => b.e.kvReserve(0, -1)).toThrow(/blocks must be a non-negative integer/);
      expect(() => b.e.kvSlotStats(-1)).toThrow(/slot -1 out of range/);
    } finally {
      b.e.free();
    }
  });

  test("bad pool settings are refused with a message naming the slot", () => {
    expect(() => engine(SMALL, { maxSeqLen: 8, kvBlockSize: 9 })).toThrow(/KV_BLOCK_SIZE \(9\) must be in 1\.\.MAX_SEQ \(8\)/);
    expect(() => engine(SMALL, { kvBlockSize: 0, maxSeqLen: 5 }).e.free()).not.toThrow(); // default: min(16, MAX_SEQ)
  });
});

describe("random operations keep every block free or owned by exactly one (slot, layer)", () => {
  test("3000 operations: append, rewind, reset, reserve, finish; no block leaks", () => {
    const SLOTS = 4;
    const B = 3;
    const maxSeq = 40;
    // a pool of half what every slot at full depth would need: steps and reservations do get refused
    const full = SLOTS * SMALL.layers! * Math.ceil(maxSeq / B);
    const b = engine(SMALL, { maxBatch: SLOTS, maxSeqLen: maxSeq, kvBlocks: full >> 1, kvBlockSize: B });
    const L = b.L;
    const r = rng(1234);
    const int = (n: number) => Math.floor(r() * n);
    // the test's own model of each slot: the budget and warm-up of every position, and its reservation
    const seqs = Array.from({ length: SLOTS }, () => ({ budgets: [] as number[], w: 1, reserved: 0 }));
    const owned = (i: number) => {
      const s = seqs[i]!;
      return kvBlocksNeeded(L, B, 0, s.budgets, s.w);
    };
    const counts = { steps: 0, refusedSteps: 0, reserves: 0, refusedReserves: 0, resets: 0, rewinds: 0 };
    try {
      for (let op = 0; op < 3000; op++) {
        const kind = r();
        if (kind < 0.55) {
          // a step: rows for 1..3 slots, each appending (or, 1 time in 8, rewinding) a few positions
          const rows: [number, number, number, number, number][] = [];
          const planned = new Map<number, { budgets: number[]; w: number }>();
          const order = [0, 1, 2, 3].sort(() => r() - 0.5).slice(0, 1 + int(3));
          let rewound = false;
          for (const i of order) {
            const s = seqs[i]!;
            let start = s.budgets.length;
            if (start > 0 && int(8) === 0) {
              start = int(start); // rewind to an earlier position
              rewound = true;
            }
            const n = Math.min(1 + int(4), maxSeq - start);
            if (n <= 0) continue;
            const w = start === 0 ? int(3) : s.w; // a fresh sequence picks its warm-up
            const kept = s.budgets.slice(0, start);
            let prev = kept.length ? kept[kept.length - 1]! : L;
            const mine: number[] = [];
            for (let k = 0; k < n; k++) {
              // budgets never increase; sometimes they drop
              const lo = Math.max(1, w);
              const bgt = int(3) === 0 ? lo + int(prev - lo + 1) : prev;
              prev = bgt;
              mine.push(bgt);
              rows.push([(start + k) % 300, start + k, i, bgt, w]);
            }
            planned.set(i, { budgets: [...kept, ...mine], w });
          }
          if (!rows.length) continue;
          const before = b.e.kvStats();
          // the pool's answer, predicted from the model
          let promised = 0;
          for (let i = 0; i < SLOTS; i++) {
            const p = planned.get(i);
            const n = p ? kvBlocksNeeded(L, B, 0, p.budgets, p.w) : owned(i);
            promised += Math.max(n, seqs[i]!.reserved);
          }
          const fits = promised <= before.blocks;
          try {
            step(b, rows);
            expect(fits).toBe(true);
            for (const [i, p] of planned) Object.assign(seqs[i]!, p);
            counts.steps++;
            if (rewound) counts.rewinds++;
          } catch (e) {
            expect((e as NativeError).status).toBe("SKD_ERR_KV_FULL");
            expect(fits).toBe(false);
            expect(b.e.kvStats()).toEqual(before); // refused whole: nothing changed
            counts.refusedSteps++;
          }
        } else if (kind < 0.8) {
          // reserve: grow or shrink a slot's promise
          const i = int(SLOTS);
          const want = int(L * Math.ceil(maxSeq / B) + 1);
          const s = b.e.kvStats();
          const others = s.reservedBytes / s.blockBytes - Math.max(seqs[i]!.reserved, owned(i));
          const ok = want <= seqs[i]!.reserved || others + Math.max(want, owned(i)) <= s.blocks;
          try {
            b.e.kvReserve(i, want);
            expect(ok).toBe(true);
            seqs[i]!.reserved = want;
            counts.reserves++;
          } catch (e) {
            expect((e as NativeError).status).toBe("SKD_ERR_KV_FULL");
            expect(ok).toBe(false);
            expect(b.e.kvStats()).toEqual(s);
            counts.refusedReserves++;
          }
        } else {
          // finish / abort: the slot is reset, its blocks and promise go back at once
          const i = int(SLOTS);
          b.e.resetSlot(i);
          seqs[i] = { budgets: [], w: 1, reserved: 0 };
          counts.resets++;
        }
        b.e.kvCheck();
        let used = 0;
        let promised = 0;
        for (let i = 0; i < SLOTS; i++) {
          const o = owned(i);
          const st = b.e.kvSlotStats(i);
          expect(st.owned).toBe(o);
          expect(st.reserved).toBe(seqs[i]!.reserved);
          used += o;
          promised += Math.max(o, seqs[i]!.reserved);
        }
        const s = b.e.kvStats();
        expect(s.usedBytes).toBe(used * s.blockBytes);
        expect(s.reservedBytes).toBe(promised * s.blockBytes);
        expect(s.blocksFree).toBe(s.blocks - used);
        expect(s.blocksAvailable).toBe(s.blocks - promised);
      }
      // every kind of operation happened, refusals included
      for (const [k, v] of Object.entries(counts)) {
        if (v < 20) console.error(`only ${v} ${k}`);
        expect(v).toBeGreaterThanOrEqual(20);
      }
      for (let i = 0; i < SLOTS; i++) b.e.resetSlot(i);
      b.e.kvCheck();
      const s = b.e.kvStats();
      expect([s.usedBytes, s.reservedBytes, s.blocksFree]).toEqual([0, 0, s.blocks]);
    } finally {
      b.e.free();
    }
  });
});

describe("exact reservation", () => {
  test("on random policies the reservation equals the peak, in a pool with no block to spare", () => {
    const r = rng(99);
    const int = (n: number) => Math.floor(r() * n);
    const model: TinyModelOptions = { seed: 32, layers: 6, hidden: 32, heads: 2, ffn: 48 };
    for (let trial = 0; trial < 40; trial++) {
      const L = 6;
      const B = 1 + int(8);
      const w = int(3);
      const prompt = 1 + int(20);
      const maxNew = 1 + int(40);
      const span = 1 + int(40);
      const lo = Math.max(1, w);
      const pick = int(4);
      const policy =
        pick === 0
          ? SkipPolicy.forSpeedup(1 + r() * (L / lo - 1), { numLayers: L, span, warmupLayers: w })
          : pick === 1
            ? SkipPolicy.power({ numLayers: L, maxLayers: lo + int(L - lo + 1), minLayers: lo, span, warmupLayers: w, exponent: 0.5 + r() * 3 })
            : pick === 2
              ? SkipPolicy.full(L, { warmupLayers: w })
              : SkipPolicy.linear({ numLayers: L, maxLayers: L, minLayers: lo + int(L - lo + 1), span, warmupLayers: w });
      // positions fed: the prompt, then generated tokens 0..maxNew-2 (the last is never fed back)
      const budgets = Array.from({ length: maxNew - 1 }, (_, i) => policy.layersAt(i));
      const need = kvBlocksNeeded(L, B, prompt, budgets, w);
      const b = engine(model, { maxSeqLen: 64, kvBlocks: need, kvBlockSize: B });
      try {
        b.e.kvReserve(0, need);
        expect(b.e.kvStats().blocksAvailable).toBe(0);
        step(b, Array.from({ length: prompt }, (_, p) => [(p * 13) % 300, p, 0, L, w]));
        budgets.forEach((bg, i) => step(b, [[(i * 5) % 300, prompt + i, 0, bg, w]]));
        const s = b.e.kvSlotStats(0);
        expect(s).toEqual({ owned: need, peak: need, reserved: need });
        b.e.kvCheck();
      } finally {
        b.e.free();
      }
    }
  });
});

describe("batch invariance on a fragmented pool", () => {
  test("rows of several sequences in one step equal each sequence alone on a fresh engine", () => {
    const model: TinyModelOptions = { family: "llama", seed: 33, layers: 4, hidden: 32, heads: 4, kvHeads: 2, ffn: 48 };
    const B = 2;
    const shared = engine(model, { maxBatch: 3, kvBlockSize: B, threads: 2 });
    try {
      const L = shared.L;
      const seqs = [
        { ids: [2, 40, 41, 42, 43, 44, 45, 46, 47], budgets: [L, L, L, 3, 3, 2, 2, 1, 1], w: 1 },
        { ids: [2, 90, 91, 92, 93, 94, 95], budgets: [L, L, 2, 2, 2, 2, 2], w: 2 },
        { ids: [2, 7, 8, 9, 10, 11, 12, 13], budgets: [L, L, L, L, 1, 1, 1, 1], w: 0 },
      ];
      // churn first, so the free stack hands out blocks out of order
      for (let k = 0; k < 5; k++) {
        for (let s = 0; s < 3; s++) step(shared, Array.from({ length: 3 + k + s }, (_, p) => [p + 1, p, s, L, 1]));
        shared.e.resetSlot(k % 3);
        shared.e.resetSlot((k + 1) % 3);
      }
      for (let s = 0; s < 3; s++) shared.e.resetSlot(s);
      // interleave: one position of every sequence per step, so their blocks alternate in the pool
      const got = seqs.map(() => [] as Float32Array[]);
      for (let p = 0; p < 9; p++) {
        const rows = seqs.flatMap((q, s) => (p < q.ids.length ? [[q.ids[p]!, p, s, q.budgets[p]!, q.w] as [number, number, number, number, number]] : []));
        const out = step(shared, rows);
        let k = 0;
        seqs.forEach((q, s) => {
          if (p >= q.ids.length) return;
          got[s]!.push(out.subarray(k * shared.V, (k + 1) * shared.V));
          k++;
        });
      }
      shared.e.kvCheck();
      for (const [s, q] of seqs.entries()) {
        const alone = engine(model, { kvBlockSize: 16 });
        try {
          const want = forward(alone, q.ids, q.budgets, q.w);
          const mine: Float32Array = new Float32Array(want.length);
          got[s]!.forEach((row, p) => mine.set(row, p * shared.V));
          expect(mine).toEqual(want); // bit-identical: same arithmetic, whatever the blocks and batch-mates
        } finally {
          alone.e.free();
        }
      }
    } finally {
      shared.e.free();
    }
  });
});
