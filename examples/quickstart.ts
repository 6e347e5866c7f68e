// A tour of the library API (docs/api.md). Run: bun examples/quickstart.ts [MODEL_DIR]
import { EMBEDDED_MODEL, SkipDecoder, SkipPolicy } from "../lib/index.ts";

const dir = process.argv[2] ?? EMBEDDED_MODEL; // default: the trained model that ships with the package

using dec = await SkipDecoder.load(dir, { backend: "auto" });
console.log(dec.backend, dec.spec.numLayers, "layers");

// SkipDecode at a target speedup: budgets decay over maxNewTokens steps.
const r = await dec.generate("The meaning of life is", { maxNewTokens: 24, speedup: 2, ignoreEos: true });
console.log(r.budgets.join(" "), `→ ideal ${r.stats.idealSpeedup.toFixed(2)}x`, r.finishReason);

// An explicit policy, sampling with a seed, streamed.
const policy = SkipPolicy.linear({ numLayers: dec.spec.numLayers, maxLayers: 8, minLayers: 3, span: 16 });
let streamed = "";
let ids = 0;
for await (const ev of dec.stream("Once upon a time", { maxNewTokens: 16, policy, temperature: 0.8, topP: 0.9, seed: 42, ignoreEos: true })) {
  streamed += ev.text; // token events and the final event both carry text
  if (ev.type === "token") ids++; // ev.token, ev.layers
  else console.log(`finish: ${ev.finishReason}`); // the final event, always last
}
console.log(`streamed ${ids} tokens, ${streamed.length} characters with ${policy}`);

// The paper's batched mode: one shared step index for all prompts.
const batch = await dec.generateBatch(["Hello", "A much longer prompt than the first"], { maxNewTokens: 8, speedup: 3, ignoreEos: true });
console.log(batch.map((b) => b.tokens.length));

// Teacher-forced logits with per-position budgets.
const logits = await dec.forward([2, 100, 200, 300], { budgets: [8, 8, 5, 3], warmupLayers: 1 });
console.log(logits.length / dec.spec.vocabSize, "rows of logits");
