#!/usr/bin/env bun
/**
 * `bun run demo`: the main job in one command. It loads the embedded LLaMA
 * model (EMBEDDED_LLAMA_MODEL, models/brown-llama-12l: 12 layers, trained
 * plain on the Brown corpus by train/train.py, then fine-tuned with the
 * policy it runs with; see its README.md) and continues the
 * same prompt with full decoding and with SkipDecode at 2x and 3x, printing
 * decode tokens/s, ideal vs measured speedup and the held-out perplexity at
 * each setting, then the three continuations.
 *
 * Timing: after a warm-up, ROUNDS interleaved rounds each run every setting
 * for at least RUN_MS (the same generation repeated: one takes only tens of
 * ms on this model; the order rotating from round to round), so a burst of load on the
 * machine hits every setting alike. A setting's speed is the median over the
 * rounds with its min–max range; its measured speedup is the median of the
 * per-round ratios to full decoding (a ratio measured within one round beats
 * two absolute numbers), with their range. When a range is wider than
 * SPREAD_WARN of its median, a warning says the numbers are not stable.
 *
 * SKIPDECODE_DEMO_MODEL=DIR runs it on another model folder instead, such as
 * models/brown-opt-12l (held-out perplexity is shown when DIR has a
 * heldout.txt, as the trainer's exports do). SKIPDECODE_DEMO_ROUNDS=N and SKIPDECODE_DEMO_WINDOWS=N shorten it
 * (test/docs.test.ts runs it so on a busy machine).
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { EMBEDDED_LLAMA_MODEL, SkipDecoder } from "../lib/index.ts";
import { evaluateQuality } from "../lib/generation/eval.ts";

const ROUNDS = envInt("SKIPDECODE_DEMO_ROUNDS", 7);
/** Least wall time of one setting's turn in a round (ms): repeated generations, same seed. */
const RUN_MS = 300;
const HELDOUT_WINDOWS = envInt("SKIPDECODE_DEMO_WINDOWS", 48);
const SPREAD_WARN = 0.25;

function envInt(name: string, dflt: number): number {
  const v = process.env[name];
  if (v === undefined || v === "") return dflt;
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new Error(`${name} must be a positive integer, got "${v}"`);
  return Number(v);
}

const dir = process.env.SKIPDECODE_DEMO_MODEL ?? EMBEDDED_LLAMA_MODEL;
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
// Sampled (seeded, so every run and setting draws the same random numbers):
// greedy decoding of a small model loops on its likeliest phrase.
const sampling = { temperature: 0.8, topK: 40, seed: 11 };
console.log(
  `model ${dir}: ${dec.spec.numLayers} layers, hidden ${dec.spec.hiddenSize}, ` +
    `${(dec.weightBytes / 2 ** 20).toFixed(1)} MiB of weights; backend ${dec.backend} (${dec.deviceName})`,
);
console.log(
  `prompt: ${JSON.stringify(prompt)}\n${maxNewTokens} new tokens, temperature ${sampling.temperature}, ` +
    `top-k ${sampling.topK}, seed ${sampling.seed}; medians of ${ROUNDS} interleaved rounds after a warm-up (min–max)\n`,
);

const settings = [["full", 1], ["2x", 2], ["3x", 3]] as const;
const heldoutPath = join(dir, "heldout.txt");
const perplexity = new Map<number, number>();
if (existsSync(heldoutPath)) {
  const maxWindows = HELDOUT_WINDOWS;
  const rows = await evaluateQuality(dec, readFileSync(heldoutPath, "utf8"), {
    speedups: settings.map(([, s]) => s),
    maxWindows,
  });
  for (const r of rows) perplexity.set(r.speedup, r.perplexity);
  console.log(`held-out perplexity: ${rows[0]!.tokens} scored tokens of ${heldoutPath} (first ${maxWindows} windows of 128)\n`);
}

const optsOf = (speedup: number) => ({ maxNewTokens, ignoreEos: true, ...sampling, ...(speedup === 1 ? {} : { speedup }) });
const median = (xs: number[]) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const range = (xs: number[], digits: number) => `${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)}`;
/** Width of the min–max range relative to the median. */
const spread = (xs: number[]) => (Math.max(...xs) - Math.min(...xs)) / median(xs);

for (const [, speedup] of settings) await dec.generate(prompt, optsOf(speedup)); // warm-up
const tps: number[][] = settings.map(() => []);
const last: { text: string; ideal: number; layers: number }[] = [];
for (let round = 0; round < ROUNDS; round++) {
  for (let k = 0; k < settings.length; k++) {
    const i = (round + k) % settings.length; // rotate the order
    // one generation of this small model takes tens of ms, where a thread wake-up or a GC pause is a
    // large share: a setting's turn repeats it for at least RUN_MS and counts all its decode time
    let tokens = 0;
    let seconds = 0;
    const t0 = performance.now();
    do {
      const r = await dec.generate(prompt, optsOf(settings[i]![1]));
      tokens += r.tokens.length;
      seconds += r.tokens.length / r.stats.tokensPerSecond;
      last[i] = { text: r.text, ideal: r.stats.idealSpeedup, layers: r.stats.avgLayers };
    } while (performance.now() - t0 < RUN_MS);
    tps[i]!.push(tokens / seconds);
  }
}
const ratios = tps.map((t) => t.map((v, round) => v / tps[0]![round]!));

console.log("| decoding | mean layers | decode tokens/s | ideal speedup | measured speedup | held-out perplexity |");
console.log("|---|---:|---:|---:|---:|---:|");
settings.forEach(([name, speedup], i) => {
  const ppl = perplexity.get(speedup);
  const measured = i === 0 ? "1.00x" : `${median(ratios[i]!).toFixed(2)}x (${range(ratios[i]!, 2)})`;
  console.log(
    `| ${name} | ${last[i]!.layers.toFixed(2)} | ${median(tps[i]!).toFixed(1)} (${range(tps[i]!, 0)}) | ${last[i]!.ideal.toFixed(2)}x | ` +
      `${measured} | ${ppl === undefined ? "—" : ppl.toFixed(2)} |`,
  );
});
const noisy = settings.filter((_, i) => i > 0 && spread(ratios[i]!) > SPREAD_WARN).map(([name]) => name);
if (noisy.length) {
  console.log(
    `\nwarning: the measured speedup at ${noisy.join(" and ")} varied by more than ${SPREAD_WARN * 100}% of its median ` +
      `between rounds, so these timings are not stable (a busy machine, or a VM whose speed varies: run again, ` +
      `or with more rounds: SKIPDECODE_DEMO_ROUNDS=N)`,
  );
}
console.log(`\ncontinuations:`);
settings.forEach(([name], i) => console.log(`\n[${name}] ${last[i]!.text.trim()}`));
dec.close();
