/* quant_check.c — dev harness for the quantized CPU matmul kernels (quant.h):
 * every kernel this CPU runs (including the opt-in AVX-512 and VNNI ones,
 * whatever SKIPDECODE_CPU_QUANT_AVX512 says) against the portable reference,
 * for every weight type, then optionally timed (STYLE.md: validate, then time).
 *
 *   gcc -O3 -std=c11 -pthread -fopenmp-simd -fno-math-errno -fno-trapping-math -I cuda/include -I cuda/common cuda/dev/quant_check.c cuda/cpu/quant.c \
 *       cuda/cpu/quant_avx2.c cuda/cpu/quant_avx512.c cuda/cpu/ops.c cuda/cpu/matmul_avx2.c \
 *       cuda/cpu/matmul_avx512.c cuda/cpu/pool.c cuda/cpu/errors.c cuda/cpu/membw.c -o build/quant_check -lm
 *   build/quant_check            validate (exit 1 on a mismatch); test/quant.test.ts runs this
 *   build/quant_check time [th] [types]  validate, then time decode (m = 1) of every type (or of the
 *                                comma-separated types, e.g. q4_k,q4_0), 16-bit included,
 *                                as a share of the read bandwidth measured in the same round
 *   build/quant_check compute [th] [types]  the same on one small matrix that stays in L2: what the
 *                                kernel costs without DRAM (it must reach about twice a core's
 *                                share of the bandwidth to keep up; "of membw" is then moot)
 *
 * Checks, per type and kernel, on awkward shapes (n = 37 rows, k = 3 blocks of
 * 256 or 7 of 32, m = 1..9 activation rows):
 *   - each output against the reference: |got − ref| <= 1e-5 · Σ|terms| + 1e-30
 *     (the integer block sums are exact in every kernel; only the order of
 *     the fp32 additions differs);
 *   - batch invariance: row i's outputs are bit-identical for m = 1 and m = 9,
 *     and for every tile split (the rows of one call are also split across
 *     2 threads differently than alone);
 *   - skd_pool_run_range (the matmuls' split) runs every item exactly once,
 *     with a slow caller whose share the other threads must take from;
 *   - skd_weight_alloc's pieces are aligned and disjoint, and freed ones go
 *     back to the system.
 * Timing napkin math: GB/s = weight bytes / time at m = 1; compare with
 * `bun run bench membw` (this VM: ~27 GB/s read with 2 threads).
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "../cpu/ops.h"
#include "../cpu/pool.h"
#include "../cpu/quant.h"
#include "quant_ref.h"
#include "skipdecode.h"

static uint64_t rng = 88172645463325252ull;
static double urand(void) { /* xorshift64 → [0, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) * (1.0 / 9007199254740992.0);
}
static float grand(void) { return (float)(sqrt(-2.0 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand())); }

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static const int TYPES[] = { SKD_DTYPE_Q8_0, SKD_DTYPE_Q4_0, SKD_DTYPE_Q5_0, SKD_DTYPE_Q4_K, SKD_DTYPE_Q6_K };
static const int KERNELS[] = { SKD_QKERNEL_AVX2, SKD_QKERNEL_AVX2_VNNI, SKD_QKERNEL_AVX512, SKD_QKERNEL_AVX512_VNNI };

/* A random [n, k] matrix of `dtype`: Gaussian weights with rows of very different scales;
 * packed = the layout of the kernels that pack (quant.h). */
static skd_mat make_mat_as(int dtype, long n, long k, int packed) {
    float *f = malloc(sizeof(float) * (size_t)(n * k));
    for (long r = 0; r < n; r++) {
        const float s = (float)pow(10.0, -3.0 + 4.0 * urand());
        for (long c = 0; c < k; c++) f[r * k + c] = grand() * s;
    }
    const int64_t rb = skd_row_bytes(dtype, k);
    void *q = malloc((size_t)(n * rb));
    if (skd_quantize_rows(dtype, f, k, q, 0, n)) {
        fprintf(stderr, "quantize failed\n");
        exit(2);
    }
    skd_mat m = { 0 };
    skd_mat_set(&m, dtype, q, n, k, packed, NULL);
    if (m.packed) { /* the packed layout holds the same bytes: unpacking gives ggml's row back */
        void *back = malloc((size_t)rb);
        for (long r = 0; r < n; r++) {
            skd_quant_unpack_row(dtype, (const char *)m.data + r * rb, back, k);
            if (memcmp(back, (const char *)q + r * rb, (size_t)rb)) {
                fprintf(stderr, "%s: pack/unpack changed row %ld\n", skd_dtype_name(dtype), r);
                exit(1);
            }
        }
        free(back);
    }
    free(f);
    free(q);
    return m;
}
static skd_mat make_mat(int dtype, long n, long k) { return make_mat_as(dtype, n, k, 0); }

/* Σ|w·x| of output (i, r), the scale of its rounding error. */
static double abs_sum(const skd_mat *w, long r, const float *x) {
    float *row = malloc(sizeof(float) * (size_t)w->cols);
    skd_dequantize_row(w->dtype, (const char *)w->data + r * skd_row_bytes(w->dtype, w->cols), row, w->cols);
    double s = 0;
    for (long c = 0; c < w->cols; c++) s += fabs((double)row[c] * x[c]);
    free(row);
    return s;
}

/* The SIMD activation quantizer writes the portable one's bytes (rows of every scale, zeros, ties), for
 * rows of whole groups and rows ending in a short group of 5 (a half group and one more) or 3 blocks. */
static int check_act(void) {
#if defined(__x86_64__)
    if (!skd_qkernel_supported(SKD_QKERNEL_AVX2)) return 0;
    float *x = malloc(sizeof(float) * 1024);
    int8_t q1[1024], q2[1024];
    float d1[32], d2[32];
    int16_t s1[64], s2[64];
    int bad = 0;
    const int64_t ks[] = { 1024, 416, 352 };
    for (int trial = 0; trial < 200; trial++) {
        const int64_t k = ks[trial % 3];
        const float scale = (float)pow(10.0, -30.0 + 60.0 * urand());
        for (int64_t i = 0; i < k; i++) x[i] = trial % 10 == 0 ? 0.f : grand() * scale;
        if (trial % 10 == 1) /* exact ties of x·id at .5 */
            for (int64_t i = 0; i < k; i++) x[i] = (float)((int)(urand() * 255) - 127) * 0.5f;
        const int forms[] = { SKD_ACT_32, SKD_ACT_K, SKD_ACT_32_WORDS, SKD_ACT_K_WORDS };
        for (int f = 0; f < 4; f++) {
            const int kform = forms[f] == SKD_ACT_K || forms[f] == SKD_ACT_K_WORDS;
            if (kform && k % 256) continue;
            if (kform) skd_quantize_act256(x, k, q1, d1, s1);
            else skd_quantize_act32(x, k, q1, d1, s1);
            skd_quantize_act_avx2(x, k, forms[f], q2, d2, s2);
            if (forms[f] == SKD_ACT_32_WORDS || forms[f] == SKD_ACT_K_WORDS) {
                /* back from words: word v of chunk i of a group of 8 is at 32v + 4i, of a half group at 16v + 4i */
                int8_t t[256];
                for (int64_t g = 0; g < k; g += 256) {
                    const int w = k - g >= 256 ? 8 : k - g >= 128 ? 4 : 0;
                    for (int i = 0; i < w; i++)
                        for (int v = 0; v < 8; v++) memcpy(t + 32 * i + 4 * v, q2 + g + 4 * w * v + 4 * i, 4);
                    memcpy(q2 + g, t, (size_t)(32 * w));
                }
            }
            const int nd = kform ? (int)(k / 256) : (int)(k / 32);
            if (memcmp(q1, q2, (size_t)k) || memcmp(d1, d2, sizeof(float) * nd) || memcmp(s1, s2, sizeof(int16_t) * (size_t)(k / (kform ? 16 : 32)))) {
                if (!bad) printf("  activation form %d differs (trial %d, k %lld)\n", forms[f], trial, (long long)k);
                bad = 1;
            }
        }
    }
    free(x);
    printf("activation quantizer: avx2 (all four forms, words transposed back) %s the portable bytes\n", bad ? "DIFFERS FROM" : "equals");
    return bad;
#else
    return 0;
#endif
}

/* skd_pool_run_range: each item of [0, n) run once, in pieces of at most `chunk`; the caller thread is
 * slowed, so the others take from the back of its share (counted in `stolen`). */
typedef struct {
    atomic_int *runs;
    long chunk;
    pthread_t caller;
    long caller_end; /* the caller's share is [0, caller_end) */
    atomic_long stolen;
    atomic_int oversize;
} range_check;

static void range_item(void *ctx, long b, long e) {
    range_check *c = ctx;
    if (e - b > c->chunk) atomic_fetch_add(&c->oversize, 1);
    const int on_caller = pthread_equal(pthread_self(), c->caller);
    for (long i = b; i < e; i++) {
        atomic_fetch_add(&c->runs[i], 1);
        if (!on_caller && i < c->caller_end) atomic_fetch_add(&c->stolen, 1);
    }
    if (on_caller) { /* a caller slowed by something else on its core */
        const double t = now();
        while (now() - t < 2e-5 * (double)(e - b)) {}
    }
}

static int check_range(void) {
    int bad = 0;
    long stolen = 0;
    for (int nth = 2; nth <= 3; nth++) {
        skd_pool *p = skd_pool_create(nth);
        const long ns[] = { 1, 2, 5, 37, 1000, 4097 }, chunks[] = { 1, 3, 64 };
        for (size_t a = 0; a < sizeof ns / sizeof *ns; a++) {
            for (size_t b = 0; b < sizeof chunks / sizeof *chunks; b++) {
                const long n = ns[a];
                range_check c = { calloc((size_t)n, sizeof(atomic_int)), chunks[b], pthread_self(), 0, 0, 0 };
                long e0;
                skd_split(n, 0, nth, &e0, &c.caller_end);
                skd_pool_run_range(p, n, c.chunk, range_item, &c);
                long wrong = 0;
                for (long i = 0; i < n; i++) wrong += atomic_load(&c.runs[i]) != 1;
                if (wrong || atomic_load(&c.oversize)) {
                    printf("  skd_pool_run_range(%d threads, n %ld, chunk %ld): %ld items not run exactly once, %d pieces over the chunk\n",
                           nth, n, c.chunk, wrong, atomic_load(&c.oversize));
                    bad = 1;
                }
                stolen += atomic_load(&c.stolen);
                free(c.runs);
            }
        }
        skd_pool_free(p);
    }
    if (!stolen) {
        printf("  skd_pool_run_range: no thread ever took from the slow caller's share\n");
        bad = 1;
    }
    printf("pool  run_range    every item once; %ld items of the slow caller's shares taken by the others\n", stolen);
    return bad;
}

/* Resident memory in KiB (Linux), or -1. */
static long rss_kib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = -1, resident = -1;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = -1;
        fclose(f);
    }
    return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* skd_weight_alloc / skd_weight_free: pieces of every size (slab pieces, pieces on either side of the 8 MiB of a
 * block of their own, empty ones) are 64-byte-aligned and disjoint (each holds its own byte after all are
 * written), and freeing all of them in a shuffled order gives their memory back to the system (Linux, huge
 * pages on: each block is unmapped with its last piece). */
static int check_weight_alloc(void) {
    enum { N = 66 };
    static const size_t sizes[] = { 0, 1, 63, 64, 4095, 100000, ((size_t)2 << 20) - 1, (size_t)2 << 20,
                                    ((size_t)7 << 20) + 5, (size_t)8 << 20, ((size_t)9 << 20) + 3 };
    const long rss0 = rss_kib();
    unsigned char *p[N];
    size_t sz[N], total = 0;
    int bad = 0, order[N];
    for (int i = 0; i < N; i++) {
        sz[i] = sizes[i % (sizeof sizes / sizeof *sizes)] + (i / 11) * 64 * (i % 3); /* vary the slab offsets */
        p[i] = skd_weight_alloc(sz[i]);
        if (!p[i] || (uintptr_t)p[i] % 64) {
            printf("  skd_weight_alloc(%zu): %p, not a 64-byte-aligned piece\n", sz[i], (void *)p[i]);
            return 1;
        }
        memset(p[i], i + 1, sz[i]);
        total += sz[i];
        order[i] = i;
    }
    for (int i = 0; i < N; i++) {
        size_t j = 0; /* a byte of every page, and the last */
        while (j < sz[i] && p[i][j] == (unsigned char)(i + 1)) j = j + 4096 < sz[i] || j + 1 == sz[i] ? j + 4096 : sz[i] - 1;
        if (j < sz[i]) {
            printf("  skd_weight_alloc: piece %d (%zu bytes) overwritten at byte %zu\n", i, sz[i], j);
            bad = 1;
        }
    }
    const long rss1 = rss_kib();
    for (int i = N - 1; i > 0; i--) {
        const int j = (int)(urand() * (i + 1)), t = order[i];
        order[i] = order[j], order[j] = t;
    }
    for (int i = 0; i < N; i++) skd_weight_free(p[order[i]]);
    skd_weight_free(NULL);
    const long rss2 = rss_kib();
    const char *env = getenv("SKIPDECODE_CPU_HUGEPAGES");
    if (rss0 >= 0 && !(env && !strcmp(env, "0")) && rss2 - rss0 > 16 * 1024) {
        printf("  skd_weight_free: %ld MiB still resident after freeing %zu MiB of pieces\n", (rss2 - rss0) / 1024, total >> 20);
        bad = 1;
    }
    printf("weight memory      %d pieces (%zu MiB) aligned and disjoint; resident +%ld MiB, after freeing %+ld MiB\n", N,
           total >> 20, rss0 >= 0 ? (rss1 - rss0) / 1024 : 0, rss0 >= 0 ? (rss2 - rss0) / 1024 : 0);
    return bad;
}

static int validate(skd_pool *pool1, skd_pool *pool2) {
    int bad = check_act() | check_range() | check_weight_alloc();
    for (size_t ti = 0; ti < sizeof TYPES / sizeof *TYPES; ti++) {
        const int dt = TYPES[ti];
        /* k: block-32 types 13 blocks (a group of 8, then an odd tail of 5); K-quants 3 super-blocks */
        const long n = 37, k = skd_dtype_block(dt) == 256 ? 3 * 256 : 13 * 32;
        const int M = 9;
        const uint64_t seed = rng;
        skd_mat w = make_mat(dt, n, k);
        rng = seed; /* the same matrix again, in the packed layout */
        skd_mat wp = make_mat_as(dt, n, k, 1);
        float *x = malloc(sizeof(float) * (size_t)(M * k)), *bias = malloc(sizeof(float) * (size_t)n);
        for (long i = 0; i < M * k; i++) x[i] = grand() * (i % 5 == 0 ? 30.f : 1.f);
        for (long i = 0; i < k; i++) x[3 * k + i] = 0.f; /* an all-zero row */
        for (long r = 0; r < n; r++) bias[r] = grand();
        float *ref = malloc(sizeof(float) * (size_t)(M * n)), *got = malloc(sizeof(float) * (size_t)(M * n)),
              *one = malloc(sizeof(float) * (size_t)n);
        void *scratch = aligned_alloc(64, (skd_qact_bytes(M, k) + 63) / 64 * 64);
        skd_qmatmul(pool1, SKD_QKERNEL_PORTABLE, scratch, ref, x, M, &w, bias, 0);
        for (size_t ki = 0; ki <= sizeof KERNELS / sizeof *KERNELS; ki++) {
            const int qk = ki == 0 ? SKD_QKERNEL_PORTABLE : KERNELS[ki - 1];
            if (!skd_qkernel_supported(qk)) {
                printf("%-5s %-12s not on this CPU\n", skd_dtype_name(dt), skd_qkernel_name(qk));
                continue;
            }
            const skd_mat *wk = skd_qkernel_packs(qk) ? &wp : &w;
            skd_qmatmul(pool2, qk, scratch, got, x, M, wk, bias, 0);
            double worst = 0;
            int mism = 0, variant = 0;
            for (int i = 0; i < M; i++) {
                for (long r = 0; r < n; r++) {
                    const double tol = 1e-5 * (abs_sum(&w, r, x + i * k) + fabs(bias[r])) + 1e-30;
                    const double e = fabs((double)got[i * n + r] - ref[i * n + r]);
                    if (e / tol > worst) worst = e / tol;
                    if (!(e <= tol) && mism++ < 3)
                        printf("  %s %s: row %d out %ld: got %.9g, reference %.9g\n", skd_dtype_name(dt),
                               skd_qkernel_name(qk), i, r, got[i * n + r], ref[i * n + r]);
                }
                skd_qmatmul(pool1, qk, scratch, one, x + i * k, 1, wk, bias, 0); /* alone, one thread */
                if (memcmp(one, got + i * n, sizeof(float) * (size_t)n)) variant++;
            }
            { /* the matrix without its first row: a kernel that pairs rows now pairs them the other way */
                skd_mat shifted = *wk;
                shifted.data = (char *)wk->data + skd_row_bytes(dt, k);
                shifted.rows = n - 1;
                float *part = malloc(sizeof(float) * (size_t)(M * (n - 1)));
                skd_qmatmul(pool1, qk, scratch, part, x, M, &shifted, bias + 1, 0);
                for (int i = 0; i < M; i++)
                    if (memcmp(part + i * (n - 1), got + i * n + 1, sizeof(float) * (size_t)(n - 1))) variant++;
                free(part);
            }
            printf("%-5s %-12s worst error %.3f of the bound; %s\n", skd_dtype_name(dt), skd_qkernel_name(qk), worst,
                   variant ? "BATCH-VARIANT" : "rows batch-invariant");
            if (mism || variant) bad = 1;
        }
        free(x), free(bias), free(ref), free(got), free(one), free(scratch), skd_weight_free(w.data), skd_weight_free(wp.data);
    }
    return bad;
}

/* Decode (m = 1) over ~128 MiB of weights per type, llama-400m-like [3584, 1024] matrices, for
 * the 16-bit kernels (ops.h) and each quantized kernel, in rounds: each round first measures the
 * read bandwidth (skd_membw, the roofline bench membw reports), then every kernel once (best of 3
 * passes); a kernel's line is the median over rounds of its share of that round's bandwidth, so
 * a noisy neighbour hits both sides of each ratio. */
#define ROUNDS 5
static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Whether type dt is in the comma-separated list `only` of type names (any case), or `only` is NULL. */
static int wanted(const char *only, int dt) {
    if (!only) return 1;
    const char *name = skd_dtype_name(dt);
    const size_t len = strlen(name);
    for (const char *p = only; *p;) {
        const size_t n = strcspn(p, ",");
        if (n == len && !strncasecmp(p, name, len)) return 1;
        p += n + (p[n] == ',');
    }
    return 0;
}

static void timing(skd_pool *pool, int nth, int cached, const char *only) {
    const int types[] = { SKD_DTYPE_F16, SKD_DTYPE_BF16, SKD_DTYPE_Q8_0, SKD_DTYPE_Q4_0, SKD_DTYPE_Q5_0, SKD_DTYPE_Q4_K, SKD_DTYPE_Q6_K };
    enum { NT = 7, NK = 1 + sizeof KERNELS / sizeof *KERNELS };
    const long n = cached ? 256 : 3584, k = 1024;
    skd_mat *ws[NT], *wsp[NT];
    int nm[NT];
    size_t bytes[NT];
    float *x = malloc(sizeof(float) * (size_t)k), *out = malloc(sizeof(float) * (size_t)n);
    for (long i = 0; i < k; i++) x[i] = grand();
    void *scratch = aligned_alloc(64, (skd_qact_bytes(1, k) + 63) / 64 * 64);
    for (int t = 0; t < NT; t++) {
        const int dt = types[t];
        const size_t per = (size_t)n * (size_t)skd_row_bytes(dt, k);
        nm[t] = !wanted(only, dt) ? 0 : cached ? 1 : (int)((128u << 20) / per);
        bytes[t] = per * (size_t)nm[t];
        ws[t] = malloc(sizeof(skd_mat) * (size_t)nm[t]);
        wsp[t] = malloc(sizeof(skd_mat) * (size_t)nm[t]);
        for (int i = 0; i < nm[t]; i++) {
            wsp[t][i] = (skd_mat){ 0 };
            if (skd_dtype_is_quant(dt)) {
                const uint64_t seed = rng;
                ws[t][i] = make_mat(dt, n, k);
                rng = seed;
                wsp[t][i] = make_mat_as(dt, n, k, 1);
            } else {
                uint16_t *h = malloc(2 * (size_t)(n * k));
                for (long j = 0; j < n * k; j++) h[j] = dt == SKD_DTYPE_F16 ? skd_f32_to_half(grand() * 0.05f) : skd_f32_to_bfloat(grand() * 0.05f);
                ws[t][i] = (skd_mat){ 0 };
                skd_mat_set(&ws[t][i], dt, h, n, k, 1, NULL);
                free(h);
            }
        }
    }
    double share[NT][NK][ROUNDS], gbs[NT][NK][ROUNDS], bw[ROUNDS];
    for (int round = 0; round < ROUNDS; round++) {
        double rd = 0, cp = 0;
        skd_membw((int64_t)256 << 20, nth, 3, &rd, &cp);
        bw[round] = rd;
        for (int t = 0; t < NT; t++) {
            for (int ki = 0; ki < NK; ki++) {
                const int qk = ki == 0 ? SKD_QKERNEL_PORTABLE : KERNELS[ki - 1];
                share[t][ki][round] = -1;
                if (!skd_qkernel_supported(qk) || !nm[t]) continue; /* unsupported, or a type not asked for */
                if (!skd_dtype_is_quant(types[t]) && ki > 1) continue; /* 16-bit: portable and the best SIMD */
                double best = 1e30;
                for (int rep = 0; rep < (cached ? 300 : 3); rep++) {
                    const double t0 = now();
                    for (int i = 0; i < nm[t]; i++) {
                        if (skd_dtype_is_quant(types[t]))
                            skd_qmatmul(pool, qk, scratch, out, x, 1, skd_qkernel_packs(qk) ? &wsp[t][i] : &ws[t][i], NULL, 0);
                        else skd_matmul(pool, ki == 0 ? SKD_KERNEL_PORTABLE : skd_kernel_best(), out, x, 1, &ws[t][i], NULL, 0);
                    }
                    const double dt = now() - t0;
                    if (dt < best) best = dt;
                }
                gbs[t][ki][round] = (double)bytes[t] / best / 1e9;
                share[t][ki][round] = gbs[t][ki][round] / rd;
            }
        }
    }
    qsort(bw, ROUNDS, sizeof(double), cmp_double);
    if (cached)
        printf("\ncompute only: m = 1, %d threads, one [%ld, %ld] matrix per type (in L2), best of 300\n", nth, n, k);
    else
        printf("\ndecode (m = 1), %d threads, [%ld, %ld] matrices, ~128 MiB per type; read bandwidth %.1f GB/s (median of %d rounds)\n",
               nth, n, k, bw[ROUNDS / 2], ROUNDS);
    printf("| type | kernel | GB/s (median) | of membw (median of per-round shares) |\n|---|---|---:|---:|\n");
    for (int t = 0; t < NT; t++) {
        for (int ki = 0; ki < NK; ki++) {
            if (share[t][ki][0] < 0) continue;
            qsort(share[t][ki], ROUNDS, sizeof(double), cmp_double);
            qsort(gbs[t][ki], ROUNDS, sizeof(double), cmp_double);
            const char *kn = skd_dtype_is_quant(types[t]) ? skd_qkernel_name(ki == 0 ? SKD_QKERNEL_PORTABLE : KERNELS[ki - 1])
                                                          : skd_kernel_name(ki == 0 ? SKD_KERNEL_PORTABLE : skd_kernel_best());
            printf("| %s | %s | %.1f | %.0f%% |\n", skd_dtype_name(types[t]), kn, gbs[t][ki][ROUNDS / 2],
                   100 * share[t][ki][ROUNDS / 2]);
        }
    }
    for (int t = 0; t < NT; t++) {
        for (int i = 0; i < nm[t]; i++) skd_weight_free(ws[t][i].data), skd_weight_free(wsp[t][i].data);
        free(ws[t]), free(wsp[t]);
    }
    free(x), free(out), free(scratch);
}

int main(int argc, char **argv) {
    skd_pool *pool1 = skd_pool_create(1), *pool2 = skd_pool_create(2);
    const int bad = validate(pool1, pool2);
    printf(bad ? "FAIL\n" : "OK\n");
    if (!bad && argc > 1 && (!strcmp(argv[1], "time") || !strcmp(argv[1], "compute"))) {
        const int nth = argc > 2 ? atoi(argv[2]) : 2;
        skd_pool *p = skd_pool_create(nth);
        timing(p, nth, !strcmp(argv[1], "compute"), argc > 3 ? argv[3] : NULL);
        skd_pool_free(p);
    }
    skd_pool_free(pool1);
    skd_pool_free(pool2);
    return bad;
}
