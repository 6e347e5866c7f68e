/**
 * SkipDecode budget policies: how many layers the i-th generated token
 * computes. Every policy is monotonically non-increasing in the step (so the
 * KV cache a token attends to always exists; docs/DESIGN.md, "The method") and stays within
 * [max(1, warmupLayers), numLayers].
 */
import { show } from "../options.ts";

/** Settings shared by the decaying policies. */
export interface DecaySettings {
  numLayers: number;
  /** Budget at step 0. */
  maxLayers: number;
  /** Budget from step `span` on. */
  minLayers: number;
  /** Steps over which the budget decays from maxLayers to minLayers. */
  span: number;
  /** Bottom layers every token computes (default 1). */
  warmupLayers?: number;
}

/** Settings of {@link SkipPolicy.power}. */
export interface PowerSettings extends DecaySettings {
  /** Shape of the decay: 1 is linear, > 1 drops fast then flattens, < 1 stays high longer. */
  exponent: number;
}

/** Settings of {@link SkipPolicy.forSpeedup}. */
export interface SpeedupSettings {
  numLayers: number;
  span: number;
  warmupLayers?: number;
}

export const DEFAULT_WARMUP_LAYERS = 1;

function int(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw new Error(`SkipPolicy: ${name} must be an integer in ${min}..${max}, got ${show(v)}`);
  }
  return v;
}

function settings(kind: string, s: unknown, extra: string[] = []): Record<string, unknown> {
  if (typeof s !== "object" || s === null) throw new Error(`SkipPolicy.${kind}: settings must be an object`);
  const allowed = ["numLayers", "maxLayers", "minLayers", "span", "warmupLayers", ...extra];
  for (const k of Object.keys(s)) {
    if (!allowed.includes(k)) throw new Error(`SkipPolicy.${kind}: unknown setting "${k}" (expected ${allowed.join(", ")})`);
  }
  return s as Record<string, unknown>;
}

/** Validated decay settings with warm-up filled in. */
function decay(kind: string, s: DecaySettings): Required<DecaySettings> {
  const o = settings(kind, s, kind === "power" ? ["exponent"] : []);
  const numLayers = int("numLayers", o.numLayers, 1, 100000);
  const warmupLayers = int("warmupLayers", o.warmupLayers ?? DEFAULT_WARMUP_LAYERS, 0, numLayers);
  const lo = Math.max(1, warmupLayers);
  const maxLayers = int("maxLayers", o.maxLayers, lo, numLayers);
  const minLayers = int("minLayers", o.minLayers, lo, numLayers);
  if (minLayers > maxLayers) {
    throw new Error(`SkipPolicy.${kind}: minLayers (${minLayers}) must not exceed maxLayers (${maxLayers})`);
  }
  const span = int("span", o.span, 1, 1e9);
  return { numLayers, maxLayers, minLayers, span, warmupLayers };
}

/**
 * A budget schedule over generation steps. Build one with the static
 * factories; `layersAt(i)` is the budget of the i-th generated token.
 *
 * @example
 * const p = SkipPolicy.linear({ numLayers: 12, maxLayers: 12, minLayers: 4, span: 64 });
 * p.layersAt(0);  // 12
 * p.layersAt(64); // 4
 */
export class SkipPolicy {
  /** "full" | "linear" | "power". */
  readonly kind: "full" | "linear" | "power";
  readonly numLayers: number;
  readonly maxLayers: number;
  readonly minLayers: number;
  readonly span: number;
  readonly warmupLayers: number;
  readonly exponent: number;

  private constructor(kind: SkipPolicy["kind"], s: Required<DecaySettings>, exponent: number) {
    this.kind = kind;
    this.numLayers = s.numLayers;
    this.maxLayers = s.maxLayers;
    this.minLayers = s.minLayers;
    this.span = s.span;
    this.warmupLayers = s.warmupLayers;
    this.exponent = exponent;
  }

  /**
   * Every token computes every layer (plain decoding).
   *
   * @example
   * SkipPolicy.full(24).layersAt(1000); // 24
   */
  static full(numLayers: number, opts: { warmupLayers?: number } = {}): SkipPolicy {
    const L = int("numLayers", numLayers, 1, 100000);
    const w = int("warmupLayers", opts.warmupLayers ?? Math.min(DEFAULT_WARMUP_LAYERS, L), 0, L);
    return new SkipPolicy("full", { numLayers: L, maxLayers: L, minLayers: L, span: 1, warmupLayers: w }, 1);
  }

  /**
   * The paper's policy: linear decay from maxLayers at step 0 to minLayers at
   * step `span`, flat after.
   *
   * @example
   * SkipPolicy.linear({ numLayers: 24, maxLayers: 20, minLayers: 8, span: 100, warmupLayers: 1 });
   */
  static linear(s: DecaySettings): SkipPolicy {
    return new SkipPolicy("linear", decay("linear", s), 1);
  }

  /**
   * Power-law decay (the paper's suggested future work):
   * `min + (max − min) · (1 − i/span)^exponent`, rounded.
   *
   * @example
   * SkipPolicy.power({ numLayers: 24, maxLayers: 24, minLayers: 6, span: 100, exponent: 2 });
   */
  static power(s: PowerSettings): SkipPolicy {
    const d = decay("power", s);
    const e = s.exponent;
    if (typeof e !== "number" || !Number.isFinite(e) || e <= 0 || e > 100) {
      throw new Error(`SkipPolicy.power: exponent must be a number in (0, 100], got ${show(e)}`);
    }
    return new SkipPolicy("power", d, e);
  }

  /**
   * The linear policy whose mean budget over `span` steps is closest to
   * `numLayers / speedup` (always within half a layer of the best any linear
   * policy can do, so within one layer of the target). Among equally close
   * settings it takes the one whose maxLayers is nearest 1.5 × the target
   * mean: a clear decay, as in the paper's settings, without starving the last
   * tokens.
   *
   * @example
   * const p = SkipPolicy.forSpeedup(2, { numLayers: 12, span: 64 });
   * p.meanLayers(); // ≈ 6
   */
  static forSpeedup(speedup: number, s: SpeedupSettings): SkipPolicy {
    if (typeof s !== "object" || s === null) throw new Error("SkipPolicy.forSpeedup: settings must be an object");
    for (const k of Object.keys(s)) {
      if (!["numLayers", "span", "warmupLayers"].includes(k)) {
        throw new Error(`SkipPolicy.forSpeedup: unknown setting "${k}" (expected numLayers, span, warmupLayers)`);
      }
    }
    const L = int("numLayers", s.numLayers, 1, 100000);
    const w = int("warmupLayers", s.warmupLayers ?? Math.min(DEFAULT_WARMUP_LAYERS, L), 0, L);
    const span = int("span", s.span, 1, 1e9);
    const lo = Math.max(1, w);
    const most = L / lo;
    if (typeof speedup !== "number" || !Number.isFinite(speedup) || speedup < 1 || speedup > most + 1e-9) {
      throw new Error(
        `SkipPolicy.forSpeedup: speedup must be a number in [1, ${+most.toFixed(3)}] for ${L} layers with ` +
          `${w} warm-up layer(s) (at least ${lo} layer(s) per token), got ${show(speedup)}`,
      );
    }
    if (speedup === 1) return SkipPolicy.full(L, { warmupLayers: w });
    const target = L / speedup;
    let best: { err: number; max: number; min: number }[] = [];
    let bestErr = Infinity;
    for (let max = lo; max <= L; max++) {
      for (let min = lo; min <= max; min++) {
        const p = SkipPolicy.linear({ numLayers: L, maxLayers: max, minLayers: min, span, warmupLayers: w });
        const err = Math.abs(p.meanLayers() - target);
        if (err < bestErr) bestErr = err;
        best.push({ err, max, min });
      }
    }
    best = best.filter((c) => c.err <= bestErr + 0.25);
    const want = Math.min(L, 1.5 * target);
    best.sort((a, b) => Math.abs(a.max - want) - Math.abs(b.max - want) || a.err - b.err || b.min - a.min);
    const c = best[0]!;
    return SkipPolicy.linear({ numLayers: L, maxLayers: c.max, minLayers: c.min, span, warmupLayers: w });
  }

  /**
   * Budget of the step-th generated token (step = 0, 1, 2, …).
   *
   * @example
   * policy.layersAt(0);
   */
  layersAt(step: number): number {
    if (!Number.isInteger(step) || step < 0) throw new Error(`SkipPolicy.layersAt: step must be an integer >= 0, got ${step}`);
    if (this.kind === "full") return this.numLayers;
    const t = Math.min(step, this.span) / this.span; // 0 → 1
    const shape = this.kind === "linear" ? 1 - t : (1 - t) ** this.exponent;
    const b = Math.round(this.minLayers + (this.maxLayers - this.minLayers) * shape);
    return Math.min(this.maxLayers, Math.max(this.minLayers, b));
  }

  /** Mean budget over steps 0..steps-1 (default: the span). O(layers · log steps). */
  meanLayers(steps = this.span): number {
    if (!Number.isInteger(steps) || steps < 1) throw new Error(`SkipPolicy.meanLayers: steps must be an integer >= 1, got ${steps}`);
    // layersAt is non-increasing, so the steps with budget >= v are a prefix
    // 0..c(v)-1; the sum of budgets is the sum of c(v) over v = 1..max.
    const prefixAtLeast = (v: number): number => {
      let lo = 0;
      let hi = steps; // first step with budget < v, in [0, steps]
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (this.layersAt(mid) >= v) lo = mid + 1;
        else hi = mid;
      }
      return lo;
    };
    let sum = this.minLayers * steps;
    for (let v = this.minLayers + 1; v <= this.maxLayers; v++) sum += prefixAtLeast(v);
    return sum / steps;
  }

  /** Ideal speedup over `steps` generated tokens: numLayers / mean budget. */
  idealSpeedup(steps = this.span): number {
    return this.numLayers / this.meanLayers(steps);
  }

  /** A short description ("linear 12→4 over 64 steps, warm-up 1"). */
  toString(): string {
    if (this.kind === "full") return `full (${this.numLayers} layers)`;
    const shape = this.kind === "power" ? `power^${this.exponent}` : "linear";
    return `${shape} ${this.maxLayers}→${this.minLayers} over ${this.span} steps, warm-up ${this.warmupLayers}`;
  }
}
