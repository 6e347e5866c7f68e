/**
 * The GGUF files the llama.cpp bench runs: a bench shape's safetensors folder
 * converted once per type by `skipdecode convert` (lib/checkpoint/gguf-convert.ts,
 * the one GGUF writer), cached next to the folder. Both engines then load the
 * same file.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { type ConvertType, convertToGguf } from "../lib/checkpoint/gguf-convert.ts";

/**
 * The GGUF of the model folder `dir` in `type`, written on first use.
 *
 * @example
 * const file = await benchGguf(shapeModel("llama-400m", "float16"), "q8_0");
 */
export async function benchGguf(dir: string, type: ConvertType): Promise<string> {
  const path = join(dir, `model-${type}.gguf`);
  if (!existsSync(path)) {
    const t0 = performance.now();
    process.stderr.write(`writing ${path} ... `);
    await convertToGguf(dir, path, { type });
    process.stderr.write(`${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  }
  return path;
}
