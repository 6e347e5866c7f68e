/** The `skipdecode` command, run as a user would: a child process. */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { SkipDecoder } from "../lib/index.ts";
import { cleanupTemp, tempDir } from "./helpers.ts";

afterAll(cleanupTemp);

const CLI = resolve(import.meta.dir, "../bin/skipdecode.ts");

function run(...args: string[]): { code: number; stdout: string; stderr: string } {
  const p = Bun.spawnSync(["bun", CLI, ...args], { stdout: "pipe", stderr: "pipe" });
  return { code: p.exitCode ?? -1, stdout: p.stdout.toString(), stderr: p.stderr.toString() };
}

describe("skipdecode CLI", () => {
  test("tiny-model writes a loadable, deterministic checkpoint", () => {
    const a = tempDir();
    const b = tempDir();
    const r = run("tiny-model", a, "--seed", "3", "--variant", "post", "--dtype", "bfloat16", "--layers", "2", "--hidden", "40", "--heads", "2");
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/post-LN, 2 layers, hidden 40, 2 heads/);
    for (const f of ["config.json", "model.safetensors", "tokenizer.json"]) expect(existsSync(join(a, f))).toBe(true);
    run("tiny-model", b, "--seed", "3", "--variant", "post", "--dtype", "bfloat16", "--layers", "2", "--hidden", "40", "--heads", "2");
    for (const f of ["config.json", "model.safetensors", "tokenizer.json"]) {
      expect(Buffer.compare(readFileSync(join(a, f)), readFileSync(join(b, f)))).toBe(0);
    }
  });

  test("logits prints one row per position, equal to the library's forward", async () => {
    const dir = tempDir();
    expect(run("tiny-model", dir, "--layers", "3").code).toBe(0);
    const r = run("logits", "--model", dir, "--ids", "2,5,9", "--budgets", "3,3,2", "--warmup", "1", "--backend", "cpu");
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { logits: number[][] };
    expect(out.logits.length).toBe(3);
    using dec = await SkipDecoder.load(dir, { backend: "cpu" });
    expect(out.logits[0]!.length).toBe(dec.spec.vocabSize);
    const want = await dec.forward([2, 5, 9], { budgets: [3, 3, 2], warmupLayers: 1 });
    expect(out.logits.flat()).toEqual(Array.from(want));
  });

  test("tiny-model --family llama and logits --dtype float32 give the float64 reference's logits", async () => {
    const { ReferenceLlama } = await import("./reference-llama.ts");
    const dir = tempDir();
    const w = run("tiny-model", dir, "--family", "llama", "--layers", "2", "--kv-heads", "2", "--head-dim", "24");
    expect(w.stdout).toMatch(/llama, 2 KV heads, 2 layers, hidden 64, 4 heads/);
    const r = run("logits", "--model", dir, "--ids", "2,5,9,14", "--budgets", "2,2,1,1", "--dtype", "float32", "--backend", "cpu");
    expect(r.code).toBe(0);
    const got = (JSON.parse(r.stdout) as { logits: number[][] }).logits;
    const want = ReferenceLlama.load(dir).forward([2, 5, 9, 14], [2, 2, 1, 1], 1);
    let diff = 0;
    let scale = 0;
    want.forEach((row, t) => row.forEach((v, i) => ((diff = Math.max(diff, Math.abs(v - got[t]![i]!))), (scale = Math.max(scale, Math.abs(v))))));
    // float32 weights, float16 keys/values (the default KV storage): test/kv.test.ts states 2e-3 (measured at most 7.9e-4)
    expect(diff).toBeLessThanOrEqual(2e-3 * scale);
    expect(run("logits", "--model", dir, "--ids", "2", "--dtype", "f8").stderr).toMatch(/--dtype must be one of auto, float32, float16, bfloat16, q8_0, q4_0, q4_k, got "f8"/);
  });

  test("logits --dtype q4_k quantizes on load, prints the stored types and fallbacks on stderr, and equals the library", async () => {
    const dir = tempDir();
    run("tiny-model", dir, "--family", "llama", "--layers", "2", "--hidden", "64", "--ffn", "256");
    const r = run("logits", "--model", dir, "--ids", "2,5,9", "--dtype", "q4_k", "--backend", "cpu");
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/skipdecode: weights \(dtype q4_k\): .*Q4_K 2 tensors/);
    expect(r.stderr).toMatch(/skipdecode:   \d+ -> Q5_0: cols 64 is not a multiple of 256 \(Q4_K's block\): model\.embed_tokens\.weight \[384, 64\], model\.layers\.0\.self_attn\.q_proj\.weight/);
    expect(r.stderr).toMatch(/skipdecode:   1 -> Q8_0: cols 64 is not a multiple of 256 \(Q6_K's block\): lm_head\.weight \[384, 64\]/);
    using dec = await SkipDecoder.load(dir, { backend: "cpu", dtype: "q4_k", maxBatch: 1 });
    const want = await dec.forward([2, 5, 9]);
    expect((JSON.parse(r.stdout) as { logits: number[][] }).logits.flat()).toEqual(Array.from(want));
  });

  test("usage errors exit 2 with a message; failures exit 1", () => {
    const dir = tempDir();
    const cases: [string[], RegExp][] = [
      [[], /usage:/],
      [["frobnicate"], /unknown command "frobnicate"/],
      [["tiny-model"], /expected 1 positional argument/],
      [["tiny-model", dir, "--bogus"], /Unknown option '--bogus'/],
      [["tiny-model", dir, "--layers"], /argument missing|requires a value|--layers/],
      [["tiny-model", dir, "--layers", "x"], /--layers must be an integer, got "x"/],
      [["tiny-model", dir, "--hidden", "50", "--heads", "4"], /hidden \(50\) must be a multiple of heads \(4\)/],
      [["tiny-model", dir, "--variant", "middle"], /variant must be one of "pre", "post"/],
      [["logits", "--ids", "1,2"], /--model DIR is required/],
      [["logits", "--model", dir], /--ids is required/],
      [["logits", "--model", dir, "--ids", "1,,2"], /--ids must be a comma-separated list/],
      [["logits", "--model", dir, "--ids", "1", "--backend", "tpu"], /--backend must be auto, cpu or cuda/],
    ];
    for (const [args, re] of cases) {
      const r = run(...args);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(re);
    }
    const missing = run("logits", "--model", join(dir, "nope"), "--ids", "2");
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/does not exist/);
  });

  test("generate streams text and a stats line; --json prints the result", async () => {
    const dir = tempDir();
    expect(run("tiny-model", dir, "--layers", "6", "--seed", "5").code).toBe(0);
    const args = ["generate", "--model", dir, "--prompt", "The quick brown fox", "--max-new-tokens", "12", "--speedup", "2", "--ignore-eos", "--backend", "cpu"];
    const r = run(...args);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/\[12 tokens, length; prefill \d+ tokens in [\d.]+ ms; decode [\d.]+ tokens\/s; linear \d+→\d+ over 12 steps, warm-up 1; mean [\d.]+ of 6 layers, ideal speedup [\d.]+x; cpu\]/);
    const j = run(...args, "--json");
    expect(j.code).toBe(0);
    const res = JSON.parse(j.stdout);
    expect(res.tokens.length).toBe(12);
    expect(res.budgets.length).toBe(11);
    expect(r.stdout).toBe(res.text + "\n");
    using dec = await SkipDecoder.load(dir, { backend: "cpu" });
    const want = await dec.generate("The quick brown fox", { maxNewTokens: 12, speedup: 2, ignoreEos: true });
    expect(res.tokens).toEqual(want.tokens);
    const lin = JSON.parse(run("generate", "--model", dir, "--prompt", "x", "--max-new-tokens", "4", "--min-layers", "2", "--max-layers", "5", "--span", "3", "--ignore-eos", "--json").stdout);
    expect(lin.budgets).toEqual([5, 4, 3]); // 4 tokens: the 4th token's pass never ran
  });

  test("eval prints a quality table, one row per speedup", () => {
    const dir = tempDir();
    expect(run("tiny-model", dir, "--layers", "4").code).toBe(0);
    const text = join(dir, "text.txt");
    writeFileSync(text, "The quick brown fox jumps over the lazy dog. ".repeat(20));
    const r = run("eval", "--model", dir, "--text", text, "--speedups", "1,2,3", "--window", "32", "--context", "4", "--backend", "cpu");
    expect(r.code).toBe(0);
    const rows = r.stdout.trim().split("\n");
    expect(rows[0]).toMatch(/\| speedup \| policy \| ideal speedup \| perplexity/);
    expect(rows.length).toBe(5);
    // perplexity as 12.34 / 123.4 / 1,234 / 1.23e+6 (a random model's is huge)
    expect(rows[2]).toMatch(/^\| 1 \| full \(4 layers\) \| 1\.00x \| (\d+\.\d{1,2}|[\d,]+|\d\.\d\de\+\d+) \| \+0\.0% \| 100\.0% \|$/);
    expect(r.stderr).toMatch(/^eval: window \d+\/\d+ \(\d+%\)/m); // progress (not a TTY: every 10%)
    expect(rows[3]).toMatch(/^\| 2 \| linear/);
    const bad = run("eval", "--model", dir, "--text", text, "--window", "2");
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/window must be an integer in 3\.\./);
    const missing = run("eval", "--model", dir, "--text", join(dir, "nope.txt"));
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/cannot read --text/);
  });

  test("generate's usage errors exit 2", () => {
    const dir = tempDir();
    expect(run("tiny-model", dir, "--layers", "3").code).toBe(0);
    const base = ["generate", "--model", dir, "--prompt", "hi"];
    const cases: [string[], RegExp][] = [
      [["generate", "--model", dir], /--prompt TEXT is required/],
      [[...base, "--speedup", "2", "--min-layers", "1", "--max-layers", "2"], /not both/],
      [[...base, "--min-layers", "1"], /go together/],
      [[...base, "--span", "4"], /--span needs/],
      [[...base, "--speedup", "abc"], /--speedup must be a number/],
      [[...base, "--speedup", "9"], /speedup must be a number in \[1, 3\]/],
      [[...base, "--min-layers", "3", "--max-layers", "2"], /minLayers \(3\) must not exceed maxLayers \(2\)/],
      [[...base, "--temperature=-1"], /temperature must be a number/],
      [[...base, "--top-p", "2"], /topP must be a number/],
    ];
    for (const [args, re] of cases) {
      const r = run(...args);
      expect(r.stderr).toMatch(re);
      expect(r.code).toBe(2);
    }
  });

  test("--help on every command prints its usage and exits 0; help CMD too", () => {
    for (const cmd of ["tiny-model", "logits", "generate", "eval", "serve"]) {
      const r = run(cmd, "--help");
      expect(r.code).toBe(0);
      expect(r.stdout).toStartWith(`usage:\n  skipdecode ${cmd} `);
      expect(r.stdout).not.toContain("skipdecode help"); // only this command's part
      expect(run(cmd, "--model", "/nonexistent", "-h").stdout).toBe(r.stdout);
      expect(run("help", cmd).stdout).toBe(r.stdout);
    }
  });

  test("--version prints the package's version and the native ABI's", () => {
    const pkg = JSON.parse(readFileSync(resolve(import.meta.dir, "../package.json"), "utf8")) as { version: string };
    for (const flag of ["--version", "-v", "version"]) {
      const r = run(flag);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^skipdecode ${pkg.version.replace(/\./g, "\\.")} \\(native ABI \\d+\\)\n$`));
    }
    const both = run("build", "--cpu-only", "--cuda");
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/--cpu-only and --cuda exclude each other/);
  });

  test("negative numbers reach the range checks; out-of-vocabulary ids are usage errors", () => {
    const dir = tempDir();
    expect(run("tiny-model", dir, "--layers", "2").code).toBe(0);
    const neg = run("generate", "--model", dir, "--prompt", "hi", "--max-new-tokens", "-5");
    expect(neg.code).toBe(2);
    expect(neg.stderr).toMatch(/maxNewTokens must be an integer in 1\.\.\d+, got -5/);
    expect(neg.stderr).not.toMatch(/ambiguous/);
    const temp = run("generate", "--model", dir, "--prompt", "hi", "--temperature", "-0.5");
    expect(temp.code).toBe(2);
    expect(temp.stderr).toMatch(/temperature must be a number in \[0, 100\], got -0\.5/);
    const oov = run("logits", "--model", dir, "--ids", "2,99999", "--backend", "cpu");
    expect(oov.code).toBe(2);
    expect(oov.stderr).toMatch(/ids\[1\] = 99999 is not a token id in 0\.\.\d+/);
    expect(oov.stderr).toMatch(/usage:\n  skipdecode logits /);
  });

  test("the README's API example runs", () => {
    const dir = tempDir();
    expect(run("tiny-model", dir, "--layers", "8", "--seed", "1").code).toBe(0);
    const p = Bun.spawnSync(["bun", resolve(import.meta.dir, "../examples/quickstart.ts"), dir], { stdout: "pipe", stderr: "pipe" });
    expect(p.stderr.toString()).toBe("");
    expect(p.exitCode).toBe(0);
    const lines = p.stdout.toString().trim().split("\n");
    expect(lines[0]).toMatch(/^(cpu|cuda) 8 layers$/);
    expect(lines[1]).toMatch(/^(\d \d?)+.* → ideal [\d.]+x length$/);
    expect(lines[2]).toBe("finish: length");
    expect(lines[3]).toMatch(/^streamed 16 tokens, \d+ characters with linear 8→3 over 16 steps, warm-up 1$/);
    expect(lines[5]).toBe("4 rows of logits");
  });

  test("serve listens, answers, and stops cleanly on SIGTERM", async () => {
    const dir = tempDir();
    expect(run("tiny-model", dir, "--layers", "2").code).toBe(0);
    const p = Bun.spawn(["bun", CLI, "serve", "--model", dir, "--port", "0", "--backend", "cpu", "--kv-cache-mb", "0.5", "--kv-dtype", "float32"], {
      stdout: "pipe",
      stderr: "pipe",
    });
    try {
      const reader = p.stderr.getReader();
      let err = "";
      while (!/KV cache/.test(err)) {
        const { value, done } = await reader.read();
        if (done) break;
        err += new TextDecoder().decode(value);
      }
      reader.releaseLock();
      expect(err).toMatch(/KV cache 0\.5 MiB float32/);
      const url = err.match(/http:\/\/[^\s—]+/)![0];
      const health = await (await fetch(`${url}/health`)).json();
      expect(health).toMatchObject({ status: "ok", running: 0, waiting: 0 });
      const r = await fetch(`${url}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ prompt: "Hello", max_tokens: 4, temperature: 0, ignore_eos: true }),
      });
      expect(r.status).toBe(200);
      expect(((await r.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBe(4);
    } finally {
      p.kill("SIGTERM");
    }
    expect(await p.exited).toBe(0);
    // the access log: one line per request on stdout
    const out = (await new Response(p.stdout).text()).trim().split("\n");
    expect(out.length).toBe(2);
    expect(out[0]).toMatch(/ GET \/health 200 - [\d.]+ ms$/);
    expect(out[1]).toMatch(/ POST \/v1\/completions 200 \d+\+4 tokens [\d.]+ ms$/);
    const bad = run("serve", "--model", dir, "--port", "70000");
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--port must be in 0\.\.65535/);
    const badKv = run("serve", "--model", dir, "--kv-cache-mb", "0");
    expect(badKv.code).toBe(2);
    expect(badKv.stderr).toMatch(/--kv-cache-mb must be > 0, got 0/);
    const tiny = run("serve", "--model", dir, "--kv-cache-mb", "0.0001", "--backend", "cpu");
    expect(tiny.code).toBe(2);
    expect(tiny.stderr).toMatch(/kvCacheBytes 104 cannot hold one block per layer/);
    expect(run("serve", "--model", dir, "--kv-dtype", "int8").stderr).toMatch(/--kv-dtype must be auto, float16, bfloat16 or float32, got "int8"/);
  });
});
