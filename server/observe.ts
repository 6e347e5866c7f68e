/**
 * The server's metrics: what `GET /metrics` shows. Token and layer counters
 * are fed by finished generations; running/waiting and the KV pool's gauges
 * are read from the decoder at scrape time.
 */
import type { GenerateResult, SkipDecoder } from "../lib/index.ts";
import { Counter, E2E_BUCKETS, Gauge, Histogram, ITL_BUCKETS, Registry, TTFT_BUCKETS } from "./metrics.ts";

/**
 * Every metric the server exports, in one registry.
 *
 * @example
 * const m = new ServerMetrics(dec, "opt-125m", () => admission.waiting);
 * m.render(); // Prometheus text
 */
export class ServerMetrics {
  readonly registry = new Registry();
  /** HTTP responses by route and status. */
  readonly http: Counter;
  /** Finished sequences by finish reason (stop, length, abort). */
  readonly sequences: Counter;
  readonly promptTokens: Counter;
  readonly generationTokens: Counter;
  /** Sum of the budgets of all generated tokens. */
  readonly layersComputed: Counter;
  /** numLayers × generated tokens: what the full model would have computed. */
  readonly layersFull: Counter;
  readonly ttft: Histogram;
  readonly itl: Histogram;
  readonly e2e: Histogram;
  readonly #numLayers: number;

  constructor(dec: SkipDecoder, modelName: string, accepted: () => { inFlight: number }) {
    this.#numLayers = dec.spec.numLayers;
    const r = this.registry;
    const load = () => {
      try {
        return dec.load;
      } catch {
        return { running: 0, waiting: 0 };
      }
    };
    r.add(
      new Gauge("skipdecode_model_info", "The model served (value 1).", () => [
        [{ model: modelName, backend: dec.backend, num_layers: String(dec.spec.numLayers), max_seq_len: String(dec.options.maxSeqLen) }, 1],
      ]),
    );
    r.add(new Gauge("skipdecode_requests_running", "Sequences holding a KV slot (prefilling or decoding).", () => [[{}, load().running]]));
    r.add(new Gauge("skipdecode_requests_waiting", "Sequences queued for a KV slot.", () => [[{}, load().waiting]]));
    // the KV pool (docs/kv-cache.md); usage_perc is vLLM's gpu_cache_usage_perc: a fraction in 0..1
    const kv = () => {
      try {
        return dec.kvStats();
      } catch {
        return { poolBytes: 0, usedBytes: 0, reservedBytes: 0, blockSize: 0, blocksFree: 0 };
      }
    };
    r.add(new Gauge("skipdecode_kv_cache_pool_bytes", "Bytes of the KV cache pool.", () => [[{}, kv().poolBytes]]));
    r.add(new Gauge("skipdecode_kv_cache_used_bytes", "Bytes of KV cache blocks sequences hold.", () => [[{}, kv().usedBytes]]));
    r.add(new Gauge("skipdecode_kv_cache_reserved_bytes", "Bytes of KV cache promised to admitted sequences (at least what they hold).", () => [[{}, kv().reservedBytes]]));
    r.add(new Gauge("skipdecode_kv_cache_block_size", "Positions per KV cache block.", () => [[{}, kv().blockSize]]));
    r.add(new Gauge("skipdecode_kv_cache_blocks_free", "KV cache blocks no sequence holds.", () => [[{}, kv().blocksFree]]));
    r.add(
      new Gauge("skipdecode_kv_cache_usage_perc", "Fraction of the KV cache pool sequences hold, 0..1 (as vLLM's gpu_cache_usage_perc).", () => {
        const k = kv();
        return [[{}, k.poolBytes > 0 ? k.usedBytes / k.poolBytes : 0]];
      }),
    );
    r.add(new Gauge("skipdecode_sequences_accepted", "Sequences the server accepted and has not finished.", () => [[{}, accepted().inFlight]]));
    this.http = r.add(new Counter("skipdecode_http_requests_total", "HTTP responses by route and status."));
    this.sequences = r.add(new Counter("skipdecode_sequences_finished_total", "Finished sequences by finish reason."));
    this.promptTokens = r.add(new Counter("skipdecode_prompt_tokens_total", "Prompt tokens prefilled (BOS included)."));
    this.generationTokens = r.add(new Counter("skipdecode_generation_tokens_total", "Tokens generated."));
    this.layersComputed = r.add(
      new Counter("skipdecode_layers_computed_total", "Layers computed by the decode passes of generated tokens (sum of budgets)."),
    );
    this.layersFull = r.add(
      new Counter("skipdecode_layers_full_total", "Layers the full model would have computed for the same tokens (num_layers x tokens)."),
    );
    this.ttft = r.add(
      new Histogram("skipdecode_time_to_first_token_seconds", "From a request's arrival to a sequence's first token (queueing included).", TTFT_BUCKETS),
    );
    this.itl = r.add(new Histogram("skipdecode_inter_token_latency_seconds", "Gap between consecutive tokens of one sequence.", ITL_BUCKETS));
    this.e2e = r.add(new Histogram("skipdecode_e2e_request_latency_seconds", "From a request's arrival to a sequence's end.", E2E_BUCKETS));
    r.add(new Gauge("process_resident_memory_bytes", "Resident memory of the server process.", () => [[{}, process.memoryUsage.rss()]]));
    r.add(new Gauge("skipdecode_js_heap_used_bytes", "JavaScript heap in use.", () => [[{}, process.memoryUsage().heapUsed]]));
  }

  /** Records a finished generation. */
  finished(r: GenerateResult, ms: number): void {
    this.sequences.inc({ finish_reason: r.finishReason });
    // a sequence aborted before its first token may not have been prefilled: not counted
    if (r.tokens.length > 0 || r.finishReason !== "abort") this.promptTokens.inc(undefined, r.promptTokens.length);
    this.generationTokens.inc(undefined, r.tokens.length);
    this.layersComputed.inc(undefined, r.budgets.reduce((a, b) => a + b, 0));
    this.layersFull.inc(undefined, this.#numLayers * r.budgets.length);
    this.e2e.observe(ms / 1000);
  }

  /** The Prometheus text. */
  render(): string {
    return this.registry.render();
  }
}
