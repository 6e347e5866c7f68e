/* parity.c — the CUDA backend against the CPU reference backend, end to end.
 *
 * dlopens build/libskipdecode_cpu.so and build/libskipdecode_cuda.so, builds
 * small random models — OPT (pre-LN and post-LN, with and without project_in/out,
 * tied and untied heads, F32/F16/BF16 uploads, awkward shapes), feeds both
 * engines the same steps and compares every logit:
 *
 *   step 0   prefill: slot 0 (9 tokens) and slot 1 (14 tokens) in one step, full
 *            budget, logits for every row (23 rows: the tiled GEMM path)
 *   step 1.. decode with decaying budgets layersAt(i) = max(1, L - i), warm-up 1;
 *            slot 1 lags slot 0 by one step (continuous batching: two budgets in
 *            one step); at decode step 2 slot 2 is prefilled (5 tokens) in the
 *            same step as the two decode rows; the next token of every sequence
 *            is the CPU's greedy choice, fed to both backends
 *   then     a rewind (slot 0 re-fed at position 3, full budget), a step that must
 *            be refused with SKD_ERR_KV_MISSING by both, and slot_info compared
 *
 * Pass criterion per model: max |Δlogit| <= rel × max |logit_cpu|, with
 * rel = 2e-2 for an fp16 compute dtype and 5e-2 for bf16. Weights are rounded
 * to the upload dtype on the host, so both backends see the same weights.
 * Greedy-token agreement is reported (near-ties can flip; it is not a criterion).
 *
 * Sampling (SKD_ROW_SAMPLE, skipdecode.h "Sampling"), per model:
 *   agreement  for each sampler in SAMPLERS, 12 steps that prefill slot 0 with
 *              16 rows, every row sampling with its own key (seq = step index,
 *              step = position): 192 draws per sampler. Each step runs twice on
 *              each backend: with logits out on even rows only (odd rows take the
 *              sample-only path), then on every row. Checks:
 *              - each backend's token equals the reference sampler (the CPU
 *                backend's own sample.c, compiled in) run on that backend's
 *                logits: exactly on the CPU; on CUDA unless u lies within 1e-5
 *                of a boundary of the reference's CDF (exp and fixed-point mass
 *                rounding, sample.cu), and such near-boundary draws are counted;
 *              - CUDA: a row's token is the same whether or not it wants its
 *                logits out (each step also runs with every row wanting them);
 *              - greedy: the CUDA token equals the CPU's, or the CPU logit of
 *                the CUDA token is within the logit tolerance of the max (a
 *                near-tie that fp16 may flip);
 *              - seeded: the tokens agree for all but 1% of draws plus the
 *                mismatches that the logit differences predict. fp16/bf16
 *                logits are not the CPU's fp32 ones, so a draw flips where u
 *                falls between the two backends' cumulative kept masses; that
 *                chance is computed exactly from both CDFs on the even rows
 *                (mismatch_chance) and its mean times the draws is "predicted".
 *   batch      CUDA: three sequences (different samplers, some rows wanting
 *              logits) stepped together, each alone, and together in another
 *              order: every token must be identical (a draw depends on its key
 *              and logits only). Steps stay <= 16 rows, so every GEMM takes one
 *              kernel whatever the batch (SIMT: the GEMV; tc: the skinny
 *              kernel, or the tile kernel under TILE_FROM=1), and each of them
 *              computes every row alike: the logits are bit-identical. (Not asserted on the CPU, whose matmul blocks rows
 *              and may round a row differently in another batch shape.)
 * Odd-numbered models run with SKIPDECODE_CUDA_LOGIT_CHUNK=5, so the LM head
 * and the sampler work through several chunks.
 *
 *   gcc -O2 -Wall -Wextra -I cuda/include -I cuda/common cuda/dev/parity.c -o build/parity -ldl -lm && build/parity
 * Exit status: 0 all pass, 1 a mismatch or an API failure, 2 a library failed to load.
 */
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "skipdecode.h"

/* The reference sampler, skd_sample(), straight from the CPU backend (and its
 * argmax(): the first index of the largest value). */
#include "../cpu/sample.c"
#include "halfs.h"

/* ---- the C ABI through dlopen ------------------------------------------------ */
typedef struct {
    const char *label;
    void *lib;
    int (*device_count)(int32_t *);
    int (*device_name)(int32_t, char *, int32_t);
    int (*create)(const int64_t *, int32_t, skd_engine **);
    void (*destroy)(skd_engine *);
    int (*set_tensor)(skd_engine *, int32_t, int32_t, int32_t, const void *, int64_t);
    int (*finalize)(skd_engine *);
    int (*step)(skd_engine *, const int32_t *, int32_t, const float *, float *, int32_t *);
    int (*slot_info)(const skd_engine *, int32_t, int32_t, int32_t *, int32_t *);
    const char *(*last_error)(void);
    const char *(*status_str)(int);
    int (*abi_version)(void);
} api;

static int load_api(api *a, const char *label, const char *path) {
    memset(a, 0, sizeof *a);
    a->label = label;
    a->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!a->lib) {
        fprintf(stderr, "cannot load %s: %s\n", path, dlerror());
        return 0;
    }
#define LOAD(field, sym)                                                    \
    *(void **)&a->field = dlsym(a->lib, sym);                               \
    if (!a->field) {                                                        \
        fprintf(stderr, "%s: missing symbol %s\n", path, sym);              \
        return 0;                                                           \
    }
    LOAD(device_count, "skd_device_count");
    LOAD(device_name, "skd_device_name");
    LOAD(create, "skd_engine_create");
    LOAD(destroy, "skd_engine_free");
    LOAD(set_tensor, "skd_engine_set_tensor");
    LOAD(finalize, "skd_engine_finalize");
    LOAD(step, "skd_engine_step");
    LOAD(slot_info, "skd_engine_slot_info");
    LOAD(last_error, "skd_last_error");
    LOAD(status_str, "skd_status_str");
    LOAD(abi_version, "skd_abi_version");
#undef LOAD
    if (a->abi_version() != SKD_ABI_VERSION) {
        fprintf(stderr, "%s: ABI %d, this harness is built for ABI %d\n", path, a->abi_version(), SKD_ABI_VERSION);
        return 0;
    }
    return 1;
}

#define CHECK(a, call)                                                                                        \
    do {                                                                                                      \
        int st_ = (call);                                                                                     \
        if (st_) {                                                                                            \
            fprintf(stderr, "%s: %s -> %s: %s\n", (a)->label, #call, (a)->status_str(st_), (a)->last_error()); \
            return -1;                                                                                        \
        }                                                                                                     \
    } while (0)

/* ---- random model ------------------------------------------------------------- */
static uint64_t rng_state;
static float urand(void) { /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.f - 1.f;
}

typedef struct {
    const char *name;
    int L, d, heads, ffn, vocab, embed, pre_ln, final_ln, tied;
    int upload_dtype;  /* SKD_DTYPE_* handed to set_tensor */
    int compute_dtype; /* cfg slot for the CUDA engine (0 = default F16) */
    /* the family descriptor (skipdecode.h); 0 = OPT's choice */
    int norm, positions, mlp, kv_heads, head_dim, no_bias;
} model_cfg;

static const model_cfg MODELS[] = {
    { "pre-LN, final LN, tied head, F16 upload", 3, 64, 4, 256, 300, 64, 1, 1, 1, SKD_DTYPE_F16, 0, 0, 0, 0, 0, 0, 0 },
    { "post-LN, project_in/out, F32 upload (converted on GPU)", 2, 64, 4, 256, 300, 32, 0, 0, 0, SKD_DTYPE_F32, SKD_DTYPE_F16, 0, 0, 0, 0, 0, 0 },
    { "pre-LN, project_in/out, BF16, head_dim 128", 3, 128, 1, 128, 300, 48, 1, 1, 0, SKD_DTYPE_BF16, SKD_DTYPE_BF16, 0, 0, 0, 0, 0, 0 },
    { "odd shapes: hidden 52, 1 head, ffn 100, vocab 50272", 2, 52, 1, 100, 50272, 52, 1, 1, 0, SKD_DTYPE_F16, 0, 0, 0, 0, 0, 0, 0 },
    { "head_dim 160 (hidden 320, 2 heads), post-LN", 2, 320, 2, 200, 300, 320, 0, 0, 0, SKD_DTYPE_F16, 0, 0, 0, 0, 0, 0, 0 },
    { "llama: RMSNorm, rotary, SwiGLU, GQA 4:2, no biases, F16", 3, 64, 4, 160, 300, 64, 1, 1, 0, SKD_DTYPE_F16, 0,
      SKD_NORM_RMS, SKD_POS_ROTARY, SKD_MLP_SWIGLU, 2, 0, 15 },
    { "qwen2-like: q/k/v biases, head_dim 24, one KV head, tied, BF16", 2, 64, 4, 128, 300, 64, 1, 1, 1, SKD_DTYPE_BF16,
      SKD_DTYPE_BF16, SKD_NORM_RMS, SKD_POS_ROTARY, SKD_MLP_SWIGLU, 1, 24, 14 },
};

#define MAX_SEQ 64
#define MAX_ROWS 32
#define MAX_SLOTS 3
#define POS_OFFSET 2

/* One tensor on both engines: random values shift + scale·U(-1, 1), rounded to
 * the upload dtype — or, when copy_of is given, those bytes. With keep, the
 * buffer is handed back to the caller (for the tied LM head) instead of freed. */
static int set_tensor_both(api *const apis[2], skd_engine *const eng[2], const model_cfg *m, int role, int layer,
                           int64_t numel, float scale, float shift, const void *copy_of, void **keep) {
    const int dt = m->upload_dtype;
    const size_t es = dt == SKD_DTYPE_F32 ? 4 : 2;
    void *buf = malloc((size_t)numel * es);
    if (!buf) return -1;
    if (copy_of) memcpy(buf, copy_of, (size_t)numel * es);
    else
        for (int64_t i = 0; i < numel; i++) {
            const float v = shift + scale * urand();
            if (dt == SKD_DTYPE_F32) ((float *)buf)[i] = v;
            else if (dt == SKD_DTYPE_F16) ((uint16_t *)buf)[i] = f32_to_f16(v);
            else ((uint16_t *)buf)[i] = f32_to_bf16(v);
        }
    for (int b = 0; b < 2; b++) {
        const int st = apis[b]->set_tensor(eng[b], role, layer, dt, buf, numel);
        if (st) {
            fprintf(stderr, "%s: set_tensor(role %d, layer %d) -> %s: %s\n", apis[b]->label, role, layer,
                    apis[b]->status_str(st), apis[b]->last_error());
            free(buf);
            return -1;
        }
    }
    if (keep) *keep = buf;
    else free(buf);
    return 0;
}

/* ---- comparison ---------------------------------------------------------------- */
typedef struct {
    double max_diff, max_ref;
    int rows, agree;
    int worst_row, worst_col;
    float worst_cpu, worst_gpu;
} stats;

static void compare(stats *s, const float *cpu, const float *gpu, int nrows, int V, int step) {
    for (int r = 0; r < nrows; r++) {
        const float *c = cpu + (size_t)r * V, *g = gpu + (size_t)r * V;
        for (int j = 0; j < V; j++) {
            const double dd = fabs((double)c[j] - g[j]);
            if (fabs(c[j]) > s->max_ref) s->max_ref = fabs(c[j]);
            if (!(dd <= s->max_diff)) { /* also catches NaN */
                s->max_diff = isnan(dd) ? INFINITY : dd;
                s->worst_row = step * 1000 + r;
                s->worst_col = j;
                s->worst_cpu = c[j];
                s->worst_gpu = g[j];
            }
        }
        s->agree += argmax(c, V) == argmax(g, V);
        s->rows++;
    }
}

/* Runs one step on both engines and compares the logits; returns the CPU's
 * logits in cpu_out (n_rows × V). */
static int step_both(api *const apis[2], skd_engine *const eng[2], const int32_t *rows, int n, int V, float *cpu_out,
                     float *gpu_out, stats *s, int step) {
    CHECK(apis[0], apis[0]->step(eng[0], rows, n, NULL, cpu_out, NULL));
    CHECK(apis[1], apis[1]->step(eng[1], rows, n, NULL, gpu_out, NULL));
    int nl = 0;
    for (int i = 0; i < n; i++) nl += rows[i * SKD_ROW_FIELDS + SKD_ROW_FLAGS] & 1;
    compare(s, cpu_out, gpu_out, nl, V, step);
    return 0;
}

static void put_row(int32_t *r, int tok, int pos, int slot, int budget, int warm, int flags) {
    r[SKD_ROW_TOKEN] = tok;
    r[SKD_ROW_POS] = pos;
    r[SKD_ROW_SLOT] = slot;
    r[SKD_ROW_BUDGET] = budget;
    r[SKD_ROW_WARMUP] = warm;
    r[SKD_ROW_FLAGS] = flags;
    for (int f = SKD_ROW_FLAGS + 1; f < SKD_ROW_FIELDS; f++) r[f] = 0;
}

static int layers_at(int L, int i) { return L - i > 1 ? L - i : 1; } /* warm-up 1 */

/* ---- sampling ------------------------------------------------------------------ */
typedef struct {
    const char *name;
    float temperature;
    int top_k;
    float top_p;
} sampler;

static const sampler SAMPLERS[] = {
    { "greedy", 0.0f, 0, 1.0f },
    { "T 0.8", 0.8f, 0, 1.0f },
    { "T 1.0 top-k 40", 1.0f, 40, 1.0f },
    { "T 0.7 top-p 0.9", 0.7f, 0, 0.9f },
    { "T 1.3 top-k 20 top-p 0.95", 1.3f, 20, 0.95f },
};
#define N_SAMPLERS ((int)(sizeof SAMPLERS / sizeof *SAMPLERS))
#define SAMPLE_STEPS 12 /* agreement steps per sampler */
#define SAMPLE_ROWS 16  /* rows per agreement step */

/* Flags row r as sampling with sampler c and key (seed, seq, step); params row prm. */
static void put_sample(int32_t *r, float *prm, const sampler *c, uint64_t seed, int seq, int step) {
    r[SKD_ROW_FLAGS] |= SKD_ROW_SAMPLE;
    r[SKD_ROW_TOP_K] = c->top_k;
    r[SKD_ROW_SEQ] = seq;
    r[SKD_ROW_STEP] = step;
    r[SKD_ROW_SEED_LO] = (int32_t)(uint32_t)seed;
    r[SKD_ROW_SEED_HI] = (int32_t)(uint32_t)(seed >> 32);
    prm[SKD_PARAM_TEMPERATURE] = c->temperature;
    prm[SKD_PARAM_TOP_P] = c->top_p;
}

/* The reference sampler on a row of logits, with the row's own key. */
static int ref_sample(const float *x, int V, const int32_t *r, const float *prm, float *sf, int32_t *si) {
    const uint64_t seed = (uint64_t)(uint32_t)r[SKD_ROW_SEED_LO] | ((uint64_t)(uint32_t)r[SKD_ROW_SEED_HI] << 32);
    return skd_sample(x, V, prm[SKD_PARAM_TEMPERATURE], r[SKD_ROW_TOP_K], prm[SKD_PARAM_TOP_P], seed, (uint32_t)r[SKD_ROW_SEQ],
                      (uint32_t)r[SKD_ROW_STEP], sf, si);
}

/* F[i] = share of the kept mass on kept ids <= i (the CDF the draw inverts),
 * computed plainly: sort by (p desc, id asc), cut at top_k and top_p. */
static void kept_cdf(const float *x, int V, const sampler *c, double *F, float *p, int32_t *ids) {
    float mx = x[0];
    for (int i = 1; i < V; i++) mx = x[i] > mx ? x[i] : mx;
    for (int i = 0; i < V; i++) {
        p[i] = expf((x[i] - mx) / c->temperature);
        ids[i] = i;
    }
    g_p = p;
    qsort(ids, (size_t)V, sizeof *ids, by_prob_desc);
    int n = c->top_k > 0 && c->top_k < V ? c->top_k : V;
    if (c->top_p < 1.0f) {
        double kept = 0, run = 0;
        for (int j = 0; j < n; j++) kept += p[ids[j]];
        int m = 0;
        while (m < n) {
            run += p[ids[m++]];
            if (run >= (double)c->top_p * kept) break;
        }
        n = m;
    }
    for (int i = 0; i < V; i++) F[i] = 0;
    for (int j = 0; j < n; j++) F[ids[j]] = p[ids[j]];
    double run = 0;
    for (int i = 0; i < V; i++) F[i] = run += F[i];
    for (int i = 0; i < V; i++) F[i] /= run;
}

/* The chance, over u uniform in [0, 1), that inverting F0 and F1 (the first id
 * i with F(i) > u) gives different ids: the two step functions are walked
 * together, segment by segment between their breakpoints. */
static double mismatch_chance(const double *F0, const double *F1, int V) {
    int i = 0, j = 0;
    double u = 0, diff = 0;
    for (;;) {
        while (i < V && !(F0[i] > u)) i++;
        while (j < V && !(F1[j] > u)) j++;
        if (i >= V || j >= V) return diff;
        const double next = F0[i] < F1[j] ? F0[i] : F1[j]; /* on [u, next) the ids are i and j */
        if (i != j) diff += next - u;
        u = next;
    }
}

typedef struct {
    int draws, agree, off_argmax;              /* seeded draws: cpu token == cuda token; cpu token != argmax */
    double predicted;                          /* sum of mismatch_chance() over the seeded draws */
    char first_diff[3][96];
    int greedy_draws, greedy_agree, greedy_bad;/* greedy_bad: mismatches that are no near-tie */
    int path, path_bad;                        /* token without logits out == token with them */
    int self[2], self_bad[2], self_near;       /* token == reference on the backend's own logits; cuda: or u
                                                  within 1e-5 of a boundary of the reference CDF (rounding) */
    int batch, batch_bad;
} samp_stats;

/* Agreement steps for one sampler. tol: the logit tolerance (near-ties). */
static int sample_agreement(api *const apis[2], skd_engine *const eng[2], int L, int V, int model, int ci, double tol,
                            samp_stats *ss, float *lc, float *lg, float *sf, int32_t *si, double *F0, double *F1) {
    const sampler *c = &SAMPLERS[ci];
    int32_t rall[SAMPLE_ROWS * SKD_ROW_FIELDS], ralt[SAMPLE_ROWS * SKD_ROW_FIELDS];
    float prm[SAMPLE_ROWS * SKD_PARAM_FIELDS];
    int32_t tall[2][SAMPLE_ROWS], talt[SAMPLE_ROWS];
    float *const lb[2] = { lc, lg };
    const uint64_t seed = 0x5eed0000000ull * (uint64_t)(model + 1) + (uint64_t)ci * 0x9e3779b9ull;
    for (int st = 0; st < SAMPLE_STEPS; st++) {
        for (int p = 0; p < SAMPLE_ROWS; p++) {
            const int tok = 2 + (11 * p + 17 * st + 5 * ci) % (V - 2);
            put_row(rall + p * SKD_ROW_FIELDS, tok, p, 0, L, 1, SKD_ROW_WANT_LOGITS);
            put_row(ralt + p * SKD_ROW_FIELDS, tok, p, 0, L, 1, p % 2 ? 0 : SKD_ROW_WANT_LOGITS);
            put_sample(rall + p * SKD_ROW_FIELDS, prm + p * SKD_PARAM_FIELDS, c, seed, st, p);
            put_sample(ralt + p * SKD_ROW_FIELDS, prm + p * SKD_PARAM_FIELDS, c, seed, st, p);
        }
        for (int b = 0; b < 2; b++) {
            /* odd rows sample without logits out, then every row with them: same batch, same logits */
            CHECK(apis[b], apis[b]->step(eng[b], ralt, SAMPLE_ROWS, prm, lb[b], talt));
            CHECK(apis[b], apis[b]->step(eng[b], rall, SAMPLE_ROWS, prm, lb[b], tall[b]));
            for (int p = 0; p < SAMPLE_ROWS; p++) {
                if (tall[b][p] < 0 || tall[b][p] >= V || talt[p] < 0 || talt[p] >= V) {
                    printf("  %s: %s step %d row %d: token %d / %d out of range\n", apis[b]->label, c->name, st, p, talt[p],
                           tall[b][p]);
                    return 1;
                }
                if (b == 1) { /* see the header: checked on the CUDA side only */
                    ss->path++;
                    if (talt[p] != tall[b][p] && ss->path_bad++ < 3)
                        printf("  %s: %s step %d row %d: token %d %s logits out, %d with\n", apis[b]->label, c->name, st, p,
                               talt[p], p % 2 ? "without" : "with", tall[b][p]);
                }
                const float *x = lb[b] + (size_t)p * V;
                const int ref = ref_sample(x, V, rall + p * SKD_ROW_FIELDS, prm + p * SKD_PARAM_FIELDS, sf, si);
                ss->self[b]++;
                if (tall[b][p] == ref) continue;
                if (b == 1 && c->temperature > 0.0f && c->top_k != 1) {
                    /* excused when u lies within 1e-5 of the token's share of the reference CDF */
                    const int t = tall[b][p];
                    const double u = skd_uniform(seed, (uint32_t)st, (uint32_t)p);
                    kept_cdf(x, V, c, F0, sf, si);
                    const double lo = t ? F0[t - 1] : 0.0, hi = F0[t];
                    if ((u < lo ? lo - u : u > hi ? u - hi : 0.0) <= 1e-5) {
                        ss->self_near++;
                        continue;
                    }
                }
                if (ss->self_bad[b]++ < 3)
                    printf("  %s: %s step %d row %d: token %d, reference on its logits %d\n", apis[b]->label, c->name, st, p,
                           tall[b][p], ref);
            }
        }
        for (int p = 0; p < SAMPLE_ROWS; p++) {
            const int tc = tall[0][p], tg = tall[1][p];
            const float *xc = lc + (size_t)p * V, *xg = lg + (size_t)p * V;
            if (c->temperature == 0.0f || c->top_k == 1) {
                ss->greedy_draws++;
                ss->greedy_agree += tc == tg;
                if (tc != tg && xc[tg] < xc[tc] - tol && ss->greedy_bad++ < 3)
                    printf("  greedy step %d row %d: cpu %d (logit %.5f), cuda %d (cpu logit %.5f), tol %.3e\n", st, p, tc, xc[tc],
                           tg, xc[tg], tol);
                continue;
            }
            ss->draws++;
            ss->agree += tc == tg;
            ss->off_argmax += tc != argmax(xc, V);
            if (tc != tg && ss->draws - ss->agree <= 3)
                snprintf(ss->first_diff[ss->draws - ss->agree - 1], sizeof ss->first_diff[0], "%s step %d row %d: cpu %d cuda %d",
                         c->name, st, p, tc, tg);
            kept_cdf(xc, V, c, F0, sf, si);
            kept_cdf(xg, V, c, F1, sf, si);
            ss->predicted += mismatch_chance(F0, F1, V);
        }
    }
    return 0;
}

/* One batch of the independence check: groups of rows (one sequence each), in
 * the order `order`; fills tok[g][row] with each group's sampled tokens. */
#define BATCH_GROUPS 3
static const struct {
    int slot, n;
    int sampler[6]; /* per row: -1 = no sampling */
    int want[6];    /* per row: wants logits */
} GROUPS[BATCH_GROUPS] = {
    { 0, 5, { -1, -1, 0, 1, 3 }, { 0, 0, 1, 0, 0 } },
    { 1, 3, { 4, 2, 1 }, { 0, 0, 0 } },
    { 2, 6, { -1, 3, -1, 4, -1, 2 }, { 0, 0, 0, 0, 0, 1 } },
};

static int batch_run(api *a, skd_engine *e, int L, int V, const int *order, int n_groups, uint64_t seed, float *logits,
                     int32_t tok[BATCH_GROUPS][6]) {
    int32_t rows[16 * SKD_ROW_FIELDS];
    float prm[16 * SKD_PARAM_FIELDS];
    int32_t out[16];
    int n = 0;
    for (int q = 0; q < n_groups; q++) {
        const int g = order[q];
        for (int p = 0; p < GROUPS[g].n; p++, n++) {
            put_row(rows + n * SKD_ROW_FIELDS, 2 + (5 * p + 23 * g + (int)(seed % 97)) % (V - 2), p, GROUPS[g].slot, L, 1,
                    GROUPS[g].want[p] ? SKD_ROW_WANT_LOGITS : 0);
            if (GROUPS[g].sampler[p] >= 0)
                put_sample(rows + n * SKD_ROW_FIELDS, prm + n * SKD_PARAM_FIELDS, &SAMPLERS[GROUPS[g].sampler[p]], seed, g, p);
        }
    }
    CHECK(a, a->step(e, rows, n, prm, logits, out));
    int k = 0;
    for (int q = 0; q < n_groups; q++) {
        const int g = order[q];
        for (int p = 0; p < GROUPS[g].n; p++) tok[g][p] = GROUPS[g].sampler[p] >= 0 ? out[k++] : -1;
    }
    return 0;
}

/* Tokens of every group: together (order 0 1 2), alone, together (order 2 0 1). */
static int batch_independence(api *a, skd_engine *e, int L, int V, int model, float *logits, samp_stats *ss) {
    static const int together[BATCH_GROUPS] = { 0, 1, 2 }, shuffled[BATCH_GROUPS] = { 2, 0, 1 };
    for (int rep = 0; rep < 6; rep++) {
        const uint64_t seed = 0xabcdef12345ull * (uint64_t)(rep + 1) + (uint64_t)model;
        int32_t ta[BATCH_GROUPS][6], tb[BATCH_GROUPS][6], ts[BATCH_GROUPS][6];
        if (batch_run(a, e, L, V, together, BATCH_GROUPS, seed, logits, ta)) return -1;
        for (int g = 0; g < BATCH_GROUPS; g++)
            if (batch_run(a, e, L, V, &g, 1, seed, logits, tb)) return -1;
        if (batch_run(a, e, L, V, shuffled, BATCH_GROUPS, seed, logits, ts)) return -1;
        for (int g = 0; g < BATCH_GROUPS; g++)
            for (int p = 0; p < GROUPS[g].n; p++) {
                if (GROUPS[g].sampler[p] < 0) continue;
                ss->batch++;
                if (ta[g][p] != tb[g][p] || ta[g][p] != ts[g][p]) {
                    if (ss->batch_bad++ < 3)
                        printf("  %s: sequence %d row %d: token %d in a batch, %d alone, %d in another order\n", a->label, g, p,
                               ta[g][p], tb[g][p], ts[g][p]);
                }
            }
    }
    return 0;
}

/* All sampling checks of one model; returns 1 pass, 0 fail, -1 API failure. */
static int run_sampling(api *const apis[2], skd_engine *const eng[2], int L, int V, int model, double tol) {
    samp_stats ss;
    memset(&ss, 0, sizeof ss);
    float *lc = malloc(sizeof(float) * MAX_ROWS * V), *lg = malloc(sizeof(float) * MAX_ROWS * V);
    float *sf = malloc(SKD_SAMPLE_SCRATCH_F(V) * sizeof(float));
    int32_t *si = malloc(SKD_SAMPLE_SCRATCH_I(V) * sizeof(int32_t));
    double *F0 = malloc(sizeof(double) * V), *F1 = malloc(sizeof(double) * V);
    int rc = 0;
    for (int ci = 0; ci < N_SAMPLERS && !rc; ci++)
        rc = sample_agreement(apis, eng, L, V, model, ci, tol, &ss, lc, lg, sf, si, F0, F1);
    if (!rc) rc = batch_independence(apis[1], eng[1], L, V, model, lc, &ss);
    free(lc);
    free(lg);
    free(sf);
    free(si);
    free(F0);
    free(F1);
    if (rc) return -1;
    const double allowed = 0.01 * ss.draws + ss.predicted;
    const int pass = ss.path_bad == 0 && ss.self_bad[0] == 0 && ss.self_bad[1] == 0 && ss.greedy_bad == 0 &&
                     ss.draws - ss.agree <= allowed && ss.batch_bad == 0;
    printf("  sampling: greedy %d/%d agree (%d not near-ties)  seeded %d/%d agree (%.2f%% differ; allowed %.1f = 1%% + %.1f "
           "predicted; %d%% of draws off the argmax)\n"
           "            token = reference on own logits: cpu %d/%d, cuda %d/%d (%d within rounding)  with = without logits "
           "out %d/%d  batch-independent %d/%d  %s\n",
           ss.greedy_agree, ss.greedy_draws, ss.greedy_bad, ss.agree, ss.draws,
           ss.draws ? 100.0 * (ss.draws - ss.agree) / ss.draws : 0.0, allowed, ss.predicted,
           ss.draws ? 100 * ss.off_argmax / ss.draws : 0, ss.self[0] - ss.self_bad[0], ss.self[0], ss.self[1] - ss.self_bad[1] - ss.self_near,
           ss.self[1], ss.self_near, ss.path - ss.path_bad, ss.path, ss.batch - ss.batch_bad, ss.batch, pass ? "PASS" : "FAIL");
    if (!pass)
        for (int k = 0; k < 3 && k < ss.draws - ss.agree; k++) printf("  seeded mismatch: %s\n", ss.first_diff[k]);
    return pass;
}

/* Returns 1 pass, 0 mismatch, -1 API failure. */
static int run_model(api *const apis[2], const model_cfg *m, int index) {
    rng_state = 0x9E3779B97F4A7C15ull ^ (uint64_t)(index + 1) * 0x1234567ull;
    int64_t cfg[SKD_CFG_COUNT] = { 0 };
    cfg[SKD_CFG_ARCH] = SKD_ARCH_OPT;
    cfg[SKD_CFG_NUM_LAYERS] = m->L;
    cfg[SKD_CFG_HIDDEN] = m->d;
    cfg[SKD_CFG_NUM_HEADS] = m->heads;
    cfg[SKD_CFG_FFN] = m->ffn;
    cfg[SKD_CFG_VOCAB] = m->vocab;
    cfg[SKD_CFG_MAX_POSITIONS] = MAX_SEQ;
    cfg[SKD_CFG_EMBED_DIM] = m->embed;
    cfg[SKD_CFG_PRE_LN] = m->pre_ln;
    cfg[SKD_CFG_FINAL_LN] = m->final_ln;
    cfg[SKD_CFG_POS_OFFSET] = POS_OFFSET;
    cfg[SKD_CFG_MAX_SLOTS] = MAX_SLOTS;
    cfg[SKD_CFG_MAX_SEQ] = MAX_SEQ;
    cfg[SKD_CFG_MAX_ROWS] = MAX_ROWS;
    cfg[SKD_CFG_THREADS] = 2;
    cfg[SKD_CFG_ARCH] = m->norm == SKD_NORM_RMS ? SKD_ARCH_LLAMA : SKD_ARCH_OPT;
    cfg[SKD_CFG_NORM] = m->norm;
    cfg[SKD_CFG_POSITIONS] = m->positions;
    cfg[SKD_CFG_MLP] = m->mlp;
    cfg[SKD_CFG_NUM_KV_HEADS] = m->kv_heads;
    cfg[SKD_CFG_HEAD_DIM] = m->head_dim;
    cfg[SKD_CFG_NO_BIAS] = m->no_bias;
    cfg[SKD_CFG_NORM_EPS_E12] = m->norm == SKD_NORM_RMS ? 1000000 : 0; /* 1e-6, LLaMA's */
    skd_engine *eng[2] = { NULL, NULL };
    setenv("SKIPDECODE_CUDA_LOGIT_CHUNK", index % 2 ? "5" : "", 1); /* read at create */
    for (int b = 0; b < 2; b++) {
        cfg[SKD_CFG_COMPUTE_DTYPE] = b ? m->compute_dtype : 0;
        cfg[SKD_CFG_KV_DTYPE] = b ? 0 : SKD_DTYPE_F32; /* the CPU reference keeps fp32 keys/values */
        CHECK(apis[b], apis[b]->create(cfg, SKD_CFG_COUNT, &eng[b]));
    }
    const int L = m->L, d = m->d, e = m->embed, f = m->ffn, V = m->vocab;
    const int hd = m->head_dim ? m->head_dim : d / m->heads, qd = m->heads * hd, kd = (m->kv_heads ? m->kv_heads : m->heads) * hd;
    const int rms = m->norm == SKD_NORM_RMS, rotary = m->positions == SKD_POS_ROTARY, swiglu = m->mlp == SKD_MLP_SWIGLU;
    const int b_qkv = !(m->no_bias & SKD_BIAS_QKV), b_o = !(m->no_bias & SKD_BIAS_O), b_mlp = !(m->no_bias & SKD_BIAS_MLP);
    const int b_norm = !rms && !(m->no_bias & SKD_BIAS_NORM);
    const float sd = 1.7320508f / sqrtf((float)d), sf = 1.7320508f / sqrtf((float)f), se = 1.7320508f / sqrtf((float)e);
    const float sq = 1.7320508f / sqrtf((float)qd);
    int bad = 0;
    void *embed = NULL;
    bad |= set_tensor_both(apis, eng, m, SKD_T_EMBED_TOKENS, -1, (int64_t)V * e, 1.0f, 0, NULL, &embed);
    if (!rotary)
        bad |= set_tensor_both(apis, eng, m, SKD_T_EMBED_POSITIONS, -1, (int64_t)(MAX_SEQ + POS_OFFSET) * d, 0.5f, 0, NULL, NULL);
    else { /* theta 10000, as fp32 */
        float inv[512];
        for (int i = 0; i < hd / 2; i++) inv[i] = (float)(1.0 / pow(10000.0, 2.0 * i / hd));
        for (int b = 0; b < 2 && !bad; b++) {
            const int st = apis[b]->set_tensor(eng[b], SKD_T_ROPE_INV_FREQ, -1, SKD_DTYPE_F32, inv, hd / 2);
            if (st) {
                fprintf(stderr, "%s: set_tensor(rope) -> %s: %s\n", apis[b]->label, apis[b]->status_str(st), apis[b]->last_error());
                bad = 1;
            }
        }
    }
    if (e != d) {
        bad |= set_tensor_both(apis, eng, m, SKD_T_PROJECT_IN, -1, (int64_t)d * e, se, 0, NULL, NULL);
        bad |= set_tensor_both(apis, eng, m, SKD_T_PROJECT_OUT, -1, (int64_t)e * d, sd, 0, NULL, NULL);
    }
    if (m->final_ln) {
        bad |= set_tensor_both(apis, eng, m, SKD_T_FINAL_LN_W, -1, d, 0.2f, 1.0f, NULL, NULL);
        if (b_norm) bad |= set_tensor_both(apis, eng, m, SKD_T_FINAL_LN_B, -1, d, 0.1f, 0, NULL, NULL);
    }
    for (int l = 0; l < L && !bad; l++) {
        const struct { int role; int64_t n; float scale, shift; int have; } t[] = {
            { SKD_T_ATTN_LN_W, d, 0.2f, 1.f, 1 }, { SKD_T_ATTN_LN_B, d, 0.1f, 0, b_norm },
            { SKD_T_Q_W, (int64_t)qd * d, sd, 0, 1 }, { SKD_T_Q_B, qd, 0.1f, 0, b_qkv },
            { SKD_T_K_W, (int64_t)kd * d, sd, 0, 1 }, { SKD_T_K_B, kd, 0.1f, 0, b_qkv },
            { SKD_T_V_W, (int64_t)kd * d, sd, 0, 1 }, { SKD_T_V_B, kd, 0.1f, 0, b_qkv },
            { SKD_T_O_W, (int64_t)d * qd, sq, 0, 1 }, { SKD_T_O_B, d, 0.1f, 0, b_o },
            { SKD_T_MLP_LN_W, d, 0.2f, 1.f, 1 }, { SKD_T_MLP_LN_B, d, 0.1f, 0, b_norm },
            { SKD_T_GATE_W, (int64_t)f * d, sd, 0, swiglu }, { SKD_T_GATE_B, f, 0.1f, 0, swiglu && b_mlp },
            { SKD_T_FC1_W, (int64_t)f * d, sd, 0, 1 }, { SKD_T_FC1_B, f, 0.1f, 0, b_mlp },
            { SKD_T_FC2_W, (int64_t)d * f, sf, 0, 1 }, { SKD_T_FC2_B, d, 0.1f, 0, b_mlp },
        };
        for (size_t i = 0; i < sizeof t / sizeof *t && !bad; i++)
            if (t[i].have) bad |= set_tensor_both(apis, eng, m, t[i].role, l, t[i].n, t[i].scale, t[i].shift, NULL, NULL);
    }
    /* LM head: tied = a copy of the embedding table; else its own table, scaled for clear argmaxes */
    if (!bad)
        bad |= set_tensor_both(apis, eng, m, SKD_T_LM_HEAD, -1, (int64_t)V * e, 4.0f * se, 0, m->tied ? embed : NULL, NULL);
    free(embed);
    if (bad) goto fail;
    for (int b = 0; b < 2; b++) CHECK(apis[b], apis[b]->finalize(eng[b]));

    {
        const double rel = m->compute_dtype == SKD_DTYPE_BF16 ? 5e-2 : 2e-2;
        stats s;
        memset(&s, 0, sizeof s);
        int32_t rows[MAX_ROWS * SKD_ROW_FIELDS];
        float *lc = malloc(sizeof(float) * MAX_ROWS * V), *lg = malloc(sizeof(float) * MAX_ROWS * V);
        int len[MAX_SLOTS] = { 0 }, last[MAX_SLOTS] = { 0 };
        int n = 0, step = 0;
        /* step 0: prefill slots 0 and 1 */
        const int plen[2] = { 9, 14 };
        for (int sl = 0; sl < 2; sl++)
            for (int p = 0; p < plen[sl]; p++) put_row(rows + SKD_ROW_FIELDS * n++, 2 + (7 * p + 31 * sl) % (V - 2), p, sl, L, 1, 1);
        if (step_both(apis, eng, rows, n, V, lc, lg, &s, step++)) goto fail_free;
        last[0] = argmax(lc + (size_t)(plen[0] - 1) * V, V);
        last[1] = argmax(lc + (size_t)(plen[0] + plen[1] - 1) * V, V);
        len[0] = plen[0];
        len[1] = plen[1];
        /* decode steps */
        for (int i = 0; i < 7; i++) {
            n = 0;
            int which[MAX_ROWS];
            put_row(rows + SKD_ROW_FIELDS * n, last[0], len[0], 0, layers_at(L, i), 1, 1), which[n++] = 0;
            put_row(rows + SKD_ROW_FIELDS * n, last[1], len[1], 1, i ? layers_at(L, i - 1) : L, 1, 1), which[n++] = 1;
            if (i == 2) /* prefill slot 2 alongside */
                for (int p = 0; p < 5; p++)
                    put_row(rows + SKD_ROW_FIELDS * n, 2 + (13 * p) % (V - 2), p, 2, L, 1, p == 4), which[n++] = p == 4 ? 2 : -1;
            else if (i > 2)
                put_row(rows + SKD_ROW_FIELDS * n, last[2], len[2], 2, layers_at(L, i - 3), 1, 1), which[n++] = 2;
            if (step_both(apis, eng, rows, n, V, lc, lg, &s, step++)) goto fail_free;
            /* logits come back for flagged rows only, in row order */
            for (int r = 0, k = 0; r < n; r++) {
                if (!(rows[r * SKD_ROW_FIELDS + SKD_ROW_FLAGS] & SKD_ROW_WANT_LOGITS)) continue;
                const int sl = which[r];
                last[sl] = argmax(lc + (size_t)k++ * V, V);
                len[sl] = rows[r * SKD_ROW_FIELDS + SKD_ROW_POS] + 1;
            }
        }
        /* rewind slot 0 to position 3 with the full model */
        put_row(rows, 5, 3, 0, L, 1, 1);
        if (step_both(apis, eng, rows, 1, V, lc, lg, &s, step++)) goto fail_free;
        /* slot 1 decoded at budget 1 last: a full-budget row must be refused by both */
        if (L > 1) {
            put_row(rows, 7, len[1], 1, L, 1, 1);
            const int a = apis[0]->step(eng[0], rows, 1, NULL, lc, NULL), b = apis[1]->step(eng[1], rows, 1, NULL, lg, NULL);
            if (a != SKD_ERR_KV_MISSING || b != SKD_ERR_KV_MISSING) {
                printf("  KV_MISSING check: cpu %s, cuda %s (both should be SKD_ERR_KV_MISSING)\n", apis[0]->status_str(a),
                       apis[1]->status_str(b));
                bad = 1;
            }
        }
        for (int sl = 0; sl < MAX_SLOTS; sl++)
            for (int l = 0; l < L; l++) {
                int32_t a0, a1, b0, b1;
                CHECK(apis[0], apis[0]->slot_info(eng[0], sl, l, &a0, &a1));
                CHECK(apis[1], apis[1]->slot_info(eng[1], sl, l, &b0, &b1));
                if (a0 != b0 || a1 != b1) {
                    printf("  slot_info(%d, %d): cpu len %d kv %d, cuda len %d kv %d\n", sl, l, a0, a1, b0, b1);
                    bad = 1;
                }
            }
        const double tol = rel * s.max_ref;
        int pass = !bad && s.max_diff <= tol;
        printf("%-60s %3d rows  max|dlogit| %.3e  tol %.3e (%.0e x max|logit| %.2f)  greedy %d/%d  %s\n", m->name, s.rows,
               s.max_diff, tol, rel, s.max_ref, s.agree, s.rows, pass ? "PASS" : "FAIL");
        if (!pass && s.max_diff > tol)
            printf("  worst: step %d row %d vocab %d: cpu %.5f cuda %.5f\n", s.worst_row / 1000, s.worst_row % 1000,
                   s.worst_col, s.worst_cpu, s.worst_gpu);
        free(lc);
        free(lg);
        const int sp = run_sampling(apis, eng, L, V, index, tol);
        for (int b = 0; b < 2; b++) apis[b]->destroy(eng[b]);
        if (sp < 0) return -1;
        return pass && sp;
    fail_free:
        free(lc);
        free(lg);
    }
fail:
    for (int b = 0; b < 2; b++) apis[b]->destroy(eng[b]);
    return -1;
}

int main(int argc, char **argv) {
    const char *cpu_path = argc > 1 ? argv[1] : "build/libskipdecode_cpu.so";
    const char *gpu_path = argc > 2 ? argv[2] : "build/libskipdecode_cuda.so";
    api cpu, gpu;
    if (!load_api(&cpu, "cpu", cpu_path) || !load_api(&gpu, "cuda", gpu_path)) return 2;
    int32_t n = 0;
    if (gpu.device_count(&n)) {
        fprintf(stderr, "cuda: %s — parity needs a GPU\n", gpu.last_error());
        return 2;
    }
    char name[256];
    if (!gpu.device_name(0, name, sizeof name)) printf("device: %s\n", name);
    api *const apis[2] = { &cpu, &gpu };
    int fails = 0;
    for (size_t i = 0; i < sizeof MODELS / sizeof *MODELS; i++)
        if (run_model(apis, &MODELS[i], (int)i) != 1) fails++;
    printf("%s: %d of %zu models failed\n", fails ? "FAIL" : "OK", fails, sizeof MODELS / sizeof *MODELS);
    return fails ? 1 : 0;
}
