#!/usr/bin/env bun
/**
 * The `skipdecode` command.
 *
 *   skipdecode tiny-model DIR [--family opt|llama|mistral|qwen2 (every family's model_type)] [--seed N] [--variant pre|post]
 *                             [--dtype float32|float16|bfloat16] [--layers N] [--hidden N] [--heads N] [--ffn N] ...
 *   skipdecode logits --model DIR --ids 2,5,9 [--budgets 6,6,3] [--warmup 1] [--backend auto|cpu|cuda]
 *                     [--dtype auto|float32|float16|bfloat16]
 *   skipdecode generate --model DIR --prompt TEXT [--speedup S | --min-layers A --max-layers B [--span N]] ...
 *   skipdecode eval --model DIR --text FILE [--speedups 1,2,3,4,5] [--context N] [--window N]
 *   skipdecode serve --model DIR [--host 127.0.0.1] [--port 8080] [--max-queue 64] ...
 *
 * Bad flags, missing values and bad numbers print a usage error and exit 2;
 * failures of the work itself print the error and exit 1.
 */
import { parseArgs } from "node:util";
import { readFileSync } from "node:fs";
import { SkipDecoder } from "../lib/decoder.ts";
import { evaluateQuality } from "../lib/generation/eval.ts";
import type { GenerateOptions } from "../lib/generation/generate.ts";
import { ABI_VERSION } from "../lib/engine/abi.ts";
import { SkipPolicy } from "../lib/generation/policy.ts";
import { readModelSpec } from "../lib/checkpoint/config.ts";
import { allFamilies, familyOf } from "../lib/checkpoint/family.ts";
import { type TinyModelOptions, writeTinyModel } from "../lib/tiny/model.ts";

/** Every model_type a family reads: "opt|llama|mistral|qwen2". */
const MODEL_TYPES = allFamilies().flatMap((f) => f.modelTypes).join("|");

const USAGE = `usage:
  skipdecode tiny-model DIR [--family ${MODEL_TYPES}] [--seed N] [--dtype float32|float16|bfloat16]
                            [--layers N] [--hidden N] [--heads N] [--ffn N] [--vocab N] [--max-positions N] [--tied]
                            OPT: [--variant pre|post] [--embed-dim N]
                            LLaMA family: [--kv-heads N] [--head-dim N] [--rope-theta X] [--sliding-window N]
      write a deterministic random checkpoint (config.json, model.safetensors, tokenizer.json)
  skipdecode logits --model DIR --ids 2,5,9 [--budgets 6,6,3] [--warmup 1] [--backend auto|cpu|cuda]
                    [--dtype auto|float32|float16|bfloat16]
      print {"logits": [[...], ...]}: one row per position; ids are fed as given (no BOS added);
      --dtype float32 keeps F32 weights at full precision (auto stores them in 16 bits on the CPU)
  skipdecode generate --model DIR --prompt TEXT [--speedup S | --min-layers A --max-layers B [--span N]]
                     [--warmup W] [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed N]
                     [--stop TEXT]... [--ignore-eos] [--backend auto|cpu|cuda] [--threads N] [--json]
      stream the continuation to stdout and a stats line to stderr (--json: print the result object)
  skipdecode eval --model DIR --text FILE [--speedups 1,2,3,4,5] [--context N] [--window N] [--max-windows N]
                  [--warmup W] [--backend auto|cpu|cuda] [--threads N]
      teacher-forced perplexity and next-token agreement with the full model at each speedup
      (a markdown table on stdout; progress on stderr)
  skipdecode serve --model DIR [--host 127.0.0.1] [--port 8080] [--max-queue 64] [--max-batch N]
                   [--max-seq-len N] [--model-name NAME] [--backend auto|cpu|cuda] [--threads N]
                   [--grace-s 30] [--quiet]
      an OpenAI-compatible HTTP server (POST /v1/completions, /v1/chat/completions, /tokenize, /detokenize; GET /v1/models,
      /health, /metrics);
      SIGTERM/SIGINT drains: new requests get 503, running ones finish or are cut after --grace-s
      seconds, then it exits 0 (a second signal stops at once, cut requests answered 503); one
      access-log line per request on stdout (method, path, status, prompt+completion tokens, ms) unless
      --quiet. If the engine thread dies, requests in flight and new ones get 503 and it exits 1.
  skipdecode build [--cpu-only | --cuda]
      build the native libraries (build/libskipdecode_cpu.so, and _cuda.so where nvcc exists) in the
      installed package, e.g. from an app whose install did not run skipdecode's build: bunx skipdecode build;
      --cuda builds just the CUDA library (the install leaves it out where no GPU driver is loaded)
  skipdecode --version
      print the package version and the native ABI version
  skipdecode help
      this text`;

/** A usage error: printed with the usage text, exit status 2. */
class UsageError extends Error {}

function int(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^-?\d+$/.test(v.trim())) throw new UsageError(`--${flag} must be an integer, got "${v}"`);
  return Number(v);
}

function num(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n)) throw new UsageError(`--${flag} must be a number, got "${v}"`);
  return n;
}

function backendFlag(v: string | undefined): "auto" | "cpu" | "cuda" {
  const b = v ?? "auto";
  if (b !== "auto" && b !== "cpu" && b !== "cuda") throw new UsageError(`--backend must be auto, cpu or cuda, got "${b}"`);
  return b;
}

/** Library option errors are the user's flags being wrong: report them as usage errors. */
async function asUsage<T>(f: () => Promise<T> | T, pattern: RegExp): Promise<T> {
  try {
    return await f();
  } catch (e) {
    if (pattern.test((e as Error).message)) throw new UsageError((e as Error).message);
    throw e;
  }
}

function intList(flag: string, v: string | undefined): number[] | undefined {
  if (v === undefined) return undefined;
  const parts = v.split(",").map((s) => s.trim());
  if (parts.length === 0 || parts.some((p) => !/^\d+$/.test(p))) {
    throw new UsageError(`--${flag} must be a comma-separated list of non-negative integers, got "${v}"`);
  }
  return parts.map(Number);
}

type FlagSpec = Record<string, { type: "string" | "boolean"; multiple?: boolean }>;
type Flags = Record<string, string | undefined> & {
  tied?: boolean;
  json?: boolean;
  "ignore-eos"?: boolean;
  quiet?: boolean;
  "cpu-only"?: boolean;
  cuda?: boolean;
  stop?: string[];
};

/** A value that starts with "-" but is a number ("-5", "-0.5", "-1e3", "-Infinity"), not a flag. */
const NEGATIVE = /^-(\d|\.\d|Infinity$|NaN$)/;

/**
 * parseArgs takes "--flag -5" for a missing value ("ambiguous"): glue negative
 * numbers to the string flag before them ("--flag=-5") so the flag's own range
 * check can answer.
 */
function glueNegatives(args: string[], options: FlagSpec): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const next = args[i + 1];
    if (a.startsWith("--") && !a.includes("=") && options[a.slice(2)]?.type === "string" && next !== undefined && NEGATIVE.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}

function parse(args: string[], options: FlagSpec, positionals: number): { values: Flags; positionals: string[] } {
  let parsed;
  try {
    parsed = parseArgs({ args: glueNegatives(args, options), options, strict: true, allowPositionals: positionals > 0 });
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
      family: { type: "string" },
      seed: { type: "string" },
      variant: { type: "string" },
      dtype: { type: "string" },
      "kv-heads": { type: "string" },
      "head-dim": { type: "string" },
      "rope-theta": { type: "string" },
      "sliding-window": { type: "string" },
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
    family: values.family as TinyModelOptions["family"],
    kvHeads: int("kv-heads", values["kv-heads"]),
    headDim: int("head-dim", values["head-dim"]),
    ropeTheta: num("rope-theta", values["rope-theta"]),
    slidingWindow: int("sliding-window", values["sliding-window"]),
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
  try {
    writeTinyModel(dir, clean);
  } catch (e) {
    // option errors from the library are usage errors here
    const msg = (e as Error).message;
    if (msg.startsWith("tiny-model: ")) throw new UsageError(msg.slice("tiny-model: ".length));
    throw e;
  }
  const spec = readModelSpec(dir);
  console.log(
    `wrote ${dir}: ${familyOf(spec.arch, dir).describe(spec)}, ${spec.numLayers} layers, ` +
      `hidden ${spec.hiddenSize}, ${spec.numHeads} heads, vocab ${spec.vocabSize}, ${spec.torchDtype}`,
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
      dtype: { type: "string" },
    },
    0,
  );
  if (!values.model) throw new UsageError("--model DIR is required");
  const dtypes = ["auto", "float32", "float16", "bfloat16"] as const;
  const dtype = (values.dtype ?? "auto") as (typeof dtypes)[number];
  if (!dtypes.includes(dtype)) throw new UsageError(`--dtype must be one of ${dtypes.join(", ")}, got "${values.dtype}"`);
  const ids = intList("ids", values.ids);
  if (!ids) throw new UsageError("--ids is required (comma-separated token ids)");
  const budgets = intList("budgets", values.budgets);
  const warmupLayers = int("warmup", values.warmup);
  const backend = backendFlag(values.backend);
  const threads = int("threads", values.threads);
  using dec = await SkipDecoder.load(values.model, {
    backend,
    dtype,
    maxBatch: 1,
    ...(threads !== undefined ? { threads } : {}),
  });
  // ids outside the vocabulary, budgets out of range: the flags are wrong (exit 2)
  const out = await asUsage(() => dec.forward(ids, { budgets, warmupLayers }), /^SkipDecoder\.forward: (ids\[\d+\]|budgets|warmupLayers)/);
  const V = dec.spec.vocabSize;
  const rows: number[][] = [];
  for (let t = 0; t < ids.length; t++) rows.push(Array.from(out.subarray(t * V, (t + 1) * V)));
  process.stdout.write(JSON.stringify({ logits: rows }) + "\n");
}

async function generate(args: string[]): Promise<void> {
  const { values } = parse(
    args,
    {
      model: { type: "string" },
      prompt: { type: "string" },
      speedup: { type: "string" },
      "min-layers": { type: "string" },
      "max-layers": { type: "string" },
      span: { type: "string" },
      warmup: { type: "string" },
      "max-new-tokens": { type: "string" },
      temperature: { type: "string" },
      "top-k": { type: "string" },
      "top-p": { type: "string" },
      seed: { type: "string" },
      stop: { type: "string", multiple: true },
      "ignore-eos": { type: "boolean" },
      backend: { type: "string" },
      threads: { type: "string" },
      json: { type: "boolean" },
    },
    0,
  );
  if (!values.model) throw new UsageError("--model DIR is required");
  if (values.prompt === undefined) throw new UsageError("--prompt TEXT is required");
  const speedup = num("speedup", values.speedup);
  const minL = int("min-layers", values["min-layers"]);
  const maxL = int("max-layers", values["max-layers"]);
  const span = int("span", values.span);
  if (speedup !== undefined && (minL !== undefined || maxL !== undefined || span !== undefined)) {
    throw new UsageError("give --speedup or --min-layers/--max-layers/--span, not both");
  }
  if ((minL === undefined) !== (maxL === undefined)) throw new UsageError("--min-layers and --max-layers go together");
  if (span !== undefined && minL === undefined) throw new UsageError("--span needs --min-layers and --max-layers");
  const maxNewTokens = int("max-new-tokens", values["max-new-tokens"]);
  const warmupLayers = int("warmup", values.warmup);
  const threads = int("threads", values.threads);
  using dec = await SkipDecoder.load(values.model, { backend: backendFlag(values.backend), maxBatch: 1, ...(threads !== undefined ? { threads } : {}) });
  const opts: GenerateOptions = {
    maxNewTokens,
    temperature: num("temperature", values.temperature),
    topK: int("top-k", values["top-k"]),
    topP: num("top-p", values["top-p"]),
    seed: int("seed", values.seed),
    stop: values.stop,
    ignoreEos: values["ignore-eos"],
  };
  if (minL !== undefined) {
    opts.policy = await asUsage(
      () =>
        SkipPolicy.linear({
          numLayers: dec.spec.numLayers,
          maxLayers: maxL!,
          minLayers: minL,
          span: span ?? maxNewTokens ?? 64,
          warmupLayers: warmupLayers ?? Math.min(1, dec.spec.numLayers),
        }),
      /^SkipPolicy/,
    );
  } else {
    opts.speedup = speedup;
    opts.warmupLayers = warmupLayers;
  }
  for (const k of Object.keys(opts) as (keyof GenerateOptions)[]) if (opts[k] === undefined) delete opts[k];
  const ac = new AbortController();
  const onSig = () => ac.abort();
  process.once("SIGINT", onSig);
  opts.signal = ac.signal;
  const usage = /^SkipDecoder\.(stream|generate): (?!the prompt has)|^SkipPolicy/;
  try {
    let r;
    if (values.json) {
      r = await asUsage(() => dec.generate(values.prompt!, opts), usage);
      process.stdout.write(JSON.stringify(r, null, 2) + "\n");
      return;
    }
    const it = dec.stream(values.prompt, opts);
    let next = await asUsage(() => it.next(), usage);
    while (!next.done) {
      process.stdout.write(next.value.text);
      next = await it.next();
    }
    r = next.value;
    process.stdout.write("\n");
    const s = r.stats;
    console.error(
      `[${r.tokens.length} tokens, ${r.finishReason}; prefill ${s.promptTokens} tokens in ${s.prefillMs.toFixed(1)} ms; ` +
        `decode ${s.tokensPerSecond.toFixed(1)} tokens/s; ${s.policy}; mean ${s.avgLayers.toFixed(2)} of ` +
        `${dec.spec.numLayers} layers, ideal speedup ${s.idealSpeedup.toFixed(2)}x; ${dec.backend}]`,
    );
  } finally {
    process.off("SIGINT", onSig);
  }
}

async function evalCmd(args: string[]): Promise<void> {
  const { values } = parse(
    args,
    {
      model: { type: "string" },
      text: { type: "string" },
      speedups: { type: "string" },
      context: { type: "string" },
      window: { type: "string" },
      "max-windows": { type: "string" },
      warmup: { type: "string" },
      backend: { type: "string" },
      threads: { type: "string" },
    },
    0,
  );
  if (!values.model) throw new UsageError("--model DIR is required");
  if (!values.text) throw new UsageError("--text FILE is required");
  let speedups: number[] | undefined;
  if (values.speedups !== undefined) {
    speedups = values.speedups.split(",").map((x) => num("speedups", x)!);
  }
  let text: string;
  try {
    text = readFileSync(values.text, "utf8");
  } catch (e) {
    throw new Error(`cannot read --text ${values.text}: ${(e as Error).message}`);
  }
  const threads = int("threads", values.threads);
  const maxWindows = int("max-windows", values["max-windows"]);
  const context = int("context", values.context);
  const window = int("window", values.window);
  const warmupLayers = int("warmup", values.warmup);
  using dec = await SkipDecoder.load(values.model, { backend: backendFlag(values.backend), maxBatch: 1, ...(threads !== undefined ? { threads } : {}) });
  const t0 = performance.now();
  const progress = evalProgress(t0);
  const rows = await asUsage(
    () => evaluateQuality(dec, text, { speedups, context, window, maxWindows, warmupLayers, onProgress: progress.update }),
    /^evaluateQuality: (window|context)|^SkipPolicy/,
  );
  progress.done();
  const base = rows.find((r) => r.speedup === 1) ?? rows[0]!;
  console.log(`| speedup | policy | ideal speedup | perplexity | vs ${base.speedup === 1 ? "full model" : "first row"} | next-token agreement |`);
  console.log(`|---:|---|---:|---:|---:|---:|`);
  for (const r of rows) {
    const rel = ((r.perplexity - base.perplexity) / base.perplexity) * 100;
    console.log(
      `| ${r.speedup} | ${r.policy} | ${r.idealSpeedup.toFixed(2)}x | ${formatPerplexity(r.perplexity)} | ` +
        `${rel >= 0 ? "+" : ""}${rel.toFixed(1)}% | ${(r.agreement * 100).toFixed(1)}% |`,
    );
  }
  console.error(
    `[${rows[0]!.tokens} scored tokens per speedup; model ${dec.dir}, ${dec.spec.numLayers} layers, ${dec.backend}; ` +
      `${((performance.now() - t0) / 1000).toFixed(1)} s]`,
  );
}

/**
 * Perplexity with about four significant digits: 12.34, 123.4, 1,234 and
 * 12,345 (thousands separated); 1.23e+6 from a million on.
 */
function formatPerplexity(p: number): string {
  if (!Number.isFinite(p)) return String(p);
  if (p >= 1e6) return p.toExponential(2);
  if (p >= 1000) return Math.round(p).toLocaleString("en-US");
  return p.toFixed(p >= 100 ? 1 : 2);
}

/**
 * Progress of `skipdecode eval` on stderr: on a terminal one line rewritten
 * at most every 0.2 s; otherwise (a log file, CI) a line every 10% of the
 * windows. Nothing for inputs of a single window.
 */
function evalProgress(t0: number): { update: (done: number, total: number) => void; done: () => void } {
  const tty = process.stderr.isTTY === true;
  let last = 0;
  let lastTenth = 0;
  let shown = false;
  const line = (done: number, total: number): string => {
    const s = (performance.now() - t0) / 1000;
    const eta = done > 0 ? (s / done) * (total - done) : 0;
    return `eval: window ${done}/${total} (${((done / total) * 100).toFixed(0)}%), ${s.toFixed(1)} s, ETA ${eta.toFixed(0)} s`;
  };
  return {
    update(done, total) {
      if (total < 2) return;
      if (tty) {
        const now = performance.now();
        if (now - last < 200 && done < total) return;
        last = now;
        process.stderr.write(`\r${line(done, total)}\x1b[K`);
        shown = true;
      } else {
        const tenth = Math.floor((done * 10) / total);
        if (tenth > lastTenth) {
          lastTenth = tenth;
          process.stderr.write(line(done, total) + "\n");
        }
      }
    },
    done() {
      if (shown) process.stderr.write("\n");
    },
  };
}

async function serveCmd(args: string[]): Promise<void> {
  const { values } = parse(
    args,
    {
      model: { type: "string" },
      host: { type: "string" },
      port: { type: "string" },
      "max-queue": { type: "string" },
      "max-batch": { type: "string" },
      "max-seq-len": { type: "string" },
      "model-name": { type: "string" },
      backend: { type: "string" },
      threads: { type: "string" },
      "grace-s": { type: "string" },
      quiet: { type: "boolean" },
    },
    0,
  );
  if (!values.model) throw new UsageError("--model DIR is required");
  const graceS = num("grace-s", values["grace-s"]) ?? 30;
  if (graceS < 0) throw new UsageError(`--grace-s must be >= 0, got ${graceS}`);
  const port = int("port", values.port) ?? 8080;
  if (port < 0 || port > 65535) throw new UsageError(`--port must be in 0..65535, got ${port}`);
  const maxQueue = int("max-queue", values["max-queue"]) ?? 64;
  if (maxQueue < 0) throw new UsageError(`--max-queue must be >= 0, got ${maxQueue}`);
  const maxBatch = int("max-batch", values["max-batch"]);
  const maxSeqLen = int("max-seq-len", values["max-seq-len"]);
  const threads = int("threads", values.threads);
  const { serve } = await import("../server/main.ts");
  let died: Error | null = null;
  let engineDied: (e: Error) => void = (e) => void (died = e);
  const srv = await asUsage(
    () =>
      serve({
        model: values.model!,
        host: values.host ?? "127.0.0.1",
        port,
        maxQueue,
        backend: backendFlag(values.backend),
        ...(maxBatch !== undefined && { maxBatch }),
        ...(maxSeqLen !== undefined && { maxSeqLen }),
        ...(threads !== undefined && { threads }),
        ...(values["model-name"] !== undefined && { modelName: values["model-name"] }),
        accessLog: !values.quiet,
        onEngineFailure: (e) => engineDied(e),
      }),
    /^SkipDecoder\.load: (unknown option|\w+ must be)/,
  );
  const d = srv.decoder;
  console.error(
    `skipdecode serve: ${srv.url} — model ${d.dir} (${d.spec.numLayers} layers) on ${d.backend} (${d.deviceName}); ` +
      `max batch ${d.options.maxBatch}, context ${d.options.maxSeqLen}, max queue ${maxQueue}`,
  );
  await new Promise<void>((resolveStop, fail) => {
    // the engine thread died and the server has stopped (server/main.ts): exit 1 with the reason
    if (died) fail(died);
    engineDied = fail;
    let draining = false;
    const onSignal = (sig: string) => {
      if (draining) {
        console.error(`skipdecode serve: ${sig} again, stopping now`);
        void srv.stop().then(resolveStop);
        return;
      }
      draining = true;
      const { running, waiting } = d.load;
      console.error(`skipdecode serve: ${sig}: draining (${running + waiting} sequences in flight, grace ${graceS} s; new requests get 503)`);
      void srv.drain(graceS).then(({ cut }) => {
        console.error(`skipdecode serve: stopped${cut ? " (the grace deadline cut running requests)" : ""}`);
        resolveStop();
      });
    };
    process.on("SIGINT", () => onSignal("SIGINT"));
    process.on("SIGTERM", () => onSignal("SIGTERM"));
  });
}

async function buildCmd(args: string[]): Promise<void> {
  const { values } = parse(args, { "cpu-only": { type: "boolean" }, cuda: { type: "boolean" } }, 0);
  if (values["cpu-only"] && values.cuda) throw new UsageError("--cpu-only and --cuda exclude each other");
  const script = new URL("../scripts/build.ts", import.meta.url).pathname;
  const flag = values["cpu-only"] ? ["--cpu-only"] : values.cuda ? ["--cuda-only"] : [];
  const p = Bun.spawnSync([process.execPath, script, ...flag], { stdout: "inherit", stderr: "inherit" });
  if (p.exitCode !== 0) throw new Error(`the build failed (exit ${p.exitCode}); the compiler's output is above`);
}

const COMMANDS: Record<string, (args: string[]) => Promise<void>> = {
  build: buildCmd,
  "tiny-model": tinyModel,
  logits,
  generate,
  eval: evalCmd,
  serve: serveCmd,
};

/** `skipdecode --version`: the package's version (package.json) and the C ABI version the bindings expect. */
function versionLine(): string {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string };
  return `skipdecode ${pkg.version} (native ABI ${ABI_VERSION})`;
}

/** One command's part of USAGE (its usage lines and description), or null. */
function commandUsage(cmd: string): string | null {
  const blocks = USAGE.split(/\n(?=  skipdecode )/);
  const block = blocks.find((b) => b.startsWith(`  skipdecode ${cmd} `) || b.startsWith(`  skipdecode ${cmd}\n`));
  return block ? `usage:\n${block}` : null;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === "--version" || cmd === "-v" || cmd === "version") {
    console.log(versionLine());
    return 0;
  }
  if (cmd === undefined || cmd === "help" || cmd === "--help" || cmd === "-h") {
    const topic = cmd === "help" && rest[0] ? commandUsage(rest[0]) : null;
    (cmd === undefined ? console.error : console.log)(topic ?? USAGE);
    return cmd === undefined ? 2 : 0;
  }
  // `skipdecode CMD --help` (anywhere among its flags): that command's usage, exit 0
  if (COMMANDS[cmd] && (rest.includes("--help") || rest.includes("-h"))) {
    console.log(commandUsage(cmd) ?? USAGE);
    return 0;
  }
  const run = COMMANDS[cmd];
  try {
    if (!run) throw new UsageError(`unknown command "${cmd}"`);
    await run(rest);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`skipdecode ${cmd}: ${e.message}\n\n${commandUsage(cmd) ?? USAGE}`);
      return 2;
    }
    console.error(`skipdecode ${cmd}: ${(e as Error).message}`);
    return 1;
  }
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));
