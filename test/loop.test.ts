/**
 * Nothing a request carries holds the server's event loop: while each hostile
 * request below runs (100k empty chat messages, a 3.2 MB chat message,
 * /detokenize of 800k ids, /tokenize of 1 MB, a 3.2 MB prompt, a 1M-deep
 * JSON body, a chat template that runs until its time limit), GET /health is
 * probed at a fixed rate — every 5 ms, whether or not the last probe was
 * answered, so a stalled loop delays every probe that falls in the stall —
 * and its p99 stays within 50 ms. The server is a real one (`skipdecode
 * serve` in a child process) and the prober another process, so the probes
 * measure the server's loop, not the one sending the bodies.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cleanupTemp, serveProcess, tempDir, tinyModel } from "./helpers.ts";

const MODEL = { family: "llama", seed: 41, layers: 1, maxPositions: 2048 } as const;
/** The /health p99 every case must keep (ms). */
const P99_MS = 50;

type Server = Awaited<ReturnType<typeof serveProcess>>;

function start(dir: string): Promise<Server> {
  return serveProcess(dir, ["--backend", "cpu", "--threads", "1", "--quiet"]);
}

let good: Server;
let slow: Server;

beforeAll(async () => {
  const dir = tinyModel(MODEL);
  // the same model with a chat template that runs until the time limit
  const evil = tempDir("skd-slow-template-");
  for (const f of readdirSync(dir)) copyFileSync(join(dir, f), join(evil, f));
  writeFileSync(
    join(evil, "chat_template.jinja"),
    "{% if messages[0].content == 'slow' %}{% set r = range(4000) %}{% for a in r %}{% for b in r %}{% endfor %}{% endfor %}{% endif %}{{ messages[0].content }}",
  );
  [good, slow] = await Promise.all([start(dir), start(evil)]);
  // one ordinary request of each kind first: what is measured is the steady state, not the first compile of each path
  for (const s of [good, slow]) {
    for (const [path, body] of [
      ["/v1/chat/completions", { messages: [{ role: "user", content: "hi" }], max_tokens: 1 }],
      ["/v1/completions", { prompt: "hi", max_tokens: 1 }],
      ["/tokenize", { prompt: "hi" }],
      ["/detokenize", { tokens: [5, 6] }],
    ] as const) {
      expect((await post(s.url, path, JSON.stringify(body))).status).toBe(200);
    }
  }
});

afterAll(() => {
  good?.p.kill("SIGKILL");
  slow?.p.kill("SIGKILL");
  cleanupTemp();
});

function post(url: string, path: string, body: string): Promise<Response> {
  return fetch(`${url}${path}`, { method: "POST", headers: { "Content-Type": "application/json" }, body });
}

/** A process that probes `GET url/health` every 5 ms (open loop) for `ms` and prints the latencies. */
const PROBER = `
  const [url, ms] = [process.argv[1], Number(process.argv[2])];
  await (await fetch(url + "/health")).arrayBuffer(); // connected
  console.log("ready");
  const lat = [], inflight = [];
  const t0 = performance.now();
  let next = t0;
  while (performance.now() - t0 < ms) {
    const sent = performance.now();
    inflight.push(fetch(url + "/health").then((r) => r.arrayBuffer()).then(() => lat.push(performance.now() - sent)));
    next += 5;
    await Bun.sleep(Math.max(0, next - performance.now()));
  }
  await Promise.all(inflight);
  console.log(JSON.stringify(lat));
`;

/**
 * /health latencies (ms) seen by a separate prober process over `ms`, while
 * this process sends `work` one after another, at most `times` (each case
 * is one request; a few of them give the stall a few chances to show); the
 * prober's own event loop is not the one that reads the hostile bodies.
 */
async function probe(url: string, work: () => Promise<unknown>, ms = 600, times = 6): Promise<number[]> {
  const p = Bun.spawn(["bun", "-e", PROBER, url, String(ms)], { stdout: "pipe", stderr: "inherit" });
  const reader = (p.stdout as ReadableStream<Uint8Array>).getReader();
  let out = "";
  while (!out.includes("ready\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`prober exited: ${out}`);
    out += new TextDecoder().decode(value);
  }
  const t0 = performance.now();
  for (let n = 0; n < times && (n === 0 || performance.now() - t0 < ms * 0.8); n++) await work();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    out += new TextDecoder().decode(value);
  }
  return JSON.parse(out.slice(out.indexOf("ready\n") + 6)) as number[];
}

function p99(lat: number[]): number {
  const s = [...lat].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(0.99 * s.length))]!;
}

const mb = (n: number) => "x".repeat(n);

describe("the event loop stays free: /health p99 <= 50 ms during each hostile request", () => {
  const results: string[] = [];
  afterAll(() => console.log(`/health under hostile requests (fixed-rate probes every 5 ms):\n${results.join("\n")}`));

  // [name, server, path, body, status, asserted]: /tokenize of 1 MB is reported, not asserted — its cost is the
  // tokenizer thread's CPU, which on a starved 2-core machine competes with the loop for a core, not the loop's own work
  const cases: [string, () => Server, string, string, number, boolean?][] = [
    ["idle (baseline)", () => good, "", "", 0],
    ["chat, 100k empty messages", () => good, "/v1/chat/completions", JSON.stringify({ messages: Array.from({ length: 100_000 }, () => ({ role: "user", content: "" })) }), 400],
    ["chat, one 3.2 MB message", () => good, "/v1/chat/completions", JSON.stringify({ messages: [{ role: "user", content: mb(3_200_000) }] }), 400],
    ["/detokenize, 800k ids", () => good, "/detokenize", JSON.stringify({ tokens: Array.from({ length: 800_000 }, (_, i) => 3 + (i % 250)) }), 200],
    ["/tokenize, 1 MB (reported only)", () => good, "/tokenize", JSON.stringify({ prompt: "The quick brown fox. ".repeat(50_000) }), 200, false],
    ["completion, 3.2 MB prompt", () => good, "/v1/completions", JSON.stringify({ prompt: mb(3_200_000) }), 400],
    ["1M-deep JSON", () => good, "/v1/completions", "[".repeat(1_000_000) + "]".repeat(1_000_000), 400],
    ["chat, a template at its time limit", () => slow, "/v1/chat/completions", JSON.stringify({ messages: [{ role: "user", content: "slow" }] }), 400],
  ];
  for (const [name, server, path, body, status, asserted = true] of cases) {
    test(name, async () => {
      const s = server();
      const statuses: number[] = [];
      const lat = await probe(s.url, async () => {
        if (!path) return Bun.sleep(50);
        const r = await post(s.url, path, body);
        statuses.push(r.status);
        await r.arrayBuffer();
      });
      const worst = Math.max(...lat);
      results.push(
        `  ${name.padEnd(36)} p99 ${p99(lat).toFixed(1).padStart(6)} ms  max ${worst.toFixed(1).padStart(6)} ms  ` +
          `(${lat.length} probes, ${statuses.length} requests)`,
      );
      if (path) expect(new Set(statuses)).toEqual(new Set([status]));
      if (asserted) expect(p99(lat)).toBeLessThanOrEqual(P99_MS);
    }, 60_000);
  }
});
