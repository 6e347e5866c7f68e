/**
 * The training recipe (train/, Python + PyTorch) against the library.
 *
 * - The recipe trains a tiny config in seconds: the loss falls, the export
 *   loads with SkipDecoder.load, and its held-out perplexity at 1x/2x/3x is
 *   what `evaluateQuality` measures on the engine.
 * - The trainer computes what the engine runs: `dec.forward` with random
 *   non-increasing budgets and warm-ups equals the trainer's masked forward
 *   (train/forward.py) on the exported 16-bit weights.
 * - The trainer's tokenizer gives the library's ids; `--init` fine-tunes an
 *   exported folder; a run stopped and resumed ends with the same bytes as an
 *   uninterrupted one; bad settings fail with a message naming them.
 *
 * Needs a Python with torch and numpy (CI installs Debian's python3-torch);
 * where none imports, every test here is reported skipped with the reason.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { SkipDecoder } from "../lib/index.ts";
import { evaluateQuality } from "../lib/generation/eval.ts";
import { SkipPolicy } from "../lib/generation/policy.ts";

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
    const dec = await SkipDecoder.load(model, { backend: "cpu" });
    try {
      const L = dec.spec.numLayers;
      const V = dec.spec.vocabSize;
      const T = 48;
      let seed = 12345;
      const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
      const ids: number[][] = [];
      const budgets: number[][] = [];
      const warmup: number[] = [];
      for (let s = 0; s < 8; s++) {
        const w = s % (L + 1); // 0..L warm-up layers, including all of them
        const lo = Math.max(1, w);
        const row = [2];
        for (let i = 1; i < T; i++) row.push(4 + Math.floor(rand() * (V - 4)));
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
      expect(budgets.some((bs) => bs.at(-1)! < L)).toBe(true);
      const p = Bun.spawnSync([python!, join(root, "train", "forward.py"), model], {
        stdin: Buffer.from(JSON.stringify({ ids, budgets, warmup })),
      });
      if (p.exitCode !== 0) throw new Error(`train/forward.py failed: ${p.stderr.toString()}`);
      const ref = new Float32Array(p.stdout.buffer, p.stdout.byteOffset, p.stdout.byteLength / 4);
      expect(ref.length).toBe(8 * T * V);
      let maxDiff = 0;
      const bad: string[] = [];
      for (let s = 0; s < 8; s++) {
        const got = await dec.forward(ids[s]!, { budgets: budgets[s]!, warmupLayers: warmup[s]! });
        for (let i = 0; i < T * V; i++) {
          const want = ref[s * T * V + i]!;
          const d = Math.abs(got[i]! - want);
          maxDiff = Math.max(maxDiff, d);
          // float32 engine vs float64 trainer on the same 16-bit weights
          if (d > 1e-3 + 1e-3 * Math.abs(want) && bad.length < 5) {
            bad.push(`seq ${s} (warm-up ${warmup[s]}) pos ${Math.floor(i / V)} budget ${budgets[s]![Math.floor(i / V)]} ` +
              `token ${i % V}: engine ${got[i]} trainer ${want}`);
          }
        }
      }
      if (bad.length) console.error(`max |diff| ${maxDiff}; first mismatches:\n  ${bad.join("\n  ")}`);
      expect(bad).toEqual([]);
    } finally {
      dec.close();
    }
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

  test("the trainer's tokenizer gives the library's ids", async () => {
    const text = readFileSync(join(model, "heldout.txt"), "utf8").slice(0, 60_000) + " Ünïcödé ½ 42_x  \n\t end";
    const textFile = join(tmp, "enc.txt");
    writeFileSync(textFile, text);
    const code = "import sys, json; sys.path.insert(0, sys.argv[1]); import bpe; " +
      "t = bpe.Tokenizer.load(sys.argv[2]); print(json.dumps(t.encode(open(sys.argv[3], encoding='utf-8').read())))";
    const r = await run(["-c", code, join(root, "train"), model, textFile]);
    expect(r.code).toBe(0);
    const py = JSON.parse(r.out) as number[];
    const dec = await SkipDecoder.load(model, { backend: "cpu" });
    try {
      const lib = dec.tokenizer!.encode(text, { addBos: false });
      expect(py.length).toBe(lib.length);
      expect(py).toEqual(lib);
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
  }, 120_000);

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
    ];
    for (const [args, msg] of cases) {
      const r = await run([trainPy, "--out", join(tmp, "bad"), ...args]);
      expect(r.code).not.toBe(0);
      expect(r.err).toContain(msg);
    }
  }, 120_000);
});
