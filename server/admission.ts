/**
 * Admission and the server's own refusals: {@link Admission} counts the
 * sequences accepted and turns away what would overfill the queue (429); the
 * 503s a request gets while the server drains ({@link closing}) or after its
 * engine thread died ({@link engineFailed}).
 */
import { ApiError } from "./errors.ts";

/**
 * Counts the sequences the server has accepted and not finished, and turns
 * away requests whose sequences would make more than `maxQueue` wait for a
 * KV slot. Each prompt of a request is one sequence.
 *
 * @example
 * const a = new Admission(8, 64);
 * a.reserve(2); // throws ApiError 429 when the queue is full
 * a.release(2);
 */
export class Admission {
  #inFlight = 0;
  /** Controllers of running requests, aborted by {@link Admission.abortAll}. */
  readonly #controllers = new Set<AbortController>();
  /** Resolved each time the last request in flight ends. */
  #idle: (() => void)[] = [];
  closed = false;

  constructor(
    /** Sequences the decoder runs at once (its maxBatch). */
    readonly slots: number,
    /** Most sequences that may wait for a slot. */
    readonly maxQueue: number,
  ) {}

  /** Sequences accepted and not finished. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Sequences accepted beyond the free slots. */
  get waiting(): number {
    return Math.max(0, this.#inFlight - this.slots);
  }

  /** Accounts for `n` new sequences or throws 503 / 400 / 429. */
  reserve(n: number): AbortController {
    if (this.closed) throw closing();
    const most = this.slots + this.maxQueue;
    if (n > most) {
      throw new ApiError(400, `the request has ${n} prompts; at most ${most} sequences can be in flight (max batch ${this.slots} + max queue ${this.maxQueue})`, {
        param: "prompt",
      });
    }
    const waiting = this.#inFlight + n - this.slots;
    if (waiting > this.maxQueue) {
      throw new ApiError(429, `the queue is full (${this.waiting} sequences waiting, max queue ${this.maxQueue}); retry later`, {
        code: "queue_full",
        headers: { "Retry-After": "1" },
      });
    }
    this.#inFlight += n;
    const ac = new AbortController();
    this.#controllers.add(ac);
    return ac;
  }

  /** Gives back what {@link Admission.reserve} took. */
  release(n: number, ac: AbortController): void {
    this.#inFlight -= n;
    this.#controllers.delete(ac);
    if (this.#controllers.size === 0) for (const f of this.#idle.splice(0)) f();
  }

  /** Resolves when no request is in flight. */
  idle(): Promise<void> {
    if (this.#controllers.size === 0) return Promise.resolve();
    return new Promise((r) => this.#idle.push(r));
  }

  /** Refuses new work and aborts everything running. */
  abortAll(): void {
    this.closed = true;
    for (const ac of this.#controllers) ac.abort();
  }
}

/** Seconds a client is told to wait (Retry-After) while the server shuts down. */
export const CLOSING_RETRY_AFTER_S = 5;

/** The 503 a request gets while the server drains or after it closed. */
export function closing(): ApiError {
  return new ApiError(503, "the server is shutting down", {
    type: "server_error",
    code: "server_closing",
    headers: { "Retry-After": String(CLOSING_RETRY_AFTER_S) },
  });
}

/**
 * The 503 once the engine thread has died: requests in flight end with it
 * (a stream as an error event), new ones get it, and `/health` reports it.
 */
export function engineFailed(e: Error): ApiError {
  return new ApiError(503, `the inference engine has failed: ${e.message.replace(/^skipdecode: /, "")}`, {
    type: "server_error",
    code: "engine_failed",
  });
}
