#!/usr/bin/env bun
/**
 * The `skipdecode` command.
 *
 *   skipdecode tiny-model DIR [--seed N] [--variant pre|post] [--dtype float32|float16|bfloat16]
 *                             [--layers N] [--hidden N] [--heads N] [--ffn N] [--embed-dim N] [--vocab N]
 *   skipdecode logits --model DIR --ids 2,5,9 [--budgets 6,6,3] [--warmup 1] [--backend auto|cpu|cuda]
 *
 * Bad flags, missing values and bad numbers print a usage error and exit 2;
 * failures of the work itself print the error and exit 1.
 */
import { parseArgs } from "node:util";
import { SkipDecoder } from "./decoder.ts";
import { writeTinyModel } from "./tiny.ts";

const USAGE = `usage:
  skipdecode tiny-model DIR [--seed N] [--variant pre|post] [--dtype float32|float16|bfloat16]
                            [--layers N] [--hidden N] [--heads N] [--ffn N] [--embed-dim N] [--vocab N]
                            [--max-positions N] [--tied]
      write a deterministic random OPT checkpoint (config.json, model.safetensors, tokenizer.json)
  skipdecode logits --model DIR --ids 2,5,9 [--budgets 6,6,3] [--warmup 1] [--backend auto|cpu|cuda]
      print {"logits": [[...], ...]}: one row per position; ids are fed as given (no BOS added)
  skipdecode help
      this text`;

/** A usage error: printed with the usage text, exit status 2. */
class UsageError extends Error {}

function int(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^-?\d+$/.test(v.trim())) throw new UsageError(`--${flag} must be an integer, got "${v}"`);
  return Number(v);
}

function intList(flag: string, v: string | undefined): number[] | undefined {
  if (v === undefined) return undefined;
  const parts = v.split(",").map((s) => s.trim());
  if (parts.length === 0 || parts.some((p) => !/^\d+$/.test(p))) {
    throw new UsageError(`--${flag} must be a comma-separated list of non-negative integers, got "${v}"`);
  }
  return parts.map(Number);
}

type FlagSpec = Record<string, { type: "string" | "boolean" }>;
type Flags = Record<string, string | undefined> & { tied?: boolean };

function parse(args: string[], options: FlagSpec, positionals: number): { values: Flags; positionals: string[] } {
  let parsed;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: positionals > 0 });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (parsed.positionals.length !== positionals) {
    throw new UsageError(`expected ${positionals} positional argument(s), got ${parsed.positionals.length}`);
  }
  return { values: parsed.values as Flags, positionals: parsed.positionals };
}

async function tinyModel(args: string[]): Promise<void> {
  const { values, positionals } = parse(
    args,
    {
      seed: { type: "string" },
      variant: { type: "string" },
      dtype: { type: "string" },
      layers: { type: "string" },
      hidden: { type: "string" },
      heads: { type: "string" },
      ffn: { type: "string" },
      "embed-dim": { type: "string" },
      vocab: { type: "string" },
      "max-positions": { type: "string" },
      tied: { type: "boolean" },
    },
    1,
  );
  const dir = positionals[0]!;
  const opts = {
    seed: int("seed", values.seed),
    variant: values.variant as "pre" | "post" | undefined,
    dtype: values.dtype as "float32" | "float16" | "bfloat16" | undefined,
    layers: int("layers", values.layers),
    hidden: int("hidden", values.hidden),
    heads: int("heads", values.heads),
    ffn: int("ffn", values.ffn),
    embedDim: int("embed-dim", values["embed-dim"]),
    vocab: int("vocab", values.vocab),
    maxPositions: int("max-positions", values["max-positions"]),
    tiedHead: values.tied,
  };
  // drop unset keys so the library's defaults apply
  const clean = Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined));
  let cfg;
  try {
    cfg = writeTinyModel(dir, clean);
  } catch (e) {
    // option errors from the library are usage errors here
    const msg = (e as Error).message;
    if (msg.startsWith("tiny-model: ")) throw new UsageError(msg.slice("tiny-model: ".length));
    throw e;
  }
  console.log(
    `wrote ${dir}: OPT ${cfg.do_layer_norm_before ? "pre" : "post"}-LN, ${cfg.num_hidden_layers} layers, ` +
      `hidden ${cfg.hidden_size}, ${cfg.num_attention_heads} heads, vocab ${cfg.vocab_size}, ${cfg.torch_dtype}`,
  );
}

async function logits(args: string[]): Promise<void> {
  const { values } = parse(
    args,
    {
      model: { type: "string" },
      ids: { type: "string" },
      budgets: { type: "string" },
      warmup: { type: "string" },
      backend: { type: "string" },
      threads: { type: "string" },
    },
    0,
  );
  if (!values.model) throw new UsageError("--model DIR is required");
  const ids = intList("ids", values.ids);
  if (!ids) throw new UsageError("--ids is required (comma-separated token ids)");
  const budgets = intList("budgets", values.budgets);
  const warmupLayers = int("warmup", values.warmup);
  const backend = values.backend ?? "auto";
  if (!["auto", "cpu", "cuda"].includes(backend)) throw new UsageError(`--backend must be auto, cpu or cuda, got "${backend}"`);
  const threads = int("threads", values.threads);
  using dec = await SkipDecoder.load(values.model, {
    backend: backend as "auto" | "cpu" | "cuda",
    maxBatch: 1,
    ...(threads !== undefined ? { threads } : {}),
  });
  const out = await dec.forward(ids, { budgets, warmupLayers });
  const V = dec.spec.vocabSize;
  const rows: number[][] = [];
  for (let t = 0; t < ids.length; t++) rows.push(Array.from(out.subarray(t * V, (t + 1) * V)));
  process.stdout.write(JSON.stringify({ logits: rows }) + "\n");
}

const COMMANDS: Record<string, (args: string[]) => Promise<void>> = {
  "tiny-model": tinyModel,
  logits,
};

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === "help" || cmd === "--help" || cmd === "-h") {
    (cmd === undefined ? console.error : console.log)(USAGE);
    return cmd === undefined ? 2 : 0;
  }
  const run = COMMANDS[cmd];
  try {
    if (!run) throw new UsageError(`unknown command "${cmd}"`);
    await run(rest);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`skipdecode ${cmd}: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    console.error(`skipdecode ${cmd}: ${(e as Error).message}`);
    return 1;
  }
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));
