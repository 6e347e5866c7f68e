/**
 * The engine thread (lib/engine/client.ts, lib/engine/worker.ts): native
 * steps run off the event loop, errors keep their type and message, concurrent
 * calls still share steps, and a process that never closes its decoder exits.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { NativeError, SkipDecoder } from "../lib/index.ts";
import { Row, ROW_WANT_LOGITS } from "../lib/engine/abi.ts";
import { OFF_THREAD_BYTES, OffThreadTokenizer } from "../lib/text/tokenizer_client.ts";
import { copyFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cleanupTemp, tempDir, tinyModel, timerProbe } from "./helpers.ts";

afterAll(cleanupTemp);

describe("engine thread", () => {
  test("timers keep firing while one long native step runs", async () => {
    // one step of 1024 prompt rows: hundreds of ms of native work in a single call
    const dir = tinyModel({ seed: 12, layers: 4, hidden: 128, heads: 4, maxPositions: 1100 });
    using dec = await SkipDecoder.load(dir, { backend: "cpu", maxSeqLen: 1100, maxBatchTokens: 1024, maxBatch: 1 });
    const ids = Array.from({ length: 1024 }, (_, i) => 3 + (i % 200));
    const probe = timerProbe();
    const t0 = performance.now();
    const r = await dec.generate(ids, { maxNewTokens: 1, ignoreEos: true });
    const ms = performance.now() - t0;
    const { ticks, worst } = probe.stop();
    expect(r.tokens.length).toBe(1);
    // had the step run on this thread, no timer could fire during it: one gap as long as the step
    expect(ticks).toBeGreaterThanOrEqual(Math.min(5, Math.floor(ms / 4)));
    expect(worst).toBeLessThan(Math.max(ms / 2, 50));
  });

  test("errors from the engine thread keep their class, status and message", async () => {
    const dir = tinyModel({ seed: 12, layers: 2, hidden: 32, heads: 2 });
    using dec = await SkipDecoder.load(dir, { backend: "cpu" });
    const rows = new Int32Array(Row.FIELDS);
    rows.set([2, 0, 0, 99, 1, ROW_WANT_LOGITS]);
    let err: unknown;
    try {
      dec.stepRows(rows, 1, new Float32Array(dec.spec.vocabSize));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NativeError);
    expect((err as NativeError).status).toBe("SKD_ERR_INVALID_ARG");
    expect((err as Error).message).toMatch(/^step: row 0: budget 99 out of range/);
  });

  test("concurrent generations still share native steps and equal running alone", async () => {
    const dir = tinyModel({ seed: 12, layers: 3, hidden: 48, heads: 4 });
    using dec = await SkipDecoder.load(dir, { backend: "cpu" });
    const prompts = ["Hello there", "The quick brown fox", "a b c"];
    const alone = [];
    for (const p of prompts) alone.push((await dec.generate(p, { maxNewTokens: 12, ignoreEos: true, speedup: 2 })).tokens);
    const together = await Promise.all(prompts.map((p) => dec.generate(p, { maxNewTokens: 12, ignoreEos: true, speedup: 2 })));
    expect(together.map((r) => r.tokens)).toEqual(alone);
    // submitted together, they are all in flight at once before any step runs
    const runs = prompts.map((p) => dec.generate(p, { maxNewTokens: 8, ignoreEos: true }));
    expect(dec.load.running + dec.load.waiting).toBe(3);
    await Promise.all(runs);
    expect(dec.load).toEqual({ running: 0, waiting: 0 });
  });

  test("close() during a running step waits for it, ends the generation and frees the engine", async () => {
    const dir = tinyModel({ seed: 12, layers: 4, hidden: 128, heads: 4, maxPositions: 1100 });
    const dec = await SkipDecoder.load(dir, { backend: "cpu", maxSeqLen: 1100, maxBatchTokens: 1024, maxBatch: 1 });
    // a 700-row prefill step, then 390 decode steps: far more than the 20 ms before close()
    const run = dec.generate(Array.from({ length: 700 }, (_, i) => 3 + (i % 200)), { maxNewTokens: 390, ignoreEos: true });
    await new Promise((r) => setTimeout(r, 20));
    dec.close();
    const r = await run;
    expect(r.finishReason).toBe("abort");
    expect(r.tokens.length).toBeLessThan(390);
    expect(() => dec.weightBytes).toThrow(/closed/);
    dec.close(); // twice is fine
  });

  test("the tokenizer thread encodes long texts exactly as the tokenizer does", async () => {
    const dir = tinyModel({ seed: 12, layers: 2, hidden: 32, heads: 2 });
    using dec = await SkipDecoder.load(dir, { backend: "cpu" });
    const t = new OffThreadTokenizer(dir, dec.tokenizer!);
    try {
      const long = "Numbers: 1, 2, 3 — ünïcödé and spaces.  ".repeat(2000);
      expect(Buffer.byteLength(long)).toBeGreaterThan(OFF_THREAD_BYTES);
      const [a, b] = await Promise.all([t.encode(long, true), t.encode(long, false)]);
      expect(a).toEqual(dec.tokenize(long));
      expect(b).toEqual(dec.tokenize(long, { bos: false }));
      expect(await t.encode("short", true)).toEqual(dec.tokenize("short"));
    } finally {
      t.close();
    }
    expect(await t.encode("x".repeat(OFF_THREAD_BYTES), true)).toEqual(dec.tokenize("x".repeat(OFF_THREAD_BYTES))); // closed: in place
  });

  test("the tokenizer thread: a render past its time limit ends the thread; the requests beside it are answered by a fresh one", async () => {
    const src = tinyModel({ family: "llama", seed: 13, layers: 1 });
    const dir = tempDir("skd-sort-template-");
    for (const f of readdirSync(src)) copyFileSync(join(src, f), join(dir, f));
    // one filter call that takes far longer than the 20 ms limit (the renderer reads the clock only between nodes)
    writeFileSync(join(dir, "chat_template.jinja"), "{% if messages[0].content == 'sort' %}{{ range(600000)|sort(reverse=true)|length }}{% endif %}{{ messages[0].content }}");
    using dec = await SkipDecoder.load(dir, { backend: "cpu", maxBatch: 1 });
    const t = new OffThreadTokenizer(dir, dec.tokenizer!, { watchdogGraceMs: 0 });
    try {
      const limits = { timeMs: 20, maxChars: 2_000_000 };
      const o = { tokens: dec.chatTokens, addGenerationPrompt: false, limits };
      const long = "A long text to encode meanwhile. ".repeat(2000);
      const runaway = t.renderChat([{ role: "user", content: "sort" }], o).catch((e: Error) => e);
      const beside = t.encode(long, false);
      const err = await runaway;
      expect(err).toBeInstanceOf(Error);
      expect((err as Error).name).toBe("TemplateLimitError");
      expect((err as Error).message).toMatch(/ran longer than 20 ms \(the time limit\)/);
      expect(t.restarts).toBe(1);
      expect(await beside).toEqual(dec.tokenize(long, { bos: false }));
      expect(await t.renderChat([{ role: "user", content: "hi" }], { ...o, limits: { timeMs: 1000, maxChars: 65536 } })).toBe("hi");
    } finally {
      t.close();
    }
  });

  test("a script that never closes its decoder still exits", () => {
    const dir = tinyModel({ seed: 12, layers: 2, hidden: 32, heads: 2 });
    const code = `
      import { SkipDecoder } from ${JSON.stringify(new URL("../lib/index.ts", import.meta.url).pathname)};
      const dec = await SkipDecoder.load(${JSON.stringify(dir)}, { backend: "cpu" });
      const r = await dec.generate([2, 5, 6], { maxNewTokens: 3, ignoreEos: true });
      console.log(r.tokens.length);
    `;
    const p = Bun.spawnSync(["bun", "-e", code], { stdout: "pipe", stderr: "pipe", timeout: 30_000 });
    expect(p.stderr.toString()).toBe("");
    expect(p.stdout.toString().trim()).toBe("3");
    expect(p.exitCode).toBe(0);
  });
});
