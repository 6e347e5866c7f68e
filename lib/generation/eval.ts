/**
 * Teacher-forced quality of SkipDecode at several speedups: how much the
 * skipped layers cost in perplexity and in agreement with the full model.
 *
 * The text is tokenised and cut into windows of `window` tokens, each
 * starting with BOS. In a window the first `context` positions play the
 * prompt (full model); position context + i plays generated token i and
 * computes policy.layersAt(i) layers, exactly as in generation. Scored are
 * the predictions of tokens context .. window-1 (made at positions
 * context-1 .. window-2; the first of them is the full model's in every
 * setting, as in generation).
 */
import type { SkipDecoder } from "../decoder.ts";
import { SkipPolicy } from "./policy.ts";

/** One row of the quality table. */
export interface QualityRow {
  speedup: number;
  policy: string;
  /** numLayers / mean budget over the scored positions. */
  idealSpeedup: number;
  perplexity: number;
  /** Share of scored positions whose argmax equals the full model's. */
  agreement: number;
  /** Scored predictions. */
  tokens: number;
}

export interface QualityOptions {
  speedups?: number[];
  /** Full-model positions at the start of each window (default 16). */
  context?: number;
  /** Tokens per window, BOS included (default min(128, maxSeqLen)). */
  window?: number;
  /** At most this many windows (default: all). */
  maxWindows?: number;
  warmupLayers?: number;
  /**
   * Called after each window with the windows done and the total; the
   * `skipdecode eval` command prints progress with it.
   */
  onProgress?: (done: number, total: number) => void;
}

function logSoftmaxAt(row: Float32Array, target: number): number {
  let mx = -Infinity;
  for (const v of row) if (v > mx) mx = v;
  let s = 0;
  for (const v of row) s += Math.exp(v - mx);
  return row[target]! - mx - Math.log(s);
}

function argmax(row: Float32Array): number {
  let b = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[b]!) b = i;
  return b;
}

/**
 * Measures perplexity and next-token agreement per speedup (1 = full model).
 *
 * @example
 * const rows = await evaluateQuality(dec, text, { speedups: [1, 2, 3], context: 16 });
 */
export async function evaluateQuality(dec: SkipDecoder, text: string, opts: QualityOptions = {}): Promise<QualityRow[]> {
  const where = "evaluateQuality";
  if (!dec.tokenizer) throw new Error(`${where}: the model folder has no tokenizer`);
  const L = dec.spec.numLayers;
  const speedups = opts.speedups ?? [1, 2, 3, 4, 5];
  const window = opts.window ?? Math.min(128, dec.options.maxSeqLen);
  const context = opts.context ?? Math.min(16, window - 2);
  const w = opts.warmupLayers ?? Math.min(1, L);
  if (!Number.isInteger(window) || window < 3 || window > dec.options.maxSeqLen) {
    throw new Error(`${where}: window must be an integer in 3..${dec.options.maxSeqLen} (maxSeqLen), got ${window}`);
  }
  if (!Number.isInteger(context) || context < 1 || context > window - 2) {
    throw new Error(`${where}: context must be an integer in 1..${window - 2} (window - 2), got ${context}`);
  }
  const ids = dec.tokenizer.encode(text, { addBos: false });
  // each window: the model's BOS (when it adds one) and `per` text tokens
  const bos = dec.tokenizer.addsBos ? dec.tokenizer.bosId : null;
  const per = bos === null ? window : window - 1;
  let nWin = Math.floor(ids.length / per);
  if (opts.maxWindows !== undefined) nWin = Math.min(nWin, opts.maxWindows);
  if (nWin < 1) {
    throw new Error(`${where}: the text has ${ids.length} tokens, fewer than one window of ${per} (lower --window)`);
  }
  const span = window - context;
  const policies = speedups.map((s) =>
    s === 1 ? SkipPolicy.full(L, { warmupLayers: w }) : SkipPolicy.forSpeedup(s, { numLayers: L, span, warmupLayers: w }),
  );
  const V = dec.spec.vocabSize;
  const acc = policies.map(() => ({ nll: 0, agree: 0, n: 0, layers: 0 }));
  for (let k = 0; k < nWin; k++) {
    const text = ids.slice(k * per, (k + 1) * per);
    const win = bos === null ? text : [bos, ...text];
    const full = await dec.forward(win);
    for (const [pi, p] of policies.entries()) {
      const budgets = win.map((_, pos) => (pos < context ? L : p.layersAt(pos - context)));
      const logits = p.kind === "full" ? full : await dec.forward(win, { budgets, warmupLayers: p.warmupLayers });
      const a = acc[pi]!;
      for (let pos = context - 1; pos < window - 1; pos++) {
        const row = logits.subarray(pos * V, (pos + 1) * V);
        a.nll -= logSoftmaxAt(row, win[pos + 1]!);
        if (argmax(row) === argmax(full.subarray(pos * V, (pos + 1) * V))) a.agree++;
        a.n++;
        a.layers += budgets[pos]!;
      }
    }
    opts.onProgress?.(k + 1, nWin);
  }
  return policies.map((p, i) => {
    const a = acc[i]!;
    return {
      speedup: speedups[i]!,
      policy: String(p),
      idealSpeedup: L / (a.layers / a.n),
      perplexity: Math.exp(a.nll / a.n),
      agreement: a.agree / a.n,
      tokens: a.n,
    };
  });
}
