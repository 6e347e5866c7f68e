/**
 * Where a model's tensors come from: a Hugging Face folder (safetensors,
 * through its family module) or a GGUF file (gguf-model.ts). The engine
 * builder (lib/engine/weights.ts) reads either through this one seam; a path is a
 * file or a folder, and that decides (docs/gguf.md).
 */
import type { ModelSpec } from "./config.ts";
import { familyWeights } from "./family.ts";
import { type FileMap, GgufFile } from "./gguf.ts";
import { ggufWeights, isModelFile } from "./gguf-model.ts";
import { CheckpointTensors } from "./safetensors.ts";
import type { WeightTensor } from "./weight.ts";

/** An open source of a model's tensors. */
export interface TensorSource {
  /** The folder or file, for error messages. */
  readonly path: string;
  /**
   * "folder": the checkpoint's F32 matrices may be stored in 16 bits on the
   * CPU under dtype "auto"; "gguf": every tensor keeps the file's type under
   * "auto" (the file's author chose it).
   */
  readonly kind: "folder" | "gguf";
  /** Whether the LM head is the token embedding (no lm_head / output tensor). */
  readonly tiedHead: boolean;
  /** Every tensor the engine needs, in load order (each valid until the next is taken). */
  weights(spec: ModelSpec): Iterable<WeightTensor>;
  close(): void;
}

/**
 * Opens the tensors of the model at `path`: a GGUF file, or a model folder.
 * With `map` a GGUF file is memory-mapped (lib/engine/native.ts's mapFile)
 * and its tensors are views of the map; without, they are read into a buffer.
 *
 * @example
 * const src = openTensorSource("model.gguf");
 * try { for (const t of src.weights(spec)) use(t); } finally { src.close(); }
 */
export function openTensorSource(path: string, opts: { map?: (path: string) => FileMap } = {}): TensorSource {
  if (isModelFile(path)) {
    const f = GgufFile.open(path, { arrays: false, map: opts.map });
    return { path, kind: "gguf", tiedHead: !f.tensors.has("output.weight"), weights: (spec) => ggufWeights(spec, f), close: () => f.close() };
  }
  const ckpt = CheckpointTensors.open(path);
  return { path, kind: "folder", tiedHead: !ckpt.has("lm_head.weight"), weights: (spec) => familyWeights(spec, ckpt), close: () => ckpt.close() };
}
