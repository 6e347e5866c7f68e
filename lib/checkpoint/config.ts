/**
 * config.json → {@link ModelSpec} (spec.ts). A model family is data
 * (docs/families.md): `model_type` picks a family module (family.ts) that maps
 * the config to the spec, the weights to engine tensors, and the BOS/EOS
 * rules.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { familyOf } from "./family.ts";
import type { ModelSpec } from "./spec.ts";

export type { ModelSpec, RopeSpec } from "./spec.ts";

function readJson(path: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error(`${path}: must hold a JSON object`);
  return v as Record<string, unknown>;
}

/**
 * Reads and validates `config.json` (and `generation_config.json`, for the
 * EOS ids, when present) in a model folder.
 *
 * @example
 * const spec = readModelSpec("models/opt-125m");
 * spec.numLayers; // 12
 */
export function readModelSpec(dir: string): ModelSpec {
  const path = join(dir, "config.json");
  if (!existsSync(dir)) throw new Error(`model folder ${dir} does not exist`);
  if (!existsSync(path)) throw new Error(`no config.json in ${dir}: not a Hugging Face model folder`);
  const cfg = readJson(path);
  const gen = join(dir, "generation_config.json");
  return specFromConfig(cfg, dir, existsSync(gen) ? readJson(gen) : null);
}

/** Validates a parsed config object; `dir` only names the source in errors. */
export function specFromConfig(cfg: Record<string, unknown>, dir = ".", generation: Record<string, unknown> | null = null): ModelSpec {
  return familyOf(cfg.model_type, dir).spec(cfg, dir, generation);
}
