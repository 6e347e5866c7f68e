/**
 * A GGUF file as a model: its metadata → {@link ModelSpec}, its tensors →
 * the engine's tensor roles, its tokenizer (gguf-tokenizer.ts). Reads the
 * `llama` architecture (Llama 1/2/3, Mistral, SmolLM, … as llama.cpp's
 * converter writes them) and `qwen2`; docs/gguf.md maps every key.
 *
 * Metadata (`A` is the architecture): `A.block_count`, `A.embedding_length`,
 * `A.attention.head_count` (and `_kv`), `A.attention.key_length` (head size;
 * `value_length` and `rope.dimension_count` must equal it), `A.feed_forward_length`,
 * `A.context_length`, `A.attention.layer_norm_rms_epsilon`, `A.rope.freq_base`,
 * `A.rope.scaling.type` + `.factor` (linear; `A.rope.scale_linear` is the old
 * key), the `rope_freqs` tensor (per-pair frequency divisors: llama.cpp's form
 * of Llama 3 scaling), `A.attention.sliding_window`. Per-layer arrays are
 * accepted when every layer has the same value. YaRN and LongRoPE scaling are
 * refused by name.
 *
 * Tensors: `token_embd`, `output_norm`, `output` (absent: tied to the
 * embedding), `blk.N.{attn_norm, attn_q, attn_k, attn_v (or a fused attn_qkv),
 * attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}`, optional biases
 * (q/k/v, output, MLP). llama.cpp's converter permutes the q and k rows of
 * `llama` models to interleaved rotary pairs (GGUF row h·d + 2i + j holds
 * Hugging Face row h·d + j·d/2 + i within each head of size d); they are put
 * back into the rotate-half order the engines use. `qwen2` files keep the
 * rotate-half (NEOX) order and are loaded as they are. A tensor the block does
 * not use is refused by name rather than ignored.
 *
 * Tensors are read one at a time: from a mapped file (GgufOpenOptions.map,
 * what the engine builder uses) as views of the map, each tensor's pages
 * dropped from the resident set once the next is asked for; otherwise copied
 * into a reused buffer (gguf.ts). Either way a tensor yielded is valid until
 * the next is asked for.
 *
 * @module
 */
import { existsSync, statSync } from "node:fs";
import { DType, type DTypeCode, isQuantized, Role } from "../engine/abi.ts";
import type { ModelSpec, RopeSpec } from "./config.ts";
import { GgmlType, ggmlRowBytes, ggmlTypeName, GgufFile, type GgufOpenOptions, GgufType, type GgufTensorInfo } from "./gguf.ts";
import { ggufHasTokenizer, ggufSpecialIds, type GgufTokenizer, tokenizerFromGguf } from "./gguf-tokenizer.ts";
import { ropeInvFreq } from "./llama.ts";
import { fromFloat32, toFloat32 } from "./half.ts";
import type { WeightTensor } from "./weight.ts";

/** Architectures read, and whether llama.cpp's converter permuted their q/k rows. */
const ARCHS = { llama: { permuted: true }, qwen2: { permuted: false } } as const;

/** ggml types the engines load, as engine dtypes (the block types bit for bit: native.ts DType). */
const ENGINE_TYPES: Record<number, DTypeCode> = {
  [GgmlType.F32]: DType.F32,
  [GgmlType.F16]: DType.F16,
  [GgmlType.BF16]: DType.BF16,
  [GgmlType.Q8_0]: DType.Q8_0,
  [GgmlType.Q4_0]: DType.Q4_0,
  [GgmlType.Q5_0]: DType.Q5_0,
  [GgmlType.Q4_K]: DType.Q4_K,
  [GgmlType.Q6_K]: DType.Q6_K,
};

/**
 * The ggml type of an engine dtype.
 *
 * @example
 * ggmlTypeOf(DType.Q4_K); // 12 (GgmlType.Q4_K)
 */
export function ggmlTypeOf(dtype: DTypeCode): number {
  const t = Object.entries(ENGINE_TYPES).find(([, d]) => d === dtype);
  if (!t) throw new Error(`no ggml type for engine dtype ${dtype}`);
  return Number(t[0]);
}

/** The ggml types a GGUF file's tensors may have, by name. */
function supportedGgmlTypes(): string[] {
  return [GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q5_0, GgmlType.Q4_K, GgmlType.Q6_K].map(ggmlTypeName);
}

/** Tensors some converters write that no engine uses (old files' rotary tables). */
const IGNORED = /^blk\.\d+\.attn_rot_embd$/;

/**
 * Whether `path` names a model file (a GGUF file) rather than a model folder:
 * decided by what the path is. A path that does not exist is neither (the
 * folder reader reports it).
 *
 * @example
 * isModelFile("models/llama-q8_0.gguf"); // true
 * isModelFile("models/opt-125m");         // false: a folder
 */
export function isModelFile(path: string): boolean {
  return existsSync(path) && statSync(path).isFile();
}

function fail(f: GgufFile, msg: string): never {
  throw new Error(`gguf: ${f.path}: ${msg}`);
}

/** An integer key that may also be a per-layer array (all layers equal). */
function perLayer(f: GgufFile, key: string, layers: number, dflt?: number): number {
  const kv = f.get(key);
  if (kv && kv.type === GgufType.ARRAY) {
    const xs = f.numbers(key, [GgufType.UINT32, GgufType.INT32, GgufType.UINT64, GgufType.INT64, GgufType.UINT16, GgufType.UINT8])!;
    if (xs.length !== layers) fail(f, `metadata "${key}" lists ${xs.length} values for ${layers} layers`);
    const first = Number(xs[0]);
    if (Array.from(xs as ArrayLike<number | bigint>).some((x) => Number(x) !== first)) {
      fail(f, `metadata "${key}" differs between layers; skipdecode runs every layer with one shape`);
    }
    if (!(first >= 1)) fail(f, `metadata "${key}" must be >= 1, got ${first}`);
    return first;
  }
  return f.int(key, dflt, 1, 1 << 30);
}

function ropeSpec(f: GgufFile, a: string, headDim: number): RopeSpec {
  const theta = f.float(`${a}.rope.freq_base`, 10000);
  if (!(theta > 0)) fail(f, `metadata "${a}.rope.freq_base" must be > 0, got ${theta}`);
  const type = f.string(`${a}.rope.scaling.type`, "linear");
  const factor = f.get(`${a}.rope.scaling.factor`) ? f.float(`${a}.rope.scaling.factor`) : f.float(`${a}.rope.scale_linear`, 0);
  let scaling: RopeSpec["scaling"] = null;
  if (type === "linear") {
    if (factor < 0) fail(f, `rope scaling factor must be > 0, got ${factor}`);
    if (factor !== 0 && factor !== 1) scaling = { type: "linear", factor };
  } else if (type !== "none") {
    fail(f, `rope scaling type "${type}" is not supported (skipdecode reads "linear", "none" and the rope_freqs tensor)`);
  }
  const freqs = f.tensors.get("rope_freqs.weight");
  if (freqs) {
    if (scaling) fail(f, "both a linear rope scaling factor and a rope_freqs tensor: skipdecode reads one or the other");
    if (freqs.type !== GgmlType.F32 || freqs.shape.length !== 1 || freqs.shape[0] !== headDim / 2) {
      fail(f, `tensor "rope_freqs.weight" must be F32 of shape [${headDim / 2}], got ${ggmlTypeName(freqs.type)} [${freqs.shape.join(", ")}]`);
    }
    const factors = Array.from(toFloat32(f.read("rope_freqs.weight"), "F32"));
    const bad = factors.findIndex((x) => !(x > 0 && Number.isFinite(x)));
    if (bad >= 0) fail(f, `tensor "rope_freqs.weight" element ${bad} is ${factors[bad]}; frequency divisors must be finite and > 0`);
    scaling = { type: "factors", factors };
  }
  return { theta, scaling };
}

/**
 * The model spec of an opened GGUF file (module comment); throws naming the
 * key or tensor that is missing or wrong.
 *
 * @example
 * using f = GgufFile.open("model.gguf");
 * ggufSpec(f).numKvHeads;
 */
export function ggufSpec(f: GgufFile): ModelSpec {
  const arch = f.string("general.architecture");
  if (!(arch in ARCHS)) fail(f, `architecture "${arch}" is not supported (skipdecode reads ${Object.keys(ARCHS).map((x) => `"${x}"`).join(" and ")})`);
  const a = arch as keyof typeof ARCHS;
  const numLayers = f.int(`${a}.block_count`, undefined, 1, 1 << 16);
  const hiddenSize = f.int(`${a}.embedding_length`, undefined, 1, 1 << 20);
  const numHeads = perLayer(f, `${a}.attention.head_count`, numLayers);
  const numKvHeads = perLayer(f, `${a}.attention.head_count_kv`, numLayers, numHeads);
  if (numHeads % numKvHeads !== 0) fail(f, `${numKvHeads} KV heads do not divide ${numHeads} heads`);
  if (!f.get(`${a}.attention.key_length`) && hiddenSize % numHeads !== 0) fail(f, `embedding_length ${hiddenSize} is not a multiple of ${numHeads} heads and key_length is not given`);
  const headDim = f.int(`${a}.attention.key_length`, hiddenSize / numHeads, 1, 1 << 16);
  const vDim = f.int(`${a}.attention.value_length`, headDim, 1, 1 << 16);
  if (vDim !== headDim) fail(f, `value_length ${vDim} differs from key_length ${headDim}; skipdecode needs one head size`);
  const rot = f.int(`${a}.rope.dimension_count`, headDim, 0, 1 << 16);
  if (rot !== headDim) fail(f, `rope.dimension_count ${rot} differs from the head size ${headDim}; partial rotary is not supported`);
  if (headDim % 2 !== 0) fail(f, `head size ${headDim} must be even for rotary positions`);
  const ffnDim = perLayer(f, `${a}.feed_forward_length`, numLayers);
  const emb = f.tensors.get("token_embd.weight");
  if (!emb) fail(f, `no tensor "token_embd.weight"`);
  if (emb.shape.length !== 2 || emb.shape[1] !== hiddenSize) fail(f, `tensor "token_embd.weight" has shape [${emb.shape.join(", ")}], expected [vocab, ${hiddenSize}]`);
  const vocabSize = emb.shape[0]!;
  if (f.get(`${a}.vocab_size`)) {
    const v = f.int(`${a}.vocab_size`);
    if (v !== vocabSize) fail(f, `${a}.vocab_size is ${v} but token_embd.weight has ${vocabSize} rows`);
  }
  const ids = ggufHasTokenizer(f) ? ggufSpecialIds(f) : null;
  const tokens = f.get("tokenizer.ggml.tokens")?.length;
  if (tokens !== undefined && tokens > vocabSize) fail(f, `the vocabulary has ${tokens} tokens but token_embd.weight only ${vocabSize} rows`);
  const has = (n: string) => f.tensors.has(n);
  const window = f.get(`${a}.attention.sliding_window`) ? f.int(`${a}.attention.sliding_window`, undefined, 1) : null;
  const eos = ids?.eosIds ?? [f.int("tokenizer.ggml.eos_token_id", 2)];
  return {
    arch: a,
    numLayers,
    hiddenSize,
    numHeads,
    numKvHeads,
    headDim,
    ffnDim,
    vocabSize,
    maxPositions: f.int(`${a}.context_length`, undefined, 1),
    wordEmbedProjDim: hiddenSize,
    preLayerNorm: true,
    finalLayerNorm: true,
    positionOffset: 0,
    norm: "rmsnorm",
    normEps: f.float(`${a}.attention.layer_norm_rms_epsilon`),
    positions: "rotary",
    rope: ropeSpec(f, a, headDim),
    mlp: "swiglu",
    activation: "silu",
    biases: {
      qkv: has("blk.0.attn_q.bias") || has("blk.0.attn_qkv.bias"),
      o: has("blk.0.attn_output.bias"),
      mlp: has("blk.0.ffn_up.bias") || has("blk.0.ffn_gate.bias") || has("blk.0.ffn_down.bias"),
      norm: false,
    },
    slidingWindow: window,
    tieWordEmbeddings: !has("output.weight"),
    enableBias: false,
    layerNormAffine: true,
    bosTokenId: ids ? ids.bosId : null,
    eosTokenId: eos[0]!,
    eosTokenIds: eos,
    padTokenId: f.get("tokenizer.ggml.padding_token_id") ? f.int("tokenizer.ggml.padding_token_id") : null,
    torchDtype: null,
  };
}

/** Rows of a permuted q/k matrix (or bias) back to rotate-half order, per head. */
function unpermuteRows(src: Uint8Array, dst: Uint8Array, rows: number, rowBytes: number, heads: number): Uint8Array {
  const hd = rows / heads;
  const half = hd / 2;
  const out = dst.subarray(0, src.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const from = h * hd + 2 * i + j; // GGUF (interleaved pairs)
        const to = h * hd + j * half + i; // rotate-half
        out.set(src.subarray(from * rowBytes, (from + 1) * rowBytes), to * rowBytes);
      }
    }
  }
  return out;
}

/**
 * Every tensor the engine needs, in load order, from an opened GGUF file.
 * Each yielded tensor's bytes live in a buffer reused for the next one.
 *
 * @example
 * for (const t of ggufWeights(spec, f)) engine.setTensor(t.role, t.layer, t.dtype, t.data, numel(t.shape));
 */
export function* ggufWeights(spec: ModelSpec, f: GgufFile): Generator<WeightTensor> {
  const a = spec.arch as keyof typeof ARCHS;
  if (!(a in ARCHS)) fail(f, `architecture "${spec.arch}" is not a GGUF architecture skipdecode reads`);
  const permuted = ARCHS[a].permuted;
  const d = spec.hiddenSize, ff = spec.ffnDim, qd = spec.numHeads * spec.headDim, kd = spec.numKvHeads * spec.headDim;
  const fused = f.tensors.has("blk.0.attn_qkv.weight");
  const b = spec.biases;

  // the whole plan first: a missing or unused tensor is reported before anything loads
  type Item = { name: string; role: number; layer: number; shape: number[]; heads?: number; slice?: [number, number] };
  const plan: Item[] = [];
  const used = new Set<string>(["rope_freqs.weight"]);
  const want = (name: string, role: number, layer: number, shape: number[], more: Partial<Item> = {}) => {
    plan.push({ name, role, layer, shape, ...more });
    used.add(name);
  };
  want("token_embd.weight", Role.EMBED_TOKENS, -1, [spec.vocabSize, d]);
  want("output_norm.weight", Role.FINAL_LN_W, -1, [d]);
  want(spec.tieWordEmbeddings ? "token_embd.weight" : "output.weight", Role.LM_HEAD, -1, [spec.vocabSize, d]);
  for (let l = 0; l < spec.numLayers; l++) {
    const p = `blk.${l}.`;
    want(`${p}attn_norm.weight`, Role.ATTN_LN_W, l, [d]);
    const qkv: [string, number, number, number, number | undefined, number][] = [
      ["attn_q", Role.Q_W, Role.Q_B, qd, permuted ? spec.numHeads : undefined, 0],
      ["attn_k", Role.K_W, Role.K_B, kd, permuted ? spec.numKvHeads : undefined, qd],
      ["attn_v", Role.V_W, Role.V_B, kd, undefined, qd + kd],
    ];
    for (const [name, rw, rb, rows, heads, start] of qkv) {
      if (fused) {
        want(`${p}attn_qkv.weight`, rw, l, [qd + 2 * kd, d], { heads, slice: [start, rows] });
        if (b.qkv) want(`${p}attn_qkv.bias`, rb, l, [qd + 2 * kd], { heads, slice: [start, rows] });
      } else {
        want(`${p}${name}.weight`, rw, l, [rows, d], { heads });
        if (b.qkv) want(`${p}${name}.bias`, rb, l, [rows], { heads });
      }
    }
    want(`${p}attn_output.weight`, Role.O_W, l, [d, qd]);
    if (b.o) want(`${p}attn_output.bias`, Role.O_B, l, [d]);
    want(`${p}ffn_norm.weight`, Role.MLP_LN_W, l, [d]);
    const mlp: [string, number, number, number, number][] = [
      ["ffn_gate", Role.GATE_W, Role.GATE_B, ff, d],
      ["ffn_up", Role.FC1_W, Role.FC1_B, ff, d],
      ["ffn_down", Role.FC2_W, Role.FC2_B, d, ff],
    ];
    for (const [name, rw, rb, rows, cols] of mlp) {
      want(`${p}${name}.weight`, rw, l, [rows, cols]);
      if (b.mlp) want(`${p}${name}.bias`, rb, l, [rows]);
    }
  }
  for (const it of plan) {
    const t = f.tensors.get(it.name);
    if (!t) fail(f, `missing tensor "${it.name}"`);
    if (t.shape.length !== it.shape.length || t.shape.some((v, i) => v !== it.shape[i])) {
      fail(f, `tensor "${it.name}" has shape [${t.shape.join(", ")}], expected [${it.shape.join(", ")}] from the metadata`);
    }
    const dt = ENGINE_TYPES[t.type];
    if (dt === undefined) fail(f, `tensor "${it.name}" has type ${ggmlTypeName(t.type)}; skipdecode loads ${supportedGgmlTypes().join(", ")}`);
    if (isQuantized(dt) && it.shape.length !== 2) {
      fail(f, `tensor "${it.name}" is a vector stored as ${ggmlTypeName(t.type)}; skipdecode loads vectors as F32, F16 or BF16`);
    }
  }
  const unused = [...f.tensors.keys()].filter((n) => !used.has(n) && !IGNORED.test(n));
  if (unused.length) {
    fail(f, `tensor${unused.length > 1 ? "s" : ""} ${unused.slice(0, 5).map((n) => `"${n}"`).join(", ")}${unused.length > 5 ? ", …" : ""} not used by skipdecode's ${a} block (refused rather than ignored)`);
  }

  const rope = ropeInvFreq(spec.headDim, spec.rope!);
  yield {
    name: `rotary inv_freq (rope.freq_base ${spec.rope!.theta}${spec.rope!.scaling ? `, ${spec.rope!.scaling.type} scaling` : ""})`,
    role: Role.ROPE_INV_FREQ,
    layer: -1,
    shape: [rope.length],
    dtype: DType.F32,
    data: fromFloat32(rope, "F32"),
    exact: true,
  };
  // unmapped: one buffer for the largest tensor; and one for the largest permuted one: a load's memory beyond the engine's copy
  const size = (its: Item[]) => Math.max(0, ...its.map((it) => f.tensors.get(it.name)!.nbytes));
  const buf = f.mapped ? null : new Uint8Array(size(plan));
  const permBuf = new Uint8Array(size(plan.filter((it) => it.heads)));
  let have = "";
  let whole: Uint8Array = new Uint8Array(0);
  for (const it of plan) {
    const t: GgufTensorInfo = f.tensors.get(it.name)!;
    if (have !== it.name) {
      // the fused qkv tensor is read once for its three parts
      if (have) f.done(have);
      whole = buf ? f.read(it.name, buf) : f.read(it.name);
      have = it.name;
    }
    const cols = t.shape.length === 2 ? t.shape[1]! : 1;
    const rowBytes = ggmlRowBytes(t.type, cols);
    let data = it.slice ? whole.subarray(it.slice[0] * rowBytes, (it.slice[0] + it.slice[1]) * rowBytes) : whole;
    const rows = it.slice ? it.slice[1] : t.shape[0]!;
    if (it.heads) data = unpermuteRows(data, permBuf, rows, rowBytes, it.heads);
    const shape = it.slice ? (t.shape.length === 2 ? [rows, cols] : [rows]) : t.shape;
    yield {
      name: it.slice ? `${it.name} rows [${it.slice[0]}, ${it.slice[0] + it.slice[1]})` : it.role === Role.LM_HEAD && spec.tieWordEmbeddings ? `${it.name} (tied LM head)` : it.name,
      role: it.role,
      layer: it.layer,
      shape,
      dtype: ENGINE_TYPES[t.type]!,
      data,
    };
  }
  if (have) f.done(have);
}

/** A GGUF file's spec and tokenizer, its header read once (see {@link openGgufModel}). */
export interface GgufModel {
  spec: ModelSpec;
  /** Builds the tokenizer (null when the file has none) from the metadata already read. */
  tokenizer(): GgufTokenizer | null;
}

/**
 * Reads a GGUF model file's metadata: the spec now, the tokenizer when asked
 * (so it can be built while the engine thread reads the tensors: {@link ggufWeights}).
 *
 * @example
 * const m = openGgufModel("model.gguf");
 * m.spec.numLayers;
 * m.tokenizer()?.tokenizer.encode("Hello");
 */
export function openGgufModel(path: string, opts: GgufOpenOptions = {}): GgufModel {
  let file: GgufFile;
  try {
    file = GgufFile.open(path, opts);
  } catch (e) {
    const msg = (e as Error).message;
    // a file of another kind (a safetensors file, a config.json): say what a model path may be
    throw msg.includes("not a GGUF file") ? new Error(`${msg}; a model is a Hugging Face model folder or a GGUF file`) : e;
  }
  using f = file;
  const spec = ggufSpec(f);
  return { spec, tokenizer: () => tokenizerFromGguf(f) }; // metadata stays readable after close
}
