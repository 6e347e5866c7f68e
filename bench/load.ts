/**
 * Load benchmark of the HTTP server: a bounded number of concurrent clients
 * send streamed completions to a server on 127.0.0.1 (a child process, so its
 * memory is its own) and we report requests/s, generated tokens/s, time to
 * first token p50/p99 and the server's resident memory before and after each
 * run — which must not grow from run to run.
 *
 *   bun bench/load.ts [--model DIR] [--clients 8] [--requests 64] [--max-tokens 32] [--runs 3]
 *                     [--speedup 2] [--max-batch 8] [--backend auto|cpu|cuda] [--threads 0]
 *                     [--timeout 300] [--out bench/results/load.json]
 *
 * Without --model it writes a small random OPT model to a temp folder (and
 * removes it). Every run is bounded by --requests and by --timeout seconds;
 * the script always stops the server and exits by itself. Loopback only.
 *
 * --long-prompt N adds the interference test: for
 * --phase-s seconds the streaming clients run alone, then as long again while
 * one more client keeps sending N-token prompts (max_tokens 1); a prober
 * sends GET /health every 10 ms throughout. It reports /health latency and
 * the streams' inter-chunk gaps (a chunk carries one token, or more when a
 * token ends inside a character) for both phases. Targets: /health p99 <=
 * 20 ms, and the gap p99 with the long prompts <= 2x the gap p99 without.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { writeTinyModel } from "../lib/tiny/model.ts";

const ROOT = resolve(import.meta.dir, "..");
const USAGE = `usage: bun bench/load.ts [--model DIR] [--clients 8] [--requests 64] [--max-tokens 32] [--runs 3]
                         [--speedup 2] [--max-batch 8] [--backend auto|cpu|cuda] [--threads 0]
                         [--timeout 300] [--out bench/results/load.json]
                         [--long-prompt N [--phase-s 10]]`;

/** The random model used without --model: big enough that the model, not HTTP, is most of the time. */
const DEFAULT_SHAPE = { seed: 3, layers: 8, hidden: 256, heads: 8, maxPositions: 512 } as const;

const PROMPTS = [
  "The quick brown fox",
  "Once upon a time, in a small village by the sea, there lived",
  "SkipDecode lets every token of a batch skip the bottom layers, so",
  "Q: What is the capital of France?\nA:",
  "def fibonacci(n):\n    ",
  "Computers store numbers in binary, as long strings of zeros and ones. A processor fetches instructions from memory, decodes them,",
  "Hello",
  "In 1969, the first humans landed on the Moon. The mission, called",
];

function die(msg: string): never {
  console.error(`${msg}\n${USAGE}`);
  process.exit(2);
}

function intFlag(name: string, v: string, min: number): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < min) die(`--${name} must be an integer >= ${min}, got "${v}"`);
  return n;
}

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

const mib = (b: number) => b / 2 ** 20;

/** The server in a child process; `gc()` asks it to collect garbage before a memory reading. */
class ServerChild {
  readonly proc: ReturnType<typeof Bun.spawn<"pipe", "pipe", "inherit">>;
  url = "";
  device = "";
  #lines: string[] = [];
  #wake: (() => void) | null = null;

  constructor(opts: { model: string; maxBatch: number; backend: string; threads: number; maxQueue: number; maxSeqLen?: number }) {
    const code = `
      import { serve } from ${JSON.stringify(join(ROOT, "server", "main.ts"))};
      const s = await serve(${JSON.stringify({ host: "127.0.0.1", port: 0, accessLog: false, ...opts })});
      console.log(JSON.stringify({ url: s.url, device: s.decoder.backend + " (" + s.decoder.deviceName + ")" }));
      for await (const chunk of Bun.stdin.stream()) {
        for (const line of new TextDecoder().decode(chunk).split("\\n")) if (line === "gc") { Bun.gc(true); console.log("gc"); }
      }
      await s.stop();   // stdin closed: the benchmark is done (or died)
      process.exit(0);
    `;
    this.proc = Bun.spawn(["bun", "-e", code], { stdin: "pipe", stdout: "pipe", stderr: "inherit", cwd: ROOT });
    void this.#read();
  }

  async #read(): Promise<void> {
    let buf = "";
    for await (const chunk of this.proc.stdout) {
      buf += new TextDecoder().decode(chunk);
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        this.#lines.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        this.#wake?.();
      }
    }
    this.#wake?.();
  }

  async #line(ms: number): Promise<string> {
    const end = Date.now() + ms;
    while (this.#lines.length === 0) {
      if (this.proc.exitCode !== null || Date.now() > end) throw new Error("the server process did not answer (see its stderr above)");
      await new Promise<void>((r) => {
        this.#wake = r;
        setTimeout(r, 200);
      });
    }
    return this.#lines.shift()!;
  }

  async ready(): Promise<void> {
    const j = JSON.parse(await this.#line(120_000)) as { url: string; device: string };
    this.url = j.url;
    this.device = j.device;
  }

  async gc(): Promise<void> {
    this.proc.stdin.write("gc\n");
    this.proc.stdin.flush();
    while ((await this.#line(30_000)) !== "gc");
  }

  /** Resident memory as the server reports it on /metrics. */
  async rss(): Promise<number> {
    await this.gc();
    const text = await (await fetch(`${this.url}/metrics`, { signal: AbortSignal.timeout(30_000) })).text();
    const line = text.split("\n").find((l) => l.startsWith("process_resident_memory_bytes "));
    return Number(line?.split(" ")[1]);
  }

  async stop(): Promise<void> {
    try {
      this.proc.stdin.end();
    } catch {}
    const t = setTimeout(() => this.proc.kill(), 10_000);
    await this.proc.exited;
    clearTimeout(t);
  }
}

interface RunResult {
  run: number;
  requests: number;
  errors: number;
  wallS: number;
  requestsPerS: number;
  generatedTokens: number;
  generatedTokensPerS: number;
  ttftP50Ms: number;
  ttftP99Ms: number;
  meanLayers: number;
  rssBeforeMiB: number;
  rssAfterMiB: number;
}

/** One streamed completion: time to first chunk; tokens, layers computed and decode passes from the usage chunk. */
async function one(url: string, body: object, signal: AbortSignal): Promise<{ ttftMs: number; tokens: number; layers: number; passes: number }> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
    signal,
  });
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  let ttftMs = NaN;
  let buf = "";
  let tokens = 0;
  let layers = 0;
  let passes = 0;
  let done = false;
  for await (const chunk of res.body!) {
    if (Number.isNaN(ttftMs)) ttftMs = performance.now() - t0;
    buf += new TextDecoder().decode(chunk);
    let end: number;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, end);
      buf = buf.slice(end + 2);
      if (!ev.startsWith("data: ")) continue;
      const data = ev.slice(6);
      if (data === "[DONE]") done = true;
      else {
        const j = JSON.parse(data);
        if (j.error) throw new Error(j.error.message);
        if (j.usage) {
          tokens = j.usage.completion_tokens;
          layers = j.skipdecode.layers_computed;
          passes = j.skipdecode.layers_full / j.skipdecode.num_layers; // the decode passes that ran
        }
      }
    }
  }
  if (!done) throw new Error("stream ended without [DONE]");
  return { ttftMs, tokens, layers, passes };
}

async function loadRun(
  server: ServerChild,
  run: number,
  cfg: { clients: number; requests: number; maxTokens: number; speedup: number | null; timeoutS: number },
): Promise<RunResult> {
  const rssBefore = await server.rss();
  const signal = AbortSignal.timeout(cfg.timeoutS * 1000);
  let next = 0;
  let errors = 0;
  let firstError = "";
  const ttfts: number[] = [];
  let tokens = 0;
  let layers = 0;
  let passes = 0;
  const t0 = performance.now();
  const client = async () => {
    for (let i = next++; i < cfg.requests && !signal.aborted; i = next++) {
      const body = {
        prompt: PROMPTS[i % PROMPTS.length],
        max_tokens: cfg.maxTokens,
        temperature: 0.8,
        seed: i,
        ignore_eos: true,
        ...(cfg.speedup !== null && cfg.speedup !== 1 ? { speedup: cfg.speedup } : {}),
      };
      try {
        const r = await one(server.url, body, signal);
        ttfts.push(r.ttftMs);
        tokens += r.tokens;
        layers += r.layers;
        passes += r.passes;
      } catch (e) {
        errors++;
        firstError ||= (e as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: cfg.clients }, client));
  const wallS = (performance.now() - t0) / 1000;
  if (errors) console.error(`run ${run}: ${errors} failed request(s); first: ${firstError}`);
  if (signal.aborted) console.error(`run ${run}: stopped at the ${cfg.timeoutS} s limit`);
  const rssAfter = await server.rss();
  return {
    run,
    requests: ttfts.length,
    errors,
    wallS,
    requestsPerS: ttfts.length / wallS,
    generatedTokens: tokens,
    generatedTokensPerS: tokens / wallS,
    ttftP50Ms: percentile(ttfts, 50),
    ttftP99Ms: percentile(ttfts, 99),
    meanLayers: passes ? layers / passes : NaN,
    rssBeforeMiB: mib(rssBefore),
    rssAfterMiB: mib(rssAfter),
  };
}

interface Phase {
  longPrompts: boolean;
  streams: number;
  gaps: number;
  gapP50Ms: number;
  gapP99Ms: number;
  healthProbes: number;
  healthP50Ms: number;
  healthP99Ms: number;
  healthMaxMs: number;
  longDone: number;
  longMeanMs: number;
}

/** Reads an SSE completion stream, recording the gap before every text chunk after the first. */
async function streamGaps(url: string, body: object, signal: AbortSignal, gaps: number[]): Promise<void> {
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  let buf = "";
  let last = 0;
  for await (const chunk of res.body!) {
    buf += new TextDecoder().decode(chunk);
    let end: number;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, end);
      buf = buf.slice(end + 2);
      if (!ev.startsWith("data: ") || ev === "data: [DONE]") continue;
      const j = JSON.parse(ev.slice(6));
      if (!j.choices?.[0]?.text) continue;
      const now = performance.now();
      if (last) gaps.push(now - last);
      last = now;
    }
  }
}

/** One phase of the interference test: streaming clients and a /health prober, with or without the long-prompt client. */
async function phase(
  server: ServerChild,
  cfg: { clients: number; maxTokens: number; speedup: number; longPrompt: number; vocab: number; seconds: number },
  withLong: boolean,
): Promise<Phase> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), cfg.seconds * 1000);
  const gaps: number[] = [];
  const health: number[] = [];
  const longMs: number[] = [];
  let streams = 0;
  const quiet = (e: unknown) => {
    if (!ac.signal.aborted) throw e;
  };
  const streamer = async (c: number) => {
    for (let i = 0; !ac.signal.aborted; i++) {
      const body = { prompt: PROMPTS[(c + i) % PROMPTS.length], max_tokens: cfg.maxTokens, temperature: 0.8, seed: i, ignore_eos: true, speedup: cfg.speedup };
      await streamGaps(server.url, body, ac.signal, gaps).catch(quiet);
      if (!ac.signal.aborted) streams++;
    }
  };
  const prober = async () => {
    while (!ac.signal.aborted) {
      const t = performance.now();
      const ok = await fetch(`${server.url}/health`, { signal: ac.signal }).then((r) => r.ok, () => null);
      if (ok === null) break;
      if (!ok) throw new Error("/health failed");
      health.push(performance.now() - t);
      await Bun.sleep(10);
    }
  };
  const long = async () => {
    const rng = (i: number) => 3 + ((i * 7919) % (cfg.vocab - 3));
    for (let k = 0; !ac.signal.aborted; k++) {
      const prompt = Array.from({ length: cfg.longPrompt }, (_, i) => rng(i + k));
      const t = performance.now();
      const res = await fetch(`${server.url}/v1/completions`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prompt, max_tokens: 1 }),
        signal: ac.signal,
      }).catch(quiet);
      if (!res) break;
      if (!res.ok) throw new Error(`long prompt: HTTP ${res.status}: ${await res.text()}`);
      await res.text();
      longMs.push(performance.now() - t);
    }
  };
  try {
    await Promise.all([...Array.from({ length: cfg.clients }, (_, c) => streamer(c)), prober(), ...(withLong ? [long()] : [])]);
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
  return {
    longPrompts: withLong,
    streams,
    gaps: gaps.length,
    gapP50Ms: percentile(gaps, 50),
    gapP99Ms: percentile(gaps, 99),
    healthProbes: health.length,
    healthP50Ms: percentile(health, 50),
    healthP99Ms: percentile(health, 99),
    healthMaxMs: Math.max(...health),
    longDone: longMs.length,
    longMeanMs: longMs.length ? longMs.reduce((a, b) => a + b, 0) / longMs.length : NaN,
  };
}

async function main(): Promise<void> {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: process.argv.slice(2),
      options: {
        model: { type: "string" },
        clients: { type: "string", default: "8" },
        requests: { type: "string", default: "64" },
        "max-tokens": { type: "string", default: "32" },
        runs: { type: "string", default: "3" },
        speedup: { type: "string", default: "2" },
        "max-batch": { type: "string", default: "8" },
        backend: { type: "string", default: "auto" },
        threads: { type: "string", default: "0" },
        timeout: { type: "string", default: "300" },
        out: { type: "string", default: join(ROOT, "bench", "results", "load.json") },
        "long-prompt": { type: "string", default: "0" },
        "phase-s": { type: "string", default: "10" },
        help: { type: "boolean" },
      },
      strict: true,
    }).values;
  } catch (e) {
    die((e as Error).message);
  }
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const clients = intFlag("clients", values.clients as string, 1);
  const requests = intFlag("requests", values.requests as string, 1);
  const maxTokens = intFlag("max-tokens", values["max-tokens"] as string, 1);
  const runs = intFlag("runs", values.runs as string, 1);
  const maxBatch = intFlag("max-batch", values["max-batch"] as string, 1);
  const threads = intFlag("threads", values.threads as string, 0);
  const timeoutS = intFlag("timeout", values.timeout as string, 1);
  const longPrompt = intFlag("long-prompt", values["long-prompt"] as string, 0);
  const phaseS = intFlag("phase-s", values["phase-s"] as string, 1);
  const speedup = Number(values.speedup);
  if (!Number.isFinite(speedup) || speedup < 1) die(`--speedup must be a number >= 1, got "${values.speedup}"`);
  const backend = values.backend as string;
  if (!["auto", "cpu", "cuda"].includes(backend)) die(`--backend must be auto, cpu or cuda, got "${backend}"`);

  let tmp: string | null = null;
  let model = values.model as string | undefined;
  if (!model) {
    tmp = mkdtempSync(join(tmpdir(), "skd-load-"));
    model = join(tmp, "random-opt");
    writeTinyModel(model, { ...DEFAULT_SHAPE, maxPositions: Math.max(DEFAULT_SHAPE.maxPositions, longPrompt + 64) });
  }
  const modelCfg = JSON.parse(readFileSync(join(model, "config.json"), "utf8")) as { vocab_size: number; max_position_embeddings: number };
  const c = cpus();
  const machine = `${c[0]?.model.trim() ?? "unknown CPU"}, ${c.length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Bun ${Bun.version}`;
  const server = new ServerChild({
    model,
    maxBatch,
    backend,
    threads,
    maxQueue: Math.max(64, clients * 4),
    ...(longPrompt ? { maxSeqLen: Math.min(modelCfg.max_position_embeddings, longPrompt + 64) } : {}),
  });
  const results: RunResult[] = [];
  try {
    await server.ready();
    const config =
      `model ${tmp ? `random OPT (${DEFAULT_SHAPE.layers} layers, hidden ${DEFAULT_SHAPE.hidden})` : model}; ${server.device}; ` +
      `max batch ${maxBatch}; ${clients} clients; ${requests} requests/run; ${maxTokens} tokens each (ignore_eos, streamed); ` +
      `speedup ${speedup}; temperature 0.8`;
    console.log(`machine: ${machine}\nconfig:  ${config}\n`);
    // warm-up: JIT, tokenizer, allocator pools (not reported)
    await loadRun(server, 0, { clients, requests: Math.min(requests, clients * 2), maxTokens, speedup, timeoutS });
    console.log("| run | requests | errors | req/s | generated tok/s | TTFT p50 (ms) | TTFT p99 (ms) | mean layers | server RSS before → after (MiB) |");
    console.log("|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for (let run = 1; run <= runs; run++) {
      const r = await loadRun(server, run, { clients, requests, maxTokens, speedup, timeoutS });
      results.push(r);
      console.log(
        `| ${run} | ${r.requests} | ${r.errors} | ${r.requestsPerS.toFixed(1)} | ${r.generatedTokensPerS.toFixed(0)} | ` +
          `${r.ttftP50Ms.toFixed(1)} | ${r.ttftP99Ms.toFixed(1)} | ${r.meanLayers.toFixed(2)} | ${r.rssBeforeMiB.toFixed(1)} → ${r.rssAfterMiB.toFixed(1)} |`,
      );
    }
    const growth = results.at(-1)!.rssAfterMiB - results[0]!.rssAfterMiB;
    if (runs > 1) console.log(`\nserver RSS after run ${runs} − after run 1: ${growth >= 0 ? "+" : ""}${growth.toFixed(1)} MiB`);
    let interference: Phase[] | null = null;
    if (longPrompt > 0) {
      const pc = { clients, maxTokens, speedup, longPrompt, vocab: modelCfg.vocab_size, seconds: phaseS };
      interference = [await phase(server, pc, false), await phase(server, pc, true)];
      console.log(`\ninterference: ${clients} streaming clients for ${phaseS} s, then as long again with a client sending ${longPrompt}-token prompts (max_tokens 1); GET /health every 10 ms`);
      console.log("| long prompts | streams done | gaps | gap p50 (ms) | gap p99 (ms) | /health probes | /health p50 (ms) | /health p99 (ms) | /health max (ms) | long prompts done | long prompt mean (ms) |");
      console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
      for (const p of interference) {
        console.log(
          `| ${p.longPrompts ? "yes" : "no"} | ${p.streams} | ${p.gaps} | ${p.gapP50Ms.toFixed(1)} | ${p.gapP99Ms.toFixed(1)} | ${p.healthProbes} | ` +
            `${p.healthP50Ms.toFixed(1)} | ${p.healthP99Ms.toFixed(1)} | ${p.healthMaxMs.toFixed(1)} | ${p.longDone || "-"} | ${p.longDone ? p.longMeanMs.toFixed(0) : "-"} |`,
        );
      }
      const [a, b] = interference as [Phase, Phase];
      const healthP99 = Math.max(a.healthP99Ms, b.healthP99Ms);
      console.log(
        `targets: /health p99 ${healthP99.toFixed(1)} ms (<= 20: ${healthP99 <= 20 ? "met" : "missed"}); ` +
          `gap p99 with long prompts ${(b.gapP99Ms / a.gapP99Ms).toFixed(2)}x without (<= 2x: ${b.gapP99Ms <= 2 * a.gapP99Ms ? "met" : "missed"})`,
      );
    }
    const out = values.out as string;
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(
      out,
      JSON.stringify({ date: new Date().toISOString(), machine, config, device: server.device, rssGrowthMiB: runs > 1 ? growth : null, runs: results, interference }, null, 2) + "\n",
    );
    console.log(`wrote ${out}`);
  } finally {
    await server.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
