/**
 * The safetensors writer (the format and its reader: safetensors.ts): what the
 * tiny checkpoints, the tests and the training recipe's tests write.
 */
import { closeSync, openSync, writeSync } from "node:fs";
import { describe, isNonNegInt, isPlainObject, isSafetensorsDtype, MAX_HEADER_SIZE, type SafetensorsDtype, safetensorsByteLength } from "./safetensors.ts";


/**
 * One tensor to write with {@link writeSafetensors}.
 *
 * @example
 * const t: WriteTensor = { name: "w", dtype: "F32", shape: [2], data: new Uint8Array(8) };
 */
export interface WriteTensor {
  /** Tensor name (not `__metadata__`). */
  name: string;
  /** A {@link SafetensorsDtype} name, e.g. "F32", "F16", "BF16". */
  dtype: SafetensorsDtype | (string & {});
  /** Dimensions, row-major. */
  shape: number[];
  /** Exactly `prod(shape) × bits(dtype) / 8` little-endian bytes. */
  data: Uint8Array;
}

/**
 * Writes a safetensors file: tensors in the given order, contiguous from
 * offset 0, header JSON padded with spaces to a multiple of 8 bytes (so the
 * data section is 8-byte aligned). Throws, writing nothing, when a dtype is
 * unknown, a name repeats, or a data length does not match shape × dtype.
 *
 * @example
 * writeSafetensors("out.safetensors", [
 *   { name: "w", dtype: "F32", shape: [2, 2], data: new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer) },
 * ], { format: "pt" });
 */
export function writeSafetensors(path: string, tensors: WriteTensor[], metadata?: Record<string, string>): void {
  const fail = (msg: string): never => {
    throw new Error(`writeSafetensors: ${path}: ${msg}`);
  };
  const parts: string[] = [];
  if (metadata !== undefined) {
    if (!isPlainObject(metadata)) fail("metadata must be an object of string to string");
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") fail(`metadata value for ${JSON.stringify(k)} must be a string, got ${describe(v)}`);
    }
    parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  }
  const seen = new Set<string>();
  let offset = 0;
  for (const t of tensors) {
    const tn = `tensor ${JSON.stringify(t.name)}`;
    if (typeof t.name !== "string") fail(`tensor name must be a string, got ${describe(t.name)}`);
    if (t.name === "__metadata__") fail(`"__metadata__" is reserved and cannot be a tensor name`);
    if (seen.has(t.name)) fail(`duplicate ${tn}`);
    seen.add(t.name);
    if (!isSafetensorsDtype(t.dtype)) fail(`${tn}: unknown dtype ${JSON.stringify(t.dtype)}`);
    if (!Array.isArray(t.shape) || !t.shape.every(isNonNegInt)) fail(`${tn}: shape must be an array of non-negative integers, got ${JSON.stringify(t.shape)}`);
    if (!(t.data instanceof Uint8Array)) fail(`${tn}: data must be a Uint8Array`);
    let bytes: number;
    try {
      bytes = safetensorsByteLength(t.dtype as SafetensorsDtype, t.shape);
    } catch (e) {
      return fail(`${tn}: ${(e as Error).message}`);
    }
    if (t.data.byteLength !== bytes) {
      fail(`${tn}: data is ${t.data.byteLength} bytes but shape [${t.shape.join(", ")}] of ${t.dtype} needs ${bytes}`);
    }
    parts.push(`${JSON.stringify(t.name)}:${JSON.stringify({ dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] })}`);
    offset += bytes;
  }
  // Built by hand so keys keep the given order (objects move integer-like keys first).
  let header = new TextEncoder().encode(`{${parts.join(",")}}`);
  const padded = Math.ceil(header.length / 8) * 8;
  if (padded > MAX_HEADER_SIZE) fail(`header too large: ${padded} bytes (the limit is ${MAX_HEADER_SIZE})`);
  if (padded !== header.length) {
    const h = new Uint8Array(padded).fill(0x20); // pad with spaces
    h.set(header);
    header = h;
  }
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(header.length), true);

  const fd = openSync(path, "w");
  try {
    writeAll(fd, prefix);
    writeAll(fd, header);
    for (const t of tensors) writeAll(fd, t.data);
  } finally {
    closeSync(fd);
  }
}

function writeAll(fd: number, buf: Uint8Array): void {
  let done = 0;
  while (done < buf.byteLength) {
    done += writeSync(fd, buf, done, Math.min(1 << 30, buf.byteLength - done));
  }
}
