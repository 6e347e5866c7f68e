/* gpu_bench.c — decode throughput of the CUDA engine on OPT-125m/1.3B/6.7B-shaped
 * random models: full decoding vs SkipDecode speedup targets 2, 3 and 5 at
 * batch 1, 8 and 32, with ideal vs measured speedup and the weight bytes read
 * per second as a share of the device's measured copy (and read) bandwidth.
 * Needs a GPU; bench/gpu.sh runs it. No files: the models are made here.
 *
 *   gcc -O2 -Wall -Wextra -I cuda/include -I cuda/common cuda/dev/gpu_bench.c -o build/gpu_bench -ldl -lm
 *   build/gpu_bench [--lib build/libskipdecode_cuda.so] [--out bench/results/gpu/bench.json] [--quick]
 *                   [--models 125m,1.3b,6.7b] [--batches 1,8,32] [--speedups 1,2,3,5]
 *                   [--prompt 32] [--new 64] [--reps 3] [--budget-s 200]
 *   build/gpu_bench --policy L S SPAN   # budgets of SkipPolicy.forSpeedup(S, {numLayers: L, span: SPAN}), steps 0..SPAN-1
 * Exit status: 0 done (cells cut by --budget-s are listed, not failures), 1 an
 * API call failed, 2 no CUDA device, a library that does not load, or bad usage.
 *
 * What is timed. Per model: one engine (COMPUTE_DTYPE F16, MAX_SLOTS = 32,
 * MAX_SEQ = prompt + new + 8, MAX_ROWS = 32 × prompt), weights uploaded as F16.
 * All 32 sequences are prefilled once (one step of 32 × prompt rows, full
 * budget; the last row of each samples greedily: its first generated token).
 * A "run" of batch B and speedup s is N decode steps (N = --new) of B rows,
 * slots 0..B-1, positions prompt .. prompt+N-1; step i gives every row budget
 * b_i = forSpeedup(s, {numLayers: L, span: N, warmupLayers: 1}).layersAt(i)
 * (s = 1: b_i = L), warm-up 1, SKD_ROW_SAMPLE with temperature 0, and feeds
 * the sampled tokens back as the next step's tokens. A run starts at position
 * `prompt` again, which rewinds the slots to the prefilled prompt (plan.h:
 * a row at position p forgets positions >= p), so every run does the same work.
 * Each step returns only when the device is done (skd_engine_step
 * synchronises), so a host clock around the N steps times them.
 * Per (model, batch) cell: one warm-up round, then --reps rounds, each running
 * every speedup once (interleaved, as bench/decode.ts does, so the two sides of
 * a ratio ran moments apart). decode tok/s = B·N / run time (median ± std);
 * measured speedup = median over rounds of (tok/s ÷ the same round's full tok/s);
 * ideal speedup = L / mean(b_i).
 * Weight bytes of a run = Σ_i (b_i × layer bytes + LM-head bytes), 2 bytes per
 * weight, layer = 4d² + 2·d·ffn weights, head = vocab × d (biases and LN
 * vectors are left out, as in skd_engine_weight_bytes); "weights GB/s" is that
 * over the median run time, compared with skd_membw's copy (bytes read +
 * written by a device-to-device cudaMemcpy) and read (a summing kernel)
 * bandwidth. "bytes bound" is the speedup those bytes allow (full run's bytes
 * over this run's): the LM head is never skipped.
 *
 * Random weights: U(-1, 1) scaled by sqrt(3/fan_in) (unit-variance
 * activations), LN weights 1 ± 0.2, biases ± 0.1, embeddings ± 1, positions
 * ± 0.5, LM head tied to the embedding. Generating 6.7B values on the host
 * would take longer than the benchmark (tens of seconds), so each model
 * generates two pools once — sqrt(3/d)-scaled, as large as fc1, and
 * sqrt(3/ffn)-scaled, as large as fc2 — and every q/k/v/o/fc1/fc2 of every
 * layer is a window of its pool at its own offset. Timing is unaffected (the
 * values are random, every layer is its own memory on the device); the logits
 * are not those of any trained model.
 *
 * Runtime estimate (H200: ~4.8 TB/s datasheet, ~4.3 TB/s measured copy; fp16):
 *   bytes of a full step: 125m 0.25 GB (LM head 77 MB of it), 1.3B 2.6 GB,
 *   6.7B 13.3 GB -> 0.06 / 0.6 / 3.1 ms at 4.3 TB/s. 125m is launch-bound
 *   (~9 launches × 12 layers: ~0.3-0.5 ms a step).
 *   A round (full + 2x + 3x + 5x) costs ~2.1 full runs (layers shrink to 1/s,
 *   the head does not); a cell = 1 warm-up + 3 rounds = ~8.5 full runs of
 *   64 steps. Batch 1 and 8 (GEMV path, weights streamed once): 6.7B at half
 *   the roofline ~6 ms/step -> ~3.5 s a cell; 1.3B ~1 s; 125m ~0.3 s.
 *   Batch 32 takes the tiled fp32 kernel (no tensor cores yet): ~0.43 TFLOP a
 *   6.7B step at ~10-20 TFLOP/s -> 25-45 ms/step -> 15-25 s a cell; 1.3B ~5 s.
 *   Setup per model: pools (6.7B: ~350M values, ~1-2 s), upload (13.7 GB from
 *   pageable memory, ~2-4 s), two prefills of 1024 rows (6.7B: ~1-3 s).
 *   Total ~50-80 s; --budget-s (default 200 s) is a hard stop checked between
 *   steps, and a cell whose rounds would not fit gets fewer reps. --quick:
 *   prompt 16, 32 new tokens, 1 rep, --budget-s 90 (~15-25 s).
 */
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "skipdecode.h"
#include "halfs.h"

/* ---- SkipPolicy.forSpeedup, ported from lib/generation/policy.ts -------------------------------
 * Same arithmetic in the same order on doubles, so the budgets are identical
 * (check: --policy L S SPAN against lib/generation/policy.ts). */
typedef struct {
    int full; /* SkipPolicy.full: every step L */
    int L, max, min, span, w;
} policy;

/* layersAt(step): round(min + (max - min) · (1 - min(step, span)/span)), clamped. */
static int layers_at(const policy *p, int step) {
    if (p->full) return p->L;
    const double t = (double)(step < p->span ? step : p->span) / (double)p->span;
    const double shape = 1.0 - t;
    /* volatile: no fused multiply-add, so the same roundings as JavaScript */
    volatile double scaled = (double)(p->max - p->min) * shape;
    const double b = round((double)p->min + scaled); /* = Math.round for x > 0 */
    const int bi = (int)b;
    return bi < p->min ? p->min : bi > p->max ? p->max : bi;
}

/* meanLayers(steps): the budgets with layersAt >= v are a prefix (non-increasing). */
static double mean_layers(const policy *p, int steps) {
    if (p->full) return p->L;
    double sum = (double)p->min * steps;
    for (int v = p->min + 1; v <= p->max; v++) {
        int lo = 0, hi = steps; /* first step with budget < v */
        while (lo < hi) {
            const int mid = (int)(((unsigned)lo + (unsigned)hi) >> 1);
            if (layers_at(p, mid) >= v) lo = mid + 1;
            else hi = mid;
        }
        sum += lo;
    }
    return sum / steps;
}

/* forSpeedup(s, {numLayers: L, span, warmupLayers: w}); 0 on success, else -1 with msg. */
static int for_speedup(double s, int L, int span, int w, policy *out, char *msg, size_t cap) {
    if (L < 1 || L > 100000 || span < 1 || w < 0 || w > L) {
        snprintf(msg, cap, "numLayers %d, span %d, warm-up %d out of range", L, span, w);
        return -1;
    }
    const int lo = w > 1 ? w : 1;
    const double most = (double)L / lo;
    if (!isfinite(s) || s < 1 || s > most + 1e-9) {
        snprintf(msg, cap, "speedup must be a number in [1, %.3f] for %d layers with %d warm-up layer(s), got %g", most, L, w, s);
        return -1;
    }
    policy p = { 0, L, L, L, span, w };
    if (s == 1) {
        p.full = 1;
        *out = p;
        return 0;
    }
    const double target = L / s;
    const int n = (L - lo + 1) * (L - lo + 2) / 2;
    struct cand { double err; int max, min; } *c = malloc(sizeof *c * (size_t)n);
    if (!c) {
        snprintf(msg, cap, "out of memory");
        return -1;
    }
    double best_err = INFINITY;
    int k = 0;
    for (int max = lo; max <= L; max++)
        for (int min = lo; min <= max; min++) {
            const policy q = { 0, L, max, min, span, w };
            const double err = fabs(mean_layers(&q, span) - target);
            if (err < best_err) best_err = err;
            c[k++] = (struct cand){ err, max, min };
        }
    /* keep err <= best + 0.25; sort by |max - want|, then err, then larger min;
     * JS's sort is stable, so among equal keys the first in loop order wins */
    const double want = fmin((double)L, 1.5 * target);
    int bi = -1;
    for (int i = 0; i < k; i++) {
        if (!(c[i].err <= best_err + 0.25)) continue;
        if (bi < 0) {
            bi = i;
            continue;
        }
        const double da = fabs(c[i].max - want), db = fabs(c[bi].max - want);
        const int before = da != db ? da < db : c[i].err != c[bi].err ? c[i].err < c[bi].err : c[i].min > c[bi].min;
        if (before) bi = i;
    }
    p.max = c[bi].max;
    p.min = c[bi].min;
    free(c);
    *out = p;
    return 0;
}

/* ---- the C ABI through dlopen ---------------------------------------------------------- */
typedef struct {
    void *lib;
    int (*device_count)(int32_t *);
    int (*device_name)(int32_t, char *, int32_t);
    int (*membw)(int64_t, int32_t, int32_t, double *, double *);
    int (*create)(const int64_t *, int32_t, skd_engine **);
    void (*destroy)(skd_engine *);
    int (*set_tensor)(skd_engine *, int32_t, int32_t, int32_t, const void *, int64_t);
    int (*finalize)(skd_engine *);
    int (*weight_bytes)(const skd_engine *, int64_t *);
    int (*step)(skd_engine *, const int32_t *, int32_t, const float *, float *, int32_t *);
    const char *(*last_error)(void);
    const char *(*status_str)(int);
    int (*abi_version)(void);
} api;

static api A;

static int load_api(const char *path) {
    A.lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!A.lib) {
        fprintf(stderr, "cannot load %s: %s\n", path, dlerror());
        return 0;
    }
#define LOAD(field, sym)                                       \
    *(void **)&A.field = dlsym(A.lib, sym);                    \
    if (!A.field) {                                            \
        fprintf(stderr, "%s: missing symbol %s\n", path, sym); \
        return 0;                                              \
    }
    LOAD(device_count, "skd_device_count");
    LOAD(device_name, "skd_device_name");
    LOAD(membw, "skd_membw");
    LOAD(create, "skd_engine_create");
    LOAD(destroy, "skd_engine_free");
    LOAD(set_tensor, "skd_engine_set_tensor");
    LOAD(finalize, "skd_engine_finalize");
    LOAD(weight_bytes, "skd_engine_weight_bytes");
    LOAD(step, "skd_engine_step");
    LOAD(last_error, "skd_last_error");
    LOAD(status_str, "skd_status_str");
    LOAD(abi_version, "skd_abi_version");
#undef LOAD
    if (A.abi_version() != SKD_ABI_VERSION) {
        fprintf(stderr, "%s: ABI %d, this harness is built for ABI %d\n", path, A.abi_version(), SKD_ABI_VERSION);
        return 0;
    }
    return 1;
}

#define CHECK(call)                                                                                  \
    do {                                                                                             \
        const int st_ = (call);                                                                      \
        if (st_) {                                                                                   \
            fprintf(stderr, "%s -> %s: %s\n", #call, A.status_str(st_), A.last_error());            \
            snprintf(g_error, sizeof g_error, "%s: %s", A.status_str(st_), A.last_error());         \
            return -1;                                                                               \
        }                                                                                            \
    } while (0)

static char g_error[512];

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- random fp16 weights ----------------------------------------------------------------- */
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t xorshift(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}


/* dst[i] = shift + scale · U(-1, 1), four 16-bit draws per xorshift step. */
static void fill_f16(uint16_t *dst, size_t n, float scale, float shift) {
    const float k = scale / 32768.0f;
    size_t i = 0;
    while (i < n) {
        const uint64_t x = xorshift();
        for (int j = 0; j < 4 && i < n; j++, i++) dst[i] = f32_to_f16(shift + k * (float)(int16_t)(uint16_t)(x >> (16 * j)));
    }
}

/* ---- models ------------------------------------------------------------------------------ */
typedef struct {
    const char *name, *key;
    int L, d, heads, ffn;
} shape;

static const shape SHAPES[] = {
    { "opt-125m", "125m", 12, 768, 12, 3072 },
    { "opt-1.3b", "1.3b", 24, 2048, 32, 8192 },
    { "opt-6.7b", "6.7b", 32, 4096, 32, 16384 },
};
#define N_SHAPES 3
#define VOCAB 50272
#define MAX_POSITIONS 4096
#define POS_OFFSET 2
#define MAX_BATCH 32
#define POOL_SLACK 8192 /* elements of slack in a pool: each layer's window starts elsewhere */

/* Window of a pool for (role, layer): a multiple of 8 elements in [0, POOL_SLACK). */
static size_t pool_offset(int role, int layer) {
    return ((size_t)(layer * 977 + role * 131) * 8) % POOL_SLACK;
}

static int set_random(skd_engine *e, int role, int layer, size_t n, float scale, float shift, uint16_t *tmp) {
    fill_f16(tmp, n, scale, shift);
    CHECK(A.set_tensor(e, role, layer, SKD_DTYPE_F16, tmp, (int64_t)n));
    return 0;
}

/* Makes and uploads one random model; times in *gen_s / *up_s. */
static int upload_model(skd_engine *e, const shape *m, double *gen_s, double *up_s) {
    const size_t d = m->d, f = m->ffn, V = VOCAB, P = MAX_POSITIONS + POS_OFFSET;
    const size_t pool_n = f * d + POOL_SLACK;
    uint16_t *embed = malloc(V * d * 2), *pool_d = malloc(pool_n * 2), *pool_f = malloc(pool_n * 2);
    uint16_t *tmp = malloc((P * d > 4 * d + f ? P * d : 4 * d + f) * 2);
    int rc = -1;
    if (!embed || !pool_d || !pool_f || !tmp) {
        snprintf(g_error, sizeof g_error, "out of host memory for the random weights");
        fprintf(stderr, "%s\n", g_error);
        goto done;
    }
    double t0 = now_s();
    fill_f16(embed, V * d, 1.0f, 0.f);
    fill_f16(pool_d, pool_n, sqrtf(3.0f / (float)d), 0.f);
    fill_f16(pool_f, pool_n, sqrtf(3.0f / (float)f), 0.f);
    double gen = now_s() - t0, up = 0;
    t0 = now_s();
#define SET(role, layer, ptr, n)                                                            \
    do {                                                                                    \
        const int st_ = A.set_tensor(e, role, layer, SKD_DTYPE_F16, ptr, (int64_t)(n));     \
        if (st_) {                                                                          \
            snprintf(g_error, sizeof g_error, "set_tensor(role %d, layer %d) -> %s: %s", role, layer, \
                     A.status_str(st_), A.last_error());                                    \
            fprintf(stderr, "%s\n", g_error);                                               \
            goto done;                                                                      \
        }                                                                                   \
    } while (0)
    SET(SKD_T_EMBED_TOKENS, -1, embed, V * d);
    SET(SKD_T_LM_HEAD, -1, embed, V * d); /* tied, as in OPT */
    /* small tensors are generated as they go; their generation time is counted as upload */
    if (set_random(e, SKD_T_EMBED_POSITIONS, -1, P * d, 0.5f, 0.f, tmp)) goto done;
    if (set_random(e, SKD_T_FINAL_LN_W, -1, d, 0.2f, 1.f, tmp)) goto done;
    if (set_random(e, SKD_T_FINAL_LN_B, -1, d, 0.1f, 0.f, tmp)) goto done;
    for (int l = 0; l < m->L; l++) {
        static const int vec_roles[] = { SKD_T_ATTN_LN_W, SKD_T_ATTN_LN_B, SKD_T_Q_B, SKD_T_K_B, SKD_T_V_B,
                                         SKD_T_O_B, SKD_T_MLP_LN_W, SKD_T_MLP_LN_B, SKD_T_FC2_B };
        for (size_t i = 0; i < sizeof vec_roles / sizeof *vec_roles; i++) {
            const int r = vec_roles[i], ln_w = r == SKD_T_ATTN_LN_W || r == SKD_T_MLP_LN_W;
            if (set_random(e, r, l, d, ln_w ? 0.2f : 0.1f, ln_w ? 1.f : 0.f, tmp)) goto done;
        }
        if (set_random(e, SKD_T_FC1_B, l, f, 0.1f, 0.f, tmp)) goto done;
        static const int sq_roles[] = { SKD_T_Q_W, SKD_T_K_W, SKD_T_V_W, SKD_T_O_W };
        for (size_t i = 0; i < 4; i++) SET(sq_roles[i], l, pool_d + pool_offset(sq_roles[i], l), d * d);
        SET(SKD_T_FC1_W, l, pool_d + pool_offset(SKD_T_FC1_W, l), f * d);
        SET(SKD_T_FC2_W, l, pool_f + pool_offset(SKD_T_FC2_W, l), d * f);
    }
#undef SET
    up = now_s() - t0;
    *gen_s = gen;
    *up_s = up;
    rc = 0;
done:
    free(embed);
    free(pool_d);
    free(pool_f);
    free(tmp);
    return rc;
}

/* ---- stepping ---------------------------------------------------------------------------- */
static void put_row(int32_t *r, int tok, int pos, int slot, int budget, int seq, int step) {
    memset(r, 0, sizeof(int32_t) * SKD_ROW_FIELDS);
    r[SKD_ROW_TOKEN] = tok;
    r[SKD_ROW_POS] = pos;
    r[SKD_ROW_SLOT] = slot;
    r[SKD_ROW_BUDGET] = budget;
    r[SKD_ROW_WARMUP] = 1;
    r[SKD_ROW_FLAGS] = SKD_ROW_SAMPLE;
    r[SKD_ROW_SEQ] = seq;
    r[SKD_ROW_STEP] = step;
}

/* Prefills `slots` sequences of `prompt` tokens in one step, full budget;
 * the last row of each samples greedily into first[]. */
static int g_slots = MAX_BATCH; /* --slots */
static int prefill(skd_engine *e, const shape *m, int prompt, int32_t *rows, float *prm, int32_t *first, double *secs) {
    uint64_t s = 0x1234567ull;
    int n = 0;
    for (int q = 0; q < g_slots; q++)
        for (int p = 0; p < prompt; p++, n++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            const int tok = p == 0 ? 2 : 4 + (int)((s >> 33) % 49996); /* </s> first, as OPT's tokenizer */
            put_row(rows + (size_t)n * SKD_ROW_FIELDS, tok, p, q, m->L, q, p);
            if (p != prompt - 1) rows[(size_t)n * SKD_ROW_FIELDS + SKD_ROW_FLAGS] = 0;
        }
    const double t0 = now_s();
    CHECK(A.step(e, rows, n, prm, NULL, first));
    *secs = now_s() - t0;
    return 0;
}

/* One run: N decode steps of B rows with budgets b[0..N-1]. Returns 0, -1 on an
 * API failure, 1 when the deadline passed mid-run (the run does not count). */
static int decode_run(skd_engine *e, int B, int prompt, int N, const int *b, const int32_t *first, int32_t *rows,
                      float *prm, double deadline, double *secs) {
    int32_t cur[MAX_BATCH], out[MAX_BATCH];
    memcpy(cur, first, sizeof(int32_t) * B);
    const double t0 = now_s();
    for (int i = 0; i < N; i++) {
        for (int q = 0; q < B; q++) put_row(rows + (size_t)q * SKD_ROW_FIELDS, cur[q], prompt + i, q, b[i], q, prompt + i);
        CHECK(A.step(e, rows, B, prm, NULL, out));
        memcpy(cur, out, sizeof(int32_t) * B);
        if (now_s() > deadline) return 1;
    }
    *secs = now_s() - t0;
    return 0;
}

/* ---- statistics ---------------------------------------------------------------------------- */
static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median(const double *x, int n) {
    double s[64];
    memcpy(s, x, sizeof(double) * n);
    qsort(s, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}
static double stddev(const double *x, int n) {
    if (n < 2) return 0;
    double mu = 0, v = 0;
    for (int i = 0; i < n; i++) mu += x[i];
    mu /= n;
    for (int i = 0; i < n; i++) v += (x[i] - mu) * (x[i] - mu);
    return sqrt(v / (n - 1));
}

/* ---- results ------------------------------------------------------------------------------- */
typedef struct {
    const char *model;
    int L, d, batch, max, min, reps;
    double speedup, mean, ideal, tok_s, tok_std, ms_step, measured, measured_std, bound, gbs, of_copy, of_read;
} result;

typedef struct {
    const char *model;
    double gen_s, upload_s, prefill_s, prefill_tok_s, weight_gb;
} setup;

#define MAX_RESULTS 256
static result R[MAX_RESULTS];
static int n_results;
static setup S[N_SHAPES];
static int n_setups;
static char skipped[2048];
static char device[256] = "?";
static double bw_read, bw_copy;

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        if ((unsigned char)*s >= 0x20) fputc(*s, f);
    }
    fputc('"', f);
}

/* Rewrites the whole JSON file (after every cell, so a killed run leaves what it had). */
static void write_json(const char *path, int prompt, int N, int reps, double elapsed) {
    if (!path) return;
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", path);
        return;
    }
    fprintf(f, "{\n  \"bench\": \"gpu_bench\",\n  \"device\": ");
    json_str(f, device);
    fprintf(f, ",\n  \"membwReadGBs\": %.1f,\n  \"membwCopyGBs\": %.1f,\n  \"prompt\": %d,\n  \"newTokens\": %d,\n"
               "  \"reps\": %d,\n  \"elapsedS\": %.1f,\n  \"skipped\": ",
            bw_read, bw_copy, prompt, N, reps, elapsed);
    json_str(f, skipped);
    fprintf(f, ",\n  \"setup\": [");
    for (int i = 0; i < n_setups; i++)
        fprintf(f, "%s\n    {\"model\": \"%s\", \"weightGB\": %.3f, \"generateS\": %.2f, \"uploadS\": %.2f, \"prefillS\": %.4f, "
                   "\"prefillTokS\": %.1f}",
                i ? "," : "", S[i].model, S[i].weight_gb, S[i].gen_s, S[i].upload_s, S[i].prefill_s, S[i].prefill_tok_s);
    fprintf(f, "\n  ],\n  \"results\": [");
    for (int i = 0; i < n_results; i++) {
        const result *r = &R[i];
        fprintf(f,
                "%s\n    {\"model\": \"%s\", \"numLayers\": %d, \"hidden\": %d, \"batch\": %d, \"speedup\": %g, \"maxLayers\": %d, "
                "\"minLayers\": %d, \"meanLayers\": %.4f, \"idealSpeedup\": %.4f, \"decodeTokS\": %.2f, \"decodeStd\": %.2f, "
                "\"msPerStep\": %.4f, \"measuredSpeedup\": %.4f, \"measuredStd\": %.4f, \"bytesBound\": %.4f, \"weightGBs\": %.1f, "
                "\"ofCopy\": %.4f, \"ofRead\": %.4f, \"reps\": %d}",
                i ? "," : "", r->model, r->L, r->d, r->batch, r->speedup, r->max, r->min, r->mean, r->ideal, r->tok_s, r->tok_std,
                r->ms_step, r->measured, r->measured_std, r->bound, r->gbs, r->of_copy, r->of_read, r->reps);
    }
    fprintf(f, "\n  ]\n}\n");
    fclose(f);
}

static void skip_note(const char *what, const char *model, int batch) {
    char one[160];
    if (batch > 0) snprintf(one, sizeof one, "%s batch %d: %s", model, batch, what);
    else snprintf(one, sizeof one, "%s: %s", model, what);
    if (strlen(skipped) + strlen(one) + 3 < sizeof skipped) {
        if (skipped[0]) strcat(skipped, "; ");
        strcat(skipped, one);
    }
    printf("skipped: %s\n", one);
}

/* ---- options ------------------------------------------------------------------------------- */
static int parse_list(const char *s, double *out, int cap) {
    int n = 0;
    char *end;
    while (*s && n < cap) {
        out[n++] = strtod(s, &end);
        if (end == s) return -1;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return *s ? -1 : n;
}

static const char *USAGE =
    "usage: gpu_bench [--lib build/libskipdecode_cuda.so] [--out FILE.json] [--quick] [--models 125m,1.3b,6.7b]\n"
    "                 [--batches 1,8,32] [--speedups 1,2,3,5] [--prompt 32] [--new 64] [--reps 3] [--budget-s 200]\n"
    "                 [--slots 32]   (sequences prefilled, each `prompt` tokens; batches <= slots)\n"
    "       gpu_bench --policy L S SPAN   (budgets of SkipPolicy.forSpeedup(S, {numLayers: L, span: SPAN}), steps 0..SPAN-1)\n";

static int policy_mode(int argc, char **argv) {
    if (argc != 5) {
        fputs(USAGE, stderr);
        return 2;
    }
    char *e1, *e2, *e3;
    const long L = strtol(argv[2], &e1, 10), span = strtol(argv[4], &e3, 10);
    const double s = strtod(argv[3], &e2);
    if (*e1 || *e2 || *e3 || L < 1 || L > 100000 || span < 1 || span > 1000000) {
        fprintf(stderr, "--policy: L and SPAN must be positive integers, S a number\n");
        return 2;
    }
    policy p;
    char msg[256];
    if (for_speedup(s, (int)L, (int)span, 1, &p, msg, sizeof msg)) {
        fprintf(stderr, "SkipPolicy.forSpeedup: %s\n", msg);
        return 2;
    }
    for (int i = 0; i < span; i++) printf(i ? " %d" : "%d", layers_at(&p, i));
    printf("\n");
    fprintf(stderr, "%s %d->%d over %d steps, warm-up 1: mean %.4f layers, ideal speedup %.4fx\n", p.full ? "full" : "linear",
            p.max, p.min, (int)span, mean_layers(&p, (int)span), L / mean_layers(&p, (int)span));
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--policy")) return policy_mode(argc, argv);
    const char *lib = "build/libskipdecode_cuda.so", *out = NULL;
    const char *models = "125m,1.3b,6.7b";
    double batches[8] = { 1, 8, 32 }, speedups[8] = { 1, 2, 3, 5 };
    int n_batches = 3, n_speedups = 4, prompt = 32, N = 64, reps = 3;
    double budget = 200;
    int quick = 0, set_prompt = 0, set_new = 0, set_reps = 0, set_budget = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1;
        if (!strcmp(a, "--quick")) {
            quick = 1;
            continue;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(USAGE, stdout);
            return 0;
        }
        if (!v) ok = 0;
        else if (!strcmp(a, "--lib")) lib = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--models")) models = v;
        else if (!strcmp(a, "--batches")) ok = (n_batches = parse_list(v, batches, 8)) > 0;
        else if (!strcmp(a, "--speedups")) ok = (n_speedups = parse_list(v, speedups, 8)) > 0;
        else if (!strcmp(a, "--prompt")) ok = (prompt = atoi(v)) > 0, set_prompt = 1;
        else if (!strcmp(a, "--new")) ok = (N = atoi(v)) > 0, set_new = 1;
        else if (!strcmp(a, "--reps")) ok = (reps = atoi(v)) > 0, set_reps = 1;
        else if (!strcmp(a, "--slots")) ok = (g_slots = atoi(v)) > 0 && g_slots <= MAX_BATCH;
        else if (!strcmp(a, "--budget-s")) ok = (budget = atof(v)) > 0, set_budget = 1;
        else ok = 0;
        if (!ok) {
            fprintf(stderr, "bad option %s %s\n%s", a, v ? v : "", USAGE);
            return 2;
        }
        i++;
    }
    if (quick) {
        if (!set_prompt) prompt = 16;
        if (!set_new) N = 32;
        if (!set_reps) reps = 1;
        if (!set_budget) budget = 90;
    }
    for (int i = 0; i < n_batches; i++)
        if (batches[i] != (int)batches[i] || batches[i] < 1 || batches[i] > MAX_BATCH) {
            fprintf(stderr, "--batches: integers in 1..%d\n", MAX_BATCH);
            return 2;
        }
    if (speedups[0] != 1) {
        fprintf(stderr, "--speedups must start with 1 (full decoding, the baseline of the measured speedups)\n");
        return 2;
    }
    if (reps > 60 || prompt + N + 8 > MAX_POSITIONS) {
        fprintf(stderr, "--reps must be <= 60 and prompt + new + 8 <= %d\n", MAX_POSITIONS);
        return 2;
    }
    const double t_start = now_s(), deadline = t_start + budget;

    if (!load_api(lib)) return 2;
    int32_t n_dev = 0;
    int st = A.device_count(&n_dev);
    if (st) {
        fprintf(stderr, "%s (%s) — gpu_bench needs a GPU\n", A.last_error(), A.status_str(st));
        return 2;
    }
    if (A.device_name(0, device, sizeof device)) snprintf(device, sizeof device, "?");
    if ((st = A.membw((int64_t)2 << 30, 0, 20, &bw_read, &bw_copy))) {
        fprintf(stderr, "skd_membw -> %s: %s\n", A.status_str(st), A.last_error());
        return 1;
    }
    printf("# gpu_bench: %s\n\nmemory bandwidth (skd_membw, 2 GiB buffers, best of 20): copy %.0f GB/s, read %.0f GB/s\n", device,
           bw_copy, bw_read);
    const char *knobs[] = { "SKIPDECODE_CUDA_GEMM", "SKIPDECODE_CUDA_ATTN", "SKIPDECODE_CUDA_GRAPHS" };
    printf("kernels:");
    for (int i = 0; i < 3; i++) printf(" %s=%s", knobs[i], getenv(knobs[i]) ? getenv(knobs[i]) : "(default)");
    printf("\n");
    printf("prompt %d tokens, %d decode steps (budgets layersAt(0..%d), span %d, warm-up 1), greedy; %d rep(s) after a "
           "warm-up round, interleaved; median ± std; budget %.0f s\n",
           prompt, N, N - 1, N, reps, budget);

    for (int i = 0; i < n_batches; i++)
        if (batches[i] > g_slots) {
            fprintf(stderr, "--batches: batch %d > --slots %d (the prefilled sequences)\n", (int)batches[i], g_slots);
            return 2;
        }
    const int max_rows = g_slots * prompt;
    int32_t *rows = malloc(sizeof(int32_t) * SKD_ROW_FIELDS * max_rows);
    float *prm = malloc(sizeof(float) * SKD_PARAM_FIELDS * max_rows);
    int *budgets = malloc(sizeof(int) * (size_t)N * n_speedups);
    if (!rows || !prm || !budgets) return 1;
    for (int i = 0; i < max_rows; i++) {
        prm[i * SKD_PARAM_FIELDS + SKD_PARAM_TEMPERATURE] = 0.f;
        prm[i * SKD_PARAM_FIELDS + SKD_PARAM_TOP_P] = 1.f;
    }
    int failed = 0, stop = 0;
    for (int mi = 0; mi < N_SHAPES; mi++) {
        const shape *m = &SHAPES[mi];
        if (!strstr(models, m->key)) continue;
        if (stop || now_s() > deadline - 5) {
            skip_note("all batches (time budget)", m->name, 0);
            continue;
        }
        policy pol[8];
        for (int k = 0; k < n_speedups; k++) {
            char msg[256];
            if (for_speedup(speedups[k], m->L, N, 1, &pol[k], msg, sizeof msg)) {
                fprintf(stderr, "%s: %s\n", m->name, msg);
                return 2;
            }
            for (int i = 0; i < N; i++) budgets[k * N + i] = layers_at(&pol[k], i);
        }
        int64_t cfg[SKD_CFG_COUNT] = { 0 };
        cfg[SKD_CFG_ARCH] = SKD_ARCH_OPT;
        cfg[SKD_CFG_NUM_LAYERS] = m->L;
        cfg[SKD_CFG_HIDDEN] = m->d;
        cfg[SKD_CFG_NUM_HEADS] = m->heads;
        cfg[SKD_CFG_FFN] = m->ffn;
        cfg[SKD_CFG_VOCAB] = VOCAB;
        cfg[SKD_CFG_MAX_POSITIONS] = MAX_POSITIONS;
        cfg[SKD_CFG_EMBED_DIM] = m->d;
        cfg[SKD_CFG_PRE_LN] = 1;
        cfg[SKD_CFG_FINAL_LN] = 1;
        cfg[SKD_CFG_POS_OFFSET] = POS_OFFSET;
        cfg[SKD_CFG_MAX_SLOTS] = MAX_BATCH;
        cfg[SKD_CFG_MAX_SEQ] = prompt + N + 8;
        cfg[SKD_CFG_MAX_ROWS] = max_rows;
        cfg[SKD_CFG_COMPUTE_DTYPE] = SKD_DTYPE_F16;
        skd_engine *e = NULL;
        setup *su = &S[n_setups];
        su->model = m->name;
        int32_t first[MAX_BATCH];
        int64_t wbytes = 0;
        double pre1 = 0;
        st = A.create(cfg, SKD_CFG_COUNT, &e);
        if (st) {
            fprintf(stderr, "%s: skd_engine_create -> %s: %s\n", m->name, A.status_str(st), A.last_error());
            failed = 1;
            continue;
        }
        if (upload_model(e, m, &su->gen_s, &su->upload_s) || (st = A.finalize(e)) || (st = A.weight_bytes(e, &wbytes)) ||
            prefill(e, m, prompt, rows, prm, first, &pre1) || prefill(e, m, prompt, rows, prm, first, &su->prefill_s)) {
            if (st) fprintf(stderr, "%s: finalize/weight_bytes -> %s: %s\n", m->name, A.status_str(st), A.last_error());
            fprintf(stderr, "%s: setup failed; next model\n", m->name);
            A.destroy(e);
            failed = 1;
            continue;
        }
        su->weight_gb = wbytes / 1e9;
        su->prefill_tok_s = g_slots * prompt / su->prefill_s;
        n_setups++;
        const double layer_bytes = (4.0 * m->d * m->d + 2.0 * m->d * m->ffn) * 2, head_bytes = (double)VOCAB * m->d * 2;
        printf("\n## %s-shaped random model (%d layers, hidden %d, %d heads, ffn %d, vocab %d, fp16): %.2f GB read by a full step\n\n"
               "%s; copy %.0f GB/s, read %.0f GB/s. Setup: random pools %.1f s (reused across layers), upload %.1f s "
               "(%.1f GB/s), prefill %d × %d tokens %.1f ms (%.0f tok/s; first call %.1f ms)\n\n",
               m->name, m->L, m->d, m->heads, m->ffn, VOCAB, wbytes / 1e9, device, bw_copy, bw_read, su->gen_s, su->upload_s,
               (wbytes + head_bytes) / 1e9 / su->upload_s, g_slots, prompt, su->prefill_s * 1e3, su->prefill_tok_s, pre1 * 1e3);
        printf("| batch | decoding | budgets | mean layers | ms/step | decode tok/s | ideal | measured | measured/ideal | bytes bound "
               "| weights GB/s | of copy | of read |\n");
        printf("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        fflush(stdout);
        for (int bi = 0; bi < n_batches && !stop; bi++) {
            const int B = (int)batches[bi];
            double secs[8][64], tps[8][64], warm_round = 0;
            int done = 0, rc = 0;
            /* warm-up round: also tells how long a round takes */
            const double tw = now_s();
            for (int k = 0; k < n_speedups && !rc; k++)
                rc = decode_run(e, B, prompt, N, budgets + k * N, first, rows, prm, deadline, &secs[k][0]);
            warm_round = now_s() - tw;
            int reps_cell = reps;
            const double left = deadline - now_s();
            if (!rc && warm_round * reps_cell > left) reps_cell = (int)(left / warm_round);
            if (!rc && reps_cell < 1) rc = 1;
            for (int r = 0; r < reps_cell && !rc; r++) {
                for (int k = 0; k < n_speedups && !rc; k++) rc = decode_run(e, B, prompt, N, budgets + k * N, first, rows, prm, deadline, &secs[k][r]);
                if (!rc) done++;
            }
            if (rc < 0) {
                failed = 1;
                stop = 1; /* a device error may have poisoned the context */
                skip_note("API failure", m->name, B);
                break;
            }
            if (done == 0) {
                skip_note("this and later cells (time budget)", m->name, B);
                stop = 1;
                break;
            }
            if (rc == 1) {
                skip_note("fewer reps; later cells skipped (time budget)", m->name, B);
                stop = 1;
            }
            for (int k = 0; k < n_speedups; k++)
                for (int r = 0; r < done; r++) tps[k][r] = B * (double)N / secs[k][r];
            for (int k = 0; k < n_speedups; k++) {
                double ratios[64], bytes = 0, full_bytes = 0;
                for (int r = 0; r < done; r++) ratios[r] = tps[k][r] / tps[0][r];
                for (int i = 0; i < N; i++) {
                    bytes += budgets[k * N + i] * layer_bytes + head_bytes;
                    full_bytes += m->L * layer_bytes + head_bytes;
                }
                result *x = &R[n_results < MAX_RESULTS ? n_results++ : MAX_RESULTS - 1];
                x->model = m->name;
                x->L = m->L;
                x->d = m->d;
                x->batch = B;
                x->speedup = speedups[k];
                x->max = pol[k].max;
                x->min = pol[k].min;
                x->reps = done;
                x->mean = mean_layers(&pol[k], N);
                x->ideal = m->L / x->mean;
                x->tok_s = median(tps[k], done);
                x->tok_std = stddev(tps[k], done);
                x->ms_step = B * 1e3 / x->tok_s;
                x->measured = median(ratios, done);
                x->measured_std = stddev(ratios, done);
                x->bound = full_bytes / bytes;
                x->gbs = bytes / (B * (double)N / x->tok_s) / 1e9;
                x->of_copy = x->gbs / bw_copy;
                x->of_read = x->gbs / bw_read;
                char dec[16], bud[32];
                if (pol[k].full) {
                    snprintf(dec, sizeof dec, "full");
                    snprintf(bud, sizeof bud, "%d", pol[k].max);
                } else {
                    snprintf(dec, sizeof dec, "%gx", speedups[k]);
                    snprintf(bud, sizeof bud, "%d→%d", pol[k].max, pol[k].min);
                }
                printf("| %d | %s | %s | %.2f | %.3f | %.1f ± %.1f | %.2fx | %.2fx ± %.2f | %.0f%% | %.2fx | %.0f | %.0f%% | %.0f%% |\n", B,
                       dec, bud, x->mean, x->ms_step, x->tok_s, x->tok_std, x->ideal, x->measured, x->measured_std,
                       100 * x->measured / x->ideal, x->bound, x->gbs, 100 * x->of_copy, 100 * x->of_read);
            }
            fflush(stdout);
            write_json(out, prompt, N, reps, now_s() - t_start);
        }
        A.destroy(e);
    }
    const double elapsed = now_s() - t_start;
    write_json(out, prompt, N, reps, elapsed);
    printf("\ngpu_bench: %d rows in %.1f s%s%s%s\n", n_results, elapsed, skipped[0] ? "; skipped: " : "", skipped,
           failed ? "; FAILED (see stderr)" : "");
    if (out) printf("wrote %s\n", out);
    free(rows);
    free(prm);
    free(budgets);
    return failed ? 1 : 0;
}
