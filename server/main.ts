/**
 * `skipdecode serve`: loads a model, builds the app and listens with
 * `Bun.serve`. The CLI (bin/skipdecode.ts) parses flags and calls {@link serve}.
 *
 * If the engine thread dies, the server does not try to carry on or to
 * restart the thread: a reload costs what a restart costs, the thread's KV
 * state is gone either way, and whatever killed it may have hurt the process
 * too. Requests in flight end at once with a 503 (`engine_failed`; a stream
 * as an error event and `[DONE]`), new requests and `/health` get 503, then
 * the server stops listening and {@link ServeOptions.onEngineFailure} is
 * called: `skipdecode serve` exits with status 1 there, so a supervisor
 * (systemd `Restart=on-failure`, a container's restart policy) starts it
 * afresh.
 */
import { type BackendName, SkipDecoder } from "../lib/index.ts";
import { type AppOptions, createApp } from "./app.ts";

/** Options of {@link serve}. */
export interface ServeOptions {
  /** Model folder (Hugging Face layout). */
  model: string;
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Most sequences waiting for a KV slot; more → 429. */
  maxQueue: number;
  /** Sequences decoded together (KV slots); the library's default when absent. */
  maxBatch?: number;
  backend?: BackendName | "auto";
  /** CPU threads; 0 = all cores. */
  threads?: number;
  /** KV capacity per sequence; the library's default when absent. */
  maxSeqLen?: number;
  /** Model id clients send (default: the folder's basename). */
  modelName?: string;
  log?: AppOptions["log"];
  /** Access log lines (method, path, status, tokens, ms) to stdout; default true. */
  accessLog?: boolean;
  /**
   * Called once the engine thread has died and the server, having answered
   * what was in flight, has stopped (module comment). `skipdecode serve`
   * exits 1 here.
   */
  onEngineFailure?: (e: Error) => void;
}

/** A running server. */
export interface RunningServer {
  /** http://host:port */
  url: string;
  /** The loaded decoder (load, spec, options). */
  decoder: SkipDecoder;
  /** Stops listening, aborts running generations, closes the decoder. Safe to call twice. */
  stop(): Promise<void>;
  /**
   * Graceful shutdown: new requests get 503 with Retry-After while requests in
   * flight finish, or are cut after `graceS` seconds (streams end with
   * finish_reason "abort", non-streamed ones get 503); then stops listening and
   * closes the decoder. Resolves with whether the deadline cut anything.
   * `stop()` during a drain ends it at once.
   */
  drain(graceS: number): Promise<{ cut: boolean }>;
}

/**
 * Bun's idle timeout (seconds; 255 is its maximum). Streams also get a
 * keep-alive comment every 15 s and completion requests have no idle limit
 * while they run, so a slow first token never cuts a connection.
 */
export const IDLE_TIMEOUT_S = 255;

/**
 * How long `stop()` lets answers already under way go out (the 503s of cut
 * requests, the last chunks of cut streams) before it closes connections.
 */
export const STOP_GRACE_MS = 2000;

/**
 * Loads the model and serves the API until `stop()`.
 *
 * @example
 * const srv = await serve({ model: "models/opt-125m", host: "127.0.0.1", port: 8080, maxQueue: 64 });
 * console.log(`listening on ${srv.url}`);
 * await srv.stop();
 */
export async function serve(opts: ServeOptions): Promise<RunningServer> {
  const decoder = await SkipDecoder.load(opts.model, {
    backend: opts.backend ?? "auto",
    ...(opts.maxBatch !== undefined && { maxBatch: opts.maxBatch }),
    ...(opts.threads !== undefined && { threads: opts.threads }),
    ...(opts.maxSeqLen !== undefined && { maxSeqLen: opts.maxSeqLen }),
  });
  let built: ReturnType<typeof createApp>;
  let server: ReturnType<typeof Bun.serve>;
  try {
    built = createApp(decoder, {
      maxQueue: opts.maxQueue,
      modelName: opts.modelName,
      log: opts.log,
      accessLog: opts.accessLog === false ? null : (line) => console.log(line),
    });
    const app = built.app;
    server = Bun.serve({
      hostname: opts.host,
      port: opts.port,
      idleTimeout: IDLE_TIMEOUT_S,
      fetch(req, srv) {
        // a long generation sends nothing until it is done (non-streaming): no idle limit for it
        if (req.method === "POST") srv.timeout(req, 0);
        return app.fetch(req, { server: srv });
      },
    });
  } catch (e) {
    decoder.close();
    throw e;
  }
  let stopped: Promise<void> | null = null;
  let drained: Promise<{ cut: boolean }> | null = null;
  const running: RunningServer = {
    url: `http://${server.hostname?.includes(":") ? `[${server.hostname}]` : server.hostname}:${server.port}`,
    decoder,
    stop() {
      stopped ??= (async () => {
        // cut generations answer at once (503, or finish_reason "abort"); let those answers out, then close
        built.close();
        await Promise.race([server.stop(), Bun.sleep(STOP_GRACE_MS)]);
        await server.stop(true);
        decoder.close();
      })();
      return stopped;
    },
    drain(graceS: number) {
      if (!(graceS >= 0)) throw new Error(`drain: graceS must be a number >= 0, got ${graceS}`);
      drained ??= (async () => {
        const r = await built.drain(graceS * 1000);
        // not forced, so responses still being written finish; bounded, so an idle
        // keep-alive connection cannot hold the exit (stop() then closes what is left)
        await Promise.race([server.stop(), Bun.sleep(5000)]);
        await running.stop();
        return r;
      })();
      return drained;
    },
  };
  decoder.onEngineFailure((e) => {
    (opts.log ?? console.error)(`skipdecode server: ${e.message}; stopping`);
    // requests in flight have failed with it (503s, error events): running.stop() lets those answers out
    void running.stop().then(() => opts.onEngineFailure?.(e));
  });
  return running;
}
