/**
 * The training recipe (train/, Python + PyTorch) against the library.
 *
 * - The recipe trains a tiny config in seconds: the loss falls, the export
 *   loads with SkipDecoder.load, and its held-out perplexity at 1x/2x/3x is
 *   what `evaluateQuality` measures on the engine.
 * - The trainer computes what the engine runs: `dec.forward` with random
 *   non-increasing budgets and warm-ups equals the trainer's masked forward
 *   (train/forward.py) on the exported weights — OPT, and the LLaMA family
 *   (llama, mistral, qwen2 with GQA, an explicit head_dim, rotary scaling,
 *   Qwen2's biases, tied and separate heads) after fine-tuning tiny random
 *   checkpoints with --init on user data (--data).
 * - The token file (train/tokenize.ts) holds the library's ids, BOS/EOS by
 *   the model's rules and the loss on assistant turns only; the token-file
 *   and safetensors readers refuse malformed files by name.
 * - `--init` fine-tunes an exported folder (sharded too); accumulation and
 *   gradient checkpointing do not change the result; --distill starts at a
 *   zero KL; a run stopped (--stop-after, --time-limit) and resumed ends with
 *   the same bytes as an uninterrupted one; the GPU plan (--dry-run) uses bf16
 *   autocast and AdamW and refuses what does not fit; bad settings fail with a
 *   message naming them.
 *
 * Needs a Python with torch and numpy (CI installs Debian's python3-torch);
 * where none imports, every test here is reported skipped with the reason.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { SkipDecoder } from "../lib/index.ts";
import { evaluateQuality } from "../lib/generation/eval.ts";
import { SkipPolicy } from "../lib/generation/policy.ts";
import { CheckpointTensors } from "../lib/checkpoint/safetensors.ts";
import { writeSafetensors } from "../lib/checkpoint/safetensors_write.ts";
import { SkipTokenizer } from "../lib/checkpoint/tokenizer.ts";
import { writeTinyModel, type TinyModelOptions } from "../lib/tiny/model.ts";
import { tokenizeCommand } from "../train/tokenize.ts";

const root = resolve(import.meta.dir, "..");
const trainPy = join(root, "train", "train.py");

/** The first Python that imports torch and numpy: $SKIPDECODE_PYTHON, /usr/bin/python3, python3. */
function findPython(): { python: string | null; reason: string } {
  const tried: string[] = [];
  for (const py of [process.env.SKIPDECODE_PYTHON, "/usr/bin/python3", "python3"]) {
    if (!py) continue;
    try {
      const r = Bun.spawnSync([py, "-c", "import torch, numpy"], { stderr: "pipe" });
      if (r.exitCode === 0) return { python: py, reason: "" };
      tried.push(`${py}: ${r.stderr.toString().trim().split("\n").pop()}`);
    } catch (e) {
      tried.push(`${py}: ${(e as Error).message}`);
    }
  }
  return { python: null, reason: `no Python with torch and numpy (${tried.join("; ")})` };
}

const { python, reason } = findPython();
if (!python) console.warn(`test/train.test.ts: skipped: ${reason}`);
const suite = python ? describe : describe.skip;
const skipNote = python ? "" : ` [skipped: ${reason}]`;

interface Run {
  code: number;
  out: string;
  err: string;
}

async function run(args: string[], stdin?: Uint8Array): Promise<Run> {
  const p = Bun.spawn([python!, ...args], { cwd: root, stdin: stdin ?? "ignore", stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

async function train(args: string[]): Promise<Run> {
  const r = await run([trainPy, "--threads", "1", ...args]);
  if (r.code !== 0) throw new Error(`train.py ${args.join(" ")} failed (${r.code}):\n${r.out}\n${r.err}`);
  return r;
}

/** Mean losses of the progress lines ("step N/M | loss X | ..."). */
function losses(log: string): number[] {
  return [...log.matchAll(/^step \d+\/\d+ \| loss ([\d.]+)/gm)].map((m) => Number(m[1]));
}

/**
 * `dec.forward` on `dir` against train/forward.py (the trainer's masked
 * forward, float64) for n random sequences of T tokens (the first `bos` when
 * given) with random non-increasing budgets and warm-ups 0..L. Returns the
 * largest |difference|, whether some sequence skipped layers, and the first
 * elements beyond tol(reference value).
 */
async function compareForward(dir: string, n: number, T: number, bos: number | null, tol: (want: number) => number) {
  // float32 weights and keys/values: what is compared is the two forwards' arithmetic, not the float16 cache's rounding
  const dec = await SkipDecoder.load(dir, { backend: "cpu", dtype: "float32", kvDtype: "float32" });
  try {
    const L = dec.spec.numLayers;
    const V = dec.spec.vocabSize;
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const ids: number[][] = [];
    const budgets: number[][] = [];
    const warmup: number[] = [];
    for (let s = 0; s < n; s++) {
      const w = s % (L + 1); // 0..L warm-up layers, including all of them
      const lo = Math.max(1, w);
      const row = bos === null ? [] : [bos];
      while (row.length < T) row.push(4 + Math.floor(rand() * (V - 4)));
      const context = 1 + Math.floor(rand() * 12);
      let b = L;
      const bs: number[] = [];
      for (let i = 0; i < T; i++) {
        if (i >= context && rand() < 0.3) b = Math.max(lo, b - 1 - Math.floor(rand() * 3));
        bs.push(b);
      }
      ids.push(row);
      budgets.push(bs);
      warmup.push(w);
    }
    const p = Bun.spawnSync([python!, join(root, "train", "forward.py"), dir], {
      stdin: Buffer.from(JSON.stringify({ ids, budgets, warmup })),
    });
    if (p.exitCode !== 0) throw new Error(`train/forward.py failed: ${p.stderr.toString()}`);
    const ref = new Float32Array(p.stdout.buffer, p.stdout.byteOffset, p.stdout.byteLength / 4);
    if (ref.length !== n * T * V) throw new Error(`train/forward.py wrote ${ref.length} logits, expected ${n * T * V}`);
    let maxDiff = 0;
    const bad: string[] = [];
    for (let s = 0; s < n; s++) {
      const got = await dec.forward(ids[s]!, { budgets: budgets[s]!, warmupLayers: warmup[s]! });
      for (let i = 0; i < T * V; i++) {
        const want = ref[s * T * V + i]!;
        const d = Math.abs(got[i]! - want);
        maxDiff = Math.max(maxDiff, d);
        if (d > tol(want) && bad.length < 5) {
          bad.push(`seq ${s} (warm-up ${warmup[s]}) pos ${Math.floor(i / V)} budget ${budgets[s]![Math.floor(i / V)]} ` +
            `token ${i % V}: engine ${got[i]} trainer ${want}`);
        }
      }
    }
    if (bad.length) console.error(`${dir}: max |diff| ${maxDiff}; first mismatches:\n  ${bad.join("\n  ")}`);
    return { maxDiff, bad, skipped: budgets.some((bs) => bs.at(-1)! < L) };
  } finally {
    dec.close();
  }
}

const TINY = ["--layers", "4", "--hidden", "64", "--heads", "4", "--vocab", "512", "--seq", "64", "--batch", "8",
  "--lr", "3e-3", "--lr-warmup", "10", "--log-every", "10", "--eval-every", "0", "--eval-windows", "8",
  "--train-chars", "1500000", "--final-eval-windows", "200"];

suite(`train/ recipe${skipNote}`, () => {
  let tmp = "";
  let model = "";
  let trainLog = "";

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), "skd-train-"));
    model = join(tmp, "tiny");
    trainLog = (await train(["--out", model, ...TINY, "--steps", "60", "--seed", "1", "--ckpt-every", "30"])).out;
  }, 120_000);

  afterAll(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  test("a tiny config trains: progress is printed, the loss falls, the export loads and generates", async () => {
    expect(trainLog).toMatch(/tok\/s \| [\d,]+ tokens \| elapsed \d+m\d\ds \| ETA \d+m\d\ds/);
    const l = losses(trainLog);
    expect(l.length).toBe(6);
    expect(l.at(-1)!).toBeLessThan(l[0]! - 0.5);
    const summary = JSON.parse(readFileSync(join(model, "training.json"), "utf8"));
    expect(summary.tokens_seen).toBe(60 * 8 * 64);
    expect(summary.seed).toBe(1);
    const dec = await SkipDecoder.load(model, { backend: "cpu" });
    try {
      expect(dec.spec.numLayers).toBe(4);
      expect(dec.spec.vocabSize).toBe(512);
      const r = await dec.generate("The jury said", { maxNewTokens: 12, speedup: 2, temperature: 0, ignoreEos: true });
      expect(r.promptTokens[0]).toBe(2); // OPT's BOS </s>, from the exported post-processor
      expect(r.tokens.length).toBe(12);
      expect(r.text.length).toBeGreaterThan(0);
    } finally {
      dec.close();
    }
  });

  test("the trainer's held-out perplexity is what evaluateQuality measures on the engine", async () => {
    const summary = JSON.parse(readFileSync(join(model, "training.json"), "utf8"));
    const text = readFileSync(join(model, "heldout.txt"), "utf8");
    const dec = await SkipDecoder.load(model, { backend: "cpu" });
    try {
      const rows = await evaluateQuality(dec, text, { speedups: [1, 2, 3], window: 64, context: 16, maxWindows: 200 });
      for (const r of rows) {
        const trainer = summary.heldout.perplexity[`${r.speedup}x`] as number;
        // the trainer scores float32 weights, the engine the exported float16 ones
        expect(Math.abs(r.perplexity - trainer) / trainer).toBeLessThan(0.01);
        expect(r.tokens).toBe(summary.heldout.tokens_scored);
      }
    } finally {
      dec.close();
    }
  }, 120_000);

  test("dec.forward with random non-increasing budgets and warm-ups equals the trainer's masked forward", async () => {
    // float32 engine vs float64 trainer on the same 16-bit weights
    const r = await compareForward(model, 8, 48, 2, (want) => 1e-3 + 1e-3 * Math.abs(want));
    expect(r.skipped).toBe(true);
    expect(r.bad).toEqual([]);
  }, 120_000);

  test("the trainer's budgets are SkipPolicy.forSpeedup's (train/policy.py mirrors lib/generation/policy.ts)", async () => {
    const cases: [number, number, number, number][] = [];
    for (const L of [4, 8, 12, 24]) {
      for (const span of [1, 7, 64, 112, 127]) {
        for (const s of [1, 1.25, 2, 2.5, 3, 4.75, 5]) for (const w of [0, 1, 2]) if (s <= L / Math.max(1, w)) cases.push([s, L, span, w]);
      }
    }
    const steps = [0, 1, 5, 33, 63, 111, 126, 200];
    const code = "import sys, json; sys.path.insert(0, sys.argv[1]); import policy; out = []\n" +
      "for s, L, span, w in json.load(sys.stdin):\n" +
      "    mx, mn = policy.for_speedup(s, L, span, w)\n" +
      "    out.append([policy.linear_at(i, L, mx, mn, span) for i in " + JSON.stringify(steps) + "])\n" +
      "print(json.dumps(out))";
    const r = await run(["-c", code, join(root, "train")], Buffer.from(JSON.stringify(cases)));
    expect(r.err).toBe("");
    const py = JSON.parse(r.out) as number[][];
    const ts = cases.map(([s, L, span, w]) => {
      const p = SkipPolicy.forSpeedup(s, { numLayers: L, span, warmupLayers: w });
      return steps.map((i) => p.layersAt(i));
    });
    expect(py).toEqual(ts);
  });

  test("the trainer's token file holds the library's ids (train/tokenize.ts, read by train/tokens.py)", async () => {
    const code = "import sys, json; sys.path.insert(0, sys.argv[1]); import tokens; " +
      "t = tokens.read(sys.argv[2]); print(json.dumps([t['kind'], t['bos_id'], t['heldout']['ids'].tolist()]))";
    const r = await run(["-c", code, join(root, "train"), join(model, "checkpoint", "tokens.bin")]);
    expect(r.err).toBe("");
    const [kind, bos, held] = JSON.parse(r.out) as [string, number, number[]];
    expect(kind).toBe("text");
    expect(bos).toBe(2);
    const dec = await SkipDecoder.load(model, { backend: "cpu" });
    try {
      const lib = dec.tokenizer!.encode(readFileSync(join(model, "heldout.txt"), "utf8"), { addBos: false });
      expect(held.length).toBe(lib.length);
      expect(held).toEqual(lib);
    } finally {
      dec.close();
    }
  });

  test("--init fine-tunes an exported folder; the result keeps its tokenizer and loads", async () => {
    const out = join(tmp, "finetuned");
    const scratch = losses(trainLog)[0]!;
    const r = await train(["--init", model, "--out", out, "--seq", "64", "--batch", "8", "--steps", "10",
      "--train-chars", "300000", "--final-eval-windows", "50",
      "--log-every", "10", "--eval-every", "0", "--lr", "1e-3", "--lr-warmup", "0", "--max-speedup", "3"]);
    expect(r.out).toContain(`init: ${model}`);
    // starts from the trained weights, not from scratch
    expect(losses(r.out)[0]!).toBeLessThan(scratch - 0.5);
    expect(readFileSync(join(out, "tokenizer.json"), "utf8")).toBe(readFileSync(join(model, "tokenizer.json"), "utf8"));
    const dec = await SkipDecoder.load(out, { backend: "cpu" });
    try {
      expect(dec.spec.numLayers).toBe(4);
      expect((await dec.generate("It was", { maxNewTokens: 4, temperature: 0, ignoreEos: true })).tokens.length).toBe(4);
    } finally {
      dec.close();
    }
  }, 120_000);

  test("a run stopped with --stop-after and continued with --resume ends with the same weights", async () => {
    const args = [...TINY, "--steps", "16", "--seed", "3", "--ckpt-every", "100"];
    const a = join(tmp, "straight");
    const b = join(tmp, "resumed");
    await train(["--out", a, ...args]);
    const first = await train(["--out", b, ...args, "--stop-after", "7"]);
    expect(first.out).toContain("stopped after 7 steps at step 7");
    const again = await run([trainPy, "--threads", "1", "--out", b, ...args]);
    expect(again.code).not.toBe(0);
    expect(again.err).toContain("exists: pass --resume");
    const second = await train(["--out", b, ...args, "--resume"]);
    expect(second.out).toContain("resume: step 7");
    expect(Buffer.compare(readFileSync(join(a, "model.safetensors")), readFileSync(join(b, "model.safetensors")))).toBe(0);
    const changed = await run([trainPy, "--threads", "1", "--out", b, ...TINY, "--steps", "16", "--seed", "4", "--resume"]);
    expect(changed.err).toContain("--seed 3 (now 4)");
  }, 300_000); // five trainer runs: minutes on a busy machine

  test("bad settings fail with a message naming what was wrong", async () => {
    const cases: [string[], string][] = [
      [["--corpus", join(tmp, "nowhere")], "no Brown corpus found"],
      [["--init", join(tmp, "nowhere")], "no such folder"],
      [["--init", tmp], "config.json: not found"],
      [["--layers", "4", "--max-speedup", "9"], "--max-speedup must be in [1, 4]"],
      [["--layers", "4", "--warmup-layers", "5"], "--warmup-layers must be in 0..4"],
      [["--vocab", "100"], "--vocab must be in 261..65536"],
      [["--hidden", "30", "--heads", "4"], "--hidden 30 is not a multiple of --heads 4"],
      [["--steps", "0"], "--steps must be >= 1"],
      [["--steps", "10", "--lr-warmup", "20"], "--lr-warmup 20 does not end before the learning-rate decay begins at step 8"],
      [["--distill"], "--distill needs --init"],
      [["--data", join(tmp, "x.txt")], "--data needs --init"],
      [["--batch", "8", "--micro-batch", "3"], "--batch 8 is not a multiple of --micro-batch 3"],
      [["--precision", "bf16", "--device", "cpu"], "--precision bf16 is bf16 autocast on CUDA"],
      [["--kv-heads", "2"], "--kv-heads and --head-dim are for --family llama"],
      [["--time-limit", "soon"], "not a duration"],
    ];
    // one Python process runs every case through train.main (a process per case would import torch each time)
    const code = `
import sys, json, io, contextlib
sys.path.insert(0, sys.argv[1])
import train
out = []
for args in json.load(sys.stdin):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            train.main(args)
        out.append("accepted")
    except train.UsageError as e:
        out.append(str(e))
    except SystemExit:
        out.append(err.getvalue())
print(json.dumps(out))`;
    const r = await run(["-c", code, join(root, "train")], Buffer.from(JSON.stringify(cases.map(([args]) => ["--out", join(tmp, "bad"), ...args]))));
    expect(r.err).toBe("");
    const got = JSON.parse(r.out) as string[];
    cases.forEach(([args, msg], i) => expect(`${args.join(" ")}: ${got[i]}`).toContain(msg));
    // and as a command: the message on stderr, a non-zero exit
    const cli = await run([trainPy, "--out", join(tmp, "bad"), "--steps", "0"]);
    expect(cli.code).not.toBe(0);
    expect(cli.err).toBe("train.py: --steps must be >= 1, got 0\n");
  }, 120_000);
});

/** A token file (train/tokenize.ts's layout): its header and each split's ids and loss mask. */
function readTokenFile(path: string) {
  const buf = readFileSync(path);
  expect(buf.subarray(0, 8).toString("latin1")).toBe("SKDTOK1\n");
  const n = Number(buf.readBigUInt64LE(8));
  const header = JSON.parse(buf.subarray(16, 16 + n).toString());
  const base = 16 + n;
  const split = (name: "train" | "heldout") => {
    const s = header[name];
    const ids = Array.from({ length: s.tokens }, (_, i) => buf.readUInt32LE(base + s.ids_offset + 4 * i));
    return { ids, mask: Array.from(buf.subarray(base + s.mask_offset, base + s.mask_offset + s.tokens)) };
  };
  return { header, train: split("train"), heldout: split("heldout") };
}

/** The runs of loss-target tokens of a mask, decoded with special tokens. */
function maskedSpans(tok: SkipTokenizer, ids: number[], mask: number[]): string[] {
  const spans: string[] = [];
  let cur: number[] = [];
  for (let i = 0; i <= ids.length; i++) {
    if (i < ids.length && mask[i]) cur.push(ids[i]!);
    else if (cur.length) {
      spans.push(tok.decode(cur, { skipSpecialTokens: false }));
      cur = [];
    }
  }
  return spans;
}

/** Tiny LLaMA-family checkpoints: GQA, an explicit head_dim, both rotary scalings, Qwen2's biases, tied and separate heads. */
const LLAMA_CONFIGS: Record<string, TinyModelOptions> = {
  llama: { family: "llama", seed: 3, layers: 4, hidden: 48, heads: 4, kvHeads: 2, headDim: 10, tiedHead: true, maxPositions: 128,
    ropeScaling: { type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 32 } },
  mistral: { family: "mistral", seed: 4, layers: 3, hidden: 64, heads: 4, kvHeads: 1, ropeTheta: 500000, maxPositions: 128,
    ropeScaling: { type: "linear", factor: 2 }, slidingWindow: 64 },
  qwen2: { family: "qwen2", seed: 5, layers: 5, hidden: 32, heads: 4, kvHeads: 2, headDim: 12, maxPositions: 128 },
};

const FINETUNE = ["--seq", "48", "--batch", "4", "--steps", "3", "--lr", "1e-3", "--lr-warmup", "0", "--log-every", "1",
  "--eval-every", "0", "--eval-fraction", "0.1", "--dtype", "float32"];

suite(`train/ LLaMA family and user data${skipNote}`, () => {
  let tmp = "";
  let data = "";
  const tiny: Record<string, string> = {};
  const chats: { role: string; content: string }[][] = [];

  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), "skd-train-llama-"));
    // --data: one .txt, a .jsonl of texts and a .jsonl of chats, from the Brown held-out text
    const words = readFileSync(join(root, "models", "brown-opt-12l", "heldout.txt"), "utf8").split(/\s+/);
    const take = (at: number, n: number) => words.slice(at, at + n).join(" ");
    data = join(tmp, "data");
    mkdirSync(join(data, "more"), { recursive: true });
    writeFileSync(join(data, "a.txt"), take(0, 2500));
    writeFileSync(join(data, "more", "b.jsonl"), Array.from({ length: 30 }, (_, i) => JSON.stringify({ text: take(3000 + 90 * i, 40 + i) })).join("\n") + "\n\n");
    for (let i = 0; i < 30; i++) {
      const at = 6000 + 70 * i;
      chats.push([{ role: "user", content: take(at, 10) }, { role: "assistant", content: take(at + 10, 25) },
        { role: "user", content: "And then?" }, { role: "assistant", content: take(at + 35, 15) }]);
    }
    writeFileSync(join(data, "more", "c.jsonl"), chats.map((m) => JSON.stringify({ messages: m })).join("\n"));
    writeFileSync(join(data, "notes.md"), "ignored: not .txt or .jsonl");
    for (const [name, opts] of Object.entries(LLAMA_CONFIGS)) writeTinyModel((tiny[name] = join(tmp, name)), opts);
    // the qwen2 checkpoint as two shards with an index, as large models ship
    const ck = CheckpointTensors.open(tiny.qwen2!);
    const names = ck.names();
    const shards = [names.slice(0, names.length >> 1), names.slice(names.length >> 1)];
    const weightMap: Record<string, string> = {};
    shards.forEach((list, i) => {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      writeSafetensors(join(tiny.qwen2!, file), list.map((name) => {
        const info = ck.info(name);
        for (const n of [name]) weightMap[n] = file;
        return { name, dtype: info.dtype, shape: [...info.shape], data: ck.read(name) };
      }));
    });
    ck.close();
    rmSync(join(tiny.qwen2!, "model.safetensors"));
    writeFileSync(join(tiny.qwen2!, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  });

  afterAll(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  test("tiny llama, mistral and qwen2 fine-tuned on --data export folders whose engine forward equals the trainer's", async () => {
    const extra: Record<string, string[]> = {
      llama: ["--distill", "--grad-checkpoint", "--micro-batch", "2"], // tied head, llama3 scaling, head_dim 10
      mistral: ["--freeze-embeddings"], // one KV head, linear scaling, a sliding window
      qwen2: [], // q/k/v biases, sharded safetensors
    };
    for (const [name, dir] of Object.entries(tiny)) {
      const out = join(tmp, `ft-${name}`);
      const r = await train(["--init", dir, "--data", data, "--out", out, ...FINETUNE, ...extra[name]!]);
      expect(r.out).toContain(`init: ${dir}`);
      expect(r.out).toMatch(/tokens: [\d,]+ train \([\d,]+ loss targets\), [\d,]+ held out; documents windows of 48/);
      for (const f of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
        expect(readFileSync(join(out, f), "utf8")).toBe(readFileSync(join(dir, f), "utf8"));
      }
      const cfg = JSON.parse(readFileSync(join(out, "config.json"), "utf8"));
      const src = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
      expect({ ...cfg, skipdecode_training: undefined }).toEqual({ ...src, skipdecode_training: undefined, torch_dtype: "float32" });
      const cmp = await compareForward(out, 4, 40, null, (want) => 3e-5 * (1 + Math.abs(want)));
      expect(cmp.skipped).toBe(true);
      expect(cmp.bad).toEqual([]);
      expect(cmp.maxDiff).toBeLessThan(1e-4);
      const dec = await SkipDecoder.load(out, { backend: "cpu" });
      try {
        const reply = await dec.chat([{ role: "user", content: "Hello" }], { maxNewTokens: 4, speedup: 2, temperature: 0, ignoreEos: true });
        expect(reply.tokens.length).toBe(4);
      } finally {
        dec.close();
      }
    }
    // a tied head is not written; frozen embeddings leave the file unchanged
    const llama = CheckpointTensors.open(join(tmp, "ft-llama"));
    expect(llama.has("lm_head.weight")).toBe(false);
    llama.close();
    const [before, after] = [tiny.mistral!, join(tmp, "ft-mistral")].map((d) => CheckpointTensors.open(d));
    expect(Buffer.compare(before!.read("model.embed_tokens.weight"), after!.read("model.embed_tokens.weight"))).toBe(0);
    expect(Buffer.compare(before!.read("model.norm.weight"), after!.read("model.norm.weight"))).not.toBe(0);
    before!.close();
    after!.close();
  }, 120_000);

  test("tokenize.ts: BOS/EOS by the model's rules, the loss on assistant turns only, every (1/f)-th document held out", async () => {
    for (const name of ["llama", "qwen2"]) {
      const tok = await SkipTokenizer.load(tiny[name]!, { bos: "config" });
      const out = join(tmp, `${name}.tok`);
      await tokenizeCommand(["--model", tiny[name]!, "--out", out, "--data", data, "--eval-fraction", "0.1"]);
      const f = readTokenFile(out);
      expect(f.header.kind).toBe("documents");
      expect(f.header.split).toBe("documents");
      expect([f.header.train.documents, f.header.heldout.documents]).toEqual([55, 6]); // 61 documents, every 10th held out
      expect(f.header.sources.map((x: { documents: number; chat: number }) => [x.documents, x.chat])).toEqual([[1, 0], [30, 0], [30, 30]]);
      expect(f.header.bos_id).toBe(tok.bosId);
      // the .txt file comes first: [BOS where the model adds one] + its ids + [EOS]; all but the BOS are targets
      const text = readFileSync(join(data, "a.txt"), "utf8");
      const want = [...tok.encode(text), tok.eosId];
      expect(f.train.ids.slice(0, want.length)).toEqual(want);
      expect(f.train.mask.slice(0, want.length)).toEqual(want.map((_, i) => (i === 0 && tok.addsBos ? 0 : 1)));
      expect(tok.addsBos).toBe(name === "llama"); // Llama 3 adds <|begin_of_text|>, Qwen2 none
      // one chat in train, one held out: the masked runs are the assistant turns and their end-of-turn marker
      const one = join(tmp, "two-chats.jsonl");
      writeFileSync(one, [chats[0], chats[1]].map((m) => JSON.stringify({ messages: m })).join("\n"));
      await tokenizeCommand(["--model", tiny[name]!, "--out", out, "--data", one, "--eval-fraction", "0.5"]);
      const c = readTokenFile(out);
      const end = name === "llama" ? "<|eot_id|>" : "<|im_end|>\n";
      expect(maskedSpans(tok, c.train.ids, c.train.mask)).toEqual([chats[0]![1]!.content + end, chats[0]![3]!.content + end]);
      expect(maskedSpans(tok, c.heldout.ids, c.heldout.mask)).toEqual([chats[1]![1]!.content + end, chats[1]![3]!.content + end]);
      // the ids are the chat template's text, as SkipDecoder.chat renders it
      const dec = await SkipDecoder.load(tiny[name]!, { backend: "cpu" });
      try {
        const rendered = dec.applyChatTemplate(chats[0]!, { addGenerationPrompt: false });
        expect(c.train.ids).toEqual(dec.tokenize(rendered, { bos: false }));
      } finally {
        dec.close();
      }
    }
    // fewer documents than 1/f: the last f of each document is held out
    const out = join(tmp, "tails.tok");
    await tokenizeCommand(["--model", tiny.llama!, "--out", out, "--data", join(data, "a.txt"), "--eval-fraction", "0.2"]);
    const t = readTokenFile(out);
    expect(t.header.split).toBe("tails");
    const total = t.train.ids.length + t.heldout.ids.length;
    expect(t.heldout.ids.length).toBe(Math.round(total * 0.2));
  }, 60_000);

  test("tokenize.ts refuses bad data and arguments by name", async () => {
    const file = (name: string, body: string | Uint8Array) => {
      const p = join(tmp, "bad", name);
      mkdirSync(join(tmp, "bad"), { recursive: true });
      writeFileSync(p, body);
      return p;
    };
    const opt = join(tmp, "opt");
    writeTinyModel(opt, { family: "opt", seed: 1 });
    mkdirSync(join(tmp, "empty"), { recursive: true });
    const chat = JSON.stringify({ messages: [{ role: "user", content: "hi" }, { role: "assistant", content: "hello" }] });
    const cases: [string[], RegExp][] = [
      [["--data", file("x.jsonl", '{"text": "a"}\n{"text": \n')], /x\.jsonl:2: not a JSON object/],
      [["--data", file("arr.jsonl", "[1, 2]\n")], /arr\.jsonl:1: not a JSON object/],
      [["--data", file("both.jsonl", '{"text": "a", "messages": []}')], /both\.jsonl:1: has both "text" and "messages"/],
      [["--data", file("none.jsonl", '{"prompt": "a"}')], /none\.jsonl:1: needs a "text" string or a "messages" list/],
      [["--data", file("num.jsonl", '{"text": 5}')], /num\.jsonl:1: "text" must be a string, got 5/],
      [["--data", file("role.jsonl", '{"messages": [{"content": "x"}]}')], /role\.jsonl:1: messages\[0\]\.role must be a string/],
      [["--data", file("user.jsonl", '{"messages": [{"role": "user", "content": "x"}]}')], /user\.jsonl:1: a chat document needs at least one assistant message/],
      [["--data", file("latin1.txt", new Uint8Array([0x63, 0x61, 0x66, 0xe9]))], /latin1\.txt: not UTF-8 text/],
      [["--data", file("x.csv", "a,b")], /x\.csv: takes a \.txt file, a \.jsonl file or a folder of them/],
      [["--data", join(tmp, "empty")], /the folder holds no \.txt or \.jsonl file/],
      [["--data", join(tmp, "nowhere")], /nowhere: no such file or folder/],
      [["--data", file("blank.jsonl", "\n\n")], /no documents/],
      [["--data", file("chat.jsonl", chat), "--eval-fraction", "0.7"], /--eval-fraction must be in \(0, 0\.5\], got 0\.7/],
      [["--data", file("tiny.txt", "a")], /split has no loss tokens/],
      [["--train-text", file("t.txt", "a")], /--train-text and --heldout-text go together/],
      [[], /give --data PATH, or --train-text FILE and --heldout-text FILE/],
    ];
    for (const [args, msg] of cases) {
      await expect(tokenizeCommand(["--model", tiny.llama!, "--out", join(tmp, "bad.tok"), ...args])).rejects.toThrow(msg);
    }
    await expect(tokenizeCommand(["--model", opt, "--out", join(tmp, "bad.tok"), "--data", file("c.jsonl", chat)]))
      .rejects.toThrow(/c\.jsonl:1: chat messages, but the model .* has no chat template/);
    await expect(tokenizeCommand(["--model", join(tmp, "nowhere"), "--out", join(tmp, "bad.tok"), "--data", data]))
      .rejects.toThrow(/--model .*nowhere: /);
  });

  test("the token-file and safetensors readers refuse malformed files by name", async () => {
    const good = join(tmp, "good.tok");
    await tokenizeCommand(["--model", tiny.qwen2!, "--out", good, "--data", join(data, "more", "b.jsonl")]);
    const code = `
import sys, json, os, struct
sys.path.insert(0, sys.argv[1])
import tokens, safetensors_io, torch
tmp, good = sys.argv[2], sys.argv[3]
raw = open(good, "rb").read()
n = struct.unpack("<Q", raw[8:16])[0]
head = json.loads(raw[16:16 + n])
def tok_with(header=None, body=None, data=None):
    h = json.dumps(header if header is not None else head).encode() if body is None else body
    h += b" " * (-len(h) % 8)
    return b"SKDTOK1\\n" + struct.pack("<Q", len(h)) + h + (raw[16 + n:] if data is None else data)
def patched(**kw):
    h = json.loads(json.dumps(head))
    for k, v in kw.items():
        if "." in k:
            a, b = k.split(".")
            h[a][b] = v
        else:
            h[k] = v
    return tok_with(h)
ids_at = 16 + n + head["train"]["ids_offset"]
mask_at = 16 + n + head["train"]["mask_offset"]
cases = {
    "empty": b"",
    "magic": b"NOTATOK!" + raw[8:],
    "header length": raw[:8] + struct.pack("<Q", 1 << 40) + raw[16:],
    "json": tok_with(body=b"{nope"),
    "format": patched(format="other"),
    "kind": patched(kind="bytes"),
    "vocab": patched(vocab_size=-1),
    "bos": patched(bos_id=10**9),
    "tokens type": patched(**{"train.tokens": "many"}),
    "absurd count": patched(**{"train.tokens": 10**15}),
    "misaligned": patched(**{"train.ids_offset": 2}),
    "truncated": raw[:len(raw) - 16],
    "big id": raw[:ids_at] + struct.pack("<I", 10**6) + raw[ids_at + 4:],
    "mask value": raw[:mask_at] + bytes([7]) + raw[mask_at + 1:],
    "loss count": patched(**{"train.loss_tokens": 1}),
}
out = {}
for name, blob in cases.items():
    p = os.path.join(tmp, "case.tok")
    open(p, "wb").write(blob)
    try:
        tokens.read(p)
        out[name] = "accepted"
    except tokens.TokenFileError as e:
        out[name] = str(e)
st = os.path.join(tmp, "t.safetensors")
safetensors_io.write(st, {"a": torch.ones(2, 3), "b": torch.zeros(4, dtype=torch.float16)})
sraw = open(st, "rb").read()
sn = struct.unpack("<Q", sraw[:8])[0]
sh = json.loads(sraw[8:8 + sn])
def st_with(**kw):
    h = json.loads(json.dumps(sh))
    for k, v in kw.items():
        h["a"][k] = v
    b = json.dumps(h).encode()
    b += b" " * (-len(b) % 8)
    return struct.pack("<Q", len(b)) + b + sraw[8 + sn:]
scases = {
    "short": sraw[:5],
    "header past end": struct.pack("<Q", 1 << 30) + sraw[8:],
    "not object": struct.pack("<Q", 8) + b"[1,2,3] " + sraw[8 + sn:],
    "dtype": st_with(dtype="I8"),
    "shape": st_with(shape=[2, -3]),
    "offsets": st_with(data_offsets=[0, 10**9]),
    "offsets type": st_with(data_offsets="0-24"),
    "size": st_with(shape=[2, 2]),
}
for name, blob in scases.items():
    p = os.path.join(tmp, "case.safetensors")
    open(p, "wb").write(blob)
    try:
        safetensors_io.read(p)
        out["st " + name] = "accepted"
    except ValueError as e:
        out["st " + name] = str(e)
shard = os.path.join(tmp, "shard")
os.makedirs(shard, exist_ok=True)
safetensors_io.write(os.path.join(shard, "s1.safetensors"), {"a": torch.ones(2)})
for name, index in {"index json": "{", "weight map": json.dumps({"weight_map": {}}),
                    "missing shard": json.dumps({"weight_map": {"a": "s2.safetensors"}}),
                    "not in shard": json.dumps({"weight_map": {"a": "s1.safetensors", "z": "s1.safetensors"}}),
                    "shard path": json.dumps({"weight_map": {"a": "../s1.safetensors"}})}.items():
    p = os.path.join(shard, "model.safetensors.index.json")
    open(p, "w").write(index)
    try:
        safetensors_io.read_sharded(p)
        out["shard " + name] = "accepted"
    except ValueError as e:
        out["shard " + name] = str(e)
print(json.dumps(out))
`;
    const r = await run(["-c", code, join(root, "train"), tmp, good]);
    expect(r.err).toBe("");
    const got = JSON.parse(r.out) as Record<string, string>;
    const want: Record<string, RegExp> = {
      empty: /not a token file/,
      magic: /not a token file/,
      "header length": /header length 1099511627776 runs past the end/,
      json: /malformed JSON header/,
      format: /not a skipdecode-tokens version 1 header/,
      kind: /kind must be 'text' or 'documents'/,
      vocab: /vocab_size must be a positive integer, got -1/,
      bos: /bos_id must be a token id below vocab_size/,
      "tokens type": /train\.tokens must be a non-negative integer, got 'many'/,
      "absurd count": /train: 1000000000000000 tokens at offsets .* run past the end/,
      misaligned: /misaligned/,
      truncated: /run past the end of the data/,
      "big id": /train: token id 1000000 is not below vocab_size/,
      "mask value": /loss mask values must be 0 or 1, found 7/,
      "loss count": /the mask holds \d+ loss tokens, the header says 1/,
      "st short": /too short to be a safetensors file/,
      "st header past end": /header length 1073741824 runs past the end of the file/,
      "st not object": /the header is not a JSON object/,
      "st dtype": /tensor a has dtype I8/,
      "st shape": /tensor a: shape must be a list of non-negative integers/,
      "st offsets": /tensor a: data_offsets \[0, 1000000000\] are not a range inside the data/,
      "st offsets type": /tensor a: data_offsets '0-24' are not a range/,
      "st size": /tensor a: 24 bytes do not hold shape \[2, 2\] of F32/,
      "shard index json": /not valid JSON/,
      "shard weight map": /needs a non-empty weight_map/,
      "shard missing shard": /shard s2\.safetensors is missing/,
      "shard not in shard": /tensor z is not in its shard s1\.safetensors/,
      "shard shard path": /shard '\.\.\/s1\.safetensors' is not a file name in the folder/,
    };
    expect(Object.keys(got).sort()).toEqual(Object.keys(want).sort());
    for (const [k, re] of Object.entries(want)) expect(`${k}: ${got[k]}`).toMatch(re);
  });

  test("--dry-run shows the GPU path's settings (bf16 autocast, AdamW, accumulation, checkpointing) and refuses what does not fit", async () => {
    const base = ["--init", tiny.llama!, "--out", join(tmp, "dry"), "--seq", "64", "--batch", "8", "--micro-batch", "2",
      "--grad-checkpoint", "--distill", "--device", "cuda", "--dry-run"];
    const plan = (out: string) => JSON.parse(out.match(/^dry run: (.*)$/m)![1]!);
    const p = plan((await train([...base, "--device-memory", "80"])).out);
    expect(p).toMatchObject({
      device: "cuda", autocast_dtype: "bfloat16", master_weights: "float32", optimizer: "AdamW",
      batch: 8, micro_batch: 2, accumulation_steps: 4, grad_checkpoint: true, distill: true, fits: true,
      memory_available_bytes: 80 * 2 ** 30, memory_available_from: "--device-memory",
    });
    const est = p.memory_estimate_bytes;
    expect(est.teacher).toBe(2 * p.parameters); // a bfloat16 teacher on CUDA
    expect(est.weights).toBe(4 * p.parameters);
    expect(est.total).toBeGreaterThan(est.weights + est.gradients + est.optimizer + est.activations + est.logits);
    // checkpointing keeps less; float32 keeps more
    const noCkpt = plan((await train([...base.filter((x) => x !== "--grad-checkpoint"), "--precision", "fp32"])).out);
    expect(noCkpt.autocast_dtype).toBe(null);
    expect(noCkpt.memory_estimate_bytes.activations).toBeGreaterThan(est.activations);
    expect(plan((await train([...base, "--device-memory", "0.001"])).out).fits).toBe(false);
    // without --dry-run, on this machine's CPU: refused before any work
    const r = await run([trainPy, "--threads", "1", "--init", tiny.llama!, "--data", data, "--out", join(tmp, "nofit"),
      "--seq", "48", "--device-memory", "0.001"]);
    expect(r.code).not.toBe(0);
    expect(r.out).toContain("memory estimate:");
    expect(r.err).toMatch(/the memory estimate .* exceeds the 1\.0 MiB available \(--device-memory\): lower --micro-batch/);
    // the parameter count the estimate uses is the model's
    const code = "import sys, json; sys.path.insert(0, sys.argv[1]); from families import family_of\n" +
      "for d in sys.argv[2:]:\n    cfg = json.load(open(d + '/config.json')); fam = family_of(cfg, d); c = fam.Config.from_hf(cfg, d)\n" +
      "    print(c.param_count(), sum(p.numel() for p in fam.Model(c).parameters()))";
    const opt = join(tmp, "opt-post");
    writeTinyModel(opt, { family: "opt", variant: "post", embedDim: 32, tiedHead: true });
    const counts = await run(["-c", code, join(root, "train"), ...Object.values(tiny), opt]);
    expect(counts.err).toBe("");
    for (const line of counts.out.trim().split("\n")) expect(new Set(line.split(" ")).size).toBe(1);
  }, 60_000);

  test("accumulation and gradient checkpointing keep the result; --distill starts at zero KL; --time-limit stops and --resume continues", async () => {
    const args = ["--init", tiny.llama!, "--data", data, ...FINETUNE, "--batch", "8", "--steps", "4", "--seed", "2"];
    const plainRun = join(tmp, "acc-a");
    const split = join(tmp, "acc-b");
    await train([...args, "--out", plainRun]);
    await train([...args, "--out", split, "--micro-batch", "2", "--grad-checkpoint"]);
    const [a, b] = [plainRun, split].map((d) => JSON.parse(readFileSync(join(d, "training.json"), "utf8")));
    expect(Math.abs(a.final_train_loss_last50 - b.final_train_loss_last50)).toBeLessThan(1e-4);
    const [ca, cb] = [plainRun, split].map((d) => CheckpointTensors.open(d));
    let most = 0;
    for (const name of ca!.names()) {
      const x = new Float32Array(ca!.read(name).slice().buffer);
      const y = new Float32Array(cb!.read(name).slice().buffer);
      for (let i = 0; i < x.length; i++) most = Math.max(most, Math.abs(x[i]! - y[i]!));
    }
    ca!.close();
    cb!.close();
    expect(most).toBeLessThan(1e-4);
    // the student starts as the teacher: at full depth their distributions agree
    const d = await train(["--init", tiny.llama!, "--data", data, ...FINETUNE, "--steps", "1", "--policy", "full", "--distill",
      "--out", join(tmp, "kl0")]);
    expect(d.out).toMatch(/^step 1\/1 \| loss [\d.]+ \| kl 0\.0000 \|/m);
    // a time limit ends the session with a checkpoint; resumed, the run ends as the uninterrupted one
    const limited = join(tmp, "limited");
    const first = await train([...args, "--out", limited, "--time-limit", "0.001"]);
    expect(first.out).toMatch(/--time-limit 0m00s reached at step 1; checkpoint .* \(--resume continues\)/);
    await train([...args, "--out", limited, "--resume"]);
    expect(Buffer.compare(readFileSync(join(plainRun, "model.safetensors")), readFileSync(join(limited, "model.safetensors")))).toBe(0);
  }, 120_000);
});
