#!/usr/bin/env bun
/**
 * `bun run demo`: the main job in one command. On a first run it writes a
 * random OPT-shaped model (12 layers, hidden 512) to .cache/demo-model, then
 * generates the same continuation with full decoding and with SkipDecode at
 * 2x and 3x, printing decode tokens/s and ideal vs measured speedup.
 *
 * The model is random, so its text is noise; the point is the mechanics and
 * the timings. Point SKIPDECODE_DEMO_MODEL at a real OPT folder to see text.
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { SkipDecoder } from "../lib/index.ts";
import { writeTinyModel } from "../lib/tiny.ts";

const root = resolve(import.meta.dir, "..");
const dir = process.env.SKIPDECODE_DEMO_MODEL ?? join(root, ".cache", "demo-model");
if (!existsSync(join(dir, "config.json"))) {
  if (process.env.SKIPDECODE_DEMO_MODEL) throw new Error(`SKIPDECODE_DEMO_MODEL=${dir} has no config.json`);
  console.log(`first run: writing a random 12-layer OPT-shaped model to ${dir} ...`);
  writeTinyModel(dir, { seed: 7, layers: 12, hidden: 512, heads: 8, merges: 700, maxPositions: 512, dtype: "bfloat16" });
}

const dec = await SkipDecoder.load(dir, { backend: "auto", maxBatch: 1 });
const prompt = "SkipDecode lets every token of a batch skip the bottom layers, so";
const maxNewTokens = 96;
const runs = 3;
console.log(
  `model ${dir}: ${dec.spec.numLayers} layers, hidden ${dec.spec.hiddenSize}, ` +
    `${(dec.weightBytes / 2 ** 20).toFixed(0)} MiB of weights; backend ${dec.backend} (${dec.deviceName})`,
);
console.log(`prompt: ${JSON.stringify(prompt)}; ${maxNewTokens} new tokens, greedy, median of ${runs} runs after a warm-up\n`);

const median = (xs: number[]) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const rows: { name: string; tps: number; ideal: number; layers: number; text: string }[] = [];
for (const [name, speedup] of [["full", undefined], ["2x", 2], ["3x", 3]] as const) {
  const opts = { maxNewTokens, speedup, ignoreEos: true };
  await dec.generate(prompt, opts); // warm-up
  const tps: number[] = [];
  let last;
  for (let i = 0; i < runs; i++) {
    last = await dec.generate(prompt, opts);
    tps.push(last.stats.tokensPerSecond);
  }
  rows.push({ name, tps: median(tps), ideal: last!.stats.idealSpeedup, layers: last!.stats.avgLayers, text: last!.text });
}
const base = rows[0]!.tps;
console.log("| decoding | mean layers | decode tokens/s | ideal speedup | measured speedup | measured / ideal |");
console.log("|---|---:|---:|---:|---:|---:|");
for (const r of rows) {
  const measured = r.tps / base;
  console.log(
    `| ${r.name} | ${r.layers.toFixed(2)} | ${r.tps.toFixed(1)} | ${r.ideal.toFixed(2)}x | ${measured.toFixed(2)}x | ${((measured / r.ideal) * 100).toFixed(0)}% |`,
  );
}
console.log(`\nfirst 60 characters of each continuation (random weights: noise):`);
for (const r of rows) console.log(`  ${r.name.padEnd(4)} ${JSON.stringify(r.text.slice(0, 60))}`);
dec.close();
