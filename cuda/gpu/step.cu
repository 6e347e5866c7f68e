/* step.cu — skd_engine_step: one batch step of the generic decoder block
 * (skipdecode.h: OPT and the LLaMA family are data) with per-row SkipDecode
 * budgets.
 *
 *   plan    validate the rows and advance the KV bookkeeping (plan.h); refused
 *           steps change nothing and launch nothing
 *   upload  token / position / slot of each row and, per layer, the list of rows
 *           whose range contains it (one pinned host→device copy)
 *   embed   h[i] = project_in?(embed_tokens[tok]) (+ embed_positions[pos + POS_OFFSET])   (fp32)
 *           rotary models: each row's cos/sin table, once per step
 *   layer l for the m_l active rows only (gathered through the index list):
 *             pre-norm:  h += O(attn(rot(N1(h))));  h += down(act(N2(h)))
 *             post-norm: h = N1(h + O(attn(h))); h = N2(h + down(act(h)))
 *           N = LayerNorm or RMSNorm; act = relu(up x) or silu(gate x)·up x
 *           (one GEMM of the fused [gate; up], then skd_swiglu)
 *           K/V of the active rows are written at (slot, l, pos) before the
 *           layer's attention, so rows of one slot attend causally to each other
 *   head    rows flagged SKD_ROW_WANT_LOGITS, then rows flagged only SKD_ROW_SAMPLE,
 *           in chunks of logit_chunk rows: final LN?, project_out?, LM head → fp32
 *           logits on the device; the wanted ones are copied to the caller's
 *           buffer in row order
 *   sample  rows flagged SKD_ROW_SAMPLE: one token each, drawn on the device from
 *           the chunk's logits (sample.cu); only the int32 ids come back, so a
 *           decode step that samples moves no logits to the host
 *
 * Everything runs on the engine's stream and is synchronised once at the end.
 *
 * CUDA graphs (SKIPDECODE_CUDA_GRAPHS=1, engine.cu; the cache is graphs.cu):
 * every kernel reads its per-step data (tokens, positions, slots, row lists,
 * sampling keys) from the upload buffer, whose device address is fixed, so
 * the launches of a step depend only on its "shape", the key
 *     [n rows, rows wanting logits, rows sampling, head rows, active rows of layer 0..L-1]
 * Steps whose head needs several logit chunks, or that carry more than
 * GRAPH_MAX_ROWS rows (prefill: few launches per byte), run launch by launch.
 * A SkipDecode decode batch has few keys: one per distinct budget mix.
 * TODO(perf): fuse LN into the GEMM prologue and the K/V store into the QKV
 * epilogue (bias+residual are fused already).
 */
#include <string.h>

#include "attention.cuh"
#include "embed.cuh"
#include "engine.cuh"
#include "gemm.cuh"
#include "graphs.cuh"
#include "kv_store.cuh"
#include "norm.cuh"
#include "rotary.cuh"
#include "sample.cuh"

#define TRY(call)                       \
    do {                                \
        const int st_ = (call);         \
        if (st_ != SKD_OK) return st_;  \
    } while (0)

#define GRAPH_MAX_ROWS 64

static skd_gemm_args gemm_args(const skd_engine *e, const void *x, int ldx, const void *w, const void *bias, int m, int n,
                               int k) {
    skd_gemm_args a;
    memset(&a, 0, sizeof a);
    a.x = x;
    a.ldx = ldx;
    a.w = w;
    a.bias = bias;
    a.m = m;
    a.n = n;
    a.k = k;
    a.ctx = &e->gemm;
    return a;
}

/* What the host decided for a step (forward fills it; the launches follow it). */
typedef struct {
    int n, n_logits, n_sample, n_head;
    const skd_sample_row *sr; /* host copy of the sampling rows, by head row */
    float *logits;            /* caller's buffer, or NULL when the copy happens after the launches */
} step_plan;

/* Every device launch of a step, in stream order; with p->logits NULL (the
 * single-chunk case, and always under capture) no host copy is enqueued. */
static int launch_step(skd_engine *e, const step_plan *p) {
    const skd_shape *s = &e->s;
    const int L = s->n_layers, d = s->d, de = s->embed_dim, f = s->ffn, V = s->vocab, dt = e->dtype, n = p->n;
    const bool proj = de != d;
    cudaStream_t st = e->stream;
    const int32_t *dtok = e->idx_dev, *dpos = e->idx_dev + n, *dslot = e->idx_dev + 2 * (size_t)n;
    const int32_t *dhd = e->idx_dev + (size_t)(3 + L) * n;
    const skd_sample_row *dsr = (const skd_sample_row *)(e->idx_dev + (size_t)(4 + L) * n);
    const skd_attn_ctx *actx = e->attn.splits > 1 || e->attn.tiled_from > 0 ? &e->attn : NULL;

    /* ---- embed ---- */
    const void *pos_table = s->positions == SKD_POS_LEARNED ? e->embed_positions : NULL;
    if (proj) {
        skd_gemm_args a = gemm_args(e, e->embed_tokens, de, e->project_in, NULL, n, d, de);
        a.x_rows = dtok; /* X row i = embed_tokens[tok[i]] */
        a.yf = e->h;
        a.ldyf = d;
        TRY(skd_gemm(&a, dt, st));
        if (pos_table) TRY(skd_embed(e->h, NULL, pos_table, dtok, dpos, s->pos_offset, n, d, dt, st));
    } else {
        TRY(skd_embed(e->h, e->embed_tokens, pos_table, dtok, dpos, s->pos_offset, n, d, dt, st));
    }
    if (s->positions == SKD_POS_ROTARY) TRY(skd_rope_table(e->rope, dpos, e->rope_inv_freq, n, s->head_dim, st));

    /* ---- layers ---- */
    const int qd = s->q_dim, kd = s->kv_dim, nk = s->norm;
    const bool swiglu = s->mlp == SKD_MLP_SWIGLU;
    for (int l = 0; l < L; l++) {
        const int m = e->layer_m[l];
        if (!m) continue;
        const int32_t *idx = e->idx_dev + (size_t)(3 + l) * n;
        const skd_gpu_layer *w = &e->layers[l];

        /* attention block */
        if (s->pre_ln)
            TRY(skd_rows_norm(e->h, idx, m, d, nk, w->attn_ln_w, w->attn_ln_b, s->norm_eps, false, e->xn, dt, st));
        else
            TRY(skd_rows_norm(e->h, idx, m, d, nk, NULL, NULL, s->norm_eps, false, e->xn, dt, st));
        skd_gemm_args a = gemm_args(e, e->xn, d, w->qkv_w, w->qkv_b, m, qd + 2 * kd, d); /* [m, qd+2kd] = xn · [q;k;v]ᵀ */
        a.y = e->qkv;
        a.ldy = qd + 2 * kd;
        TRY(skd_gemm(&a, dt, st));
        if (s->positions == SKD_POS_ROTARY) TRY(skd_rope_apply(e->qkv, idx, e->rope, m, qd, kd, s->head_dim, dt, st));
        TRY(skd_kv_store(e->k_cache, e->v_cache, e->qkv, idx, dslot, dpos, m, l, L, s->max_seq, qd, kd, st));
        TRY(skd_attention(e->att, e->qkv, e->k_cache, e->v_cache, idx, dslot, dpos, m, l, L, s->max_seq, s->n_heads,
                          s->n_kv_heads, s->head_dim, dt, actx, st));
        a = gemm_args(e, e->att, qd, w->o_w, w->o_b, m, d, qd); /* h[idx] += att · Oᵀ + b */
        a.yf = e->h;
        a.ldyf = d;
        a.yf_rows = idx;
        a.accumulate = 1;
        TRY(skd_gemm(&a, dt, st));

        /* MLP block */
        if (s->pre_ln)
            TRY(skd_rows_norm(e->h, idx, m, d, nk, w->mlp_ln_w, w->mlp_ln_b, s->norm_eps, false, e->xn, dt, st));
        else /* post-LN: h = N1(h) in place, and its copy feeds the MLP */
            TRY(skd_rows_norm(e->h, idx, m, d, nk, w->attn_ln_w, w->attn_ln_b, s->norm_eps, true, e->xn, dt, st));
        if (swiglu) { /* gu = xn · [gate; up]ᵀ (+b); ff = silu(gate) ⊙ up */
            a = gemm_args(e, e->xn, d, w->fc1_w, w->fc1_b, m, 2 * f, d);
            a.y = e->gu;
            a.ldy = 2 * f;
            TRY(skd_gemm(&a, dt, st));
            TRY(skd_swiglu(e->ff, e->gu, m, f, dt, st));
        } else { /* ff = relu(xn · fc1ᵀ + b) */
            a = gemm_args(e, e->xn, d, w->fc1_w, w->fc1_b, m, f, d);
            a.relu = 1;
            a.y = e->ff;
            a.ldy = f;
            TRY(skd_gemm(&a, dt, st));
        }
        a = gemm_args(e, e->ff, f, w->fc2_w, w->fc2_b, m, d, f); /* h[idx] += ff · downᵀ + b */
        a.yf = e->h;
        a.ldyf = d;
        a.yf_rows = idx;
        a.accumulate = 1;
        TRY(skd_gemm(&a, dt, st));
        if (!s->pre_ln) TRY(skd_rows_norm(e->h, idx, m, d, nk, w->mlp_ln_w, w->mlp_ln_b, s->norm_eps, true, NULL, dt, st));
    }

    /* ---- head and sampling, in chunks of logit_chunk head rows ---- */
    int j0 = 0; /* first sampled row not yet drawn */
    for (int c0 = 0; c0 < p->n_head; c0 += e->logit_chunk) {
        const int kc = p->n_head - c0 < e->logit_chunk ? p->n_head - c0 : e->logit_chunk;
        TRY(skd_rows_norm(e->h, dhd + c0, kc, d, s->norm, e->final_ln_w, e->final_ln_b, s->norm_eps, false, e->xn, dt, st));
        const void *x = e->xn;
        if (proj) {
            skd_gemm_args a = gemm_args(e, e->xn, d, e->project_out, NULL, kc, de, d); /* [kc, e] */
            a.y = e->xe;
            a.ldy = de;
            TRY(skd_gemm(&a, dt, st));
            x = e->xe;
        }
        skd_gemm_args a = gemm_args(e, x, de, e->lm_head, NULL, kc, V, de); /* logits [kc, V] fp32 */
        a.yf = e->logits_dev;
        a.ldyf = V;
        TRY(skd_gemm(&a, dt, st));
        if (p->logits && c0 < p->n_logits) { /* head rows c0 .. min(c0 + kc, n_logits) want their logits */
            const int kw = p->n_logits - c0 < kc ? p->n_logits - c0 : kc;
            SKD_CUDA_TRY(cudaMemcpyAsync(p->logits + (size_t)c0 * V, e->logits_dev, sizeof(float) * (size_t)kw * V,
                                         cudaMemcpyDeviceToHost, st));
        }
        int j1 = j0; /* sampled rows of this chunk: j0 .. j1 (listed by head row) */
        while (j1 < p->n_sample && p->sr[j1].head < c0 + kc) j1++;
        /* stream order: the next chunk's LM head overwrites logits_dev only after this */
        TRY(skd_sample(e->logits_dev, V, dsr + j0, j1 - j0, c0, e->tok_dev, st));
        j0 = j1;
    }
    return SKD_OK;
}

/* ---- CUDA graphs (graphs.cu) ------------------------------------------------------- */

static int launch_step_cb(void *e, const void *p) { return launch_step((skd_engine *)e, (const step_plan *)p); }

/* Runs the step's launches: from a graph when graphs are on and the step
 * qualifies, else one by one. */
static int run_launches(skd_engine *e, const step_plan *p) {
    skd_graph_cache *g = &e->graphs;
    const int L = e->s.n_layers;
    if (!g->mode || p->logits || p->n > GRAPH_MAX_ROWS) return launch_step(e, p);
    g->key[0] = p->n;
    g->key[1] = p->n_logits;
    g->key[2] = p->n_sample;
    g->key[3] = p->n_head;
    memcpy(g->key + 4, e->layer_m, sizeof(int32_t) * (size_t)L);
    return skd_graph_run(g, e->stream, launch_step_cb, e, p);
}

/* The forward pass for rows that skd_plan_rows accepted. */
static int forward(skd_engine *e, const int32_t *rows, int n, const float *params, int n_logits, int n_sample, float *logits,
                   int32_t *tokens) {
    const skd_shape *s = &e->s;
    const int L = s->n_layers, V = s->vocab;
    cudaStream_t st = e->stream;
    SKD_CUDA_TRY(cudaSetDevice(e->device));

    /* Upload, one pinned buffer: int32 lists of stride n — tok | pos | slot |
     * layer 0 .. layer L-1 | head rows — then n_sample skd_sample_row.
     * Head rows: those wanting logits (row order), then those only sampling (row
     * order); head row h's logits are row h of the step's logits on the device.
     * Sampled rows are listed by head row (so a chunk of head rows holds a
     * contiguous run of them) and each names its index in `tokens` (row order). */
    int32_t *hb = e->idx_host;
    int32_t *tok = hb, *pos = hb + n, *slot = hb + 2 * (size_t)n, *hd = hb + (size_t)(3 + L) * n;
    skd_sample_row *sr = (skd_sample_row *)(hb + (size_t)(4 + L) * n);
    int n_ws = 0; /* rows that want logits and sample: their sample rows come first */
    for (int i = 0; i < n; i++) {
        const int fl = rows[(size_t)i * SKD_ROW_FIELDS + SKD_ROW_FLAGS];
        n_ws += (fl & SKD_ROW_WANT_LOGITS) && (fl & SKD_ROW_SAMPLE);
    }
    int h_want = 0, h_only = n_logits, j_ws = 0, j_only = n_ws, n_out = 0;
    for (int i = 0; i < n; i++) {
        const int32_t *r = rows + (size_t)i * SKD_ROW_FIELDS;
        const int fl = r[SKD_ROW_FLAGS];
        tok[i] = r[SKD_ROW_TOKEN];
        pos[i] = r[SKD_ROW_POS];
        slot[i] = r[SKD_ROW_SLOT];
        if (!(fl & (SKD_ROW_WANT_LOGITS | SKD_ROW_SAMPLE))) continue;
        const int h = fl & SKD_ROW_WANT_LOGITS ? h_want++ : h_only++;
        hd[h] = i;
        if (!(fl & SKD_ROW_SAMPLE)) continue;
        skd_sample_row *q = &sr[fl & SKD_ROW_WANT_LOGITS ? j_ws++ : j_only++];
        const float *prm = params + (size_t)i * SKD_PARAM_FIELDS;
        q->head = h;
        q->out = n_out++;
        q->top_k = r[SKD_ROW_TOP_K];
        q->seq = (uint32_t)r[SKD_ROW_SEQ];
        q->step = (uint32_t)r[SKD_ROW_STEP];
        q->seed_lo = (uint32_t)r[SKD_ROW_SEED_LO];
        q->seed_hi = (uint32_t)r[SKD_ROW_SEED_HI];
        q->temperature = prm[SKD_PARAM_TEMPERATURE];
        q->top_p = prm[SKD_PARAM_TOP_P];
    }
    const int n_head = h_only;
    if (h_want != n_logits || n_out != n_sample)
        return skd_fail(SKD_ERR_STATE, "internal: the plan counted %d rows wanting logits and %d sampling; the step has %d and %d",
                        n_logits, n_sample, h_want, n_out);
    for (int l = 0; l < L; l++) {
        int32_t *lay = hb + (size_t)(3 + l) * n;
        int m = 0;
        for (int i = 0; i < n; i++) {
            const int32_t *r = rows + (size_t)i * SKD_ROW_FIELDS;
            if (skd_layer_active(l, L, r[SKD_ROW_BUDGET], r[SKD_ROW_WARMUP])) lay[m++] = i;
        }
        e->layer_m[l] = m;
    }
    const size_t up = (size_t)(4 + L) * n * sizeof(int32_t) + (size_t)n_sample * sizeof(skd_sample_row);
    SKD_CUDA_TRY(cudaMemcpyAsync(e->idx_dev, hb, up, cudaMemcpyHostToDevice, st));

    /* One logit chunk: the logits go to the host after the launches (which a
     * graph may then hold); several: each chunk's copy is enqueued after it. */
    const bool one_chunk = n_head <= e->logit_chunk;
    step_plan p = { n, n_logits, n_sample, n_head, sr, one_chunk ? NULL : logits };
    TRY(run_launches(e, &p));
    if (one_chunk && n_logits)
        SKD_CUDA_TRY(cudaMemcpyAsync(logits, e->logits_dev, sizeof(float) * (size_t)n_logits * V, cudaMemcpyDeviceToHost, st));
    if (n_sample) SKD_CUDA_TRY(cudaMemcpyAsync(e->tok_host, e->tok_dev, sizeof(int32_t) * n_sample, cudaMemcpyDeviceToHost, st));
    SKD_CUDA_TRY(cudaStreamSynchronize(st));
    if (n_sample) memcpy(tokens, e->tok_host, sizeof(int32_t) * n_sample);
    return SKD_OK;
}

SKD_API int skd_engine_step(skd_engine *e, const int32_t *rows, int32_t n_rows, const float *params, float *logits,
                            int32_t *tokens) {
    if (!e) return skd_fail(SKD_ERR_INVALID_ARG, "engine is NULL");
    if (!e->finalized) return skd_fail(SKD_ERR_STATE, "skd_engine_finalize must succeed before the first step");
    const skd_shape *s = &e->s;
    int32_t n_logits = 0, n_sample = 0;
    int st = skd_plan_rows(s, e->slots, rows, n_rows, params, logits != NULL, tokens != NULL, e->plan_scratch, &n_logits,
                           &n_sample);
    if (st) return st;
    if (n_rows == 0) return SKD_OK;
    st = forward(e, rows, n_rows, params, n_logits, n_sample, logits, tokens);
    if (st) {
        /* The bookkeeping already counts this step's K/V as written, but the
         * device work did not finish: forget the sequences it touched, so no
         * later step reads a half-written cache. */
        for (int i = 0; i < n_rows; i++) {
            skd_slot *sl = &e->slots[rows[(size_t)i * SKD_ROW_FIELDS + SKD_ROW_SLOT]];
            sl->len = 0;
            memset(sl->kv_len, 0, sizeof(int32_t) * (size_t)s->n_layers);
        }
    }
    return st;
}
