#!/usr/bin/env bun
/**
 * bench llamacpp — batch-1 decode tokens/s of the CPU engine side by side with
 * llama.cpp (through node-llama-cpp, a pinned devDependency) on the same GGUF
 * file: each bench shape's random LLaMA-shaped weights (bench/common.ts
 * SHAPES) converted once per --types entry by `skipdecode convert`
 * (bench/gguf.ts), and that one file loaded by both engines.
 *
 * Conditions: one sequence, the same prompt of --prompt ids and --new-tokens
 * greedy tokens, --threads threads each (2: this machine's cores). Each round
 * runs llama.cpp, then skipdecode at every --speedups value (1 = full), so the
 * ratios compare runs made moments apart; one warm-up round, then --reps;
 * medians ± std. Decode tokens/s counts the tokens after the first over the
 * time from the first to the last (as GenerationStats.tokensPerSecond).
 * "weights GB/s" = matrix bytes a step reads (each tensor's bytes in the file,
 * so each format's block sizes count: Q8_0 34 bytes per 32 weights, Q4_K 144
 * per 256, …; the LM head every step, the layers the step's budget computes)
 * × steps per second; "of membw" compares that with the machine's sustained
 * read bandwidth (bench/common.ts readBandwidth: 24 plain reads of 512 MiB in
 * a row, bytes over total time, as a decode's tokens/s is), measured before
 * each round and after the last: each run's tokens/s is set against the
 * higher of the two measures around its round, and the column is the median
 * over the rounds (this VM's bandwidth moves by a fifth within minutes; a
 * model's before and after alone missed that). In brackets, the same against
 * the best single pass of those reads (the STREAM convention, which on a
 * shared VM no run of seconds attains). "bytes bound" is the speedup the weight bytes allow
 * SkipDecode (the LM head is never skipped). The two engines' greedy tokens
 * are compared too (they run the same file).
 *
 * Load: --load-model's file in --load-type is loaded in fresh processes,
 * alternating ours and llama.cpp's --load-reps times: load time (ours:
 * SkipDecoder.load; llama.cpp: loadModel + createContext), time to the first
 * generated token after starting the load (llama.cpp maps the file and reads
 * its pages on first use, so its load alone does less of the work), and the
 * process's peak RSS (VmHWM) against the file's size.
 */
import { statSync } from "node:fs";
import { join } from "node:path";
import { readModelSpec } from "../lib/checkpoint/config.ts";
import { CONVERT_TYPES, type ConvertType } from "../lib/checkpoint/gguf-convert.ts";
import { GgufFile } from "../lib/checkpoint/gguf.ts";
import { SkipDecoder } from "../lib/index.ts";
import { NativeBackend } from "../lib/engine/native.ts";
import { Rng } from "../lib/tiny/model.ts";
import { flags, machine, median, numList, pm, range, readBandwidth, ROOT, shapeModel, stddev, table, writeJson } from "./common.ts";
import { benchGguf } from "./gguf.ts";

const USAGE = `usage: bun run bench llamacpp [--models llama-110m,llama-400m] [--types f16,q8_0,q4_0,q4_k_m] [--prompt 32] [--new-tokens 64]
                                [--reps 3] [--speedups 1,2,3] [--threads 2] [--load-model llama-400m] [--load-type q8_0]
                                [--load-reps 3] [--out bench/results/llamacpp.json]
       --models "" or --load-model "" skips that part`;
const f = flags(USAGE, {
  models: { type: "string", default: "llama-110m,llama-400m" },
  types: { type: "string", default: "f16" },
  prompt: { type: "string", default: "32" },
  "new-tokens": { type: "string", default: "64" },
  reps: { type: "string", default: "3" },
  speedups: { type: "string", default: "1,2,3" },
  threads: { type: "string", default: "2" },
  "load-model": { type: "string", default: "llama-400m" },
  "load-type": { type: "string", default: "q8_0" },
  "load-reps": { type: "string", default: "3" },
  out: { type: "string", default: join(ROOT, "bench/results/llamacpp.json") },
  probe: { type: "string" },
  file: { type: "string" },
  help: { type: "boolean", default: false },
});
const P = Number(f.prompt);
const N = Number(f["new-tokens"]);
const reps = Number(f.reps);
const threads = Number(f.threads);
const loadReps = Number(f["load-reps"]);
const speedups = numList("speedups", f.speedups, USAGE);
for (const [k, v] of [["prompt", P], ["new-tokens", N], ["reps", reps], ["threads", threads], ["load-reps", loadReps]] as const) {
  if (!Number.isInteger(v) || v < 1) {
    console.error(`--${k} must be a positive integer\n\n${USAGE}`);
    process.exit(2);
  }
}
if (speedups[0] !== 1) {
  console.error(`--speedups must start with 1 (full decoding)\n\n${USAGE}`);
  process.exit(2);
}
const types = f.types.split(",").map((x) => x.trim()) as ConvertType[];
for (const t of f.probe !== undefined ? [] : [...types, f["load-type"]]) {
  if (!(CONVERT_TYPES as readonly string[]).includes(t)) {
    console.error(`--types and --load-type take ${CONVERT_TYPES.join(", ")}; got "${t}"\n\n${USAGE}`);
    process.exit(2);
  }
}

/** node-llama-cpp, loaded on first use (a probe of our load never loads it: its memory would count). */
async function llamaCpp() {
  let lib: typeof import("node-llama-cpp");
  try {
    lib = await import("node-llama-cpp");
  } catch (e) {
    console.error(`bench llamacpp: node-llama-cpp does not load here (${(e as Error).message}); run bun install`);
    process.exit(2);
  }
  return lib.getLlama({ gpu: false, logLevel: lib.LlamaLogLevel.error });
}

/** Peak and current resident memory of this process, in bytes (/proc/self/status). */
function rss(): { peak: number; now: number } {
  const s = require("node:fs").readFileSync("/proc/self/status", "utf8") as string;
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(s)?.[1] ?? NaN) * 1024;
  return { peak: kb("VmHWM"), now: kb("VmRSS") };
}

// ---------------------------------------------------------------------------
// load probe: one engine loads one file in this fresh process, then exits
// ---------------------------------------------------------------------------
if (f.probe !== undefined) {
  const file = f.file!;
  const prompt = Array.from({ length: 8 }, (_, i) => 1 + i);
  const llama = f.probe === "ours" ? null : await llamaCpp(); // loading the library is not part of loading the model
  const before = rss().now;
  const t0 = performance.now();
  let loadMs: number;
  let firstMs: number;
  if (f.probe === "ours") {
    const dec = await SkipDecoder.load(file, { backend: "cpu", threads, maxBatch: 1, maxSeqLen: 256 });
    loadMs = performance.now() - t0;
    await dec.generate(prompt, { maxNewTokens: 1, ignoreEos: true });
    firstMs = performance.now() - t0;
    dec.close();
  } else {
    const model = await llama!.loadModel({ modelPath: file, gpuLayers: 0 });
    const ctx = await model.createContext({ contextSize: 256, threads, batchSize: 32, sequences: 1 });
    loadMs = performance.now() - t0;
    for await (const _ of ctx.getSequence().evaluate(prompt as never, { temperature: 0 })) break;
    firstMs = performance.now() - t0;
  }
  console.log(JSON.stringify({ loadMs, firstMs, peakRss: rss().peak, baseRss: before }));
  process.exit(0);
}

/** Bytes each step reads: the LM head's, and each layer's matrices, from the file's tensors. */
function stepBytes(file: string, numLayers: number): { head: number; layers: number[] } {
  using g = GgufFile.open(file, { arrays: false });
  const size = (n: string) => g.tensors.get(n)?.nbytes ?? 0;
  const head = g.tensors.has("output.weight") ? size("output.weight") : size("token_embd.weight");
  const layers = Array.from({ length: numLayers }, (_, l) =>
    ["attn_q", "attn_k", "attn_v", "attn_qkv", "attn_output", "ffn_gate", "ffn_up", "ffn_down"].reduce((a, n) => a + size(`blk.${l}.${n}.weight`), 0),
  );
  return { head, layers };
}

/** Bytes a step with `budget` of L layers reads (warm-up layers at the bottom, the rest at the top: docs/DESIGN.md). */
function bytesAt(b: { head: number; layers: number[] }, budget: number, warmup = 1): number {
  const L = b.layers.length;
  let sum = b.head;
  for (let l = 0; l < L; l++) if (budget >= L || l < warmup || l >= L - (budget - warmup)) sum += b.layers[l]!;
  return sum;
}

const results: Record<string, unknown>[] = [];
const llama = f.models.trim() ? await llamaCpp() : null;
const native = NativeBackend.get("cpu");
const bw = () => readBandwidth(native, threads);
for (const name of f.models.split(",").map((x) => x.trim()).filter(Boolean)) {
  const dir = shapeModel(name, "float16");
  const spec = readModelSpec(dir);
  if (spec.positions !== "rotary") throw new Error(`bench llamacpp: ${name} is not a LLaMA-shaped model`);
  const rng = new Rng(11);
  const prompt = [1, ...Array.from({ length: P - 1 }, () => 3 + Math.floor(rng.next() * (spec.vocabSize - 3)))];
  const peerPrompt = prompt as unknown as import("node-llama-cpp").Token[];
  for (const type of types) {
    const gguf = await benchGguf(dir, type);
    const bytes = stepBytes(gguf, spec.numLayers);
    const dec = await SkipDecoder.load(gguf, { backend: "cpu", threads, maxBatch: 1, maxSeqLen: P + N + 8 });
    const model = await llama!.loadModel({ modelPath: gguf, gpuLayers: 0 });
    const ctx = await model.createContext({ contextSize: P + N + 8, threads, batchSize: P, sequences: 1 });
    const seq = ctx.getSequence();
    /** Read bandwidth before each measured round, and after the last. */
    const bwSeen: ReturnType<typeof readBandwidth>[] = [];

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
      if (r >= 0) bwSeen.push(bw());
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
    bwSeen.push(bw());
    /** Each round's bandwidth: the higher of the measures before and after it. */
    const aroundRounds = (k: "sustained" | "best") => peerTokS.map((_, r) => Math.max(bwSeen[r]![k], bwSeen[r + 1]![k]));
    const roundBw = aroundRounds("sustained");
    const roundBest = aroundRounds("best");
    /** Weight bytes per second as a share of each round's bandwidth, median over the rounds. */
    const ofMembw = (tokS: number[], b: number, bw = roundBw) => median(tokS.map((v, r) => (v * b) / 1e9 / bw[r]!));
    const pct = (x: number) => `${(x * 100).toFixed(0)}%`;
    const shares = (tokS: number[], b: number) => `${pct(ofMembw(tokS, b))} (${pct(ofMembw(tokS, b, roundBest))})`;
    const fullStep = bytesAt(bytes, spec.numLayers);
    const gbs = (tokS: number, b: number) => (tokS * b) / 1e9;
    const peerMed = median(peerTokS);
    const rows: (string | number)[][] = [
      ["llama.cpp (node-llama-cpp 3.21.1)", "full", pm(peerTokS, 1), gbs(peerMed, fullStep).toFixed(1), shares(peerTokS, fullStep), "1.00x", "—", "—"],
    ];
    const base = ourTokS.get(1)!;
    for (const sp of speedups) {
      const t = ourTokS.get(sp)!;
      const decodeBudgets = budgets.get(sp)!.slice(0, -1);
      const step = decodeBudgets.reduce((a, b) => a + bytesAt(bytes, b), 0) / decodeBudgets.length;
      const meanLayers = decodeBudgets.reduce((a, x) => a + x, 0) / decodeBudgets.length;
      const measured = median(t.map((v, i) => v / base[i]!));
      const bound = fullStep / step;
      rows.push([
        "skipdecode CPU",
        sp === 1 ? "full" : `${sp}x`,
        pm(t, 1),
        gbs(median(t), step).toFixed(1),
        shares(t, step),
        `${(median(t) / peerMed).toFixed(2)}x`,
        sp === 1 ? "—" : `${measured.toFixed(2)}x of ${bound.toFixed(2)}x`,
        sp === 1 ? "—" : `${((measured / bound) * 100).toFixed(0)}%`,
      ]);
      results.push({
        model: name, type, speedup: sp, decodeTokS: median(t), decodeStd: stddev(t), meanLayers, measuredSpeedup: measured,
        bytesBound: bound, llamaCppTokS: peerMed, llamaCppStd: stddev(peerTokS), ratioToLlamaCpp: median(t) / peerMed,
        weightGBs: gbs(median(t), step), llamaCppWeightGBs: gbs(peerMed, fullStep), membwGBs: median(roundBw), ofMembw: ofMembw(t, step),
        llamaCppOfMembw: ofMembw(peerTokS, fullStep), membwBestPassGBs: median(roundBest), ofBestPass: ofMembw(t, step, roundBest),
        llamaCppOfBestPass: ofMembw(peerTokS, fullStep, roundBest), stepBytes: step,
        prompt: P, newTokens: N, threads, reps, agree,
      });
    }
    console.log(
      `\n## ${name} ${type.toUpperCase()}: ${spec.numLayers} layers, hidden ${spec.hiddenSize}, ${spec.numHeads} heads / ${spec.numKvHeads} KV heads, ` +
        `ffn ${spec.ffnDim}, vocab ${spec.vocabSize}; ${(fullStep / 2 ** 20).toFixed(0)} MiB of matrices a full step (file ${(statSync(gguf).size / 2 ** 20).toFixed(0)} MiB)\n` +
        `${machine()}; ${threads} threads each; prompt ${P}, ${N} new tokens, batch 1, greedy; ${reps} reps after a warm-up, ` +
        `median ± std; membw (sustained) ${range(bwSeen.map((x) => x.sustained))} GB/s over the rounds, best pass ${range(bwSeen.map((x) => x.best))} ` +
        `(of membw: each round against the higher measure around it, median; in brackets of the best pass); ${agree}\n`,
    );
    table(["engine", "decoding", "decode tok/s", "weights GB/s", "of membw (best pass)", "vs llama.cpp", "measured of bytes bound", "measured/bound"], rows);
    await ctx.dispose();
    await model.dispose();
    dec.close();
  }
}

// ---------------------------------------------------------------------------
// load time and peak memory, each engine in fresh processes
// ---------------------------------------------------------------------------
let load: Record<string, unknown> | null = null;
if (f["load-model"]) {
  const dir = shapeModel(f["load-model"], "float16");
  const gguf = await benchGguf(dir, f["load-type"] as ConvertType);
  const fileBytes = statSync(gguf).size;
  const runs: Record<"ours" | "llamacpp", { loadMs: number; firstMs: number; peakRss: number; baseRss: number }[]> = { ours: [], llamacpp: [] };
  for (let r = 0; r < loadReps; r++) {
    for (const who of ["ours", "llamacpp"] as const) {
      const p = Bun.spawnSync([process.execPath, import.meta.path, "--probe", who, "--file", gguf, "--threads", String(threads)], { stdout: "pipe", stderr: "pipe" });
      const line = p.stdout.toString().trim().split("\n").pop() ?? "";
      if (p.exitCode !== 0 || !line.startsWith("{")) throw new Error(`bench llamacpp: the ${who} load probe failed: ${p.stderr.toString().trim()}`);
      runs[who].push(JSON.parse(line));
    }
  }
  const med = (who: "ours" | "llamacpp", k: "loadMs" | "firstMs" | "peakRss" | "baseRss") => median(runs[who].map((x) => x[k]));
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  console.log(
    `\n## load: ${f["load-model"]} ${f["load-type"].toUpperCase()} (${mib(fileBytes)} file), fresh process each, ${loadReps} alternating runs, medians; ` +
      `the file is in the page cache; ${machine()}; ${threads} threads\n`,
  );
  const rows = (["ours", "llamacpp"] as const).map((who) => [
    who === "ours" ? "skipdecode (SkipDecoder.load)" : "llama.cpp (loadModel + createContext)",
    `${med(who, "loadMs").toFixed(0)} ms`,
    `${med(who, "firstMs").toFixed(0)} ms`,
    mib(med(who, "peakRss")),
    `${(med(who, "peakRss") / fileBytes).toFixed(2)}x`,
    mib(med(who, "baseRss")),
  ]);
  table(["engine", "load", "load + first token", "peak RSS", "peak RSS / file", "RSS before loading"], rows);
  const ratio = med("ours", "loadMs") / med("llamacpp", "loadMs");
  const firstRatio = med("ours", "firstMs") / med("llamacpp", "firstMs");
  const rssRatio = med("ours", "peakRss") / fileBytes;
  console.log(
    `\nload ${ratio.toFixed(2)}x llama.cpp's (target <= 2x), load + first token ${firstRatio.toFixed(2)}x; ` +
      `peak RSS ${rssRatio.toFixed(2)}x the file (target <= 1.3x)`,
  );
  load = { model: f["load-model"], type: f["load-type"], fileBytes, runs, loadRatio: ratio, firstTokenRatio: firstRatio, peakRssToFile: rssRatio };
}
writeJson(f.out, { bench: "llamacpp", date: new Date().toISOString(), machine: machine(), results, load });
process.exit(0);
