/**
 * The model that ships with the package: models/brown-opt-12l, a 12-layer
 * OPT-style model trained skip-aware on the Brown corpus by train/ (its
 * README.md is the model card). Small (5.6 MB) and real: it writes
 * Brown-flavoured English at full depth and keeps its perplexity under
 * SkipDecode, so the demo, the examples and the docs' snippets run on it.
 */
import { resolve } from "node:path";

/**
 * Absolute path of the embedded model's folder, for {@link SkipDecoder.load}.
 *
 * @example
 * import { EMBEDDED_MODEL, SkipDecoder } from "skipdecode";
 * using dec = await SkipDecoder.load(EMBEDDED_MODEL);
 */
export const EMBEDDED_MODEL: string = resolve(import.meta.dir, "..", "models", "brown-opt-12l");
