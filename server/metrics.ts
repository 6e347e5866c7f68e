/**
 * Prometheus text exposition (format 0.0.4), written by hand: a few counters,
 * gauges read at scrape time and two latency histograms. One registry per
 * app, no global state, no dependency.
 */

/** Label values by label name. */
export type Labels = Record<string, string>;

const escapeLabel = (v: string) => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
const labelText = (l: Labels | undefined) => {
  const e = l ? Object.entries(l) : [];
  return e.length ? `{${e.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}` : "";
};
const num = (v: number) => (v === Infinity ? "+Inf" : v === -Infinity ? "-Inf" : Number.isNaN(v) ? "NaN" : String(v));

interface Metric {
  render(): string;
}

/**
 * A monotonically increasing count, optionally split by labels.
 *
 * @example
 * const c = new Counter("app_requests_total", "Requests.");
 * c.inc({ status: "200" });
 */
export class Counter implements Metric {
  readonly #values = new Map<string, number>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  inc(labels?: Labels, by = 1): void {
    if (!(by >= 0)) throw new Error(`Counter ${this.name}: cannot add ${by}`);
    const k = labelText(labels);
    this.#values.set(k, (this.#values.get(k) ?? 0) + by);
  }

  /** The current value for these labels (0 if never incremented). */
  get(labels?: Labels): number {
    return this.#values.get(labelText(labels)) ?? 0;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    if (this.#values.size === 0) lines.push(`${this.name} 0`);
    for (const [k, v] of this.#values) lines.push(`${this.name}${k} ${num(v)}`);
    return lines.join("\n");
  }
}

/**
 * A value read when scraped.
 *
 * @example
 * new Gauge("app_queue", "Queued requests.", () => [[{}, queue.length]]);
 */
export class Gauge implements Metric {
  constructor(
    readonly name: string,
    readonly help: string,
    readonly read: () => [Labels, number][],
  ) {}

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} gauge`];
    for (const [l, v] of this.read()) lines.push(`${this.name}${labelText(l)} ${num(v)}`);
    return lines.join("\n");
  }
}

/**
 * Cumulative buckets of observations (upper bounds in the metric's unit) plus sum and count.
 *
 * @example
 * const h = new Histogram("app_latency_seconds", "Latency.", [0.01, 0.1, 1]);
 * h.observe(0.05);
 */
export class Histogram implements Metric {
  readonly bounds: number[];
  readonly #counts: number[];
  #sum = 0;
  #count = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    bounds: number[],
  ) {
    this.bounds = [...bounds].sort((a, b) => a - b);
    this.#counts = new Array(this.bounds.length).fill(0);
  }

  observe(v: number): void {
    if (!Number.isFinite(v)) return;
    for (let i = 0; i < this.bounds.length; i++) if (v <= this.bounds[i]!) this.#counts[i]!++;
    this.#sum += v;
    this.#count++;
  }

  get count(): number {
    return this.#count;
  }

  get sum(): number {
    return this.#sum;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    this.bounds.forEach((b, i) => lines.push(`${this.name}_bucket{le="${num(b)}"} ${this.#counts[i]}`));
    lines.push(`${this.name}_bucket{le="+Inf"} ${this.#count}`);
    lines.push(`${this.name}_sum ${num(this.#sum)}`, `${this.name}_count ${this.#count}`);
    return lines.join("\n");
  }
}

/**
 * A set of metrics rendered together, in registration order.
 *
 * @example
 * const r = new Registry();
 * const c = r.add(new Counter("app_requests_total", "Requests."));
 * r.render(); // "# HELP app_requests_total Requests.\n# TYPE ..."
 */
export class Registry {
  readonly #metrics: Metric[] = [];

  add<M extends Metric>(m: M): M {
    this.#metrics.push(m);
    return m;
  }

  /** The whole exposition, ending with a newline. */
  render(): string {
    return this.#metrics.map((m) => m.render()).join("\n") + "\n";
  }
}

/** Content-Type of the text exposition format. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Time to first token: from the request's arrival (queueing included). */
export const TTFT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80];
/** Gap between consecutive generated tokens of one sequence. */
export const ITL_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5];
/** Whole request, arrival to last token. */
export const E2E_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320];
