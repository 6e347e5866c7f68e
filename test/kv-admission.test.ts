/**
 * KV admission through the decoder (docs/kv-cache.md, "Reservation"): a
 * generation starts only when its exact KV need can be promised, waits in
 * order when the pool cannot, gives its promise back when it ends (early or
 * not), and never fails for lack of KV; dec.kvStats(), stats.kvBytes, the
 * load options and the server's gauges. The engine's own pool (blocks,
 * invariants, reservation = peak at the C level) is test/kv.test.ts.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { type GenerateResult, SkipDecoder, SkipPolicy } from "../lib/index.ts";
import { kvBlocksNeeded, sequenceKvBlocks } from "../lib/engine/kv.ts";
import { Row } from "../lib/engine/abi.ts";
import { Rng } from "../lib/tiny/model.ts";
import { createApp } from "../server/app.ts";
import { cleanupTemp, tinyModel } from "./helpers.ts";

afterAll(cleanupTemp);

// OPT, 6 layers, kd 48: a float16 block of 16 positions is 2 × 16 × 48 × 2 = 3072 bytes
const MODEL = { seed: 23, layers: 6, hidden: 48, heads: 4, maxPositions: 128 } as const;
const BLOCK = 3072;
const L = MODEL.layers;
/** An 8-token prompt and 24 new tokens at full depth feed 31 positions: 2 blocks a layer, 12 in all. */
const FULL_NEED = 12;

const prompt = (seed: number, n = 8) => [2, ...Array.from({ length: n - 1 }, (_, i) => 4 + ((seed * 7 + i * 13) % 40))];
const quietStats = (d: SkipDecoder) => {
  const k = d.kvStats();
  return { usedBytes: k.usedBytes, reservedBytes: k.reservedBytes, blocksFree: k.blocksFree };
};
const idle = (d: SkipDecoder) => ({ usedBytes: 0, reservedBytes: 0, blocksFree: d.kvStats().blocks });

/** Waits until the engine thread has caught up with the resets the last generations queued. */
async function settled(d: SkipDecoder): Promise<void> {
  for (let i = 0; i < 200 && d.kvStats().usedBytes + d.kvStats().reservedBytes > 0; i++) await Bun.sleep(5);
}

describe("load options and stats", () => {
  test("kvStats, kvCacheBytes rounded to blocks and capped at the default, kvDtype float32, bad values named", async () => {
    const dir = tinyModel(MODEL);
    {
      using dec = await SkipDecoder.load(dir, { backend: "cpu", maxBatch: 2, maxSeqLen: 64 });
      const k = dec.kvStats();
      // the default: every slot at full depth and length
      expect(k).toMatchObject({ blockSize: 16, blockBytes: BLOCK, blocks: 2 * L * 4, dtype: "float16", paged: true, usedBytes: 0, reservedBytes: 0 });
      expect(k.poolBytes).toBe(k.blocks * BLOCK);
      expect(k.blocksFree).toBe(k.blocks);
      expect(dec.options.kvCacheBytes).toBe(k.poolBytes);
      expect(dec.options.kvDtype).toBe("float16");
    }
    {
      using dec = await SkipDecoder.load(dir, { backend: "cpu", maxBatch: 2, maxSeqLen: 64, kvCacheBytes: 20 * BLOCK + 100 });
      expect(dec.kvStats().blocks).toBe(20);
    }
    {
      using dec = await SkipDecoder.load(dir, { backend: "cpu", maxBatch: 2, maxSeqLen: 64, kvCacheBytes: 10 ** 12 });
      expect(dec.kvStats().blocks).toBe(2 * L * 4);
    }
    {
      using dec = await SkipDecoder.load(dir, { backend: "cpu", maxBatch: 2, maxSeqLen: 64, kvDtype: "float32", kvCacheBytes: 20 * 2 * BLOCK });
      const k = dec.kvStats();
      expect(k).toMatchObject({ dtype: "float32", blockBytes: 2 * BLOCK, blocks: 20 });
      const r = await dec.generate(prompt(1), { maxNewTokens: 8, ignoreEos: true });
      expect(r.stats.kvBytes).toBe(L * 1 * 2 * BLOCK); // 8 + 7 positions: one block a layer
    }
    await expect(SkipDecoder.load(dir, { backend: "cpu", kvCacheBytes: 1000 })).rejects.toThrow(
      /kvCacheBytes 1000 cannot hold one block per layer \(6 layers × 3072 bytes = 18432\)/,
    );
    await expect(SkipDecoder.load(dir, { backend: "cpu", kvCacheBytes: -5 })).rejects.toThrow(/kvCacheBytes must be an integer/);
    await expect(SkipDecoder.load(dir, { backend: "cpu", kvCacheBytes: "64MB" as never })).rejects.toThrow(/kvCacheBytes must be an integer/);
    await expect(SkipDecoder.load(dir, { backend: "cpu", kvDtype: "int8" as never })).rejects.toThrow(/kvDtype/);
  });

  test("a need beyond the whole pool is refused at once, naming the sizes; forward and batches too", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu", maxBatch: 4, maxSeqLen: 64, kvCacheBytes: 14 * BLOCK });
    const big = { maxNewTokens: 40, ignoreEos: true };
    // 8 + 39 positions: 3 blocks a layer, 18 > 14
    expect(() => dec.check(prompt(1), big)).toThrow(/needs 18 KV blocks \(0\.1 MiB\), more than the whole pool of 14 .*kvCacheBytes/);
    await expect(dec.generate(prompt(1), big)).rejects.toThrow(/more than the whole pool/);
    await expect(dec.generateBatch([prompt(1), prompt(2)], { maxNewTokens: 24, ignoreEos: true })).rejects.toThrow(
      /this batch of 2 prompts needs 24 KV blocks/,
    );
    await expect(dec.forward(Array.from({ length: 40 }, (_, i) => 4 + i))).rejects.toThrow(/SkipDecoder\.forward: 40 ids needs 18 KV blocks/);
    // nothing was taken
    expect(quietStats(dec)).toEqual(idle(dec));
    expect((await dec.generate(prompt(1), { maxNewTokens: 24, ignoreEos: true })).tokens.length).toBe(24);
  });
});

describe("admission", () => {
  test("when the pool is exhausted requests queue instead of failing, in order, and give the same tokens", async () => {
    const dir = tinyModel(MODEL);
    using solo = await SkipDecoder.load(dir, { backend: "cpu", maxBatch: 4, maxSeqLen: 64 });
    // room for one full-depth request at a time, though four slots are free
    using dec = await SkipDecoder.load(dir, { backend: "cpu", maxBatch: 4, maxSeqLen: 64, kvCacheBytes: (FULL_NEED + 2) * BLOCK });
    const opts = { maxNewTokens: 24, ignoreEos: true, temperature: 0 };
    const want = await Promise.all([0, 1, 2, 3].map((i) => solo.generate(prompt(i), opts)));
    let most = 0;
    let waited = 0;
    const order: number[] = [];
    const run = async (i: number): Promise<GenerateResult> => {
      const it = dec.stream(prompt(i), opts);
      for (;;) {
        const ev = await it.next();
        if (ev.done) {
          order.push(i);
          return ev.value;
        }
        const { running, waiting } = dec.load;
        most = Math.max(most, running);
        waited = Math.max(waited, waiting);
        const k = dec.kvStats();
        expect(k.reservedBytes).toBeLessThanOrEqual(k.poolBytes);
        expect(k.usedBytes).toBeLessThanOrEqual(k.reservedBytes);
      }
    };
    const got = await Promise.all([0, 1, 2, 3].map(run));
    expect(most).toBe(1);
    expect(waited).toBeGreaterThanOrEqual(1);
    expect(order).toEqual([0, 1, 2, 3]);
    for (let i = 0; i < 4; i++) {
      expect(got[i]!.finishReason).toBe("length");
      expect(got[i]!.tokens).toEqual(want[i]!.tokens);
      expect(got[i]!.stats.kvBytes).toBe(FULL_NEED * BLOCK);
    }
    await settled(dec);
    expect(quietStats(dec)).toEqual(idle(dec));
  });

  test("a skipping request needs less, so more run at once in the same pool", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu", maxBatch: 4, maxSeqLen: 64, kvCacheBytes: (FULL_NEED + 2) * BLOCK });
    const policy = SkipPolicy.linear({ numLayers: L, maxLayers: 3, minLayers: 1, span: 8, warmupLayers: 1 });
    const opts = { maxNewTokens: 24, ignoreEos: true, policy };
    const need = sequenceKvBlocks({ numLayers: L, blockSize: 16, promptLen: 8, maxNewTokens: 24, maxSeqLen: 64, layersAt: (i) => policy.layersAt(i), warmupLayers: 1 });
    expect(2 * need).toBeLessThanOrEqual(FULL_NEED + 2);
    let most = 0;
    const run = async (i: number) => {
      for await (const _ of dec.stream(prompt(i), opts)) most = Math.max(most, dec.load.running);
    };
    await Promise.all([0, 1, 2, 3].map(run));
    expect(most).toBe(2);
  });

  test("a sequence that stops early gives its promise back at once and the next one starts", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu", maxBatch: 2, maxSeqLen: 64, kvCacheBytes: (FULL_NEED + 2) * BLOCK });
    const ac = new AbortController();
    const first = (async () => {
      const it = dec.stream(prompt(1), { maxNewTokens: 24, ignoreEos: true, signal: ac.signal });
      let seen = 0;
      for (;;) {
        const ev = await it.next();
        if (ev.done) return ev.value;
        if (ev.value.type === "token" && ++seen === 3) {
          // the second request waits for this one's blocks
          expect(dec.load).toEqual({ running: 1, waiting: 1 });
          ac.abort();
        }
      }
    })();
    const second = dec.generate(prompt(2), { maxNewTokens: 24, ignoreEos: true });
    const a = await first;
    expect(a.finishReason).toBe("abort");
    expect(a.stats.kvBytes).toBeLessThan(FULL_NEED * BLOCK); // held only what it fed
    const r = await second;
    expect(r.finishReason).toBe("length");
    expect(r.tokens.length).toBe(24);
    await settled(dec);
    expect(quietStats(dec)).toEqual(idle(dec));
  });

  test("on random policies the promise is the exact need while the sequence runs, and what it held never exceeds it", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu", maxBatch: 1, maxSeqLen: 64 });
    const rng = new Rng(7);
    for (let c = 0; c < 16; c++) {
      const P = 1 + Math.floor(rng.next() * 20);
      const n = 1 + Math.floor(rng.next() * 40);
      const w = Math.floor(rng.next() * 3);
      const maxLayers = Math.max(1, w) + Math.floor(rng.next() * (L - Math.max(1, w) + 1));
      const minLayers = Math.max(1, w) + Math.floor(rng.next() * (maxLayers - Math.max(1, w) + 1));
      const policy = SkipPolicy.linear({ numLayers: L, maxLayers, minLayers, span: 1 + Math.floor(rng.next() * 30), warmupLayers: w });
      const need = sequenceKvBlocks({ numLayers: L, blockSize: 16, promptLen: P, maxNewTokens: n, maxSeqLen: 64, layersAt: (i) => policy.layersAt(i), warmupLayers: w });
      const seen: { index: number; reserved: number; used: number }[] = [];
      const it = dec.stream(prompt(c, P), { maxNewTokens: n, ignoreEos: true, policy });
      let r: GenerateResult;
      for (;;) {
        const ev = await it.next();
        if (ev.done) {
          r = ev.value;
          break;
        }
        if (ev.value.type === "token") seen.push({ index: ev.value.index, reserved: dec.kvStats().reservedBytes, used: dec.kvStats().usedBytes });
      }
      const where = `case ${c}: P ${P}, n ${n}, ${policy}`;
      // before its last token the sequence is running: its promise is exactly its need
      for (const s of seen.filter((x) => x.index < n - 1)) {
        expect({ where, reserved: s.reserved }).toEqual({ where, reserved: need * BLOCK });
        expect(s.used).toBeLessThanOrEqual(s.reserved);
      }
      // it ran to maxNewTokens: what it held at its peak is its need, block for block
      expect({ where, kvBytes: r.stats.kvBytes }).toEqual({ where, kvBytes: need * BLOCK });
      expect(r.stats.kvBytes).toBe(kvBlocksNeeded(L, 16, P, r.budgets, w) * BLOCK);
      // and the engine agrees: replaying the same positions in a slot holds exactly that much
      await settled(dec);
      const ids = [...r.promptTokens, ...r.tokens.slice(0, r.budgets.length)];
      const budgets = [...r.promptTokens.map(() => L), ...r.budgets];
      const slot = dec.acquireSlot();
      try {
        const rows = new Int32Array(ids.length * Row.FIELDS);
        ids.forEach((t, i) => {
          rows.set([t, i, slot, budgets[i]!, w], i * Row.FIELDS);
        });
        dec.stepRows(rows, ids.length, null);
        expect({ where, engine: dec.kvStats().usedBytes }).toEqual({ where, engine: r.stats.kvBytes });
      } finally {
        dec.releaseSlot(slot);
      }
      await settled(dec);
    }
  });

  test("leak check: 200 random generations, aborts, forwards and refusals leave the pool whole", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu", maxBatch: 4, maxSeqLen: 64, kvCacheBytes: 20 * BLOCK });
    const rng = new Rng(11);
    const pick = (n: number) => Math.floor(rng.next() * n);
    const inFlight = new Set<Promise<unknown>>();
    let done = 0;
    let refused = 0;
    let aborted = 0;
    for (let op = 0; op < 200; op++) {
      while (inFlight.size >= 6) await Promise.race(inFlight);
      const kind = pick(10);
      const P = 1 + pick(30);
      const n = 1 + pick(40);
      const speedup = [1, 1.5, 2, 3, 5][pick(5)]!;
      let p: Promise<unknown>;
      if (kind === 0) {
        const ids = prompt(op, 1 + pick(60));
        p = dec.forward(ids, { budgets: ids.map(() => 1 + pick(L)).sort((a, b) => b - a) }).catch((e: Error) => {
          if (!/more than the whole pool/.test(e.message)) throw e;
          refused++;
        });
      } else if (kind <= 3) {
        const ac = new AbortController();
        const stopAfter = pick(n + 1);
        p = (async () => {
          let k = 0;
          for await (const ev of dec.stream(prompt(op, P), { maxNewTokens: n, ignoreEos: true, stopAtContext: true, speedup, signal: ac.signal })) {
            if (ev.type === "token" && ++k >= stopAfter) ac.abort();
          }
          aborted++;
        })().catch((e: Error) => {
          if (!/more than the whole pool/.test(e.message)) throw e;
          refused++;
        });
      } else {
        p = dec.generate(prompt(op, P), { maxNewTokens: n, ignoreEos: true, stopAtContext: true, speedup, temperature: 0.7, seed: op }).then(
          () => void done++,
          (e: Error) => {
            if (!/more than the whole pool/.test(e.message)) throw e;
            refused++;
          },
        );
      }
      const tracked: Promise<unknown> = p.finally(() => inFlight.delete(tracked));
      inFlight.add(tracked);
      const k = dec.kvStats();
      expect(k.usedBytes).toBeLessThanOrEqual(k.reservedBytes);
      expect(k.reservedBytes).toBeLessThanOrEqual(k.poolBytes);
    }
    await Promise.all(inFlight);
    expect(done).toBeGreaterThan(60);
    expect(aborted).toBeGreaterThan(20);
    expect(refused).toBeGreaterThan(0);
    await settled(dec);
    expect(quietStats(dec)).toEqual(idle(dec));
  });
});

describe("the server", () => {
  test("with a small pool concurrent requests all succeed, and /metrics carries the KV gauges", async () => {
    using dec = await SkipDecoder.load(tinyModel(MODEL), { backend: "cpu", maxBatch: 4, maxSeqLen: 64, kvCacheBytes: (FULL_NEED + 2) * BLOCK });
    const srv = createApp(dec, { modelName: "tiny", maxQueue: 16, log: () => {} });
    const post = (i: number) =>
      srv.app.request("/v1/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ model: "tiny", prompt: prompt(i), max_tokens: 24, ignore_eos: true }),
      });
    const answers = await Promise.all([0, 1, 2, 3, 4, 5].map(post));
    for (const a of answers) expect(a.status).toBe(200);
    const tooBig = await srv.app.request("/v1/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: "tiny", prompt: prompt(1), max_tokens: 50, ignore_eos: true }),
    });
    expect(tooBig.status).toBe(400);
    expect(await tooBig.text()).toMatch(/more than the whole pool/);
    const text = await (await srv.app.request("/metrics")).text();
    const gauge = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1]);
    expect(gauge("skipdecode_kv_cache_pool_bytes")).toBe((FULL_NEED + 2) * BLOCK);
    expect(gauge("skipdecode_kv_cache_block_size")).toBe(16);
    for (const g of ["used_bytes", "reserved_bytes", "blocks_free", "usage_perc"]) expect(gauge(`skipdecode_kv_cache_${g}`)).toBeGreaterThanOrEqual(0);
    expect(gauge("skipdecode_kv_cache_usage_perc")).toBeLessThanOrEqual(1);
  });
});
