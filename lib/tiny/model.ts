/**
 * Deterministic random checkpoints for tests, demos and benchmarks:
 * config.json, model.safetensors and a real tokenizer.json trained on a small
 * corpus, in any family's layout. This file checks the options every family
 * shares; the family's own writer (Family.writeTiny: lib/tiny/opt.ts,
 * lib/tiny/llama.ts) reads its own options and writes the folder, so nothing
 * here knows one family from another. The same options always write the same
 * bytes.
 */
import { allFamilies, familyOf } from "../checkpoint/family.ts";
import { checkKeys, choiceOpt, intOpt } from "../options.ts";
import { TINY_DEFAULTS, type TinyModelOptions } from "./options.ts";

export { TINY_DEFAULTS, type TinyModelOptions } from "./options.ts";
export { Rng } from "./random.ts";

/** The options every family reads (the rest belong to one family: Family.tinyOptions). */
const SHARED = ["seed", "family", "dtype", "layers", "hidden", "heads", "ffn", "merges", "vocab", "maxPositions", "tiedHead", "scale"];

/**
 * Writes a random model folder of the family `opts.family` names (default
 * OPT). Returns the config written.
 *
 * @example
 * writeTinyModel("/tmp/tiny", { seed: 1, variant: "post", dtype: "bfloat16", layers: 3 });
 * writeTinyModel("/tmp/tl", { family: "llama", layers: 2, kvHeads: 2 });
 */
export function writeTinyModel(dir: string, opts?: TinyModelOptions): Record<string, unknown> {
  const where = "tiny-model";
  const families = allFamilies();
  const familyOptions = families.flatMap((f) => f.tinyOptions);
  const o = checkKeys(where, opts, SHARED.concat(familyOptions));
  const types = families.flatMap((f) => f.modelTypes);
  const modelType = choiceOpt(where, "family", o.family, types, TINY_DEFAULTS.family);
  const family = familyOf(modelType, dir);
  for (const k of familyOptions) {
    if ((o as Record<string, unknown>)[k] === undefined || family.tinyOptions.includes(k)) continue;
    const owner = families.find((f) => f.tinyOptions.includes(k))!;
    throw new Error(`${where}: ${k} is an option of the ${owner.name} family (family is ${modelType})`);
  }
  const hidden = intOpt(where, "hidden", o.hidden, 1, 16384, TINY_DEFAULTS.hidden);
  const merges = intOpt(where, "merges", o.merges, 0, 5000, TINY_DEFAULTS.merges);
  const tokSize = 260 + merges;
  const common = {
    seed: intOpt(where, "seed", o.seed, 0, 2 ** 31 - 1, TINY_DEFAULTS.seed),
    dtype: choiceOpt(where, "dtype", o.dtype, ["float32", "float16", "bfloat16"] as const, TINY_DEFAULTS.dtype),
    layers: intOpt(where, "layers", o.layers, 1, 256, TINY_DEFAULTS.layers),
    heads: intOpt(where, "heads", o.heads, 1, 256, TINY_DEFAULTS.heads),
    hidden,
    ffn: o.ffn === undefined ? undefined : intOpt(where, "ffn", o.ffn, 1, 65536),
    merges,
    vocab: o.vocab === undefined ? undefined : intOpt(where, "vocab", o.vocab, tokSize, 1 << 20),
    maxPositions: intOpt(where, "maxPositions", o.maxPositions, 1, 1 << 16, TINY_DEFAULTS.maxPositions),
    tied: o.tiedHead ?? TINY_DEFAULTS.tiedHead,
    scale: o.scale ?? TINY_DEFAULTS.scale,
  };
  return family.writeTiny(dir, modelType, common, o);
}
