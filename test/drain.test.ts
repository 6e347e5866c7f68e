/**
 * Graceful drain of a real server (`skipdecode serve` in a child process on
 * 127.0.0.1): on SIGTERM new requests get 503 with Retry-After, requests in
 * flight finish (or are cut at --grace-s, streams ending with finish_reason
 * "abort"), and the process exits 0.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { cleanupTemp, serveProcess, tinyModel } from "./helpers.ts";

afterAll(cleanupTemp);

/** Wide enough that a long generation takes a good fraction of a second. */
const MODEL = { seed: 8, layers: 4, hidden: 256, heads: 4, maxPositions: 2048 } as const;

function start(graceS: string) {
  return serveProcess(tinyModel(MODEL), ["--backend", "cpu", "--grace-s", graceS]);
}

/** A streamed completion: resolves when the first chunk has arrived; `done` gives the finish reason and whether [DONE] came. */
async function streaming(url: string, maxTokens: number): Promise<{ done: Promise<{ finish: string | null; sawDone: boolean; chunks: number }> }> {
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ prompt: "Hello", max_tokens: maxTokens, temperature: 0, ignore_eos: true, stream: true }),
  });
  expect(res.status).toBe(200);
  const reader = res.body!.getReader();
  let buf = "";
  let first!: () => void;
  const gotFirst = new Promise<void>((r) => (first = r));
  const done = (async () => {
    let finish: string | null = null;
    let sawDone = false;
    let chunks = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += new TextDecoder().decode(value);
      let end: number;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const ev = buf.slice(0, end);
        buf = buf.slice(end + 2);
        if (!ev.startsWith("data: ")) continue;
        if (ev === "data: [DONE]") sawDone = true;
        else {
          const j = JSON.parse(ev.slice(6));
          chunks++;
          first();
          if (j.choices[0]?.finish_reason) finish = j.choices[0].finish_reason;
        }
      }
    }
    first();
    return { finish, sawDone, chunks };
  })();
  await gotFirst;
  return { done };
}

async function waitClosing(url: string): Promise<Response> {
  for (let i = 0; i < 200; i++) {
    const h = await fetch(`${url}/health`);
    if (h.status === 503) return h;
    await Bun.sleep(10);
  }
  throw new Error("/health never said closing");
}

describe("graceful drain on SIGTERM", () => {
  test("new requests get 503 + Retry-After; requests in flight finish; exit 0", async () => {
    const { p, url, stderr } = await start("60");
    try {
      const a = await streaming(url, 600);
      const b = fetch(`${url}/v1/completions`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prompt: "Once", max_tokens: 400, temperature: 0, ignore_eos: true }),
      });
      // both in flight before the signal (the server counts them)
      for (let i = 0; i < 500; i++) {
        const h = (await (await fetch(`${url}/health`)).json()) as { running: number; waiting: number };
        if (h.running + h.waiting >= 2) break;
        await Bun.sleep(10);
      }
      p.kill("SIGTERM");
      const h = await waitClosing(url);
      expect(h.headers.get("Retry-After")).toBe("5");
      const c = await fetch(`${url}/v1/completions`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prompt: "Hi", max_tokens: 2 }),
      });
      expect(c.status).toBe(503);
      expect(c.headers.get("Retry-After")).toBe("5");
      expect(((await c.json()) as { error: { code: string } }).error.code).toBe("server_closing");
      const ra = await a.done;
      // the stream was in flight when the signal came and still ran to its end
      expect(ra).toMatchObject({ finish: "length", sawDone: true });
      const rb = await b;
      expect(rb.status).toBe(200);
      const jb = (await rb.json()) as { usage: { completion_tokens: number }; choices: { finish_reason: string }[] };
      expect(jb.usage.completion_tokens).toBe(400);
      expect(jb.choices[0]!.finish_reason).toBe("length");
      expect(await p.exited).toBe(0);
      expect(await stderr()).toMatch(/SIGTERM: draining \(\d+ sequences in flight, grace 60 s; new requests get 503\)[\s\S]*stopped\n/);
    } finally {
      p.kill("SIGKILL");
    }
  }, 60000);

  test("a second SIGTERM stops at once: a request in flight gets a 503, not a reset; exit 0", async () => {
    const { p, url, stderr } = await start("60");
    try {
      const b = fetch(`${url}/v1/completions`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prompt: "Once", max_tokens: 2000, temperature: 0, ignore_eos: true }),
      });
      for (let i = 0; i < 500; i++) {
        const h = (await (await fetch(`${url}/health`)).json()) as { running: number };
        if (h.running >= 1) break;
        await Bun.sleep(10);
      }
      p.kill("SIGTERM");
      await waitClosing(url);
      p.kill("SIGTERM");
      const rb = await b;
      expect(rb.status).toBe(503);
      expect(((await rb.json()) as { error: { code: string } }).error.code).toBe("server_closing");
      expect(await p.exited).toBe(0);
      expect(await stderr()).toMatch(/SIGTERM again, stopping now/);
    } finally {
      p.kill("SIGKILL");
    }
  }, 60000);

  test("the grace deadline cuts what still runs: streams end with finish_reason abort and [DONE]; exit 0", async () => {
    const { p, url, stderr } = await start("0.2");
    try {
      const a = await streaming(url, 2000);
      const t0 = performance.now();
      p.kill("SIGTERM");
      const ra = await a.done;
      expect(ra).toMatchObject({ finish: "abort", sawDone: true });
      expect(performance.now() - t0).toBeLessThan(10_000);
      expect(await p.exited).toBe(0);
      expect(await stderr()).toMatch(/the grace deadline cut running requests/);
    } finally {
      p.kill("SIGKILL");
    }
  }, 60000);
});
