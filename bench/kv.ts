#!/usr/bin/env bun
/**
 * bench kv — the paged, 16-bit KV cache (docs/kv-cache.md), on the CPU engine:
 *
 *   bytes        KV bytes one sequence holds at its peak (--prompt 32 tokens,
 *                --new-tokens 256) at full depth and SkipDecode 2x/3x/5x
 *                (forSpeedup, span = new tokens, warm-up 1), measured by
 *                running it through the engine, beside the exact share of
 *                full depth's position-layers the budgets allow, and against
 *                the float32 contiguous cache a slot held before (L × context
 *                × kd × 8 bytes, allocated whole).
 *   concurrency  how many such requests a fixed pool (--pool-mb) admits at
 *                once: the engine's own reservations, made until it refuses.
 *   decode       decode tokens/s at short and long context, batch 1 and 16:
 *                paged float16 (the default) and paged float32 against the
 *                contiguous float32 layout (one block per slot and layer:
 *                block size = context, the memory layout the cache had
 *                before). The three engines run in turn within each rep.
 *   logits       what float16 / bfloat16 storage does to the logits of the
 *                trained models/brown-opt-12l on held-out text, against the
 *                float32 cache: max |Δlogit| over max |logit|, argmax
 *                agreement, and greedy generations compared token by token.
 *
 * Prints markdown tables, writes JSON to --out.
 */
import { join } from "node:path";
import { readModelSpec } from "../lib/checkpoint/config.ts";
import { SkipTokenizer } from "../lib/checkpoint/tokenizer.ts";
import { kvBlockBytes, kvBlocksNeeded, type KvDType } from "../lib/engine/kv.ts";
import { Param, Row, ROW_SAMPLE, ROW_WANT_LOGITS } from "../lib/engine/abi.ts";
import { type NativeEngine, NativeError } from "../lib/engine/native.ts";
import { SkipPolicy } from "../lib/generation/policy.ts";
import { buildEngine } from "../lib/engine/weights.ts";
import { flags, machine, median, numList, pm, ROOT, shapeModel, stddev, table, writeJson } from "./common.ts";

const SECTIONS = ["bytes", "concurrency", "decode", "logits"];
const USAGE = `usage: bun run bench kv [--sections ${SECTIONS.join(",")}] [--models opt-350m,llama-400m] [--prompt 32] [--new-tokens 256]
                          [--speedups 1,2,3,5] [--pool-mb 64] [--decode-models llama-110m] [--contexts 128,2048]
                          [--batches 1,16] [--layouts contiguous-f32,paged-f32,paged-f16] [--decode-tokens 16] [--reps 5]
                          [--threads 0] [--clock wall|cpu] [--out bench/results/kv.json]
  --clock cpu   time decode steps by the process's CPU time instead of the wall clock: with --threads 1 the engine
                runs on the calling thread, so a machine shared with other work gives steadier numbers`;
const f = flags(USAGE, {
  sections: { type: "string", default: SECTIONS.join(",") },
  models: { type: "string", default: "opt-350m,llama-400m" },
  prompt: { type: "string", default: "32" },
  "new-tokens": { type: "string", default: "256" },
  speedups: { type: "string", default: "1,2,3,5" },
  "pool-mb": { type: "string", default: "64" },
  "decode-models": { type: "string", default: "llama-110m" },
  contexts: { type: "string", default: "128,2048" },
  batches: { type: "string", default: "1,16" },
  layouts: { type: "string", default: "contiguous-f32,paged-f32,paged-f16" },
  "decode-tokens": { type: "string", default: "16" },
  reps: { type: "string", default: "5" },
  threads: { type: "string", default: "0" },
  clock: { type: "string", default: "wall" },
  out: { type: "string", default: join(ROOT, "bench/results/kv.json") },
  help: { type: "boolean", default: false },
});
const sections = f.sections.split(",").map((s) => s.trim());
for (const s of sections) {
  if (!SECTIONS.includes(s)) {
    console.error(`--sections: unknown section "${s}" (known: ${SECTIONS.join(", ")})\n\n${USAGE}`);
    process.exit(2);
  }
}
const P = Number(f.prompt);
const N = Number(f["new-tokens"]);
const T = Number(f["decode-tokens"]);
const reps = Number(f.reps);
const threads = Number(f.threads);
const poolMb = Number(f["pool-mb"]);
for (const [k, v] of [["prompt", P], ["new-tokens", N], ["decode-tokens", T], ["reps", reps], ["pool-mb", poolMb]] as const) {
  if (!Number.isInteger(v) || v < 1) {
    console.error(`--${k} must be a positive integer\n\n${USAGE}`);
    process.exit(2);
  }
}
if (!Number.isInteger(threads) || threads < 0) {
  console.error(`--threads must be a non-negative integer\n\n${USAGE}`);
  process.exit(2);
}
if ((f.clock !== "wall" && f.clock !== "cpu") || (f.clock === "cpu" && threads !== 1)) {
  // with worker threads the process's CPU time counts their spinning between tasks
  console.error(`--clock must be wall, or cpu with --threads 1\n\n${USAGE}`);
  process.exit(2);
}
/** Seconds on the chosen clock. */
const clock = f.clock === "cpu" ? () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
} : () => performance.now() / 1000;
const speedups = numList("speedups", f.speedups, USAGE);
const contexts = numList("contexts", f.contexts, USAGE);
const batches = numList("batches", f.batches, USAGE);
const MiB = 2 ** 20;
const results: Record<string, unknown> = {};

console.log(`# bench kv\n\n${machine()}; CPU engine, ${threads || "all"} threads\n`);

interface Opened {
  e: NativeEngine;
  L: number;
  V: number;
  kd: number;
}

function open(dir: string, o: { maxBatch: number; maxSeqLen: number; kvDtype: KvDType; kvBlocks?: number; kvBlockSize?: number }): Opened {
  const spec = readModelSpec(dir);
  const e = buildEngine(dir, spec, {
    backend: "cpu",
    dtype: "auto",
    threads,
    maxBatchTokens: 512,
    checkWeights: false,
    ...o,
  });
  return { e, L: spec.numLayers, V: spec.vocabSize, kd: spec.numKvHeads * spec.headDim };
}

/** Rows [token, pos, slot, budget, warm-up, flags] into an Int32Array. */
function rowsOf(list: number[][]): Int32Array {
  const r = new Int32Array(list.length * Row.FIELDS);
  list.forEach((x, i) => r.set(x, i * Row.FIELDS));
  return r;
}

/** Prefills `n` positions of `slot` at full depth, in chunks of 512 rows, no outputs. */
function prefill(m: Opened, slot: number, n: number, w = 1): void {
  for (let start = 0; start < n; start += 512) {
    const k = Math.min(512, n - start);
    m.e.step(rowsOf(Array.from({ length: k }, (_, i) => [(start + i) % 1000 + 4, start + i, slot, m.L, w, 0])), k);
  }
}

/** Budgets of the generated tokens that are fed back (all but the last) under a speedup. */
function budgetsFor(L: number, speedup: number): number[] {
  const p = speedup === 1 ? SkipPolicy.full(L) : SkipPolicy.forSpeedup(speedup, { numLayers: L, span: N, warmupLayers: 1 });
  return Array.from({ length: N - 1 }, (_, i) => p.layersAt(i));
}

// ---- bytes -----------------------------------------------------------------

if (sections.includes("bytes")) {
  console.log(`## KV bytes one sequence holds at its peak: ${P}-token prompt, ${N} generated tokens\n`);
  console.log(
    `Measured: the engine's peak blocks for the slot (skd_engine_kv_slot_stats) × block bytes, after running the\n` +
      `sequence (prompt at full depth, then one step per fed-back token with its budget). Exact share: position-layers\n` +
      `the budgets compute over full depth's (${P} + ${N - 1} positions × L). Before: the float32 contiguous cache a slot\n` +
      `held whatever it used (L × ${P + N} positions × kd × 2 × 4 bytes).\n`,
  );
  const out: Record<string, unknown>[] = [];
  for (const name of f.models.split(",").map((s) => s.trim())) {
    const dir = shapeModel(name, "bfloat16");
    const rows: (string | number)[][] = [];
    let fullBytes = 0;
    for (const sp of speedups) {
      const m = open(dir, { maxBatch: 1, maxSeqLen: P + N, kvDtype: "float16" });
      const t0 = performance.now();
      try {
        const budgets = budgetsFor(m.L, sp);
        prefill(m, 0, P);
        budgets.forEach((b, i) => m.e.step(rowsOf([[(i % 1000) + 4, P + i, 0, b, 1, 0]]), 1));
        const st = m.e.kvStats();
        const peak = m.e.kvSlotStats(0).peak;
        const bytes = peak * st.blockBytes;
        if (sp === 1) fullBytes = bytes;
        const exact = (P * m.L + budgets.reduce((a, b) => a + b, 0)) / ((P + N - 1) * m.L);
        const need = kvBlocksNeeded(m.L, st.blockSize, P, budgets, 1);
        const before = m.L * (P + N) * m.kd * 2 * 4;
        const share = bytes / fullBytes;
        rows.push([
          sp === 1 ? "full" : `${sp}x`,
          (bytes / MiB).toFixed(2),
          share.toFixed(3),
          exact.toFixed(3),
          ((share - exact) * 100).toFixed(1),
          need === peak ? "yes" : `no (${need} vs ${peak})`,
          `${((bytes / before) * 100).toFixed(1)}%`,
        ]);
        out.push({ model: name, speedup: sp, bytes, share, exact, reservedBlocks: need, peakBlocks: peak, beforeBytes: before, seconds: (performance.now() - t0) / 1000 });
      } finally {
        m.e.free();
      }
    }
    const spec = readModelSpec(dir);
    console.log(`### ${name} shape (${spec.numLayers} layers, kd ${spec.numKvHeads * spec.headDim}, float16 KV, blocks of 16 positions)\n`);
    table(["decoding", "KV MiB (measured)", "share of full", "exact share", "Δ points", "reservation = peak", "of float32 contiguous"], rows);
    console.log();
  }
  results.bytes = out;
}

// ---- concurrency -----------------------------------------------------------

if (sections.includes("concurrency")) {
  console.log(`## Requests admitted at once by a ${poolMb} MiB pool (${P}-token prompt, ${N} new tokens each, float16)\n`);
  console.log(`Each request reserves its exact need (lib/engine/kv.ts kvBlocksNeeded) with skd_engine_kv_reserve until the engine refuses (SKD_ERR_KV_FULL).\n`);
  const out: Record<string, unknown>[] = [];
  for (const name of f.models.split(",").map((s) => s.trim())) {
    const dir = shapeModel(name, "bfloat16");
    const spec = readModelSpec(dir);
    const kd = spec.numKvHeads * spec.headDim;
    const blocks = Math.floor((poolMb * MiB) / kvBlockBytes(kd, "float16", 16));
    const m = open(dir, { maxBatch: 1024, maxSeqLen: P + N, kvDtype: "float16", kvBlocks: blocks });
    const rows: (string | number)[][] = [];
    let full = 0;
    try {
      for (const sp of speedups) {
        const need = kvBlocksNeeded(m.L, 16, P, budgetsFor(m.L, sp), 1);
        let n = 0;
        try {
          for (; n < 1024; n++) m.e.kvReserve(n, need);
        } catch (e) {
          if (!(e instanceof NativeError) || e.status !== "SKD_ERR_KV_FULL") throw e;
        }
        for (let i = 0; i < n; i++) m.e.resetSlot(i);
        if (sp === 1) full = n;
        rows.push([sp === 1 ? "full" : `${sp}x`, need, ((need * kvBlockBytes(kd, "float16", 16)) / MiB).toFixed(2), n, `${(n / full).toFixed(2)}x`]);
        out.push({ model: name, poolMb, speedup: sp, needBlocks: need, admitted: n, vsFull: n / full });
      }
    } finally {
      m.e.free();
    }
    console.log(`### ${name} shape: ${blocks} blocks of ${(kvBlockBytes(kd, "float16", 16) / 1024).toFixed(0)} KiB\n`);
    table(["decoding", "blocks reserved", "MiB reserved", "admitted at once", "vs full depth"], rows);
    console.log();
  }
  results.concurrency = out;
}

// ---- decode ----------------------------------------------------------------

if (sections.includes("decode")) {
  console.log(`## Decode tokens/s: paged float16 and float32 against the contiguous float32 layout\n`);
  console.log(
    `Each slot is prefilled to the context less ${T + 1} positions, then ${T} greedy decode steps at full depth (all slots in\n` +
      `every step) that end at the context are timed (${f.clock === "cpu" ? "by the process's CPU time" : "wall clock"}); ${reps} reps after a warm-up step, the layouts\n` +
      `in turn within a rep, each rep starting with the next layout; median ± std, and ratios to the first layout listed\n` +
      `within the same rep. "contiguous-f32": block size = the whole context, so each (slot, layer) is one run of\n` +
      `positions, as the cache was laid out before.\n`,
  );
  const LAYOUTS: { label: string; kvDtype: KvDType; block: (ctx: number) => number }[] = [
    { label: "contiguous-f32", kvDtype: "float32", block: (ctx) => ctx },
    { label: "paged-f32", kvDtype: "float32", block: () => 16 },
    { label: "paged-f16", kvDtype: "float16", block: () => 16 },
  ];
  const configs = f.layouts.split(",").map((x) => {
    const c = LAYOUTS.find((l) => l.label === x.trim());
    if (!c) {
      console.error(`--layouts: unknown layout "${x}" (known: ${LAYOUTS.map((l) => l.label).join(", ")})\n\n${USAGE}`);
      process.exit(2);
    }
    return c;
  });
  const out: Record<string, unknown>[] = [];
  for (const name of f["decode-models"].split(",").map((s) => s.trim())) {
    const dir = shapeModel(name, "bfloat16");
    const rows: (string | number)[][] = [];
    for (const ctx of contexts) {
      for (const B of batches) {
        // prefill ctx - T - 1 positions; the warm-up and the timed steps fill the context to ctx
        const maxSeqLen = ctx;
        const n0 = ctx - T - 1;
        if (n0 < 1) throw new Error(`--contexts ${ctx} leaves no room for a prompt before ${T + 1} decode steps`);
        const engines = configs.map((c) => open(dir, { maxBatch: B, maxSeqLen, kvDtype: c.kvDtype, kvBlockSize: c.block(ctx) }));
        try {
          const t0 = performance.now();
          for (const m of engines) for (let s = 0; s < B; s++) prefill(m, s, n0);
          const prefillS = (performance.now() - t0) / 1000;
          process.stderr.write(`${name}: context ${ctx}, batch ${B}: prefilled ${configs.length} × ${B} × ${n0} positions in ${prefillS.toFixed(0)} s\n`);
          const params = new Float32Array(B * Param.FIELDS);
          for (let i = 0; i < B; i++) params[i * Param.FIELDS + Param.TOP_P] = 1;
          const tokens = new Int32Array(B);
          /** decode steps at positions n0 + from .. n0 + from + k - 1; returns seconds */
          const decode = (m: Opened, from: number, k: number): number => {
            const t = clock();
            for (let j = 0; j < k; j++) {
              const rows = rowsOf(Array.from({ length: B }, (_, s) => [(tokens[s]! % 1000) + 4, n0 + from + j, s, m.L, 1, ROW_SAMPLE]));
              m.e.step(rows, B, params, null, tokens);
            }
            return clock() - t;
          };
          for (const m of engines) decode(m, 0, 1); // warm-up
          const tps = configs.map(() => [] as number[]);
          for (let r = 0; r < reps; r++) {
            // every rep decodes the same positions again (a rewind), so the context stays the same;
            // the layouts take turns going first, so no layout always runs right after another
            for (let k = 0; k < engines.length; k++) {
              const c = (r + k) % engines.length;
              tps[c]!.push((B * T) / decode(engines[c]!, 1, T));
            }
          }
          const base = tps[0]!;
          configs.forEach((c, i) => {
            const ratios = tps[i]!.map((v, k) => v / base[k]!);
            rows.push([ctx, B, c.label, pm(tps[i]!, 1), i === 0 ? "1" : `${median(ratios).toFixed(3)} ± ${stddev(ratios).toFixed(3)}`]);
            out.push({ model: name, context: ctx, batch: B, layout: c.label, tokS: median(tps[i]!), std: stddev(tps[i]!), vsContiguous: median(ratios), prefillS });
          });
        } finally {
          for (const m of engines) m.e.free();
        }
      }
    }
    const spec = readModelSpec(dir);
    console.log(`### ${name} shape (${spec.numLayers} layers, kd ${spec.numKvHeads * spec.headDim}, bfloat16 weights)\n`);
    table(["context", "batch", "KV layout", "decode tok/s", `vs ${configs[0]!.label} (same rep)`], rows);
    console.log();
  }
  results.decode = out;
}

// ---- logits ----------------------------------------------------------------

if (sections.includes("logits")) {
  const dir = join(ROOT, "models/brown-opt-12l");
  const spec = readModelSpec(dir);
  const tok = await SkipTokenizer.load(dir);
  const text = await Bun.file(join(dir, "heldout.txt")).text();
  const ctx = spec.maxPositions;
  const ids = tok.encode(text, { addBos: false });
  const windows = Array.from({ length: 16 }, (_, k) => [2, ...ids.slice(k * 4000, k * 4000 + ctx - 1)]).filter((w) => w.length === ctx);
  const L = spec.numLayers;
  const V = spec.vocabSize;
  console.log(`## Logits with 16-bit keys/values against the float32 cache: models/brown-opt-12l (trained, ${L} layers)\n`);
  console.log(
    `${windows.length} windows of ${ctx} held-out tokens, teacher-forced; "2x": the prompt's first 16 positions at full depth,\n` +
      `then forSpeedup(2) budgets. Greedy: ${windows.length} generations of ${ctx - 16} tokens from 16-token prompts, tokens equal\n` +
      `to the float32 cache's before the first difference.\n`,
  );
  const engines = (["float32", "float16", "bfloat16"] as KvDType[]).map((kvDtype) => open(dir, { maxBatch: 1, maxSeqLen: ctx, kvDtype }));
  const out: Record<string, unknown>[] = [];
  try {
    const forward = (m: Opened, w: number[], budgets: number[]) => {
      m.e.resetSlot(0);
      const logits = new Float32Array(w.length * V);
      m.e.step(rowsOf(w.map((t, i) => [t, i, 0, budgets[i]!, 1, ROW_WANT_LOGITS])), w.length, null, logits);
      return logits;
    };
    const greedy = (m: Opened, prompt: number[], budgets: number[]) => {
      m.e.resetSlot(0);
      const params = new Float32Array(prompt.length * Param.FIELDS); // temperature 0: greedy
      for (let i = 0; i < prompt.length; i++) params[i * Param.FIELDS + Param.TOP_P] = 1;
      const tok1 = new Int32Array(1);
      const got: number[] = [];
      m.e.step(rowsOf(prompt.map((t, i) => [t, i, 0, L, 1, i === prompt.length - 1 ? ROW_SAMPLE : 0])), prompt.length, params, null, tok1);
      got.push(tok1[0]!);
      for (let i = prompt.length; i < ctx - 1; i++) {
        m.e.step(rowsOf([[got.at(-1)!, i, 0, budgets[i]!, 1, ROW_SAMPLE]]), 1, params, null, tok1);
        got.push(tok1[0]!);
      }
      return got;
    };
    const rows: (string | number)[][] = [];
    for (const sp of [1, 2]) {
      const dec = sp === 1 ? [] : Array.from({ length: ctx - 16 }, (_, i) => SkipPolicy.forSpeedup(2, { numLayers: L, span: ctx - 16, warmupLayers: 1 }).layersAt(i));
      const budgets = [...Array(16).fill(L), ...(sp === 1 ? Array(ctx - 16).fill(L) : dec)];
      const stats = engines.map(() => ({ rel: 0, meanAbs: 0, agree: 0, n: 0, greedySame: [] as number[] }));
      for (const w of windows) {
        const ref = forward(engines[0]!, w, budgets);
        engines.forEach((m, k) => {
          const got = k === 0 ? ref : forward(m, w, budgets);
          const s = stats[k]!;
          for (let t = 0; t < w.length; t++) {
            let mx = 0;
            let d = 0;
            let sum = 0;
            let ai = 0;
            let bi = 0;
            for (let v = 0; v < V; v++) {
              const a = got[t * V + v]!;
              const b = ref[t * V + v]!;
              mx = Math.max(mx, Math.abs(b));
              d = Math.max(d, Math.abs(a - b));
              sum += Math.abs(a - b);
              if (a > got[t * V + ai]!) ai = v;
              if (b > ref[t * V + bi]!) bi = v;
            }
            s.rel = Math.max(s.rel, d / mx);
            s.meanAbs += sum / V;
            s.agree += ai === bi ? 1 : 0;
            s.n++;
          }
        });
        const prompt = w.slice(0, 16);
        const refGen = greedy(engines[0]!, prompt, budgets);
        engines.forEach((m, k) => {
          const g = k === 0 ? refGen : greedy(m, prompt, budgets);
          let same = 0;
          while (same < g.length && g[same] === refGen[same]) same++;
          stats[k]!.greedySame.push(same);
        });
      }
      engines.forEach((_, k) => {
        if (k === 0) return;
        const s = stats[k]!;
        const label = k === 1 ? "float16" : "bfloat16";
        const full = s.greedySame.filter((x) => x === ctx - 16).length;
        rows.push([
          sp === 1 ? "full" : "2x",
          label,
          s.rel.toExponential(2),
          (s.meanAbs / s.n).toExponential(2),
          `${((s.agree / s.n) * 100).toFixed(2)}%`,
          `${full}/${windows.length}`,
          median(s.greedySame),
        ]);
        out.push({ decoding: sp === 1 ? "full" : "2x", kvDtype: label, maxRel: s.rel, meanAbs: s.meanAbs / s.n, argmaxAgree: s.agree / s.n, greedySame: s.greedySame });
      });
    }
    table(["decoding", "KV dtype", "max abs Δlogit ÷ max abs logit", "mean abs Δlogit", "argmax agrees", "greedy identical", "median tokens equal"], rows);
    console.log();
  } finally {
    for (const m of engines) m.e.free();
  }
  results.logits = out;
}

writeJson(f.out, { bench: "kv", date: new Date().toISOString(), machine: machine(), prompt: P, newTokens: N, results });
