/* parity.c — the CUDA backend against the CPU reference backend, end to end.
 *
 * dlopens build/libskipdecode_cpu.so and build/libskipdecode_cuda.so, builds
 * small random OPT models (pre-LN and post-LN, with and without project_in/out,
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
 *   gcc -O2 -Wall -Wextra -I cuda/include cuda/dev/parity.c -o build/parity -ldl -lm && build/parity
 * Exit status: 0 all pass, 1 a mismatch or an API failure, 2 a library failed to load.
 */
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "skipdecode.h"

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
    int (*step)(skd_engine *, const int32_t *, int32_t, float *);
    int (*slot_info)(const skd_engine *, int32_t, int32_t, int32_t *, int32_t *);
    const char *(*last_error)(void);
    const char *(*status_str)(int);
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
#undef LOAD
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

/* ---- host dtype rounding (round to nearest even) ------------------------------- */
static uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t man = x & 0x7fffffu;
    if (((x >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) { /* subnormal or zero */
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000u;
        const int shift = 14 - exp;
        uint32_t h = man >> shift;
        const uint32_t rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)exp << 10) | (man >> 13);
    const uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++; /* may carry into the exponent: correct */
    return (uint16_t)(sign | h);
}
static uint16_t f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}
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
} model_cfg;

static const model_cfg MODELS[] = {
    { "pre-LN, final LN, tied head, F16 upload", 3, 64, 4, 256, 300, 64, 1, 1, 1, SKD_DTYPE_F16, 0 },
    { "post-LN, project_in/out, F32 upload (converted on GPU)", 2, 64, 4, 256, 300, 32, 0, 0, 0, SKD_DTYPE_F32, SKD_DTYPE_F16 },
    { "pre-LN, project_in/out, BF16, head_dim 128", 3, 128, 1, 128, 300, 48, 1, 1, 0, SKD_DTYPE_BF16, SKD_DTYPE_BF16 },
    { "odd shapes: hidden 52, 1 head, ffn 100", 2, 52, 1, 100, 300, 52, 1, 1, 0, SKD_DTYPE_F16, 0 },
    { "head_dim 160 (hidden 320, 2 heads), post-LN", 2, 320, 2, 200, 300, 320, 0, 0, 0, SKD_DTYPE_F16, 0 },
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

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

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
    CHECK(apis[0], apis[0]->step(eng[0], rows, n, cpu_out));
    CHECK(apis[1], apis[1]->step(eng[1], rows, n, gpu_out));
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
}

static int layers_at(int L, int i) { return L - i > 1 ? L - i : 1; } /* warm-up 1 */

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
    skd_engine *eng[2] = { NULL, NULL };
    for (int b = 0; b < 2; b++) {
        cfg[SKD_CFG_COMPUTE_DTYPE] = b ? m->compute_dtype : 0;
        CHECK(apis[b], apis[b]->create(cfg, SKD_CFG_COUNT, &eng[b]));
    }
    const int L = m->L, d = m->d, e = m->embed, f = m->ffn, V = m->vocab;
    const float sd = 1.7320508f / sqrtf((float)d), sf = 1.7320508f / sqrtf((float)f), se = 1.7320508f / sqrtf((float)e);
    int bad = 0;
    void *embed = NULL;
    bad |= set_tensor_both(apis, eng, m, SKD_T_EMBED_TOKENS, -1, (int64_t)V * e, 1.0f, 0, NULL, &embed);
    bad |= set_tensor_both(apis, eng, m, SKD_T_EMBED_POSITIONS, -1, (int64_t)(MAX_SEQ + POS_OFFSET) * d, 0.5f, 0, NULL, NULL);
    if (e != d) {
        bad |= set_tensor_both(apis, eng, m, SKD_T_PROJECT_IN, -1, (int64_t)d * e, se, 0, NULL, NULL);
        bad |= set_tensor_both(apis, eng, m, SKD_T_PROJECT_OUT, -1, (int64_t)e * d, sd, 0, NULL, NULL);
    }
    if (m->final_ln) {
        bad |= set_tensor_both(apis, eng, m, SKD_T_FINAL_LN_W, -1, d, 0.2f, 1.0f, NULL, NULL);
        bad |= set_tensor_both(apis, eng, m, SKD_T_FINAL_LN_B, -1, d, 0.1f, 0, NULL, NULL);
    }
    for (int l = 0; l < L && !bad; l++) {
        const struct { int role; int64_t n; float scale, shift; } t[] = {
            { SKD_T_ATTN_LN_W, d, 0.2f, 1.f }, { SKD_T_ATTN_LN_B, d, 0.1f, 0 },
            { SKD_T_Q_W, (int64_t)d * d, sd, 0 }, { SKD_T_Q_B, d, 0.1f, 0 },
            { SKD_T_K_W, (int64_t)d * d, sd, 0 }, { SKD_T_K_B, d, 0.1f, 0 },
            { SKD_T_V_W, (int64_t)d * d, sd, 0 }, { SKD_T_V_B, d, 0.1f, 0 },
            { SKD_T_O_W, (int64_t)d * d, sd, 0 }, { SKD_T_O_B, d, 0.1f, 0 },
            { SKD_T_MLP_LN_W, d, 0.2f, 1.f }, { SKD_T_MLP_LN_B, d, 0.1f, 0 },
            { SKD_T_FC1_W, (int64_t)f * d, sd, 0 }, { SKD_T_FC1_B, f, 0.1f, 0 },
            { SKD_T_FC2_W, (int64_t)d * f, sf, 0 }, { SKD_T_FC2_B, d, 0.1f, 0 },
        };
        for (size_t i = 0; i < sizeof t / sizeof *t && !bad; i++)
            bad |= set_tensor_both(apis, eng, m, t[i].role, l, t[i].n, t[i].scale, t[i].shift, NULL, NULL);
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
            const int a = apis[0]->step(eng[0], rows, 1, lc), b = apis[1]->step(eng[1], rows, 1, lg);
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
        const int pass = !bad && s.max_diff <= tol;
        printf("%-60s %3d rows  max|dlogit| %.3e  tol %.3e (%.0e x max|logit| %.2f)  greedy %d/%d  %s\n", m->name, s.rows,
               s.max_diff, tol, rel, s.max_ref, s.agree, s.rows, pass ? "PASS" : "FAIL");
        if (!pass && s.max_diff > tol)
            printf("  worst: step %d row %d vocab %d: cpu %.5f cuda %.5f\n", s.worst_row / 1000, s.worst_row % 1000,
                   s.worst_col, s.worst_cpu, s.worst_gpu);
        free(lc);
        free(lg);
        for (int b = 0; b < 2; b++) apis[b]->destroy(eng[b]);
        return pass;
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
