/**
 * Encodes long texts on a tokenizer thread (lib/tokenizer_worker.ts) and short
 * ones in place: below {@link OFF_THREAD_BYTES} the round trip costs more than
 * the encoding. The thread starts on first use and does not keep the process
 * alive while idle.
 */
import { Worker } from "node:worker_threads";
import type { SkipTokenizer } from "./checkpoint/tokenizer.ts";
import type { TokenizeReply } from "./tokenizer_worker.ts";

/** Texts at least this long (UTF-8 bytes) go to the thread: ~15 ms of encoding. */
export const OFF_THREAD_BYTES = 32 << 10;

/**
 * A model folder's tokenizer, with long texts encoded off the event loop.
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
  readonly #pending = new Map<number, { resolve: (ids: number[]) => void; reject: (e: Error) => void }>();
  #closed = false;

  constructor(dir: string, local: SkipTokenizer) {
    this.#dir = dir;
    this.#local = local;
  }

  #thread(): Worker {
    if (this.#worker) return this.#worker;
    const w = new Worker(new URL("./tokenizer_worker.ts", import.meta.url), { workerData: { dir: this.#dir, bos: this.#local.bosRule } });
    w.unref();
    w.on("message", (r: TokenizeReply) => {
      const p = this.#pending.get(r.id);
      if (!p) return;
      this.#pending.delete(r.id);
      if (this.#pending.size === 0) w.unref();
      if ("ids" in r) p.resolve(r.ids);
      else p.reject(new Error(`tokenizer: ${r.error}`));
    });
    w.on("error", (e) => this.#failAll(e as Error));
    w.on("exit", () => {
      this.#worker = null;
      this.#failAll(new Error("tokenizer thread ended"));
    });
    this.#worker = w;
    return w;
  }

  #failAll(e: Error): void {
    const left = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of left) p.reject(e);
  }

  /** Token ids of `text` (BOS first when `bos`), as SkipTokenizer.encode gives them. */
  async encode(text: string, bos: boolean): Promise<number[]> {
    if (this.#closed || Buffer.byteLength(text) < OFF_THREAD_BYTES) return this.#local.encode(text, { addBos: bos });
    const w = this.#thread();
    const id = this.#nextId++;
    const done = new Promise<number[]>((resolve, reject) => this.#pending.set(id, { resolve, reject }));
    if (this.#pending.size === 1) w.ref(); // a request in flight keeps the process alive
    w.postMessage({ id, text, bos });
    return done;
  }

  /** Ends the thread (later calls encode in place). Safe to call twice. */
  close(): void {
    this.#closed = true;
    void this.#worker?.terminate();
    this.#worker = null;
  }
}
