#!/usr/bin/env bun
/**
 * `bun run bench NAME [flags]`: runs one benchmark script of bench/.
 *   membw   the machine's memory bandwidth (the roofline)
 *   decode  prefill/decode tokens/s, full vs SkipDecode, ideal vs measured speedup
 *   chart   an SVG chart of the last decode run
 *   load      the HTTP server under concurrent clients
 *   llamacpp  batch-1 decode side by side with llama.cpp on LLaMA-shaped weights
 *   kv        the paged 16-bit KV cache: bytes per sequence, concurrency, decode speed, logit effect
 *   pipeline  pipelined steps against one step at a time, alternating in one process
 * Each prints markdown tables and writes JSON under bench/results/.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";

const NAMES = ["membw", "decode", "chart", "load", "llamacpp", "kv", "pipeline"];
const [name, ...rest] = process.argv.slice(2);
if (!name || !NAMES.includes(name)) {
  console.error(`usage: bun run bench <${NAMES.join("|")}> [flags]   (--help for a script's flags)`);
  process.exit(2);
}
const script = join(import.meta.dir, `${name}.ts`);
if (!existsSync(script)) {
  console.error(`bench ${name}: ${script} is missing`);
  process.exit(2);
}
const p = Bun.spawnSync(["bun", script, ...rest], { stdio: ["inherit", "inherit", "inherit"] });
process.exit(p.exitCode ?? 1);
