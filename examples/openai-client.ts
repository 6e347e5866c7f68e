// The OpenAI SDK against `skipdecode serve` (docs/server.md). Start a server first:
//   bun bin/skipdecode.ts serve --model models/brown-opt-12l --port 8080
// then: bun examples/openai-client.ts [BASE_URL]
import OpenAI from "openai";
import { skipStats, withSkip } from "../server/openai.ts";

const client = new OpenAI({ baseURL: process.argv[2] ?? "http://localhost:8080/v1", apiKey: "unused" });

// SkipDecode's fields ride along with OpenAI's, typed, without a cast.
const r = await client.completions.create(
  withSkip({ model: "brown-opt-12l", prompt: "The committee met on Tuesday. The chairman said that", max_tokens: 24, seed: 7 }, { speedup: 2 }),
);
console.log(r.choices[0]!.text);
console.log(skipStats(r));

// Streamed chat works the same way where the model has a chat template; completions stream too.
const stream = await client.completions.create(
  withSkip({ model: "brown-opt-12l", prompt: "She opened the door and", max_tokens: 16, stream: true as const, seed: 1 }, { skip: { max_layers: 10, min_layers: 4 } }),
);
for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.text ?? "");
process.stdout.write("\n");
