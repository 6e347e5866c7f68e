/**
 * The reference: a plain, slow, float64 OPT forward pass with SkipDecode's
 * exact semantics, written to be read as the spec (docs/DESIGN.md, "The method").
 * Every backend is checked against it. It shares nothing with the engine but
 * the safetensors reader and config parsing.
 *
 * Shapes: d = hidden, e = word_embed_proj_dim, f = ffn, V = vocab.
 */
import { readModelSpec, type ModelSpec } from "../lib/checkpoint/config.ts";
import { CheckpointTensors } from "../lib/checkpoint/safetensors.ts";
import { toFloat32 } from "../lib/checkpoint/half.ts";

export type Vec = Float64Array;
/** A row-major matrix [rows, cols]. */
export interface Mat {
  rows: number;
  cols: number;
  data: Float64Array;
}

/** Does a token with budget b and warm-up w compute layer l of L? */
export function layerActive(l: number, L: number, b: number, w: number): boolean {
  // Skip the bottom, keep the top: layers 0..w-1, then L-(b-w)..L-1; b = L computes all.
  return b >= L || l < w || l >= L - (b - w);
}

// W (n, k) @ x (k,) + bias (n,) -> (n,)
export function linear(W: Mat, x: Vec, bias: Vec | null): Vec {
  const out = new Float64Array(W.rows);
  for (let j = 0; j < W.rows; j++) {
    let s = bias ? bias[j]! : 0;
    const row = j * W.cols;
    for (let i = 0; i < W.cols; i++) s += W.data[row + i]! * x[i]!;
    out[j] = s;
  }
  return out;
}

// (x - mean) / sqrt(var + 1e-5) * g + b
function layerNorm(x: Vec, g: Vec, b: Vec): Vec {
  const n = x.length;
  let mean = 0;
  for (let i = 0; i < n; i++) mean += x[i]!;
  mean /= n;
  let v = 0;
  for (let i = 0; i < n; i++) v += (x[i]! - mean) ** 2;
  v /= n;
  const inv = 1 / Math.sqrt(v + 1e-5);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = (x[i]! - mean) * inv * g[i]! + b[i]!;
  return out;
}

export function add(a: Vec, b: Vec): Vec {
  const out = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! + b[i]!;
  return out;
}

interface Layer {
  attnLn: [Vec, Vec];
  q: [Mat, Vec];
  k: [Mat, Vec];
  v: [Mat, Vec];
  o: [Mat, Vec];
  mlpLn: [Vec, Vec];
  fc1: [Mat, Vec];
  fc2: [Mat, Vec];
}

/** Float64 OPT with per-token layer budgets. */
export class ReferenceOpt {
  readonly spec: ModelSpec;
  readonly embed: Mat; // [V, e]
  readonly positions: Mat; // [maxPositions + 2, d]
  readonly projectIn: Mat | null; // [d, e]
  readonly projectOut: Mat | null; // [e, d]
  readonly finalLn: [Vec, Vec] | null;
  readonly lmHead: Mat; // [V, e]
  readonly layers: Layer[];

  private constructor(spec: ModelSpec, get: (name: string) => Mat | null, prefix: string) {
    this.spec = spec;
    const need = (name: string): Mat => {
      const m = get(name);
      if (!m) throw new Error(`reference: missing ${name}`);
      return m;
    };
    const vec = (name: string) => need(name).data;
    const p = prefix;
    this.embed = need(`${p}embed_tokens.weight`);
    this.positions = need(`${p}embed_positions.weight`);
    this.projectIn = get(`${p}project_in.weight`);
    this.projectOut = get(`${p}project_out.weight`);
    this.finalLn = spec.finalLayerNorm ? [vec(`${p}final_layer_norm.weight`), vec(`${p}final_layer_norm.bias`)] : null;
    this.lmHead = get("lm_head.weight") ?? this.embed;
    this.layers = [];
    for (let l = 0; l < spec.numLayers; l++) {
      const q = `${p}layers.${l}.`;
      const lin = (n: string): [Mat, Vec] => [need(`${q}${n}.weight`), vec(`${q}${n}.bias`)];
      this.layers.push({
        attnLn: [vec(`${q}self_attn_layer_norm.weight`), vec(`${q}self_attn_layer_norm.bias`)],
        q: lin("self_attn.q_proj"),
        k: lin("self_attn.k_proj"),
        v: lin("self_attn.v_proj"),
        o: lin("self_attn.out_proj"),
        mlpLn: [vec(`${q}final_layer_norm.weight`), vec(`${q}final_layer_norm.bias`)],
        fc1: lin("fc1"),
        fc2: lin("fc2"),
      });
    }
  }

  /** Loads a model folder (F32/F16/BF16 widened to float64). */
  static load(dir: string): ReferenceOpt {
    const spec = readModelSpec(dir);
    const ckpt = CheckpointTensors.open(dir);
    try {
      const prefix = ckpt.has("model.decoder.embed_tokens.weight") ? "model.decoder." : "decoder.";
      const get = (name: string): Mat | null => {
        if (!ckpt.has(name)) return null;
        const info = ckpt.info(name);
        const f = toFloat32(ckpt.read(name), info.dtype);
        return { rows: info.shape[0]!, cols: info.shape.length > 1 ? info.shape[1]! : 1, data: Float64Array.from(f) };
      };
      return new ReferenceOpt(spec, get, prefix);
    } finally {
      ckpt.close();
    }
  }

  /**
   * Teacher-forced logits: ids at positions 0..n-1, position t with budgets[t]
   * layers and `warmup` warm-up layers. Throws if a position computes a layer
   * whose keys/values an earlier position never wrote. Returns n rows of V.
   */
  forward(ids: number[], budgets: number[], warmup: number): Float64Array[] {
    const { numLayers: L, hiddenSize: d, numHeads: H, headDim: hd } = this.spec;
    // KV cache per layer: keys[l][t], values[l][t]; undefined = never written.
    const keys: (Vec | undefined)[][] = Array.from({ length: L }, () => []);
    const values: (Vec | undefined)[][] = Array.from({ length: L }, () => []);
    const out: Float64Array[] = [];
    for (let t = 0; t < ids.length; t++) {
      // x = project_in(embed[id]) + positions[t + 2]
      let e = this.embed.data.subarray(ids[t]! * this.embed.cols, (ids[t]! + 1) * this.embed.cols);
      let x: Vec = this.projectIn ? linear(this.projectIn, e, null) : Float64Array.from(e);
      x = add(x, this.positions.data.subarray((t + 2) * d, (t + 3) * d));
      for (let l = 0; l < L; l++) {
        if (!layerActive(l, L, budgets[t]!, warmup)) continue; // skipped: x passes through, no KV written
        const w = this.layers[l]!;
        // attention block
        const h = this.spec.preLayerNorm ? layerNorm(x, ...w.attnLn) : x;
        const q = linear(w.q[0], h, w.q[1]).map((v) => v / Math.sqrt(hd));
        keys[l]![t] = linear(w.k[0], h, w.k[1]);
        values[l]![t] = linear(w.v[0], h, w.v[1]);
        for (let s = 0; s < t; s++) {
          if (!keys[l]![s]) throw new Error(`reference: position ${t} computes layer ${l}, which position ${s} skipped`);
        }
        const att = new Float64Array(d);
        for (let head = 0; head < H; head++) {
          const o = head * hd;
          const scores = new Float64Array(t + 1);
          for (let s = 0; s <= t; s++) {
            let dot = 0;
            for (let i = 0; i < hd; i++) dot += q[o + i]! * keys[l]![s]![o + i]!;
            scores[s] = dot;
          }
          const mx = Math.max(...scores);
          let sum = 0;
          for (let s = 0; s <= t; s++) sum += scores[s] = Math.exp(scores[s]! - mx);
          for (let s = 0; s <= t; s++) {
            for (let i = 0; i < hd; i++) att[o + i] += (scores[s]! / sum) * values[l]![s]![o + i]!;
          }
        }
        x = add(x, linear(w.o[0], att, w.o[1]));
        if (!this.spec.preLayerNorm) x = layerNorm(x, ...w.attnLn);
        // MLP block
        const m = this.spec.preLayerNorm ? layerNorm(x, ...w.mlpLn) : x;
        const a = linear(w.fc1[0], m, w.fc1[1]).map((v) => Math.max(0, v));
        x = add(x, linear(w.fc2[0], a, w.fc2[1]));
        if (!this.spec.preLayerNorm) x = layerNorm(x, ...w.mlpLn);
      }
      if (this.finalLn) x = layerNorm(x, ...this.finalLn);
      if (this.projectOut) x = linear(this.projectOut, x, null);
      out.push(linear(this.lmHead, x, null));
    }
    return out;
  }
}

// ---- sampling, exactly as skipdecode.h specifies -----------------------------

const M64 = (1n << 64n) - 1n;

/** splitmix64's finaliser (plan.h skd_mix64). */
export function mix64(z: bigint): bigint {
  z = (z + 0x9e3779b97f4a7c15n) & M64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  return z ^ (z >> 31n);
}

/** The draw for (seed, seq, step): 24 random bits in [0, 1) (plan.h skd_uniform). */
export function uniform(seed: bigint, seq: number, step: number): number {
  const x = mix64(mix64(mix64(seed) ^ BigInt(seq)) ^ BigInt(step));
  return Number(x >> 40n) / 16777216;
}

/** The next token from logits x, per the header's "Sampling" rules. */
export function sampleReference(
  x: ArrayLike<number>,
  o: { temperature: number; topK: number; topP: number; seed: bigint; seq: number; step: number },
): number {
  const V = x.length;
  let best = 0;
  for (let i = 1; i < V; i++) if (x[i]! > x[best]!) best = i;
  if (o.temperature === 0 || o.topK === 1) return best;
  const p = Array.from({ length: V }, (_, i) => Math.fround(Math.exp(Math.fround((x[i]! - x[best]!) * Math.fround(1 / o.temperature)))));
  const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => p[b]! - p[a]! || a - b);
  let kept = o.topK > 0 && o.topK < V ? order.slice(0, o.topK) : order;
  if (o.topP < 1) {
    const mass = kept.reduce((s, i) => s + p[i]!, 0);
    let c = 0;
    let n = 0;
    while (n < kept.length) {
      c += p[kept[n++]!]!;
      if (c >= Math.fround(o.topP) * mass) break;
    }
    kept = kept.slice(0, n);
  }
  kept = kept.slice().sort((a, b) => a - b);
  const r = uniform(o.seed, o.seq, o.step) * kept.reduce((s, i) => s + p[i]!, 0);
  let c = 0;
  for (const i of kept) {
    c += p[i]!;
    if (c > r) return i;
  }
  return kept[kept.length - 1]!;
}

/** This family's reference for the model in `dir` (test/family-checks.ts finds it through Family.reference). */
export function loadReference(dir: string): ReferenceOpt {
  return ReferenceOpt.load(dir);
}
