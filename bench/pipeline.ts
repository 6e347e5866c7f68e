#!/usr/bin/env bun
/**
 * bench pipeline — pipelined steps (the `pipeline` load option) against one
 * step at a time, batch-1 decode, in one process: two decoders of the same
 * model, one each way, whose generations alternate round by round, so a
 * noisy machine's drift hits both sides of each round's ratio alike. Per
 * model, weight type, engine thread count and speedup: decode tokens/s of
 * each (median ± std over the rounds) and the median of the per-round
 * ratios pipelined / one step at a time, with its quartiles.
 *
 * The engine thread count matters: pipelining lets this thread's work (the
 * tokens of step N, building step N+2) overlap step N+1, which pays when a
 * core is free for it (docs/performance.md, "Pipelined steps").
 */
import { join } from "node:path";
import { SkipDecoder } from "../lib/index.ts";
import type { WeightDType } from "../lib/engine/weights.ts";
import { flags, machine, median, numList, pm, ROOT, shapeModel, table, writeJson } from "./common.ts";

const USAGE = `usage: bun run bench pipeline [--models llama-110m] [--types q4_0] [--threads 1,2] [--speedups 1,2]
                                [--rounds 16] [--new-tokens 100] [--prompt 32] [--out bench/results/pipeline.json]
  --types: f16 (the float16 file as it is), q8_0, q4_0, q4_k (quantized on load)`;
const f = flags(USAGE, {
  models: { type: "string", default: "llama-110m" },
  types: { type: "string", default: "q4_0" },
  threads: { type: "string", default: "1,2" },
  speedups: { type: "string", default: "1,2" },
  rounds: { type: "string", default: "16" },
  "new-tokens": { type: "string", default: "100" },
  prompt: { type: "string", default: "32" },
  out: { type: "string", default: join(ROOT, "bench/results/pipeline.json") },
  help: { type: "boolean", default: false },
});
const threadList = numList("threads", f.threads, USAGE);
const speedups = numList("speedups", f.speedups, USAGE);
const rounds = Number(f.rounds);
const N = Number(f["new-tokens"]);
const P = Number(f.prompt);
for (const [k, v] of [["rounds", rounds], ["new-tokens", N], ["prompt", P]] as const) {
  if (!Number.isInteger(v) || v < 1) {
    console.error(`--${k} must be a positive integer\n\n${USAGE}`);
    process.exit(2);
  }
}
const LOADS: Record<string, WeightDType> = { f16: "auto", q8_0: "q8_0", q4_0: "q4_0", q4_k: "q4_k" };
const types = f.types.split(",").map((t) => t.trim());
for (const t of types) {
  if (!(t in LOADS)) {
    console.error(`--types: unknown type "${t}" (expected ${Object.keys(LOADS).join(", ")})\n\n${USAGE}`);
    process.exit(2);
  }
}

const q = (xs: number[], p: number) => xs.slice().sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
const results: Record<string, unknown>[] = [];

/** Tokens/s of `one` and `piped` in alternating rounds, for each speedup: table rows. */
async function compare(one: SkipDecoder, piped: SkipDecoder, meta: { model: string; type: string; threads: number }): Promise<(string | number)[][]> {
  const rows: (string | number)[][] = [];
  const prompt = Array.from({ length: P }, (_, i) => 3 + ((i * 7919) % Math.min(one.spec.vocabSize - 3, 30000)));
  for (const sp of speedups) {
    const opts = { maxNewTokens: N, ignoreEos: true, ...(sp > 1 && { speedup: sp }) };
    for (const d of [one, piped]) await d.generate(prompt, { ...opts, maxNewTokens: Math.min(N, 16) }); // warm-up
    const a: number[] = [];
    const b: number[] = [];
    for (let r = 0; r < rounds; r++) {
      // alternate which goes first, so neither always follows the other
      const order = r % 2 ? [piped, one] : [one, piped];
      for (const d of order) (d === one ? a : b).push((await d.generate(prompt, opts)).stats.tokensPerSecond);
    }
    const ratios = b.map((x, i) => x / a[i]!);
    rows.push([meta.threads, sp === 1 ? "full" : `${sp}x`, pm(a), pm(b), `${median(ratios).toFixed(3)} (${q(ratios, 0.25).toFixed(3)}–${q(ratios, 0.75).toFixed(3)})`]);
    results.push({ ...meta, speedup: sp, oneStep: a, pipelined: b, ratioMedian: median(ratios) });
  }
  return rows;
}

for (const name of f.models.split(",").map((m) => m.trim())) {
  const dir = shapeModel(name, "float16");
  for (const type of types) {
    console.log(`\n## ${name}-shaped random model, ${type}\n${machine()}; batch 1, greedy; prompt ${P}, ${N} new tokens; ${rounds} rounds, the two decoders alternating\n`);
    const rows: (string | number)[][] = [];
    for (const threads of threadList) {
      const load = (pipeline: boolean) => SkipDecoder.load(dir, { backend: "cpu", dtype: LOADS[type], threads, maxBatch: 1, maxSeqLen: P + N + 8, pipeline });
      const one = await load(false);
      const piped = await load(true).catch((e) => (one.close(), Promise.reject(e)));
      try {
        rows.push(...(await compare(one, piped, { model: name, type, threads })));
      } finally {
        one.close();
        piped.close();
      }
    }
    table(["engine threads", "decoding", "one step at a time, tok/s", "pipelined, tok/s", "pipelined / one step (quartiles)"], rows);
  }
}
writeJson(f.out, { bench: "pipeline", date: new Date().toISOString(), machine: machine(), rounds, newTokens: N, prompt: P, results });
