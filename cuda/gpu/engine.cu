/* engine.cu — the CUDA engine's life cycle: create (device memory for weights,
 * KV cache and scratch), set_tensor (upload + convert to the compute dtype),
 * finalize, weight_bytes, reset_slot, slot_info, free. The forward pass is in
 * step.cu.
 *
 * Compute dtype: cfg[SKD_CFG_COMPUTE_DTYPE] = SKD_DTYPE_F16 or SKD_DTYPE_BF16;
 * 0 picks F16 (OPT checkpoints are fp16; weights of any dtype are converted at
 * upload, rounding to nearest even). The choice is made at create because
 * every buffer is allocated there. Quantized tensors (Q8_0, Q4_0, Q4_K, Q6_K)
 * are dequantized to fp32 in host code by the shared reference (quant_ref.h,
 * which the CPU tests check against an independent decoder) and then uploaded
 * as fp32 tensors are: there are no quantized CUDA kernels yet, so the device
 * holds and reads 2 bytes per weight whatever the file (the load summary says so).
 *
 * Device memory (all allocated at create, so a step never allocates):
 *   weights   one arena, compute dtype; q/k/v fused into qkv_w [3d, d] per layer
 *   KV cache  k, v: [max_slots][L][max_seq][d] each, compute dtype
 *   scratch   one arena for MAX_ROWS rows (see engine.cuh); the LM head writes
 *             logit_chunk = min(MAX_ROWS, 256) rows of logits at a time, which
 *             go to the host (rows wanting logits) and to the sampler (rows
 *             sampling) from there
 *   split-K   workspaces of the tensor-core skinny GEMM and of split attention
 *
 * Kernel variants, chosen at create from the environment (a bad value fails
 * the create with a message naming the variable):
 *   SKIPDECODE_CUDA_GEMM=simt|tc      tc: tensor-core GEMMs (gemm_tc.cu)
 *   SKIPDECODE_CUDA_ATTN=simple|split|tiled
 *                                     split: split-K decode attention; tiled: that, and
 *                                     steps of >= 65 rows (prefill) on the flash-style tiled kernel
 *   SKIPDECODE_CUDA_GRAPHS=0|1        1: replay repeated steps from CUDA graphs (graphs.cu)
 * and dev knobs with which cuda/dev/parity.c reaches every path on small models:
 *   SKIPDECODE_CUDA_GRAPHS=always     capture a step's shape the first time, not the second
 *   SKIPDECODE_CUDA_TILE_FROM=n       m >= n takes the tiled GEMM (default 33)
 *   SKIPDECODE_CUDA_ATTN_CHUNK=n      keys per split-attention chunk (default 256)
 *   SKIPDECODE_CUDA_TILED_FROM=n      rows from which a step's attention is tiled (default 65)
 * A new kernel ships behind its switch with the verified kernel as default;
 * a GPU run that proves its parity with the CPU engine (cuda/dev/parity.c,
 * bench/gpu.sh; recorded in bench/RESULTS.md) is what makes it the default.
 */
#include <stdlib.h>
#include <string.h>

#include "convert.cuh"
#include "engine.cuh"
#include "attention.cuh"
#include "quant_ref.h"

#define STAGE_BYTES ((size_t)32 << 20) /* device staging for dtype conversion */
#define LOGIT_CHUNK 256                /* rows of logits computed per LM-head GEMM */

static size_t round_up(size_t n) { return (n + 255) & ~(size_t)255; }

/* The defaults of the kernel switches: the variants a GPU run has verified. */
#define DEFAULT_GEMM "simt"
#define DEFAULT_ATTN "simple"
#define DEFAULT_GRAPHS "0"

/* *out = index of the environment variable's value (or dflt) in choices. */
static int env_choice(const char *name, const char *dflt, const char *const *choices, int n, int *out) {
    const char *v = getenv(name);
    if (!v || !*v) v = dflt;
    for (int i = 0; i < n; i++)
        if (!strcmp(v, choices[i])) {
            *out = i;
            return SKD_OK;
        }
    char list[96] = "";
    for (int i = 0; i < n; i++) {
        strncat(list, i ? "|" : "", sizeof list - strlen(list) - 1);
        strncat(list, choices[i], sizeof list - strlen(list) - 1);
    }
    return skd_fail(SKD_ERR_INVALID_ARG, "%s=\"%s\": expected one of %s", name, v, list);
}

/* A dev knob: an integer environment variable in lo..hi, or dflt when unset. */
static int env_int(const char *name, int dflt, int lo, int hi, int *out) {
    const char *v = getenv(name);
    *out = dflt;
    if (!v || !*v) return SKD_OK;
    char *end;
    const long x = strtol(v, &end, 10);
    if (*end || x < lo || x > hi)
        return skd_fail(SKD_ERR_INVALID_ARG, "%s=\"%s\": expected an integer in %d..%d", name, v, lo, hi);
    *out = (int)x;
    return SKD_OK;
}

/* Lays the weights out from `base` (0 for a sizing pass); returns the arena size.
 * Tensors the model lacks (biases, positions, gate) get no space and stay NULL. */
static size_t layout_weights(skd_engine *e, uintptr_t base) {
    const skd_shape *s = &e->s;
    const size_t d = s->d, de = s->embed_dim, f = s->ffn, V = s->vocab, P = (size_t)s->max_pos + s->pos_offset;
    const size_t qkv = (size_t)s->q_dim + 2 * (size_t)s->kv_dim, up = s->mlp == SKD_MLP_SWIGLU ? 2 * f : f;
    const int b_qkv = skd_has_bias(s, SKD_BIAS_QKV), b_o = skd_has_bias(s, SKD_BIAS_O);
    const int b_mlp = skd_has_bias(s, SKD_BIAS_MLP), b_norm = skd_has_bias(s, SKD_BIAS_NORM);
    const size_t es = 2; /* sizeof a compute-dtype element */
    size_t off = 0;
#define PLACE_IF(cond, ptr, bytes)                                 \
    do {                                                           \
        (ptr) = NULL;                                              \
        if (cond) {                                                \
            (ptr) = (void *)(base + off);                          \
            off += round_up((size_t)(bytes));                      \
        }                                                          \
    } while (0)
#define PLACE(ptr, elems) PLACE_IF(1, ptr, (size_t)(elems) * es)
    PLACE(e->embed_tokens, V * de);
    PLACE_IF(s->positions == SKD_POS_LEARNED, e->embed_positions, P * d * es);
    void *rope = NULL;
    PLACE_IF(s->positions == SKD_POS_ROTARY, rope, (size_t)s->head_dim / 2 * sizeof(float));
    e->rope_inv_freq = (float *)rope;
    PLACE_IF(de != d, e->project_in, d * de * es);
    PLACE_IF(de != d, e->project_out, de * d * es);
    PLACE_IF(s->final_ln, e->final_ln_w, d * es);
    PLACE_IF(s->final_ln && b_norm, e->final_ln_b, d * es);
    PLACE(e->lm_head, V * de);
    for (int l = 0; l < s->n_layers; l++) {
        skd_gpu_layer *w = &e->layers[l];
        PLACE(w->attn_ln_w, d);
        PLACE_IF(b_norm, w->attn_ln_b, d * es);
        PLACE(w->qkv_w, qkv * d);
        PLACE_IF(b_qkv, w->qkv_b, qkv * es);
        PLACE(w->o_w, d * s->q_dim);
        PLACE_IF(b_o, w->o_b, d * es);
        PLACE(w->mlp_ln_w, d);
        PLACE_IF(b_norm, w->mlp_ln_b, d * es);
        PLACE(w->fc1_w, up * d);
        PLACE_IF(b_mlp, w->fc1_b, up * es);
        PLACE(w->fc2_w, d * f);
        PLACE_IF(b_mlp, w->fc2_b, d * es);
    }
#undef PLACE
#undef PLACE_IF
    return off;
}

/* Lays the scratch arena out from `base` (0 for a sizing pass); returns its size. */
static size_t layout_scratch(skd_engine *e, uintptr_t base) {
    const skd_shape *s = &e->s;
    const size_t R = s->max_rows, d = s->d, de = s->embed_dim, f = s->ffn;
    const size_t qkv = (size_t)s->q_dim + 2 * (size_t)s->kv_dim;
    size_t off = 0;
#define PLACE(ptr, type, bytes)                \
    do {                                       \
        (ptr) = (type)(void *)(base + off);    \
        off += round_up((size_t)(bytes));      \
    } while (0)
    PLACE(e->h, float *, R * d * sizeof(float));
    PLACE(e->xn, void *, R * d * 2);
    PLACE(e->qkv, void *, R * qkv * 2);
    PLACE(e->att, void *, R * (size_t)s->q_dim * 2);
    PLACE(e->ff, void *, R * f * 2);
    PLACE(e->gu, void *, s->mlp == SKD_MLP_SWIGLU ? R * 2 * f * 2 : 0);
    PLACE(e->rope, float *, s->positions == SKD_POS_ROTARY ? R * (size_t)s->head_dim * sizeof(float) : 0);
    PLACE(e->xe, void *, R * de * 2);
    PLACE(e->logits_dev, float *, (size_t)e->logit_chunk * s->vocab * sizeof(float));
    PLACE(e->idx_dev, int32_t *, skd_gpu_upload_bytes(s->n_layers, R));
    PLACE(e->tok_dev, int32_t *, R * sizeof(int32_t));
#undef PLACE
    return off;
}

/* cudaMalloc with a message that says what was being allocated. */
static int device_alloc(void **p, size_t bytes, const char *what) {
    const cudaError_t err = cudaMalloc(p, bytes);
    if (err == cudaSuccess) return SKD_OK;
    *p = NULL;
    (void)cudaGetLastError();
    return skd_fail(err == cudaErrorMemoryAllocation ? SKD_ERR_OUT_OF_MEMORY : SKD_ERR_DEVICE,
                    "allocating %s (%zu MiB) on the GPU failed: %s", what, bytes >> 20, cudaGetErrorString(err));
}

/* Reads the kernel switches and allocates what the chosen variants need. */
static int configure_variants(skd_engine *e) {
    const skd_shape *s = &e->s;
    static const char *const gemm_kinds[] = { "simt", "tc" }, *const attn_kinds[] = { "simple", "split", "tiled" },
                             *const graph_kinds[] = { "0", "1", "always" };
    int gemm = 0, attn = 0, graphs = 0, st;
    if ((st = env_choice("SKIPDECODE_CUDA_GEMM", DEFAULT_GEMM, gemm_kinds, 2, &gemm))) return st;
    if ((st = env_choice("SKIPDECODE_CUDA_ATTN", DEFAULT_ATTN, attn_kinds, 3, &attn))) return st;
    if ((st = env_choice("SKIPDECODE_CUDA_GRAPHS", DEFAULT_GRAPHS, graph_kinds, 3, &graphs))) return st;
    int chunk, tiled_from;
    if ((st = env_int("SKIPDECODE_CUDA_TILED_FROM", 65, 1, 1 << 30, &tiled_from))) return st;
    if ((st = env_int("SKIPDECODE_CUDA_TILE_FROM", SKD_TC_SKINNY_M + 1, 1, SKD_TC_SKINNY_M + 1, &e->gemm.tile_from))) return st;
    if ((st = env_int("SKIPDECODE_CUDA_ATTN_CHUNK", 256, 1, 1 << 20, &chunk))) return st;
    char what[160];

    e->gemm.tensor_cores = gemm;
    if (gemm) {
        if ((st = skd_gemm_tc_init())) return st;
        int sms = 0;
        SKD_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, e->device));
        e->gemm.target_blocks = 2 * (sms > 0 ? sms : 1);
        /* split-K partials: splits × m × n for the largest n that splits */
        size_t n_max = (size_t)s->q_dim + 2 * (size_t)s->kv_dim;
        const size_t others[] = { (size_t)s->ffn * (s->mlp == SKD_MLP_SWIGLU ? 2 : 1), (size_t)s->vocab, (size_t)s->embed_dim,
                                  (size_t)s->d };
        for (size_t i = 0; i < 4; i++) n_max = others[i] > n_max ? others[i] : n_max;
        if (n_max > SKD_TC_SPLIT_MAX_N) n_max = SKD_TC_SPLIT_MAX_N;
        const size_t m_max = s->max_rows < SKD_TC_SKINNY_M ? (size_t)s->max_rows : SKD_TC_SKINNY_M;
        if ((st = device_alloc((void **)&e->gemm.part, SKD_TC_MAX_SPLITS * m_max * n_max * sizeof(float),
                               "the split-K GEMM workspace")))
            return st;
        if ((st = device_alloc((void **)&e->gemm.count, SKD_TC_MAX_COUNTERS * sizeof(int), "the split-K GEMM counters")))
            return st;
        SKD_CUDA_TRY(cudaMemsetAsync(e->gemm.count, 0, SKD_TC_MAX_COUNTERS * sizeof(int), e->stream));
    }

    e->attn.splits = 1;
    e->attn.tiled_from = attn == 2 ? tiled_from : 0;
    if (attn) {
        int splits = (s->max_seq + chunk - 1) / chunk;
        if (splits > 32) splits = 32;
        if (splits > 1) {
            e->attn.splits = splits;
            e->attn.chunk = (s->max_seq + splits - 1) / splits;
            e->attn.max_rows = s->max_rows < 64 ? s->max_rows : 64;
            const size_t rh = (size_t)e->attn.max_rows * s->n_heads;
            snprintf(what, sizeof what, "the split attention workspace (%d rows x %d heads x %d chunks)", e->attn.max_rows,
                     s->n_heads, splits);
            if ((st = device_alloc((void **)&e->attn.part, rh * splits * (s->head_dim + 2) * sizeof(float), what))) return st;
            if ((st = device_alloc((void **)&e->attn.count, rh * sizeof(int), "the split attention counters"))) return st;
            SKD_CUDA_TRY(cudaMemsetAsync(e->attn.count, 0, rh * sizeof(int), e->stream));
        }
    }

    if ((st = skd_graph_cache_init(&e->graphs, graphs, 4 + s->n_layers))) return st; /* key: step.cu */
    SKD_CUDA_TRY(cudaStreamSynchronize(e->stream));
    return SKD_OK;
}

static int create_on_device(skd_engine *e) {
    const skd_shape *s = &e->s;
    const int L = s->n_layers;
    e->layers = (skd_gpu_layer *)calloc((size_t)L, sizeof(skd_gpu_layer));
    e->have = (uint8_t *)calloc((size_t)(L + 1) * SKD_GPU_N_ROLES, 1);
    e->slots = (skd_slot *)calloc((size_t)s->max_slots, sizeof(skd_slot));
    e->kv_len = (int32_t *)calloc((size_t)s->max_slots * L, sizeof(int32_t));
    e->plan_scratch = (int32_t *)calloc((size_t)s->max_slots * (L + 2), sizeof(int32_t));
    e->layer_m = (int32_t *)calloc((size_t)L, sizeof(int32_t));
    if (!e->layers || !e->have || !e->slots || !e->kv_len || !e->plan_scratch || !e->layer_m)
        return skd_fail(SKD_ERR_OUT_OF_MEMORY, "engine: out of host memory");
    for (int i = 0; i < s->max_slots; i++) e->slots[i].kv_len = e->kv_len + (size_t)i * L;

    SKD_CUDA_TRY(cudaGetDevice(&e->device));
    SKD_CUDA_TRY(cudaStreamCreateWithFlags(&e->stream, cudaStreamNonBlocking));

    e->warena_bytes = layout_weights(e, 0);
    int st = device_alloc(&e->warena, e->warena_bytes, "the weights");
    if (st) return st;
    layout_weights(e, (uintptr_t)e->warena);

    /* slots × layers × positions × kv_dim halves, saturating: an absurd shape fails to allocate, never wraps */
    size_t kv_bytes = (size_t)s->max_slots * (size_t)L * 2;
    kv_bytes = kv_bytes > SIZE_MAX / (size_t)s->max_seq ? SIZE_MAX : kv_bytes * (size_t)s->max_seq;
    kv_bytes = kv_bytes > SIZE_MAX / (size_t)s->kv_dim ? SIZE_MAX : kv_bytes * (size_t)s->kv_dim;
    char what[160];
    snprintf(what, sizeof what, "the K cache (%d slots x %d layers x %d positions x %d)", s->max_slots, L, s->max_seq, s->kv_dim);
    if ((st = device_alloc(&e->k_cache, kv_bytes, what))) return st;
    snprintf(what, sizeof what, "the V cache (%d slots x %d layers x %d positions x %d)", s->max_slots, L, s->max_seq, s->kv_dim);
    if ((st = device_alloc(&e->v_cache, kv_bytes, what))) return st;
    /* Never read before written (plan.h), but zeros make a bug visible as zeros, not NaNs. */
    SKD_CUDA_TRY(cudaMemsetAsync(e->k_cache, 0, kv_bytes, e->stream));
    SKD_CUDA_TRY(cudaMemsetAsync(e->v_cache, 0, kv_bytes, e->stream));

    e->logit_chunk = s->max_rows < LOGIT_CHUNK ? s->max_rows : LOGIT_CHUNK;
    /* Dev knob: SKIPDECODE_CUDA_LOGIT_CHUNK=n (smaller) makes small steps take
     * several LM-head chunks; cuda/dev/parity.c uses it to test that path. */
    const char *chunk_env = getenv("SKIPDECODE_CUDA_LOGIT_CHUNK");
    if (chunk_env && atoi(chunk_env) > 0 && atoi(chunk_env) < e->logit_chunk) e->logit_chunk = atoi(chunk_env);
    const size_t sbytes = layout_scratch(e, 0);
    if ((st = device_alloc(&e->sarena, sbytes, "the activation scratch"))) return st;
    layout_scratch(e, (uintptr_t)e->sarena);
    const size_t up = skd_gpu_upload_bytes(L, s->max_rows);
    SKD_CUDA_TRY(cudaMallocHost((void **)&e->idx_host, up + s->max_rows * sizeof(int32_t)));
    e->tok_host = (int32_t *)((char *)e->idx_host + up);
    SKD_CUDA_TRY(cudaStreamSynchronize(e->stream));
    return configure_variants(e);
}

SKD_API int skd_engine_create(const int64_t *cfg, int32_t n_cfg, skd_engine **out) {
    if (!out) return skd_fail(SKD_ERR_INVALID_ARG, "out pointer is NULL");
    *out = NULL;
    skd_shape s;
    int st = skd_shape_from_cfg(cfg, n_cfg, &s);
    if (st) return st;
    if ((st = skd_cuda_require_device())) return st; /* before any allocation */
    if (s.head_dim > SKD_ATTN_MAX_HEAD_DIM)
        return skd_fail(SKD_ERR_UNSUPPORTED, "head_dim %d (HIDDEN %d / NUM_HEADS %d) > %d is not supported by the CUDA backend",
                        s.head_dim, s.d, s.n_heads, SKD_ATTN_MAX_HEAD_DIM);
    const int dtype = s.compute_dtype ? s.compute_dtype : SKD_DTYPE_F16;
    /* The contiguous cache (the verified path) holds every slot at full length in the compute dtype. */
    if (s.kv_dtype && s.kv_dtype != dtype)
        return skd_fail(SKD_ERR_UNSUPPORTED, "the CUDA engine stores keys/values in its compute dtype (%s); KV_DTYPE %d is not supported",
                        dtype == SKD_DTYPE_BF16 ? "bf16" : "f16", s.kv_dtype);
    if (s.kv_blocks < s.kv_blocks_full)
        return skd_fail(SKD_ERR_UNSUPPORTED,
                        "the CUDA engine's KV cache is contiguous: it holds MAX_SLOTS × MAX_SEQ at full depth "
                        "(%lld blocks of %d positions); a pool of %lld blocks is not supported (lower MAX_SLOTS or MAX_SEQ instead)",
                        (long long)s.kv_blocks_full, s.kv_block_size, (long long)s.kv_blocks);
    s.kv_blocks = s.kv_blocks_full; /* a larger pool could not be used */
    skd_engine *e = (skd_engine *)calloc(1, sizeof *e);
    if (!e) return skd_fail(SKD_ERR_OUT_OF_MEMORY, "engine: out of host memory");
    e->s = s;
    e->dtype = dtype;
    if ((st = skd_kv_ledger_init(&e->kv, &e->s, 2 * (int64_t)s.kv_block_size * s.kv_dim * 2))) {
        skd_engine_free(e);
        return st;
    }
    if ((st = create_on_device(e))) {
        skd_engine_free(e);
        return st;
    }
    *out = e;
    return SKD_OK;
}

SKD_API void skd_engine_free(skd_engine *e) {
    if (!e) return;
    /* Errors are ignored here: free must release what it can and must not
     * overwrite the message of the failure that led to it. */
    if (e->stream) {
        (void)cudaSetDevice(e->device);
        (void)cudaStreamSynchronize(e->stream);
        (void)cudaStreamDestroy(e->stream);
    }
    skd_graph_cache_free(&e->graphs);
    void *dev[] = { e->warena, e->k_cache, e->v_cache, e->sarena, e->stage, e->gemm.part, e->gemm.count, e->attn.part,
                    e->attn.count };
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++)
        if (dev[i]) (void)cudaFree(dev[i]);
    if (e->idx_host) (void)cudaFreeHost(e->idx_host);
    (void)cudaGetLastError();
    skd_kv_ledger_free(&e->kv);
    free(e->layers);
    free(e->have);
    free(e->slots);
    free(e->kv_len);
    free(e->plan_scratch);
    free(e->layer_m);
    free(e);
}

/* ---- weights ---------------------------------------------------------------- */

/* Device address where a role's data goes (q/k/v land in the fused qkv
 * tensors, a SwiGLU gate and up in the fused up projection). */
static char *tensor_dst(skd_engine *e, int role, int layer) {
    const skd_shape *s = &e->s;
    const size_t d = s->d, qd = s->q_dim, kd = s->kv_dim, f = s->ffn, es = 2;
    const size_t gate = s->mlp == SKD_MLP_SWIGLU ? f : 0; /* rows of the gate before the up rows */
    skd_gpu_layer *w = layer >= 0 ? &e->layers[layer] : NULL;
    switch (role) {
    case SKD_T_EMBED_TOKENS: return (char *)e->embed_tokens;
    case SKD_T_EMBED_POSITIONS: return (char *)e->embed_positions;
    case SKD_T_ROPE_INV_FREQ: return (char *)e->rope_inv_freq;
    case SKD_T_PROJECT_IN: return (char *)e->project_in;
    case SKD_T_PROJECT_OUT: return (char *)e->project_out;
    case SKD_T_FINAL_LN_W: return (char *)e->final_ln_w;
    case SKD_T_FINAL_LN_B: return (char *)e->final_ln_b;
    case SKD_T_LM_HEAD: return (char *)e->lm_head;
    case SKD_T_ATTN_LN_W: return (char *)w->attn_ln_w;
    case SKD_T_ATTN_LN_B: return (char *)w->attn_ln_b;
    case SKD_T_Q_W: return (char *)w->qkv_w;
    case SKD_T_K_W: return (char *)w->qkv_w + qd * d * es;
    case SKD_T_V_W: return (char *)w->qkv_w + (qd + kd) * d * es;
    case SKD_T_Q_B: return (char *)w->qkv_b;
    case SKD_T_K_B: return (char *)w->qkv_b + qd * es;
    case SKD_T_V_B: return (char *)w->qkv_b + (qd + kd) * es;
    case SKD_T_O_W: return (char *)w->o_w;
    case SKD_T_O_B: return (char *)w->o_b;
    case SKD_T_MLP_LN_W: return (char *)w->mlp_ln_w;
    case SKD_T_MLP_LN_B: return (char *)w->mlp_ln_b;
    case SKD_T_GATE_W: return (char *)w->fc1_w;
    case SKD_T_GATE_B: return (char *)w->fc1_b;
    case SKD_T_FC1_W: return (char *)w->fc1_w + gate * d * es;
    case SKD_T_FC1_B: return (char *)w->fc1_b + gate * es;
    case SKD_T_FC2_W: return (char *)w->fc2_w;
    case SKD_T_FC2_B: return (char *)w->fc2_b;
    default: return NULL;
    }
}

/* The rotary frequencies stay fp32: converted on the host, copied as is. */
static int upload_f32(skd_engine *e, char *dst, int dtype, const void *data, size_t numel) {
    float *tmp = (float *)malloc(numel * sizeof(float));
    if (!tmp) return skd_fail(SKD_ERR_OUT_OF_MEMORY, "engine: out of host memory");
    skd_dequantize_row(dtype, data, tmp, (int64_t)numel); /* F32, F16 or BF16 → fp32 (quant_ref.h) */
    const cudaError_t err = cudaMemcpy(dst, tmp, numel * sizeof(float), cudaMemcpyHostToDevice);
    free(tmp);
    if (err != cudaSuccess) return skd_cuda_fail(err, "cudaMemcpy (rotary frequencies)", __FILE__, __LINE__);
    return SKD_OK;
}

static size_t dtype_size(int dtype) { return dtype == SKD_DTYPE_F32 ? 4 : 2; }

/* Copies numel host elements of `dtype` to dst in the compute dtype. Data of
 * the compute dtype is copied as is; anything else goes through a device
 * staging buffer in STAGE_BYTES chunks and is converted by a kernel. */
static int upload(skd_engine *e, char *dst, int dtype, const void *data, size_t numel) {
    if (dtype == e->dtype) {
        SKD_CUDA_TRY(cudaMemcpyAsync(dst, data, numel * 2, cudaMemcpyHostToDevice, e->stream));
    } else {
        if (!e->stage) {
            const int st = device_alloc(&e->stage, STAGE_BYTES, "the weight staging buffer");
            if (st) return st;
            e->stage_bytes = STAGE_BYTES;
        }
        const size_t es = dtype_size(dtype), chunk = e->stage_bytes / es;
        for (size_t off = 0; off < numel; off += chunk) {
            const size_t c = numel - off < chunk ? numel - off : chunk;
            /* stream order: this copy waits for the previous chunk's conversion */
            SKD_CUDA_TRY(cudaMemcpyAsync(e->stage, (const char *)data + off * es, c * es, cudaMemcpyHostToDevice, e->stream));
            const int st = skd_convert(dst + off * 2, e->dtype, e->stage, dtype, c, e->stream);
            if (st) return st;
        }
    }
    /* the caller's pointer is not kept past this call */
    SKD_CUDA_TRY(cudaStreamSynchronize(e->stream));
    return SKD_OK;
}

/* Quantized tensors (Q8_0, Q4_0, Q5_0, Q4_K, Q6_K) are dequantized on the host by
 * the shared reference (quant_ref.h, the code the CPU tests check) to fp32,
 * 8 Mi values at a time, and uploaded as fp32 tensors are: the CUDA engine
 * computes in fp16/bf16 from dequantized weights (no quantized CUDA kernels
 * yet), so its weights take 2 bytes each on the device whatever the file. */
#define DEQUANT_CHUNK ((int64_t)8 << 20)
static int upload_quant(skd_engine *e, char *dst, int dtype, const void *data, int64_t rows, int64_t cols) {
    const int64_t per = cols >= DEQUANT_CHUNK ? 1 : DEQUANT_CHUNK / cols, rb = skd_row_bytes(dtype, cols);
    const int64_t n = (rows < per ? rows : per) * cols;
    float *tmp = (float *)malloc((size_t)n * sizeof(float));
    if (!tmp) return skd_fail(SKD_ERR_OUT_OF_MEMORY, "engine: out of host memory dequantizing a %s tensor", skd_dtype_name(dtype));
    int st = SKD_OK;
    for (int64_t r = 0; r < rows && !st; r += per) {
        const int64_t nr = rows - r < per ? rows - r : per;
        for (int64_t i = 0; i < nr; i++) skd_dequantize_row(dtype, (const char *)data + (r + i) * rb, tmp + i * cols, cols);
        st = upload(e, dst + (size_t)(r * cols) * 2, SKD_DTYPE_F32, tmp, (size_t)(nr * cols));
    }
    free(tmp);
    return st;
}

SKD_API int skd_engine_set_tensor(skd_engine *e, int32_t role, int32_t layer, int32_t dtype, const void *data,
                                  int64_t numel) {
    if (!e) return skd_fail(SKD_ERR_INVALID_ARG, "engine is NULL");
    if (e->finalized) return skd_fail(SKD_ERR_STATE, "tensors cannot be set after skd_engine_finalize");
    int st = skd_check_tensor(&e->s, role, layer, dtype, data, numel);
    if (st) return st;
    char *dst = tensor_dst(e, role, layer);
    if (!dst) return skd_fail(SKD_ERR_INVALID_ARG, "unknown tensor role %d", role);
    SKD_CUDA_TRY(cudaSetDevice(e->device));
    int64_t rows = 0, cols = 0;
    skd_tensor_shape(&e->s, role, &rows, &cols);
    if (role == SKD_T_ROPE_INV_FREQ) st = upload_f32(e, dst, dtype, data, (size_t)numel);
    else if (skd_dtype_is_quant(dtype)) st = upload_quant(e, dst, dtype, data, rows, cols);
    else st = upload(e, dst, dtype, data, (size_t)numel);
    if (st) return st;
    e->have[(size_t)(layer + 1) * SKD_GPU_N_ROLES + role] = 1;
    return SKD_OK;
}

SKD_API int skd_engine_finalize(skd_engine *e) {
    if (!e) return skd_fail(SKD_ERR_INVALID_ARG, "engine is NULL");
    const skd_shape *s = &e->s;
    const int missing = skd_check_all_set(s, e->have);
    if (missing) return missing;
    /* Bytes one full step reads, as the CPU backend counts them: the matrices
     * (project_in/out, LM head, per layer q, k, v, o, gate, up, down) in the compute dtype. */
    const int64_t d = s->d, de = s->embed_dim, f = s->ffn, V = s->vocab, qd = s->q_dim, kd = s->kv_dim;
    const int64_t mlp = (s->mlp == SKD_MLP_SWIGLU ? 3 : 2) * d * f;
    int64_t elems = V * de + (de != d ? 2 * d * de : 0) + (int64_t)s->n_layers * ((qd + 2 * kd) * d + d * qd + mlp);
    e->weight_bytes = elems * 2;
    if (e->stage) {
        SKD_CUDA_TRY(cudaSetDevice(e->device));
        SKD_CUDA_TRY(cudaStreamSynchronize(e->stream));
        SKD_CUDA_TRY(cudaFree(e->stage));
        e->stage = NULL;
        e->stage_bytes = 0;
    }
    e->finalized = 1;
    return SKD_OK;
}

/* The KV accounting (kv_ledger.h) over the contiguous cache: the same
 * reservations and numbers as the CPU's paged pool; the memory behind them
 * was allocated at create. */
#define SKD_ENGINE_KV_LEDGER(e) (&(e)->kv)
static void engine_kv_forget(skd_engine *e, int32_t slot) { skd_kv_ledger_reset(&e->kv, slot); }

/* weight_bytes, reset_slot, slot_info, kv_reserve, kv_slot_stats: the same in both engines */
#include "engine_calls.h"

SKD_API int skd_engine_kv_stats(const skd_engine *e, int64_t *out, int32_t n) {
    if (!e) return skd_fail(SKD_ERR_INVALID_ARG, "engine is NULL");
    return skd_kv_ledger_stats(&e->kv, e->dtype, 0, e->kv.blocks - e->kv.used, out, n);
}

SKD_API int skd_engine_kv_check(const skd_engine *e) {
    if (!e) return skd_fail(SKD_ERR_INVALID_ARG, "engine is NULL");
    return skd_kv_ledger_verify(&e->kv, &e->s, e->slots);
}
