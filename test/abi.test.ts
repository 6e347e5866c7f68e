/**
 * The TypeScript side of the C ABI says what the header says: every numeric
 * constant of cuda/include/skipdecode.h (enum members and #defines) has its
 * TypeScript counterpart with the same value, and every TypeScript constant of
 * those groups has one in the header. A slot, role or status added on one side
 * only fails here, not as a silently shifted config array.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import * as abi from "../lib/engine/abi.ts";

const HEADER = readFileSync(resolve(import.meta.dir, "../cuda/include/skipdecode.h"), "utf8");

/** NAME → value for every `SKD_NAME = n` enum member and `#define SKD_NAME n` of the header. */
function headerConstants(text: string): Map<string, number> {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, "");
  const out = new Map<string, number>();
  for (const m of code.matchAll(/\b(SKD_[A-Z0-9_]+)\s*=\s*(-?\d+)/g)) out.set(m[1]!, Number(m[2]));
  for (const m of code.matchAll(/^#define\s+(SKD_[A-Z0-9_]+)\s+(-?\d+)\b/gm)) out.set(m[1]!, Number(m[2]));
  return out;
}

/** The TypeScript constants under their header names. */
function typescriptConstants(): Map<string, number> {
  const out = new Map<string, number>();
  const group = (prefix: string, obj: Record<string, number>) => {
    for (const [k, v] of Object.entries(obj)) out.set(`${prefix}${k}`, v);
  };
  for (const [k, v] of Object.entries(abi.Status)) out.set(k === "OK" ? "SKD_OK" : `SKD_ERR_${k}`, v);
  group("SKD_CFG_", abi.Cfg);
  group("SKD_NORM_", abi.Norm);
  group("SKD_POS_", abi.Positions);
  group("SKD_MLP_", abi.Mlp);
  group("SKD_BIAS_", abi.Bias);
  group("SKD_DTYPE_", abi.DType);
  group("SKD_T_", abi.Role);
  group("SKD_ROW_", abi.Row);
  group("SKD_PARAM_", abi.Param);
  out.set("SKD_ARCH_OPT", abi.ARCH_OPT);
  out.set("SKD_ARCH_LLAMA", abi.ARCH_LLAMA);
  out.set("SKD_ROW_WANT_LOGITS", abi.ROW_WANT_LOGITS);
  out.set("SKD_ROW_SAMPLE", abi.ROW_SAMPLE);
  out.set("SKD_ROW_LOGPROBS", abi.ROW_LOGPROBS);
  out.set("SKD_MAX_TOP_LOGPROBS", abi.MAX_TOP_LOGPROBS);
  out.set("SKD_ABI_VERSION", abi.ABI_VERSION);
  return out;
}

describe("the TypeScript ABI constants", () => {
  test("equal cuda/include/skipdecode.h's, both ways", () => {
    const h = headerConstants(HEADER);
    const ts = typescriptConstants();
    expect(h.size).toBeGreaterThan(80);
    const differ: string[] = [];
    for (const [name, v] of h) if (ts.get(name) !== v) differ.push(`${name}: header ${v}, TypeScript ${ts.get(name) ?? "missing"}`);
    for (const [name, v] of ts) if (!h.has(name)) differ.push(`${name}: TypeScript ${v}, header missing`);
    expect(differ).toEqual([]);
  });
});
