#!/usr/bin/env bun
/**
 * `bun run demo`: the main job in one command. It loads the embedded trained
 * model (models/brown-opt-12l: 12 layers, trained skip-aware on the Brown
 * corpus by train/train.py, see its README.md) and continues the same prompt
 * with full decoding and with SkipDecode at 2x and 3x, printing decode
 * tokens/s, ideal vs measured speedup and the held-out perplexity at each
 * setting, then the three continuations.
 *
 * SKIPDECODE_DEMO_MODEL=DIR runs it on another OPT folder instead (held-out
 * perplexity is shown when DIR has a heldout.txt, as the trainer's exports
 * do).
 */
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { SkipDecoder } from "../lib/index.ts";
import { evaluateQuality } from "../lib/eval.ts";

const root = resolve(import.meta.dir, "..");
const dir = process.env.SKIPDECODE_DEMO_MODEL ?? join(root, "models", "brown-opt-12l");
if (!existsSync(join(dir, "config.json"))) {
  throw new Error(
    process.env.SKIPDECODE_DEMO_MODEL
      ? `SKIPDECODE_DEMO_MODEL=${dir} has no config.json`
      : `${dir} has no config.json: the embedded model is missing from this checkout`,
  );
}

const dec = await SkipDecoder.load(dir, { backend: "auto", maxBatch: 1 });
const prompt = "The committee met on Tuesday to discuss the new plan for the city's schools. The chairman said that";
const maxNewTokens = 64;
const runs = 3;
// Sampled (seeded, so every run and setting draws the same random numbers):
// greedy decoding of a small model loops on its likeliest phrase.
const sampling = { temperature: 0.8, topK: 40, seed: 11 };
console.log(
  `model ${dir}: ${dec.spec.numLayers} layers, hidden ${dec.spec.hiddenSize}, ` +
    `${(dec.weightBytes / 2 ** 20).toFixed(1)} MiB of weights; backend ${dec.backend} (${dec.deviceName})`,
);
console.log(
  `prompt: ${JSON.stringify(prompt)}\n${maxNewTokens} new tokens, temperature ${sampling.temperature}, ` +
    `top-k ${sampling.topK}, seed ${sampling.seed}; median of ${runs} runs after a warm-up\n`,
);

const settings = [["full", 1], ["2x", 2], ["3x", 3]] as const;
const heldoutPath = join(dir, "heldout.txt");
const perplexity = new Map<number, number>();
if (existsSync(heldoutPath)) {
  const maxWindows = 48;
  const rows = await evaluateQuality(dec, readFileSync(heldoutPath, "utf8"), {
    speedups: settings.map(([, s]) => s),
    maxWindows,
  });
  for (const r of rows) perplexity.set(r.speedup, r.perplexity);
  console.log(`held-out perplexity: ${rows[0]!.tokens} scored tokens of ${heldoutPath} (first ${maxWindows} windows of 128)\n`);
}

const median = (xs: number[]) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const rows: { name: string; speedup: number; tps: number; ideal: number; layers: number; text: string }[] = [];
for (const [name, speedup] of settings) {
  const opts = { maxNewTokens, ignoreEos: true, ...sampling, ...(speedup === 1 ? {} : { speedup }) };
  await dec.generate(prompt, opts); // warm-up
  const tps: number[] = [];
  let last;
  for (let i = 0; i < runs; i++) {
    last = await dec.generate(prompt, opts);
    tps.push(last.stats.tokensPerSecond);
  }
  rows.push({ name, speedup, tps: median(tps), ideal: last!.stats.idealSpeedup, layers: last!.stats.avgLayers, text: last!.text });
}
const base = rows[0]!.tps;
console.log("| decoding | mean layers | decode tokens/s | ideal speedup | measured speedup | held-out perplexity |");
console.log("|---|---:|---:|---:|---:|---:|");
for (const r of rows) {
  const ppl = perplexity.get(r.speedup);
  console.log(
    `| ${r.name} | ${r.layers.toFixed(2)} | ${r.tps.toFixed(1)} | ${r.ideal.toFixed(2)}x | ${(r.tps / base).toFixed(2)}x | ` +
      `${ppl === undefined ? "—" : ppl.toFixed(2)} |`,
  );
}
console.log(`\ncontinuations:`);
for (const r of rows) console.log(`\n[${r.name}] ${r.text.trim()}`);
dec.close();
