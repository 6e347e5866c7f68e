/**
 * The models that ship with the package, both trained by train/ on the Brown
 * corpus (each folder's README.md is its model card). Small (5.6 MB each) and
 * real: they write Brown-flavoured English at full depth and keep their
 * perplexity under SkipDecode.
 *
 * - models/brown-opt-12l ({@link EMBEDDED_MODEL}, the default): a 12-layer
 *   OPT-style model trained skip-aware from scratch. The examples, the docs'
 *   snippets and the server's examples (model name "brown-opt-12l") run on it.
 * - models/brown-llama-12l ({@link EMBEDDED_LLAMA_MODEL}): a 12-layer
 *   LLaMA-architecture model made by the paper's route — trained plain, then
 *   fine-tuned with the policy and distilled from its plain self
 *   (docs/training.md) — which `bun run demo` runs.
 */
import { resolve } from "node:path";

/**
 * Absolute path of the embedded default model's folder, for {@link SkipDecoder.load}.
 *
 * @example
 * import { EMBEDDED_MODEL, SkipDecoder } from "skipdecode";
 * using dec = await SkipDecoder.load(EMBEDDED_MODEL);
 */
export const EMBEDDED_MODEL: string = resolve(import.meta.dir, "..", "models", "brown-opt-12l");

/**
 * Absolute path of the embedded LLaMA-architecture model's folder (the
 * demo's model), for {@link SkipDecoder.load}.
 *
 * @example
 * import { EMBEDDED_LLAMA_MODEL, SkipDecoder } from "skipdecode";
 * using dec = await SkipDecoder.load(EMBEDDED_LLAMA_MODEL);
 */
export const EMBEDDED_LLAMA_MODEL: string = resolve(import.meta.dir, "..", "models", "brown-llama-12l");
