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
 *
 * --types runs each model once per weight type: the 16-bit and fp32 files as
 * they are, and q8_0 / q4_0 / q4_k quantized on load from the float16 file
 * (lib/checkpoint/quant-plan.ts decides each tensor's type). Bytes are counted
 * from what the engine stored (dec.loadSummary), so every format's block
 * sizes (34 bytes per 32 weights for Q8_0, ...) are in the "of membw" column.
 * A last table sums up each model and type at batch 1: full-depth decode
 * tokens/s and its share of the bandwidth, and SkipDecode's measured speedup
 * over its weight-bytes bound at each speedup.
 */
import { join } from "node:path";
import { SkipDecoder } from "../lib/index.ts";
import { NativeBackend } from "../lib/engine/native.ts";
import { Rng } from "../lib/tiny/model.ts";
import type { WeightDType } from "../lib/engine/weights.ts";
import { flags, machine, median, numList, pm, readBandwidth, ROOT, shapeModel, stddev, storedBytes, table, weightBytes, writeJson } from "./common.ts";

const USAGE = `usage: bun run bench decode [--models opt-125m,opt-350m,opt-1.3b,llama-110m,llama-400m] [--batches 1,4,16] [--speedups 1,2,3,4,5]
                              [--prompt 32] [--new-tokens 64] [--reps 5] [--dtype bfloat16|float16|float32]
                              [--types bf16,f16,f32,q8_0,q4_0,q4_k] [--threads 0] [--backend auto|cpu|cuda]
                              [--pipeline true|false] [--out bench/results/decode.json]
  --types: one run per weight type (default: the --dtype file as it is); q8_0, q4_0, q4_k quantize the float16 file on load
  --pipeline: the load option (each step sent while the one before still runs; bench pipeline compares the two)`;
const f = flags(USAGE, {
  models: { type: "string", default: "opt-125m,opt-350m" },
  batches: { type: "string", default: "1,4,16" },
  speedups: { type: "string", default: "1,2,3,4,5" },
  prompt: { type: "string", default: "32" },
  "new-tokens": { type: "string", default: "64" },
  reps: { type: "string", default: "5" },
  dtype: { type: "string", default: "bfloat16" },
  types: { type: "string" },
  threads: { type: "string", default: "0" },
  backend: { type: "string", default: "auto" },
  pipeline: { type: "string", default: "true" },
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
/** A --types entry: the file to load and the load dtype. */
interface RunType {
  label: string;
  file: "bfloat16" | "float16" | "float32";
  load: WeightDType;
}
const TYPE_NAMES: Record<string, RunType> = {
  bf16: { label: "bf16", file: "bfloat16", load: "auto" },
  f16: { label: "f16", file: "float16", load: "auto" },
  f32: { label: "f32", file: "float32", load: "float32" },
  q8_0: { label: "q8_0", file: "float16", load: "q8_0" },
  q4_0: { label: "q4_0", file: "float16", load: "q4_0" },
  q4_k: { label: "q4_k", file: "float16", load: "q4_k" },
};
const ALIASES: Record<string, string> = { bfloat16: "bf16", float16: "f16", float32: "f32" };
const types: RunType[] = (f.types ?? f.dtype).split(",").map((t) => {
  const r = TYPE_NAMES[ALIASES[t.trim()] ?? t.trim()];
  if (!r) {
    console.error(`--types: unknown type "${t}" (expected ${Object.keys(TYPE_NAMES).join(", ")})\n\n${USAGE}`);
    process.exit(2);
  }
  return r;
});
if (!["auto", "cpu", "cuda"].includes(f.backend)) {
  console.error(`--backend must be auto, cpu or cuda\n\n${USAGE}`);
  process.exit(2);
}
if (!["true", "false"].includes(f.pipeline)) {
  console.error(`--pipeline must be true or false\n\n${USAGE}`);
  process.exit(2);
}
const pipeline = f.pipeline === "true";

const results: Record<string, unknown>[] = [];
const membwSeen: number[] = [];
const summary: (string | number)[][] = [];
for (const name of f.models.split(",")) for (const type of types) {
  const dir = shapeModel(name.trim(), type.file);
  const maxBatch = Math.max(...batches);
  const dec = await SkipDecoder.load(dir, {
    backend: f.backend as "auto" | "cpu" | "cuda",
    dtype: type.load,
    maxBatch,
    maxSeqLen: P + N + 8,
    threads,
    maxBatchTokens: Math.max(512, maxBatch * P),
    pipeline,
  });
  const dtype = type.label;
  // The roofline, measured just before this model's runs and again just after;
  // the higher of the two is used (a VM's bandwidth can drift during a run):
  // the sustained read rate, and the best single pass (bench/common.ts).
  const native = NativeBackend.get(dec.backend);
  const measureBw = () => readBandwidth(native, threads);
  const bwBefore = measureBw();
  const s = dec.spec;
  // bytes as stored: each format's blocks, the quantization plan's per-tensor types (the CUDA
  // engine holds every weight in 16 bits, quantized files included: it dequantizes on load)
  const { layer: layerBytes, step: stepBytes } = dec.backend === "cuda" ? weightBytes(s, 2) : storedBytes(dec.loadSummary, s.numLayers);
  const stored = Object.entries(dec.loadSummary.byType).map(([t, v]) => `${t} ${(v.bytes / 2 ** 20).toFixed(0)} MiB`).join(", ");
  console.log(
    `\n## ${name}-shaped random model (${s.numLayers} layers, hidden ${s.hiddenSize}, ${dtype}: ${stored}; ` +
      `${(dec.weightBytes / 2 ** 20).toFixed(0)} MiB read by a full step)\n` +
      `${machine()}; backend ${dec.backend} (${dec.deviceName})${dec.options.pipeline ? "" : ", one step at a time"}; membw ${bwBefore.sustained.toFixed(1)} GB/s sustained (best pass ${bwBefore.best.toFixed(1)}) before the runs; ` +
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
  const membw = Math.max(bwBefore.sustained, bwAfter.sustained);
  const bestPass = Math.max(bwBefore.best, bwAfter.best);
  membwSeen.push(bwBefore.sustained, bwAfter.sustained);
  const share = (gbs: number) => `${((gbs / membw) * 100).toFixed(0)}% (${((gbs / bestPass) * 100).toFixed(0)}%)`;
  for (const p of pending) {
    p.row.push(share(p.gbs));
    results.push({
      ...p.result, membwGBs: membw, membwBestPassGBs: bestPass, ofMembw: p.gbs / membw, ofBestPass: p.gbs / bestPass,
      membwBefore: bwBefore.sustained, membwAfter: bwAfter.sustained,
    });
  }
  // batch 1 at a glance: full-depth speed and bandwidth share, each speedup against its bound
  const one = pending.filter((p) => p.result.batch === Math.min(...batches));
  const full = one.find((p) => p.result.speedup === 1);
  if (full) {
    summary.push([
      name,
      dtype,
      (full.result.decodeTokS as number).toFixed(1),
      share(full.gbs),
      ...one
        .filter((p) => p.result.speedup !== 1)
        .map((p) => {
          const r = p.result;
          const share = (r.measuredSpeedup as number) / (r.attainableSpeedup as number);
          return `${(r.measuredSpeedup as number).toFixed(2)}x of ${(r.attainableSpeedup as number).toFixed(2)}x (${(share * 100).toFixed(0)}%)`;
        }),
    ]);
  }
  console.log(
    `membw (read, sustained) measured ${bwBefore.sustained.toFixed(1)} GB/s before and ${bwAfter.sustained.toFixed(1)} GB/s after these runs; ` +
      `shares use the higher (in brackets: of the best pass, ${bestPass.toFixed(1)} GB/s)\n`,
  );
  table(
    ["batch", "decoding", "mean layers", "prefill tok/s", "decode tok/s", "ideal", "measured", "measured/ideal", "weight-bytes bound", "weights GB/s", "of membw (best pass)"],
    rows,
  );
  dec.close();
}
if (summary.length > 1 || types.length > 1) {
  console.log(`\n## Summary, batch ${Math.min(...batches)}: full-depth decode and SkipDecode's measured speedup against its weight-bytes bound\n`);
  table(["model", "type", "decode tok/s", "of membw (best pass)", ...speedups.filter((x) => x !== 1).map((x) => `${x}x: measured of bound`)], summary);
}
writeJson(f.out, { bench: "decode", date: new Date().toISOString(), machine: machine(), membwGBs: Math.max(...membwSeen), results });
