/**
 * The caller's side of the tokenizer thread (lib/text/tokenizer_worker.ts): long
 * texts are encoded and long id lists decoded there, short ones in place
 * (below {@link OFF_THREAD_BYTES} / {@link OFF_THREAD_IDS} the round trip
 * costs more than the work), and chat templates always render there, under
 * their limits (lib/text/chat.ts). A render still running {@link WATCHDOG_GRACE_MS}
 * after its time limit (a single step of the interpreter that runs long)
 * ends the thread: that request fails with the time limit, the others are
 * sent again to a fresh thread. The thread starts on first use (or `warm()`)
 * and does not keep the process alive while idle.
 */
import { Worker } from "node:worker_threads";
import { type TemplateLimit, TemplateLimitError, type TemplateLimits } from "./bounded_template.ts";
import type { ChatMessage } from "./chat.ts";
import type { SkipTokenizer } from "../checkpoint/tokenizer.ts";
import type { TokenizeReply, TokenizeRequest } from "./tokenizer_worker.ts";

/** Texts at least this long (UTF-8 bytes) go to the thread: ~15 ms of encoding. */
export const OFF_THREAD_BYTES = 32 << 10;
/** Id lists at least this long are decoded on the thread. */
export const OFF_THREAD_IDS = 8192;
/** How long past its time limit a chat render may run before the thread is ended. */
export const WATCHDOG_GRACE_MS = 1000;

/** A chat template refused the messages (its own error, or raise_exception). */
export class TemplateRefusal extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TemplateRefusal";
  }
}

type Request = TokenizeRequest extends infer R ? (R extends { id: number } ? Omit<R, "id"> : never) : never;

interface Pending {
  q: Request;
  resolve: (r: TokenizeReply) => void;
  reject: (e: Error) => void;
  watchdog: ReturnType<typeof setTimeout> | null;
}

/**
 * A model folder's tokenizer, with long work off the event loop.
 *
 * @example
 * const t = new OffThreadTokenizer(dec.dir, dec.tokenizer!);
 * const ids = await t.encode(text, true);
 * t.close();
 */
export class OffThreadTokenizer {
  readonly #dir: string;
  readonly #local: SkipTokenizer;
  #worker: Worker | null = null;
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  #closed = false;
  readonly #graceMs: number;
  #restarts = 0;

  /** `opts.watchdogGraceMs` (@internal, for tests): the grace past a render's time limit (default WATCHDOG_GRACE_MS). */
  constructor(dir: string, local: SkipTokenizer, opts: { watchdogGraceMs?: number } = {}) {
    this.#dir = dir;
    this.#local = local;
    this.#graceMs = opts.watchdogGraceMs ?? WATCHDOG_GRACE_MS;
  }

  /** Starts the thread now (starting one holds the caller for tens of ms: better before serving than during a request). */
  warm(): void {
    if (!this.#closed) this.#thread();
  }

  /** @internal Threads the watchdog has ended. */
  get restarts(): number {
    return this.#restarts;
  }

  #thread(): Worker {
    if (this.#worker) return this.#worker;
    const w = new Worker(new URL("./tokenizer_worker.ts", import.meta.url), { workerData: { dir: this.#dir, bos: this.#local.bosRule } });
    w.unref();
    w.on("message", (r: TokenizeReply) => {
      const p = this.#pending.get(r.id);
      if (!p) return;
      this.#settle(r.id, p);
      if (!("error" in r)) p.resolve(r);
      else if (r.limit) p.reject(new TemplateLimitError(r.limit as TemplateLimit, r.error));
      else p.reject(r.template ? new TemplateRefusal(r.error) : new Error(`tokenizer: ${r.error}`));
    });
    w.on("error", (e) => this.#failAll(w, e as Error));
    w.on("exit", () => this.#failAll(w, new Error("tokenizer thread ended")));
    this.#worker = w;
    return w;
  }

  #settle(id: number, p: Pending): void {
    this.#pending.delete(id);
    if (p.watchdog) clearTimeout(p.watchdog);
    if (this.#pending.size === 0) this.#worker?.unref();
  }

  #failAll(w: Worker, e: Error): void {
    if (this.#worker !== w) return; // a thread the watchdog ended: its requests went elsewhere
    this.#worker = null;
    for (const [id, p] of [...this.#pending]) {
      this.#settle(id, p);
      p.reject(e);
    }
  }

  #send(id: number, p: Pending): void {
    const w = this.#thread();
    this.#pending.set(id, p);
    if (this.#pending.size === 1) w.ref(); // a request in flight keeps the process alive
    w.postMessage({ ...p.q, id });
  }

  #ask(q: Request, watchMs: number | null = null): Promise<TokenizeReply> {
    const id = this.#nextId++;
    return new Promise<TokenizeReply>((resolve, reject) => {
      const p: Pending = { q, resolve, reject, watchdog: null };
      if (watchMs !== null) p.watchdog = setTimeout(() => this.#runaway(id, watchMs), watchMs + this.#graceMs);
      this.#send(id, p);
    });
  }

  /** A render outlived its limit: end the thread, fail that request, send the others to a fresh thread. */
  #runaway(id: number, limitMs: number): void {
    const culprit = this.#pending.get(id);
    if (!culprit) return;
    const w = this.#worker;
    this.#worker = null;
    this.#restarts++;
    if (w) {
      w.removeAllListeners();
      void w.terminate();
    }
    const rest = [...this.#pending].filter(([other]) => other !== id);
    this.#pending.clear();
    culprit.reject(new TemplateLimitError("time", `the chat template ran longer than ${limitMs} ms (the time limit)`));
    for (const [other, p] of rest) this.#send(other, p);
  }

  /** Token ids of `text` (BOS first when `bos`), as SkipTokenizer.encode gives them. */
  async encode(text: string, bos: boolean): Promise<number[]> {
    if (this.#closed || Buffer.byteLength(text) < OFF_THREAD_BYTES) return this.#local.encode(text, { addBos: bos });
    return ((await this.#ask({ op: "encode", text, bos })) as { ids: number[] }).ids;
  }

  /**
   * {@link encode}, as the JSON text of the id list and its length: a long
   * list (a 3 MB text has ~800k ids) is written out on the thread, so this one
   * neither rebuilds nor stringifies it.
   */
  async encodeJson(text: string, bos: boolean): Promise<{ json: string; count: number }> {
    if (this.#closed || Buffer.byteLength(text) < OFF_THREAD_BYTES) {
      const ids = this.#local.encode(text, { addBos: bos });
      return { json: JSON.stringify(ids), count: ids.length };
    }
    return (await this.#ask({ op: "encodeJson", text, bos })) as { json: string; count: number };
  }

  /**
   * The text of `ids`, as SkipTokenizer.decode gives it; with `json`, as a
   * JSON string literal (written on the thread for long lists).
   */
  async decode(ids: ArrayLike<number>, opts: { skipSpecialTokens?: boolean; json?: boolean } = {}): Promise<string> {
    const skipSpecialTokens = opts.skipSpecialTokens ?? true;
    if (this.#closed || ids.length < OFF_THREAD_IDS) {
      const text = this.#local.decode(Array.from(ids), { skipSpecialTokens });
      return opts.json ? JSON.stringify(text) : text;
    }
    const q = { op: "decode" as const, ids: Int32Array.from(ids), skipSpecialTokens, json: opts.json ?? false };
    return ((await this.#ask(q)) as { text: string }).text;
  }

  /**
   * The model's chat template rendered for `messages` under `limits`, on the
   * thread; rejects with TemplateLimitError at a limit, TemplateRefusal when
   * the template refuses the messages.
   */
  async renderChat(
    messages: ChatMessage[],
    o: { tokens: { bosToken: string; eosToken: string }; addGenerationPrompt: boolean; limits: TemplateLimits },
  ): Promise<string> {
    if (this.#closed) throw new Error("tokenizer: the tokenizer thread is closed");
    const r = await this.#ask({ op: "chat", messages, tokens: o.tokens, addGenerationPrompt: o.addGenerationPrompt, limits: o.limits }, o.limits.timeMs);
    return (r as { text: string }).text;
  }

  /** Ends the thread; what waits on it fails (later encodes and decodes run in place, renders fail). Safe to call twice. */
  close(): void {
    this.#closed = true;
    const w = this.#worker;
    if (w) this.#failAll(w, new Error("tokenizer: the tokenizer thread is closed"));
    if (w) void w.terminate();
  }
}
