/**
 * The access log: one line per request, written when the response is done
 * (for a stream, when its last chunk is sent):
 *
 *   2026-11-29T23:41:07.512Z POST /v1/completions 200 8+16 tokens 41.3 ms
 *
 * method, path, status, prompt+completion tokens ("-" for routes that
 * generate nothing) and milliseconds from arrival to the end.
 */
import type { Context, MiddlewareHandler } from "hono";

/** What a handler tells the log about its request. */
export class AccessEntry {
  /** "prompt+completion", or "-". */
  tokens = "-";
  #held = false;
  #write: (() => void) | null = null;

  /** The response outlives the handler (a stream): write the line at {@link AccessEntry.end}. */
  hold(): void {
    this.#held = true;
  }

  /** Records the tokens and, for a held entry, writes the line now. */
  end(tokens?: { prompt: number; completion: number }): void {
    if (tokens) this.tokens = `${tokens.prompt}+${tokens.completion}`;
    this.#held = false;
    const w = this.#write;
    this.#write = null;
    w?.();
  }

  /** @internal the middleware's writer: now, or when a held entry ends. */
  whenDone(write: () => void): void {
    if (this.#held) this.#write = write;
    else write();
  }
}

// keyed by the context: middleware such as bodyLimit replaces c.req.raw
const entries = new WeakMap<Context, AccessEntry>();

/** The entry of a request (a fresh one when the log is off, so handlers need not care). */
export function accessEntry(c: Context): AccessEntry {
  let e = entries.get(c);
  if (!e) {
    e = new AccessEntry();
    entries.set(c, e);
  }
  return e;
}

/**
 * Middleware writing one line per request to `write` (none when null).
 *
 * @example
 * app.use(accessLog((line) => console.log(line)));
 */
export function accessLog(write: ((line: string) => void) | null): MiddlewareHandler {
  return async (c, next) => {
    if (!write) return next();
    const t0 = performance.now();
    const at = new Date().toISOString();
    const entry = accessEntry(c);
    await next();
    entry.whenDone(() => write(`${at} ${c.req.method} ${c.req.path} ${c.res.status} ${entry.tokens}${entry.tokens === "-" ? "" : " tokens"} ${(performance.now() - t0).toFixed(1)} ms`));
  };
}
