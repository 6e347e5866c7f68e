#!/usr/bin/env bun
/**
 * bench decode — prefill and decode tokens/s of OPT- or LLaMA-shaped random models at
 * several batch sizes, full decoding vs SkipDecode speedup targets, with
 * ideal vs measured speedup and the weight bytes read per second as a share
 * of the machine's memory bandwidth (bench membw).
 *
 * Each batch size: one warm-up run per speedup, then --reps rounds that run
 * every speedup once (generateBatch: greedy, ignoring EOS, the paper's shared
 * step index); medians ± std. The measured speedup is the median of per-round
 * ratios to the first speedup listed (1 = full decoding), so both sides of a
 * ratio ran moments apart.
 * Weight bytes per decode step = layer bytes × the step's budget + the bytes
 * every step reads whatever the budget (LM head, project_in/out). "weight-
 * bytes bound" is the speedup those bytes allow (full steps' bytes over these
 * steps'): ideal speedup counts layers only, so with a large LM head (OPT-125m:
 * a third of the bytes) the bound sits well below the ideal.
 */
import { join } from "node:path";
import { SkipDecoder } from "../lib/index.ts";
import { NativeBackend } from "../lib/engine/native.ts";
import { Rng } from "../lib/tiny/model.ts";
import { flags, machine, median, numList, pm, readBandwidth, ROOT, shapeModel, stddev, table, weightBytes, writeJson } from "./common.ts";

const USAGE = `usage: bun run bench decode [--models opt-125m,opt-350m,opt-1.3b,llama-110m,llama-400m] [--batches 1,4,16] [--speedups 1,2,3,4,5]
                              [--prompt 32] [--new-tokens 64] [--reps 5] [--dtype bfloat16|float16|float32]
                              [--threads 0] [--backend auto|cpu|cuda] [--out bench/results/decode.json]`;
const f = flags(USAGE, {
  models: { type: "string", default: "opt-125m,opt-350m" },
  batches: { type: "string", default: "1,4,16" },
  speedups: { type: "string", default: "1,2,3,4,5" },
  prompt: { type: "string", default: "32" },
  "new-tokens": { type: "string", default: "64" },
  reps: { type: "string", default: "5" },
  dtype: { type: "string", default: "bfloat16" },
  threads: { type: "string", default: "0" },
  backend: { type: "string", default: "auto" },
  out: { type: "string", default: join(ROOT, "bench/results/decode.json") },
  help: { type: "boolean", default: false },
});
const batches = numList("batches", f.batches, USAGE);
const speedups = numList("speedups", f.speedups, USAGE);
if (speedups[0] !== 1) {
  console.error(`--speedups must start with 1 (full decoding, the baseline of the measured speedups)\n\n${USAGE}`);
  process.exit(2);
}
const P = Number(f.prompt);
const N = Number(f["new-tokens"]);
const reps = Number(f.reps);
const threads = Number(f.threads);
for (const [k, v] of [["prompt", P], ["new-tokens", N], ["reps", reps]] as const) {
  if (!Number.isInteger(v) || v < 1) {
    console.error(`--${k} must be a positive integer\n\n${USAGE}`);
    process.exit(2);
  }
}
if (!["bfloat16", "float16", "float32"].includes(f.dtype)) {
  console.error(`--dtype must be bfloat16, float16 or float32\n\n${USAGE}`);
  process.exit(2);
}
if (!["auto", "cpu", "cuda"].includes(f.backend)) {
  console.error(`--backend must be auto, cpu or cuda\n\n${USAGE}`);
  process.exit(2);
}
const dtype = f.dtype as "bfloat16" | "float16" | "float32";

const results: Record<string, unknown>[] = [];
let membw = 0;
const membwSeen: number[] = [];
for (const name of f.models.split(",")) {
  const dir = shapeModel(name.trim(), dtype);
  const maxBatch = Math.max(...batches);
  const dec = await SkipDecoder.load(dir, {
    backend: f.backend as "auto" | "cpu" | "cuda",
    maxBatch,
    maxSeqLen: P + N + 8,
    threads,
    maxBatchTokens: Math.max(512, maxBatch * P),
  });
  // The roofline, measured just before this model's runs and again just after;
  // the higher of the two is used (a VM's bandwidth can drift during a run).
  const native = NativeBackend.get(dec.backend);
  const measureBw = () => readBandwidth(native, threads);
  const bwBefore = measureBw();
  const s = dec.spec;
  const size = dtype === "float32" ? 4 : 2;
  const { layer: layerBytes, step: stepBytes } = weightBytes(s, size);
  console.log(
    `\n## ${name}-shaped random model (${s.numLayers} layers, hidden ${s.hiddenSize}, ${dtype}, ` +
      `${(dec.weightBytes / 2 ** 20).toFixed(0)} MiB read by a full step)\n` +
      `${machine()}; backend ${dec.backend} (${dec.deviceName}); membw ${bwBefore.toFixed(1)} GB/s before the runs; ` +
      `prompt ${P}, ${N} new tokens, ${reps} reps after a warm-up, median ± std\n`,
  );
  const rng = new Rng(3);
  const vocab = Math.min(s.vocabSize, 50000);
  const prompts = Array.from({ length: maxBatch }, () => [2, ...Array.from({ length: P - 1 }, () => 4 + Math.floor(rng.next() * (vocab - 4)))]);
  const rows: (string | number)[][] = [];
  const pending: { row: (string | number)[]; gbs: number; result: Record<string, unknown> }[] = [];
  for (const B of batches) {
    const batch = prompts.slice(0, B);
    const optsOf = (sp: number) => ({ maxNewTokens: N, ignoreEos: true, ...(sp === 1 ? {} : { speedup: sp }) });
    for (const sp of speedups) await dec.generateBatch(batch, optsOf(sp)); // warm-up
    // Interleaved: each rep runs every speedup once, so a ratio compares runs
    // made moments apart (a noisy neighbour hits both sides of it).
    const prefill = new Map<number, number[]>();
    const decode = new Map<number, number[]>();
    const budgetsOf = new Map<number, number[]>();
    for (let r = 0; r < reps; r++) {
      for (const sp of speedups) {
        const rs = await dec.generateBatch(batch, optsOf(sp));
        const pre = Math.max(...rs.map((x) => x.stats.prefillMs));
        const dm = Math.max(...rs.map((x) => x.stats.decodeMs));
        prefill.set(sp, [...(prefill.get(sp) ?? []), (B * P * 1000) / pre]);
        decode.set(sp, [...(decode.get(sp) ?? []), (B * (N - 1) * 1000) / dm]);
        budgetsOf.set(sp, rs[0]!.budgets);
      }
    }
    const base = decode.get(speedups[0]!)!;
    for (const sp of speedups) {
      const d = decode.get(sp)!;
      const budgets = budgetsOf.get(sp)!;
      const mean = budgets.reduce((a, b) => a + b, 0) / budgets.length;
      const ideal = s.numLayers / mean;
      // measured speedup: median over reps of (this rep's tokens/s ÷ the first speedup's, same rep)
      const ratios = d.map((v, i) => v / base[i]!);
      const measured = median(ratios);
      // bytes the N-1 decode steps read: token i is processed with budgets[i] (budgets lists the passes that ran)
      const bytes = budgets.reduce((a, b) => a + b * layerBytes + stepBytes, 0);
      const gbs = (bytes * median(d)) / (B * (N - 1)) / 1e9;
      // the speedup the weight bytes allow: full steps' bytes over these steps' (the LM head is never skipped)
      const fullBytes = budgets.length * (s.numLayers * layerBytes + stepBytes);
      const attainable = fullBytes / bytes;
      const row: (string | number)[] = [
        B,
        sp === 1 ? "full" : `${sp}x`,
        mean.toFixed(2),
        pm(prefill.get(sp)!, 0),
        pm(d, 1),
        `${ideal.toFixed(2)}x`,
        `${measured.toFixed(2)}x ± ${stddev(ratios).toFixed(2)}`,
        `${((measured / ideal) * 100).toFixed(0)}%`,
        `${attainable.toFixed(2)}x`,
        gbs.toFixed(1),
      ];
      const result = {
        model: name, dtype, backend: dec.backend, device: dec.deviceName, batch: B, speedup: sp, meanLayers: mean,
        idealSpeedup: ideal, attainableSpeedup: attainable, measuredSpeedup: measured, measuredStd: stddev(ratios),
        prefillTokS: median(prefill.get(sp)!), prefillStd: stddev(prefill.get(sp)!), decodeTokS: median(d),
        decodeStd: stddev(d), weightGBs: gbs, prompt: P, newTokens: N, reps,
      };
      rows.push(row);
      pending.push({ row, gbs, result });
    }
  }
  const bwAfter = measureBw();
  membw = Math.max(bwBefore, bwAfter);
  membwSeen.push(bwBefore, bwAfter);
  for (const p of pending) {
    p.row.push(`${((p.gbs / membw) * 100).toFixed(0)}%`);
    results.push({ ...p.result, membwGBs: membw, membwBefore: bwBefore, membwAfter: bwAfter });
  }
  console.log(`membw (read) measured ${bwBefore.toFixed(1)} GB/s before and ${bwAfter.toFixed(1)} GB/s after these runs; shares use the higher\n`);
  table(
    ["batch", "decoding", "mean layers", "prefill tok/s", "decode tok/s", "ideal", "measured", "measured/ideal", "weight-bytes bound", "weights GB/s", "of membw"],
    rows,
  );
  dec.close();
}
writeJson(f.out, { bench: "decode", date: new Date().toISOString(), machine: machine(), membwGBs: Math.max(...membwSeen), results });
