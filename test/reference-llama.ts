/**
 * The LLaMA-family reference (llama, mistral, qwen2): a plain float64 forward
 * pass of Hugging Face's LlamaModel with SkipDecode's budgets, written from
 * the model's definition, sharing nothing with the engine or lib/ but the
 * safetensors reader and config parsing (its rotary frequencies are computed
 * here, independently of lib/checkpoint/llama.ts).
 *
 *   x = embed[id]
 *   per computed layer: a = rms(x)·g1; q, k, v = Wq a (+bq), Wk a (+bk), Wv a (+bv)
 *     q, k rotated: (x_i, x_{i+hd/2}) → (x_i cos θ − x_{i+hd/2} sin θ, x_{i+hd/2} cos θ + x_i sin θ),
 *     θ = position · inv_freq_i
 *     query head h attends with KV head ⌊h / (H / KVH)⌋, scores · hd^-1/2
 *     x += Wo att;  m = rms(x)·g2;  x += Wdown(silu(Wgate m) ⊙ Wup m)
 *   logits = lm_head(rms(x)·g)
 */
import { readModelSpec, type ModelSpec } from "../lib/checkpoint/config.ts";
import { CheckpointTensors } from "../lib/checkpoint/safetensors.ts";
import { toFloat32 } from "../lib/checkpoint/half.ts";
import { add, layerActive, linear, type Mat, type Vec } from "./reference.ts";

// x / sqrt(mean(x²) + eps) · g
function rmsNorm(x: Vec, g: Vec, eps: number): Vec {
  let ss = 0;
  for (const v of x) ss += v * v;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * inv * g[i]!);
}

/** inv_freq of each rotary pair, with the config's scaling (Hugging Face's rope init functions). */
export function referenceInvFreq(spec: ModelSpec): number[] {
  const hd = spec.headDim;
  const rope = spec.rope!;
  const out: number[] = [];
  for (let j = 0; j < hd; j += 2) {
    const base = 1 / Math.pow(rope.theta, j / hd);
    const s = rope.scaling;
    if (!s) out.push(base);
    else if (s.type === "linear") out.push(base / s.factor);
    else {
      // llama3: wavelengths longer than original/low are slowed by factor, shorter than
      // original/high kept, and those between blended by smooth = (original/wavelen − low)/(high − low)
      const wavelen = (2 * Math.PI) / base;
      if (wavelen < s.originalMaxPositions / s.highFreqFactor) out.push(base);
      else if (wavelen > s.originalMaxPositions / s.lowFreqFactor) out.push(base / s.factor);
      else {
        const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        out.push((1 - smooth) * (base / s.factor) + smooth * base);
      }
    }
  }
  return out;
}

interface Layer {
  inNorm: Vec;
  q: [Mat, Vec | null];
  k: [Mat, Vec | null];
  v: [Mat, Vec | null];
  o: [Mat, Vec | null];
  postNorm: Vec;
  gate: Mat;
  up: Mat;
  down: Mat;
}

/** Float64 LLaMA-family model with per-token layer budgets. */
export class ReferenceLlama {
  readonly spec: ModelSpec;
  readonly embed: Mat;
  readonly norm: Vec;
  readonly lmHead: Mat;
  readonly layers: Layer[] = [];
  readonly invFreq: number[];

  private constructor(spec: ModelSpec, get: (name: string) => Mat | null) {
    this.spec = spec;
    const need = (name: string): Mat => {
      const m = get(name);
      if (!m) throw new Error(`reference: missing ${name}`);
      return m;
    };
    this.embed = need("model.embed_tokens.weight");
    this.norm = need("model.norm.weight").data;
    this.lmHead = get("lm_head.weight") ?? this.embed;
    this.invFreq = referenceInvFreq(spec);
    for (let l = 0; l < spec.numLayers; l++) {
      const q = `model.layers.${l}.`;
      const lin = (n: string): [Mat, Vec | null] => [need(`${q}${n}.weight`), get(`${q}${n}.bias`)?.data ?? null];
      this.layers.push({
        inNorm: need(`${q}input_layernorm.weight`).data,
        q: lin("self_attn.q_proj"),
        k: lin("self_attn.k_proj"),
        v: lin("self_attn.v_proj"),
        o: lin("self_attn.o_proj"),
        postNorm: need(`${q}post_attention_layernorm.weight`).data,
        gate: need(`${q}mlp.gate_proj.weight`),
        up: need(`${q}mlp.up_proj.weight`),
        down: need(`${q}mlp.down_proj.weight`),
      });
    }
  }

  static load(dir: string): ReferenceLlama {
    const spec = readModelSpec(dir);
    const ckpt = CheckpointTensors.open(dir);
    try {
      const get = (name: string): Mat | null => {
        if (!ckpt.has(name)) return null;
        const info = ckpt.info(name);
        const f = toFloat32(ckpt.read(name), info.dtype);
        return { rows: info.shape[0]!, cols: info.shape.length > 1 ? info.shape[1]! : 1, data: Float64Array.from(f) };
      };
      return new ReferenceLlama(spec, get);
    } finally {
      ckpt.close();
    }
  }

  /** Rotates each head of x (heads × hd) to position t. */
  private rotate(x: Vec, heads: number, t: number): Vec {
    const hd = this.spec.headDim, half = hd / 2;
    const out = Float64Array.from(x);
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < half; i++) {
        const a = x[h * hd + i]!, b = x[h * hd + i + half]!;
        const th = t * this.invFreq[i]!;
        out[h * hd + i] = a * Math.cos(th) - b * Math.sin(th);
        out[h * hd + i + half] = b * Math.cos(th) + a * Math.sin(th);
      }
    }
    return out;
  }

  /** Teacher-forced logits, as ReferenceOpt.forward. */
  forward(ids: number[], budgets: number[], warmup: number): Float64Array[] {
    const { numLayers: L, numHeads: H, numKvHeads: KVH, headDim: hd, normEps: eps } = this.spec;
    const group = H / KVH;
    const keys: (Vec | undefined)[][] = Array.from({ length: L }, () => []);
    const values: (Vec | undefined)[][] = Array.from({ length: L }, () => []);
    const out: Float64Array[] = [];
    for (let t = 0; t < ids.length; t++) {
      let x: Vec = Float64Array.from(this.embed.data.subarray(ids[t]! * this.embed.cols, (ids[t]! + 1) * this.embed.cols));
      for (let l = 0; l < L; l++) {
        if (!layerActive(l, L, budgets[t]!, warmup)) continue;
        const w = this.layers[l]!;
        const a = rmsNorm(x, w.inNorm, eps);
        const q = this.rotate(linear(w.q[0], a, w.q[1]), H, t);
        keys[l]![t] = this.rotate(linear(w.k[0], a, w.k[1]), KVH, t);
        values[l]![t] = linear(w.v[0], a, w.v[1]);
        for (let s = 0; s < t; s++) {
          if (!keys[l]![s]) throw new Error(`reference: position ${t} computes layer ${l}, which position ${s} skipped`);
        }
        const att = new Float64Array(H * hd);
        for (let head = 0; head < H; head++) {
          const qo = head * hd, ko = Math.floor(head / group) * hd;
          const scores = new Float64Array(t + 1);
          for (let s = 0; s <= t; s++) {
            let dot = 0;
            for (let i = 0; i < hd; i++) dot += q[qo + i]! * keys[l]![s]![ko + i]!;
            scores[s] = dot / Math.sqrt(hd);
          }
          const mx = Math.max(...scores);
          let sum = 0;
          for (let s = 0; s <= t; s++) sum += scores[s] = Math.exp(scores[s]! - mx);
          for (let s = 0; s <= t; s++) {
            for (let i = 0; i < hd; i++) att[qo + i] += (scores[s]! / sum) * values[l]![s]![ko + i]!;
          }
        }
        x = add(x, linear(w.o[0], att, w.o[1]));
        const m = rmsNorm(x, w.postNorm, eps);
        const g = linear(w.gate, m, null), u = linear(w.up, m, null);
        x = add(x, linear(w.down, g.map((v, i) => (v / (1 + Math.exp(-v))) * u[i]!), null));
      }
      out.push(linear(this.lmHead, rmsNorm(x, this.norm, eps), null));
    }
    return out;
  }
}

/** This family's reference for the model in `dir` (test/family-checks.ts finds it through Family.reference). */
export function loadReference(dir: string): ReferenceLlama {
  return ReferenceLlama.load(dir);
}
