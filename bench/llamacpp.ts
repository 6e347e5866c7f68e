#!/usr/bin/env bun
/**
 * bench llamacpp — batch-1 decode tokens/s of the CPU engine side by side with
 * llama.cpp (through node-llama-cpp, a pinned devDependency) on the same
 * LLaMA-shaped random weights: the safetensors model of bench/common.ts's
 * SHAPES, and the same numbers written as GGUF by bench/gguf.ts (F16 both).
 *
 * Conditions: one sequence, the same prompt of --prompt ids and --new-tokens
 * greedy tokens, --threads threads each (2: this machine's cores). Each round
 * runs llama.cpp, then skipdecode at every --speedups value (1 = full), so the
 * ratios compare runs made moments apart; one warm-up round, then --reps;
 * medians ± std. Decode tokens/s counts the tokens after the first over the
 * time from the first to the last (as GenerationStats.tokensPerSecond).
 * "weights GB/s" = matrix bytes read per step × steps per second; "of membw"
 * compares that with the machine's read bandwidth (bench membw's kernel),
 * measured before and after each model (the higher is used). "bytes bound" is
 * the speedup the weight bytes allow SkipDecode (the LM head is never skipped).
 * The two engines' greedy tokens are compared too (they run the same weights).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { readModelSpec } from "../lib/checkpoint/config.ts";
import { SkipDecoder } from "../lib/index.ts";
import { NativeBackend } from "../lib/engine/native.ts";
import { Rng } from "../lib/tiny/model.ts";
import { flags, machine, median, numList, pm, readBandwidth, ROOT, shapeModel, stddev, table, weightBytes, writeJson } from "./common.ts";
import { writeGguf } from "./gguf.ts";

const USAGE = `usage: bun run bench llamacpp [--models llama-110m,llama-400m] [--prompt 32] [--new-tokens 64] [--reps 3]
                                [--speedups 1,2,3] [--threads 2] [--out bench/results/llamacpp.json]`;
const f = flags(USAGE, {
  models: { type: "string", default: "llama-110m,llama-400m" },
  prompt: { type: "string", default: "32" },
  "new-tokens": { type: "string", default: "64" },
  reps: { type: "string", default: "3" },
  speedups: { type: "string", default: "1,2,3" },
  threads: { type: "string", default: "2" },
  out: { type: "string", default: join(ROOT, "bench/results/llamacpp.json") },
  help: { type: "boolean", default: false },
});
const P = Number(f.prompt);
const N = Number(f["new-tokens"]);
const reps = Number(f.reps);
const threads = Number(f.threads);
const speedups = numList("speedups", f.speedups, USAGE);
for (const [k, v] of [["prompt", P], ["new-tokens", N], ["reps", reps], ["threads", threads]] as const) {
  if (!Number.isInteger(v) || v < 1) {
    console.error(`--${k} must be a positive integer\n\n${USAGE}`);
    process.exit(2);
  }
}
if (speedups[0] !== 1) {
  console.error(`--speedups must start with 1 (full decoding)\n\n${USAGE}`);
  process.exit(2);
}

let llamaCpp: typeof import("node-llama-cpp");
try {
  llamaCpp = await import("node-llama-cpp");
} catch (e) {
  console.error(`bench llamacpp: node-llama-cpp does not load here (${(e as Error).message}); run bun install`);
  process.exit(2);
}
const llama = await llamaCpp.getLlama({ gpu: false, logLevel: llamaCpp.LlamaLogLevel.error });

const results: Record<string, unknown>[] = [];
for (const name of f.models.split(",").map((x) => x.trim())) {
  const dir = shapeModel(name, "float16");
  const spec = readModelSpec(dir);
  if (spec.positions !== "rotary") throw new Error(`bench llamacpp: ${name} is not a LLaMA-shaped model`);
  const gguf = join(dir, "model-f16.gguf");
  if (!existsSync(gguf)) {
    process.stderr.write(`writing ${gguf} ... `);
    writeGguf(dir, spec, gguf);
    process.stderr.write("done\n");
  }
  const dec = await SkipDecoder.load(dir, { backend: "cpu", threads, maxBatch: 1, maxSeqLen: P + N + 8 });
  const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
  const ctx = await model.createContext({ contextSize: P + N + 8, threads, batchSize: P, sequences: 1 });
  const seq = ctx.getSequence();
  const native = NativeBackend.get("cpu");
  const bw = () => readBandwidth(native, threads);
  const bwBefore = bw();
  const rng = new Rng(11);
  const prompt = [1, ...Array.from({ length: P - 1 }, () => 3 + Math.floor(rng.next() * (spec.vocabSize - 3)))];
  const peerPrompt = prompt as unknown as import("node-llama-cpp").Token[];

  /** llama.cpp: decode tok/s of one greedy run, and its tokens. */
  async function peer(): Promise<{ tokS: number; tokens: number[] }> {
    await seq.clearHistory();
    const tokens: number[] = [];
    let t0 = 0;
    for await (const t of seq.evaluate(peerPrompt, { temperature: 0 })) {
      tokens.push(t);
      if (tokens.length === 1) t0 = performance.now();
      if (tokens.length >= N) break;
    }
    return { tokS: ((N - 1) * 1000) / (performance.now() - t0), tokens };
  }
  const ours = (sp: number) => dec.generate(prompt, { maxNewTokens: N, ignoreEos: true, ...(sp === 1 ? {} : { speedup: sp }) });

  const peerTokS: number[] = [];
  const ourTokS = new Map<number, number[]>();
  const budgets = new Map<number, number[]>();
  let agree = "";
  for (let r = -1; r < reps; r++) {
    const p = await peer();
    if (r >= 0) peerTokS.push(p.tokS);
    for (const sp of speedups) {
      const g = await ours(sp);
      if (r < 0) {
        budgets.set(sp, g.budgets);
        if (sp === 1) {
          const same = g.tokens.findIndex((t, i) => t !== p.tokens[i]);
          agree = same < 0 ? `all ${N} greedy tokens equal` : `greedy tokens equal for the first ${same} of ${N}`;
        }
        continue;
      }
      ourTokS.set(sp, [...(ourTokS.get(sp) ?? []), g.stats.tokensPerSecond]);
    }
  }
  const bwAfter = bw();
  const membw = Math.max(bwBefore, bwAfter);
  const { layer, step } = weightBytes(spec, 2);
  const fullStep = spec.numLayers * layer + step;
  const gbs = (tokS: number, bytes: number) => (tokS * bytes) / 1e9;
  const peerMed = median(peerTokS);
  const rows: (string | number)[][] = [
    ["llama.cpp (node-llama-cpp 3.21.1)", "full", pm(peerTokS, 1), gbs(peerMed, fullStep).toFixed(1), `${((gbs(peerMed, fullStep) / membw) * 100).toFixed(0)}%`, "1.00x", "—", "—"],
  ];
  const base = ourTokS.get(1)!;
  for (const sp of speedups) {
    const t = ourTokS.get(sp)!;
    const b = budgets.get(sp)!;
    const decodeBudgets = b.slice(0, -1);
    const mean = decodeBudgets.reduce((a, x) => a + x, 0) / decodeBudgets.length;
    const stepBytes = mean * layer + step;
    const measured = median(t.map((v, i) => v / base[i]!));
    const bound = fullStep / stepBytes;
    rows.push([
      "skipdecode CPU",
      sp === 1 ? "full" : `${sp}x`,
      pm(t, 1),
      gbs(median(t), stepBytes).toFixed(1),
      `${((gbs(median(t), stepBytes) / membw) * 100).toFixed(0)}%`,
      `${(median(t) / peerMed).toFixed(2)}x`,
      sp === 1 ? "—" : `${measured.toFixed(2)}x of ${bound.toFixed(2)}x`,
      sp === 1 ? "—" : `${((measured / bound) * 100).toFixed(0)}%`,
    ]);
    results.push({
      model: name, speedup: sp, decodeTokS: median(t), decodeStd: stddev(t), meanLayers: mean, measuredSpeedup: measured,
      bytesBound: bound, llamaCppTokS: peerMed, llamaCppStd: stddev(peerTokS), ratioToLlamaCpp: median(t) / peerMed,
      weightGBs: gbs(median(t), stepBytes), membwGBs: membw, prompt: P, newTokens: N, threads, reps,
    });
  }
  console.log(
    `\n## ${name}: ${spec.numLayers} layers, hidden ${spec.hiddenSize}, ${spec.numHeads} heads / ${spec.numKvHeads} KV heads, ` +
      `ffn ${spec.ffnDim}, vocab ${spec.vocabSize}, F16 (${(fullStep / 2 ** 20).toFixed(0)} MiB of matrices a full step)\n` +
      `${machine()}; ${threads} threads each; prompt ${P}, ${N} new tokens, batch 1, greedy; ${reps} reps after a warm-up, ` +
      `median ± std; membw ${bwBefore.toFixed(1)} / ${bwAfter.toFixed(1)} GB/s before / after (the higher is used); ${agree}\n`,
  );
  table(["engine", "decoding", "decode tok/s", "weights GB/s", "of membw", "vs llama.cpp", "measured of bytes bound", "measured/bound"], rows);
  await ctx.dispose();
  await model.dispose();
  dec.close();
}
writeJson(f.out, { bench: "llamacpp", date: new Date().toISOString(), machine: machine(), results });
process.exit(0);
