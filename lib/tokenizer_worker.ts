/**
 * The tokenizer thread: a Worker holding a second copy of a model's
 * tokenizer (a folder's, or a GGUF file's), so long texts are encoded without
 * holding the caller's event loop (tokenising runs at ~2 MB/s). Used by
 * lib/tokenizer_client.ts.
 */
import { parentPort, workerData } from "node:worker_threads";
import { isModelFile, openGgufModel } from "./checkpoint/gguf-model.ts";
import { SkipTokenizer } from "./checkpoint/tokenizer.ts";

/** A request: encode `text`, BOS first when `bos`. */
export interface TokenizeRequest {
  id: number;
  text: string;
  bos: boolean;
}

/** A reply: the ids, or the error's message. */
export type TokenizeReply = { id: number; ids: number[] } | { id: number; error: string };

const port = parentPort!;
let tok: SkipTokenizer | null = null;
let loadError = "";
try {
  const { dir, bos } = workerData as { dir: string; bos: "always" | "config" };
  // a GGUF file's tokenizer is rebuilt from its metadata; a folder's with the family's BOS rule, as the caller's copy
  tok = isModelFile(dir) ? (openGgufModel(dir).tokenizer()?.tokenizer ?? null) : await SkipTokenizer.load(dir, { bos });
  if (!tok) throw new Error(`${dir} has no tokenizer`);
} catch (e) {
  loadError = (e as Error).message;
}
port.on("message", (q: TokenizeRequest) => {
  if (!tok) return port.postMessage({ id: q.id, error: loadError } satisfies TokenizeReply);
  try {
    port.postMessage({ id: q.id, ids: tok.encode(q.text, { addBos: q.bos }) } satisfies TokenizeReply);
  } catch (e) {
    port.postMessage({ id: q.id, error: (e as Error).message } satisfies TokenizeReply);
  }
});
