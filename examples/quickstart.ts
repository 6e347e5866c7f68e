// The README's API example. Run: bun examples/quickstart.ts [MODEL_DIR]
import { SkipDecoder, SkipPolicy } from "../lib/index.ts";
import { writeTinyModel } from "../lib/tiny.ts";

const dir = process.argv[2] ?? "/tmp/skipdecode-tiny";
if (!process.argv[2]) writeTinyModel(dir, { seed: 1, layers: 8 }); // a random OPT-shaped model

using dec = await SkipDecoder.load(dir, { backend: "auto" });
console.log(dec.backend, dec.spec.numLayers, "layers");

// SkipDecode at a target speedup: budgets decay over maxNewTokens steps.
const r = await dec.generate("The meaning of life is", { maxNewTokens: 24, speedup: 2, ignoreEos: true });
console.log(r.budgets.join(" "), `→ ideal ${r.stats.idealSpeedup.toFixed(2)}x`, r.finishReason);

// An explicit policy, sampling with a seed, streamed.
const policy = SkipPolicy.linear({ numLayers: dec.spec.numLayers, maxLayers: 8, minLayers: 3, span: 16 });
let streamed = "";
let ids = 0;
for await (const ev of dec.stream("Once upon a time", { maxNewTokens: 16, policy, temperature: 0.8, topP: 0.9, seed: 42 })) {
  streamed += ev.text; // token events and the final event both carry text
  if (ev.type === "token") ids++; // ev.token, ev.layers
  else console.log(`finish: ${ev.finishReason}`); // the final event, always last
}
console.log(`streamed ${ids} tokens, ${streamed.length} characters with ${policy}`);

// The paper's batched mode: one shared step index for all prompts.
const batch = await dec.generateBatch(["Hello", "A much longer prompt than the first"], { maxNewTokens: 8, speedup: 3 });
console.log(batch.map((b) => b.tokens.length));

// Teacher-forced logits with per-position budgets.
const logits = await dec.forward([2, 100, 200, 300], { budgets: [8, 8, 5, 3], warmupLayers: 1 });
console.log(logits.length / dec.spec.vocabSize, "rows of logits");
