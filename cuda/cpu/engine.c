/* engine.c — the CPU engine: the generic decoder block (skipdecode.h: OPT and
 * the LLaMA family are data in the config) over a batch of rows with per-row
 * SkipDecode budgets and a per-slot KV cache. Implements skipdecode.h.
 *
 * Memory layout
 *   weights      as loaded (F32/F16/BF16 packed in panels, ops.h; the quantized types
 *                as ggml's row-major blocks, rearranged within each row for the AVX2
 *                kernels, quant.h); norm params and biases fp32
 *   KV cache     a pool of blocks, each the keys and values of B positions of
 *                one layer (kd = KV heads × head_dim), f16 by default; a block
 *                table per (slot, layer) (kv.h, docs/kv-cache.md)
 *   x            fp32 [max_rows, d]: each row's hidden state through the layers
 *
 * A step (skd_engine_step):
 *   plan     validate rows and KV bookkeeping (plan.h), take the blocks the new
 *            positions need (kv.h); refuse before any math
 *   embed    x[r] = project_in(embed_tokens[tok]) (+ embed_positions[pos + offset])
 *   rotary   cos/sin of every row's position, once per step
 *   layer l  gather the rows whose range contains l, run the block on them,
 *            write their K/V at (slot, l, pos) in its block, scatter the results back
 *   head     for rows that want logits: final norm, project_out, LM head
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kv.h"
#include "ops.h"
#include "plan.h"
#include "pool.h"
#include "quant.h"
#include "sample.h"
#include "skipdecode.h"

#define N_ROLES SKD_N_ROLES

typedef struct {
    skd_mat q, k, v, o, fc1, fc2, gate; /* fc1 = MLP up, fc2 = down; gate: SwiGLU only */
    float *q_b, *k_b, *v_b, *o_b, *fc1_b, *fc2_b, *gate_b; /* NULL where the model has none */
    float *attn_ln_w, *attn_ln_b, *mlp_ln_w, *mlp_ln_b;
} layer_weights;

struct skd_engine {
    skd_shape s;
    skd_pool *pool;
    int nth;
    int kernel; /* SKD_KERNEL_* of the 16-bit matmul */
    int qkernel; /* SKD_QKERNEL_* of the quantized matmul (quant.h) */
    void *qscratch; /* quantized activations of max_rows rows (finalize: only with quantized matrices) */

    skd_mat embed_tokens, embed_positions, project_in, project_out, lm_head;
    float *final_ln_w, *final_ln_b;
    float *rope_inv_freq; /* [head_dim / 2], rotary models */
    layer_weights *layers;
    uint8_t *have; /* [(L + 1) × N_ROLES]: row 0 global, row l+1 layer l */
    int finalized;
    int64_t weight_bytes;

    skd_kv_cache kv;
    skd_slot *slots;
    int32_t *kv_len; /* [max_slots × L] */
    int32_t *plan_scratch;

    /* scratch for max_rows rows */
    float *x, *xa, *t, *q, *k, *v, *att, *h, *g, *e;
    float *rope;         /* [max_rows][head_dim]: cos of the pairs, then sin, for each step row */
    int32_t *act;        /* active row indices of the current layer */
    float *att_scratch;  /* per-thread scores, (n_heads / n_kv_heads) × max_seq each */
    float *head;         /* [head_rows, vocab] logits of rows that sample but want no logits out */
    int head_rows;
    float *sample_f;     /* sampling scratch */
    int32_t *sample_i;
};

/* ---- allocation helpers ---------------------------------------------------- */

/* calloc for engine buffers: after the first failure it allocates nothing and
 * `*failed` names the buffer that could not be had (and how large it was). */
typedef struct {
    const char *what;
    size_t bytes;
} alloc_failure;

static void *xcalloc(size_t n, size_t size, alloc_failure *failed, const char *what) {
    if (failed->what) return NULL;
    void *p = n && size ? calloc(n, size) : NULL;
    if (n && size && !p) {
        failed->what = what;
        failed->bytes = n > SIZE_MAX / size ? SIZE_MAX : n * size;
    }
    return p;
}

static int cpu_threads(int requested) {
    if (requested > 0) return requested;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* The matmul kernel engines use: the best this CPU runs, unless
 * SKIPDECODE_CPU_KERNEL names one (portable, avx2, avx512) that it runs. */
static int cpu_kernel(void) {
    const char *force = getenv("SKIPDECODE_CPU_KERNEL");
    const int kernels[] = { SKD_KERNEL_PORTABLE, SKD_KERNEL_AVX2, SKD_KERNEL_AVX512 };
    for (int i = 0; force && i < 3; i++)
        if (!strcmp(force, skd_kernel_name(kernels[i])) && skd_kernel_supported(kernels[i])) return kernels[i];
    return skd_kernel_best();
}

SKD_API int skd_device_count(int32_t *out) {
    if (!out) return skd_fail(SKD_ERR_INVALID_ARG, "out_count is NULL");
    *out = 1;
    return SKD_OK;
}

SKD_API int skd_device_name(int32_t index, char *buf, int32_t cap) {
    if (index != 0) return skd_fail(SKD_ERR_INVALID_ARG, "CPU backend has one device (index 0), got %d", index);
    if (!buf || cap < 1) return skd_fail(SKD_ERR_INVALID_ARG, "buffer is NULL or empty");
    char model[256] = "CPU";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            if (!strncmp(line, "model name", 10)) {
                char *c = strchr(line, ':');
                if (c) {
                    c++;
                    while (*c == ' ') c++;
                    c[strcspn(c, "\n")] = 0;
                    snprintf(model, sizeof model, "%s", c);
                }
                break;
            }
        }
        fclose(f);
    }
    snprintf(buf, (size_t)cap, "%s, %d threads, %s kernels", model, cpu_threads(0), skd_kernel_name(cpu_kernel()));
    return SKD_OK;
}

SKD_API void skd_engine_free(skd_engine *e) {
    if (!e) return;
    if (e->pool) skd_pool_free(e->pool);
    skd_mat *mats[] = { &e->embed_tokens, &e->embed_positions, &e->project_in, &e->project_out, &e->lm_head };
    for (size_t i = 0; i < sizeof mats / sizeof *mats; i++) skd_weight_free(mats[i]->data);
    void *vecs[] = { e->final_ln_w, e->final_ln_b, e->rope_inv_freq };
    for (size_t i = 0; i < sizeof vecs / sizeof *vecs; i++) free(vecs[i]);
    if (e->layers) {
        for (int l = 0; l < e->s.n_layers; l++) {
            layer_weights *w = &e->layers[l];
            skd_mat *lm[] = { &w->q, &w->k, &w->v, &w->o, &w->fc1, &w->fc2, &w->gate };
            for (size_t i = 0; i < sizeof lm / sizeof *lm; i++) skd_weight_free(lm[i]->data);
            void *lv[] = { w->q_b, w->k_b, w->v_b, w->o_b, w->fc1_b, w->fc2_b, w->gate_b, w->attn_ln_w, w->attn_ln_b,
                           w->mlp_ln_w, w->mlp_ln_b };
            for (size_t i = 0; i < sizeof lv / sizeof *lv; i++) free(lv[i]);
        }
    }
    skd_kv_destroy(&e->kv);
    void *rest[] = { e->layers, e->have, e->slots, e->kv_len, e->plan_scratch, e->x, e->xa,
                     e->t, e->q, e->k, e->v, e->att, e->h, e->g, e->e, e->rope, e->act, e->att_scratch,
                     e->head, e->sample_f, e->sample_i, e->qscratch };
    for (size_t i = 0; i < sizeof rest / sizeof *rest; i++) free(rest[i]);
    free(e);
}

SKD_API int skd_engine_create(const int64_t *cfg, int32_t n_cfg, skd_engine **out) {
    if (!out) return skd_fail(SKD_ERR_INVALID_ARG, "out pointer is NULL");
    *out = NULL;
    skd_shape s;
    int st = skd_shape_from_cfg(cfg, n_cfg, &s);
    if (st) return st;
    skd_engine *e = calloc(1, sizeof *e);
    if (!e) return skd_fail(SKD_ERR_OUT_OF_MEMORY, "engine: out of memory");
    e->s = s;
    const int L = s.n_layers, d = s.d, R = s.max_rows;
    alloc_failure failed = { NULL, 0 };
    e->layers = xcalloc((size_t)L, sizeof(layer_weights), &failed, "per-layer weight table");
    e->have = xcalloc((size_t)(L + 1) * N_ROLES, 1, &failed, "tensor table");
    e->slots = xcalloc((size_t)s.max_slots, sizeof(skd_slot), &failed, "slot table");
    e->kv_len = xcalloc((size_t)s.max_slots * L, sizeof(int32_t), &failed, "KV lengths");
    e->plan_scratch = xcalloc((size_t)s.max_slots * (L + 2), sizeof(int32_t), &failed, "plan scratch");
    e->x = xcalloc((size_t)R * d, sizeof(float), &failed, "hidden states");
    e->xa = xcalloc((size_t)R * d, sizeof(float), &failed, "hidden-state scratch");
    e->t = xcalloc((size_t)R * d, sizeof(float), &failed, "hidden-state scratch");
    e->q = xcalloc((size_t)R * s.q_dim, sizeof(float), &failed, "query scratch");
    e->k = xcalloc((size_t)R * s.kv_dim, sizeof(float), &failed, "key scratch");
    e->v = xcalloc((size_t)R * s.kv_dim, sizeof(float), &failed, "value scratch");
    e->att = xcalloc((size_t)R * s.q_dim, sizeof(float), &failed, "attention output");
    e->h = xcalloc((size_t)R * s.ffn, sizeof(float), &failed, "MLP scratch");
    if (s.mlp == SKD_MLP_SWIGLU) e->g = xcalloc((size_t)R * s.ffn, sizeof(float), &failed, "MLP gate scratch");
    if (s.positions == SKD_POS_ROTARY) e->rope = xcalloc((size_t)R * s.head_dim, sizeof(float), &failed, "rotary scratch");
    e->e = xcalloc((size_t)R * s.embed_dim, sizeof(float), &failed, "embedding scratch");
    e->act = xcalloc((size_t)R, sizeof(int32_t), &failed, "active-row list");
    e->head_rows = s.max_slots < R ? s.max_slots : R;
    e->head = xcalloc((size_t)e->head_rows * s.vocab, sizeof(float), &failed, "logits scratch");
    e->sample_f = xcalloc(SKD_SAMPLE_SCRATCH_F(s.vocab), sizeof(float), &failed, "sampling scratch");
    e->sample_i = xcalloc(SKD_SAMPLE_SCRATCH_I(s.vocab), sizeof(int32_t), &failed, "sampling scratch");
    if (failed.what) {
        skd_engine_free(e);
        return skd_fail(SKD_ERR_OUT_OF_MEMORY, "engine: out of memory allocating the %s (%zu MiB)", failed.what, failed.bytes >> 20);
    }
    if ((st = skd_kv_init(&e->kv, &s, s.kv_dtype ? s.kv_dtype : SKD_DTYPE_F16))) { /* the KV pool names its own size */
        skd_engine_free(e);
        return st;
    }
    for (int i = 0; i < s.max_slots; i++) e->slots[i].kv_len = e->kv_len + (size_t)i * L;
    e->pool = skd_pool_create(cpu_threads(s.threads));
    if (!e->pool) {
        skd_engine_free(e);
        return skd_fail(SKD_ERR_OUT_OF_MEMORY, "engine: could not start the worker thread pool (%d threads)", cpu_threads(s.threads));
    }
    e->nth = skd_pool_size(e->pool);
    e->kernel = cpu_kernel();
    e->qkernel = skd_qkernel_for(e->kernel);
    e->att_scratch = xcalloc((size_t)e->nth * (s.n_heads / s.n_kv_heads) * s.max_seq, sizeof(float), &failed,
                             "attention scores (per thread)");
    if (failed.what) {
        skd_engine_free(e);
        return skd_fail(SKD_ERR_OUT_OF_MEMORY, "engine: out of memory allocating the %s (%zu MiB)", failed.what, failed.bytes >> 20);
    }
    *out = e;
    return SKD_OK;
}

/* ---- weights ---------------------------------------------------------------- */

static int copy_mat(skd_engine *e, skd_mat *m, int dtype, const void *data, int64_t rows, int64_t cols, int packed) {
    if (skd_mat_set(m, dtype, data, rows, cols, packed, e->pool))
        return skd_fail(SKD_ERR_OUT_OF_MEMORY, "out of memory copying a %lld x %lld tensor", (long long)rows, (long long)cols);
    return SKD_OK;
}

static int copy_vec(float **dst, int dtype, const void *data, int64_t n) {
    float *p = malloc(sizeof(float) * (size_t)n);
    if (!p) return skd_fail(SKD_ERR_OUT_OF_MEMORY, "out of memory copying a vector of %lld", (long long)n);
    skd_mat m = { (void *)data, dtype, 0, 1, n };
    skd_mat_row_f32(&m, 0, p);
    free(*dst);
    *dst = p;
    return SKD_OK;
}

SKD_API int skd_engine_set_tensor(skd_engine *e, int32_t role, int32_t layer, int32_t dtype, const void *data,
                                  int64_t numel) {
    if (!e) return skd_fail(SKD_ERR_INVALID_ARG, "engine is NULL");
    if (e->finalized) return skd_fail(SKD_ERR_STATE, "tensors cannot be set after skd_engine_finalize");
    int st = skd_check_tensor(&e->s, role, layer, dtype, data, numel);
    if (st) return st;
    int64_t r = 0, c = 0;
    skd_tensor_shape(&e->s, role, &r, &c);
    /* matmul weights: 16-bit ones in panels; quantized ones in the layout the quantized kernel reads */
    const int pk = !skd_dtype_is_quant(dtype) || skd_qkernel_packs(e->qkernel);
    layer_weights *w = layer >= 0 ? &e->layers[layer] : NULL;
    switch (role) {
    case SKD_T_EMBED_TOKENS: st = copy_mat(e, &e->embed_tokens, dtype, data, r, c, 0); break;
    case SKD_T_EMBED_POSITIONS: st = copy_mat(e, &e->embed_positions, dtype, data, r, c, 0); break;
    case SKD_T_PROJECT_IN: st = copy_mat(e, &e->project_in, dtype, data, r, c, pk); break;
    case SKD_T_PROJECT_OUT: st = copy_mat(e, &e->project_out, dtype, data, r, c, pk); break;
    case SKD_T_LM_HEAD: st = copy_mat(e, &e->lm_head, dtype, data, r, c, pk); break;
    case SKD_T_FINAL_LN_W: st = copy_vec(&e->final_ln_w, dtype, data, r); break;
    case SKD_T_FINAL_LN_B: st = copy_vec(&e->final_ln_b, dtype, data, r); break;
    case SKD_T_ROPE_INV_FREQ: st = copy_vec(&e->rope_inv_freq, dtype, data, r); break;
    case SKD_T_GATE_W: st = copy_mat(e, &w->gate, dtype, data, r, c, pk); break;
    case SKD_T_GATE_B: st = copy_vec(&w->gate_b, dtype, data, r); break;
    case SKD_T_Q_W: st = copy_mat(e, &w->q, dtype, data, r, c, pk); break;
    case SKD_T_K_W: st = copy_mat(e, &w->k, dtype, data, r, c, pk); break;
    case SKD_T_V_W: st = copy_mat(e, &w->v, dtype, data, r, c, pk); break;
    case SKD_T_O_W: st = copy_mat(e, &w->o, dtype, data, r, c, pk); break;
    case SKD_T_FC1_W: st = copy_mat(e, &w->fc1, dtype, data, r, c, pk); break;
    case SKD_T_FC2_W: st = copy_mat(e, &w->fc2, dtype, data, r, c, pk); break;
    case SKD_T_Q_B: st = copy_vec(&w->q_b, dtype, data, r); break;
    case SKD_T_K_B: st = copy_vec(&w->k_b, dtype, data, r); break;
    case SKD_T_V_B: st = copy_vec(&w->v_b, dtype, data, r); break;
    case SKD_T_O_B: st = copy_vec(&w->o_b, dtype, data, r); break;
    case SKD_T_FC1_B: st = copy_vec(&w->fc1_b, dtype, data, r); break;
    case SKD_T_FC2_B: st = copy_vec(&w->fc2_b, dtype, data, r); break;
    case SKD_T_ATTN_LN_W: st = copy_vec(&w->attn_ln_w, dtype, data, r); break;
    case SKD_T_ATTN_LN_B: st = copy_vec(&w->attn_ln_b, dtype, data, r); break;
    case SKD_T_MLP_LN_W: st = copy_vec(&w->mlp_ln_w, dtype, data, r); break;
    case SKD_T_MLP_LN_B: st = copy_vec(&w->mlp_ln_b, dtype, data, r); break;
    default: return skd_fail(SKD_ERR_INVALID_ARG, "unknown tensor role %d", role);
    }
    if (st) return st;
    e->have[(size_t)(layer + 1) * N_ROLES + role] = 1;
    return SKD_OK;
}

SKD_API int skd_engine_finalize(skd_engine *e) {
    if (!e) return skd_fail(SKD_ERR_INVALID_ARG, "engine is NULL");
    const int missing = skd_check_all_set(&e->s, e->have);
    if (missing) return missing;
    /* Bytes one full step reads: the matrices as stored (the embedding rows and
     * the small vectors are negligible, but the LM head is counted); and the
     * widest quantized matrix, for the activation scratch. */
    int64_t bytes = 0, qcols = 0;
    for (int l = -1; l < e->s.n_layers; l++) {
        const skd_mat *m[7] = { &e->project_in, &e->project_out, &e->lm_head };
        int n = 3;
        if (l >= 0) {
            const layer_weights *w = &e->layers[l];
            const skd_mat *g[] = { &w->q, &w->k, &w->v, &w->o, &w->fc1, &w->fc2, &w->gate };
            memcpy(m, g, sizeof g);
            n = 7;
        }
        for (int i = 0; i < n; i++) {
            bytes += skd_mat_bytes(m[i]);
            if (m[i]->data && skd_dtype_is_quant(m[i]->dtype) && m[i]->cols > qcols) qcols = m[i]->cols;
        }
    }
    if (qcols && !e->qscratch) {
        e->qscratch = aligned_alloc(64, skd_qact_bytes(e->s.max_rows, qcols));
        if (!e->qscratch)
            return skd_fail(SKD_ERR_OUT_OF_MEMORY, "engine: out of memory for the quantized activations of %d rows",
                            e->s.max_rows);
    }
    e->weight_bytes = bytes;
    e->finalized = 1;
    return SKD_OK;
}

/* The KV pool's part of the calls engine_calls.h shares with the CUDA engine. */
#define SKD_ENGINE_KV_LEDGER(e) (&(e)->kv.ledger)
static void engine_kv_forget(skd_engine *e, int32_t slot) { skd_kv_reset(&e->kv, &e->s, slot, e->slots[slot].kv_len); }

/* weight_bytes, reset_slot, slot_info, kv_reserve, kv_slot_stats: the same in both engines */
#include "engine_calls.h"

/* ---- the KV pool (kv.h) ---------------------------------------------------- */

SKD_API int skd_engine_kv_stats(const skd_engine *e, int64_t *out, int32_t n) {
    if (!e) return skd_fail(SKD_ERR_INVALID_ARG, "engine is NULL");
    return skd_kv_ledger_stats(&e->kv.ledger, e->kv.dtype, 1, e->kv.n_free, out, n);
}

SKD_API int skd_engine_kv_check(const skd_engine *e) {
    if (!e) return skd_fail(SKD_ERR_INVALID_ARG, "engine is NULL");
    return skd_kv_verify(&e->kv, &e->s, e->slots);
}

/* ---- attention ---------------------------------------------------------------- */

typedef struct {
    skd_engine *e;
    const int32_t *rows; /* the step's rows */
    int m;               /* active rows */
    int layer;
} attn_args;

/* att[i, head] = softmax(q·K[0..pos]ᵀ) · V[0..pos] for each (active row i, head),
 * q already scaled by head_dim^-1/2; query head `head` reads KV head
 * head / group (group = n_heads / n_kv_heads) from the row's blocks
 * (skd_kv_attend). A work item is a row's KV head with the `group` query heads
 * that read it, so its keys and values are read once for all of them; with
 * fewer such items than threads, one query head per item. Items split across
 * threads; a head's numbers are the same either way. */
static void attn_task(void *ctx, int ith, int nth) {
    const attn_args *a = ctx;
    skd_engine *e = a->e;
    const skd_shape *s = &e->s;
    const int qd = s->q_dim, hd = s->head_dim, group = s->n_heads / s->n_kv_heads;
    const int per = (long)a->m * s->n_kv_heads >= nth ? group : 1, items = s->n_heads / per; /* heads per item, items per row */
    float *sc = e->att_scratch + (size_t)ith * group * s->max_seq;
    long w0, w1;
    skd_split((long)a->m * items, ith, nth, &w0, &w1);
    for (long w = w0; w < w1; w++) {
        const int i = (int)(w / items), head = (int)(w % items) * per;
        const int32_t *r = a->rows + (size_t)e->act[i] * SKD_ROW_FIELDS;
        const size_t at = (size_t)i * qd + (size_t)head * hd;
        skd_kv_attend(&e->kv, e->kernel, r[SKD_ROW_SLOT], a->layer, head / group, per, hd, r[SKD_ROW_POS] + 1, e->q + at,
                      sc, e->att + at);
    }
}

/* ---- the step ------------------------------------------------------------------ */

/* out_i = x · W_i^T (+ bias_i) for n matrices that read the same x (q, k, v;
 * gate, up): one pass of the pool for each run of them that can share it
 * (skd_matmul_n; skd_qmatmul_n, one quantization of x), with the outputs of
 * one mm each, bit for bit. */
static void mm_n(skd_engine *e, const float *x, int m, const skd_mm_job *jobs, int n) {
    for (int i = 0; i < n;) {
        const skd_mat *w = jobs[i].w;
        const int quant = skd_dtype_is_quant(w->dtype);
        int j = i + 1;
        while (j < n && (quant ? skd_qmat_same_act(e->qkernel, w, jobs[j].w)
                               : !skd_dtype_is_quant(jobs[j].w->dtype) && jobs[j].w->cols == w->cols))
            j++;
        if (quant) skd_qmatmul_n(e->pool, e->qkernel, e->qscratch, x, m, jobs + i, j - i);
        else skd_matmul_n(e->pool, e->kernel, x, m, jobs + i, j - i);
        i = j;
    }
}

/* out[m, n] = x[m, k] · W^T (+ bias, ReLU) with the matmul W's dtype takes. */
static void mm(skd_engine *e, float *out, const float *x, int m, const skd_mat *w, const float *bias, int relu) {
    const skd_mm_job job = { out, w, bias, relu };
    mm_n(e, x, m, &job, 1);
}

static void add_inplace(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

/* y = norm(x) with the model's norm kind (w, b: the norm's weight and bias). */
static void norm_rows(const skd_engine *e, float *y, const float *x, int m, const float *w, const float *b) {
    const skd_shape *s = &e->s;
    if (s->norm == SKD_NORM_RMS) skd_rmsnorm(y, x, m, s->d, w, s->norm_eps);
    else skd_layernorm(y, x, m, s->d, w, b, s->norm_eps);
}

/* Rotates heads of x [m, n_heads·hd] in place by each active row's angles
 * (rotate-half: dims j and j + hd/2 form a pair). */
static void rotate(const skd_engine *e, float *x, int m, int n_heads) {
    const int hd = e->s.head_dim, half = hd / 2;
    for (int i = 0; i < m; i++) {
        const float *cs = e->rope + (size_t)e->act[i] * hd, *sn = cs + half;
        for (int h = 0; h < n_heads; h++) {
            float *xh = x + ((size_t)i * n_heads + h) * hd;
            for (int j = 0; j < half; j++) {
                const float a = xh[j], b = xh[j + half];
                xh[j] = a * cs[j] - b * sn[j];
                xh[j + half] = b * cs[j] + a * sn[j];
            }
        }
    }
}

/* One decoder layer (skipdecode.h: the generic block) on the m gathered rows
 * in e->xa (in place). */
static void run_layer(skd_engine *e, const int32_t *rows, int m, int l) {
    const skd_shape *s = &e->s;
    const int d = s->d, kd = s->kv_dim;
    const size_t md = (size_t)m * d;
    layer_weights *w = &e->layers[l];

    /* attention block: xa = xa + O(attn(norm?(xa))) ; post-norm: norm after the add */
    const float *in = e->xa;
    if (s->pre_ln) {
        norm_rows(e, e->t, e->xa, m, w->attn_ln_w, w->attn_ln_b);
        in = e->t;
    }
    const skd_mm_job qkv[3] = { { e->q, &w->q, w->q_b, 0 }, { e->k, &w->k, w->k_b, 0 }, { e->v, &w->v, w->v_b, 0 } };
    mm_n(e, in, m, qkv, 3);
    if (s->positions == SKD_POS_ROTARY) {
        rotate(e, e->q, m, s->n_heads);
        rotate(e, e->k, m, s->n_kv_heads);
    }
    const float scale = 1.0f / sqrtf((float)s->head_dim);
    for (size_t i = 0; i < (size_t)m * s->q_dim; i++) e->q[i] *= scale;
    for (int i = 0; i < m; i++) { /* write this layer's K/V for the active rows */
        const int32_t *r = rows + (size_t)e->act[i] * SKD_ROW_FIELDS;
        skd_kv_write(&e->kv, r[SKD_ROW_SLOT], l, r[SKD_ROW_POS], e->k + (size_t)i * kd, e->v + (size_t)i * kd);
    }
    attn_args aa = { e, rows, m, l };
    skd_pool_run(e->pool, attn_task, &aa);
    mm(e, e->t, e->att, m, &w->o, w->o_b, 0);
    add_inplace(e->xa, e->t, md);
    if (!s->pre_ln) norm_rows(e, e->xa, e->xa, m, w->attn_ln_w, w->attn_ln_b);

    /* MLP block: xa = xa + down(act(norm?(xa))) ; post-norm: norm after the add */
    in = e->xa;
    if (s->pre_ln) {
        norm_rows(e, e->t, e->xa, m, w->mlp_ln_w, w->mlp_ln_b);
        in = e->t;
    }
    if (s->mlp == SKD_MLP_SWIGLU) { /* h = silu(gate) ⊙ up */
        const skd_mm_job gate_up[2] = { { e->g, &w->gate, w->gate_b, 0 }, { e->h, &w->fc1, w->fc1_b, 0 } };
        mm_n(e, in, m, gate_up, 2);
        skd_swiglu(e->kernel, e->h, e->g, (size_t)m * s->ffn);
    } else {
        mm(e, e->h, in, m, &w->fc1, w->fc1_b, 1);
    }
    mm(e, e->t, e->h, m, &w->fc2, w->fc2_b, 0);
    add_inplace(e->xa, e->t, md);
    if (!s->pre_ln) norm_rows(e, e->xa, e->xa, m, w->mlp_ln_w, w->mlp_ln_b);
}

/* Final norm, project_out and LM head for the rows `idx[0..m)`; logits to out[m, V]. */
static void run_head(skd_engine *e, const int32_t *idx, int m, float *out) {
    const skd_shape *s = &e->s;
    const int d = s->d;
    for (int i = 0; i < m; i++) memcpy(e->xa + (size_t)i * d, e->x + (size_t)idx[i] * d, sizeof(float) * d);
    if (s->final_ln) norm_rows(e, e->xa, e->xa, m, e->final_ln_w, e->final_ln_b);
    const float *hin = e->xa;
    if (s->embed_dim != d) {
        mm(e, e->e, e->xa, m, &e->project_out, NULL, 0);
        hin = e->e;
    }
    mm(e, out, hin, m, &e->lm_head, NULL, 0);
}

static int32_t sample_row(skd_engine *e, const int32_t *r, const float *prm, const float *logits) {
    const uint64_t seed = (uint64_t)(uint32_t)r[SKD_ROW_SEED_LO] | ((uint64_t)(uint32_t)r[SKD_ROW_SEED_HI] << 32);
    return skd_sample(logits, e->s.vocab, prm[SKD_PARAM_TEMPERATURE], r[SKD_ROW_TOP_K], prm[SKD_PARAM_TOP_P], seed,
                      (uint32_t)r[SKD_ROW_SEQ], (uint32_t)r[SKD_ROW_STEP], e->sample_f, e->sample_i);
}

/* skd_engine_step and skd_engine_step_logprobs (allow_lp). */
static int step(skd_engine *e, const int32_t *rows, int32_t n_rows, const float *params, float *logits, int32_t *tokens,
                int allow_lp, int32_t n_top, float *lp_values, int32_t *lp_ids) {
    if (!e) return skd_fail(SKD_ERR_INVALID_ARG, "engine is NULL");
    if (!e->finalized) return skd_fail(SKD_ERR_STATE, "skd_engine_finalize must succeed before the first step");
    const skd_shape *s = &e->s;
    int32_t n_logits = 0, n_sample = 0, n_lp = 0;
    int st = allow_lp ? skd_plan_logprobs(rows, n_rows, n_top, lp_values != NULL, lp_ids != NULL, &n_lp) : SKD_OK;
    if (st) return st;
    st = skd_plan_check(s, e->slots, rows, n_rows, params, logits != NULL, tokens != NULL, allow_lp, e->plan_scratch,
                        &n_logits, &n_sample);
    if (st) return st;
    if ((st = skd_kv_step(&e->kv, s, e->slots, e->plan_scratch))) return st; /* the blocks, or SKD_ERR_KV_FULL */
    skd_plan_apply(s, e->slots, e->plan_scratch);
    if (n_rows == 0) return SKD_OK;
    const int d = s->d, de = s->embed_dim, L = s->n_layers, V = s->vocab;

    /* embed: x = project_in(tok) + pos */
    for (int i = 0; i < n_rows; i++)
        skd_mat_row_f32(&e->embed_tokens, rows[(size_t)i * SKD_ROW_FIELDS + SKD_ROW_TOKEN], e->e + (size_t)i * de);
    if (de != d)
        mm(e, e->x, e->e, n_rows, &e->project_in, NULL, 0);
    else
        memcpy(e->x, e->e, sizeof(float) * (size_t)n_rows * d);
    for (int i = 0; i < n_rows && s->positions == SKD_POS_LEARNED; i++) {
        skd_mat_row_f32(&e->embed_positions, rows[(size_t)i * SKD_ROW_FIELDS + SKD_ROW_POS] + s->pos_offset, e->t);
        add_inplace(e->x + (size_t)i * d, e->t, (size_t)d);
    }
    if (s->positions == SKD_POS_ROTARY) { /* rope[i] = cos(p·f_j) for j < hd/2, then sin(p·f_j); angles in double */
        const int half = s->head_dim / 2;
        for (int i = 0; i < n_rows; i++) {
            const double p = rows[(size_t)i * SKD_ROW_FIELDS + SKD_ROW_POS];
            float *cs = e->rope + (size_t)i * s->head_dim;
            for (int j = 0; j < half; j++) {
                const double a = p * (double)e->rope_inv_freq[j];
                cs[j] = (float)cos(a);
                cs[half + j] = (float)sin(a);
            }
        }
    }

    for (int l = 0; l < L; l++) {
        int m = 0;
        for (int i = 0; i < n_rows; i++) {
            const int32_t *r = rows + (size_t)i * SKD_ROW_FIELDS;
            if (skd_layer_active(l, L, r[SKD_ROW_BUDGET], r[SKD_ROW_WARMUP])) {
                e->act[m] = i;
                memcpy(e->xa + (size_t)m * d, e->x + (size_t)i * d, sizeof(float) * d);
                m++;
            }
        }
        if (!m) continue;
        run_layer(e, rows, m, l);
        for (int i = 0; i < m; i++) memcpy(e->x + (size_t)e->act[i] * d, e->xa + (size_t)i * d, sizeof(float) * d);
    }

    /* Rows that want logits: head straight into the caller's buffer (all at
     * once, so the LM head is read once), sampling from there if flagged. */
    int32_t n_tok = 0;
    if (n_logits) {
        int m = 0;
        for (int i = 0; i < n_rows; i++)
            if (rows[(size_t)i * SKD_ROW_FIELDS + SKD_ROW_FLAGS] & SKD_ROW_WANT_LOGITS) e->act[m++] = i;
        run_head(e, e->act, m, logits);
    }
    /* Sampling rows, in row order; those without logits out go through
     * e->head in chunks of head_rows. */
    int32_t k_logit = 0, k_lp = 0;
    for (int i = 0; i < n_rows && n_sample;) {
        /* gather the next chunk of sample-only rows */
        int m = 0;
        int j = i;
        for (; j < n_rows && m < e->head_rows; j++) {
            const int flags = rows[(size_t)j * SKD_ROW_FIELDS + SKD_ROW_FLAGS];
            if ((flags & SKD_ROW_SAMPLE) && !(flags & SKD_ROW_WANT_LOGITS)) e->act[m++] = j;
        }
        if (m) run_head(e, e->act, m, e->head);
        int c = 0;
        for (; i < j; i++) {
            const int32_t *r = rows + (size_t)i * SKD_ROW_FIELDS;
            const int flags = r[SKD_ROW_FLAGS];
            const float *src = NULL;
            if (flags & SKD_ROW_WANT_LOGITS) src = logits + (size_t)k_logit++ * V;
            else if (flags & SKD_ROW_SAMPLE) src = e->head + (size_t)c++ * V;
            if (!(flags & SKD_ROW_SAMPLE)) continue;
            const int32_t tok = sample_row(e, r, params + (size_t)i * SKD_PARAM_FIELDS, src);
            tokens[n_tok++] = tok;
            if (flags & SKD_ROW_LOGPROBS) { /* only n_top + 1 values leave the engine, not the row of logits */
                skd_logprobs(src, V, tok, n_top, lp_values + (size_t)k_lp * (1 + n_top), lp_ids + (size_t)k_lp * n_top);
                k_lp++;
            }
        }
    }
    return SKD_OK;
}

SKD_API int skd_engine_step(skd_engine *e, const int32_t *rows, int32_t n_rows, const float *params, float *logits,
                            int32_t *tokens) {
    return step(e, rows, n_rows, params, logits, tokens, 0, 0, NULL, NULL);
}

SKD_API int skd_engine_step_logprobs(skd_engine *e, const int32_t *rows, int32_t n_rows, const float *params,
                                     float *logits, int32_t *tokens, int32_t n_top, float *lp_values,
                                     int32_t *lp_ids) {
    return step(e, rows, n_rows, params, logits, tokens, 1, n_top, lp_values, lp_ids);
}
