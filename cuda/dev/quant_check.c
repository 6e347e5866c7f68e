/* quant_check.c — dev harness for the quantized CPU matmul kernels (quant.h):
 * every kernel this CPU runs (including the opt-in AVX-512 and VNNI ones,
 * whatever SKIPDECODE_CPU_QUANT_AVX512 says) against the portable reference,
 * for every weight type, then optionally timed (STYLE.md: validate, then time).
 *
 *   gcc -O2 -pthread -fopenmp-simd -I cuda/include -I cuda/common cuda/dev/quant_check.c cuda/cpu/quant.c \
 *       cuda/cpu/quant_avx2.c cuda/cpu/quant_avx512.c cuda/cpu/ops.c cuda/cpu/matmul_avx2.c \
 *       cuda/cpu/matmul_avx512.c cuda/cpu/pool.c cuda/cpu/errors.c -o build/quant_check -lm
 *   build/quant_check            validate (exit 1 on a mismatch); test/quant.test.ts runs this
 *   build/quant_check time [th]  validate, then time decode (m = 1) on a 256 MiB-per-type weight set
 *
 * Checks, per type and kernel, on awkward shapes (n = 37 rows, k = 3 blocks of
 * 256 or 7 of 32, m = 1..9 activation rows):
 *   - each output against the reference: |got − ref| <= 1e-5 · Σ|terms| + 1e-30
 *     (the integer block sums are exact in every kernel; only the order of
 *     the fp32 additions differs);
 *   - batch invariance: row i's outputs are bit-identical for m = 1 and m = 9,
 *     and for every tile split (the rows of one call are also split across
 *     2 threads differently than alone).
 * Timing napkin math: GB/s = weight bytes / time at m = 1; compare with
 * `bun run bench membw` (this VM: ~27 GB/s read with 2 threads).
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

static const int TYPES[] = { SKD_DTYPE_Q8_0, SKD_DTYPE_Q4_0, SKD_DTYPE_Q4_K, SKD_DTYPE_Q6_K };
static const int KERNELS[] = { SKD_QKERNEL_AVX2, SKD_QKERNEL_AVX2_VNNI, SKD_QKERNEL_AVX512, SKD_QKERNEL_AVX512_VNNI };

/* A random [n, k] matrix of `dtype`: Gaussian weights with rows of very different scales. */
static skd_mat make_mat(int dtype, long n, long k) {
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
    skd_mat_set(&m, dtype, q, n, k, 0);
    free(f);
    free(q);
    return m;
}

/* Σ|w·x| of output (i, r), the scale of its rounding error. */
static double abs_sum(const skd_mat *w, long r, const float *x) {
    float *row = malloc(sizeof(float) * (size_t)w->cols);
    skd_dequantize_row(w->dtype, (const char *)w->data + r * skd_row_bytes(w->dtype, w->cols), row, w->cols);
    double s = 0;
    for (long c = 0; c < w->cols; c++) s += fabs((double)row[c] * x[c]);
    free(row);
    return s;
}

static int validate(skd_pool *pool1, skd_pool *pool2) {
    int bad = 0;
    for (size_t ti = 0; ti < sizeof TYPES / sizeof *TYPES; ti++) {
        const int dt = TYPES[ti];
        const long n = 37, k = skd_dtype_block(dt) == 256 ? 3 * 256 : 7 * 32;
        const int M = 9;
        skd_mat w = make_mat(dt, n, k);
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
            skd_qmatmul(pool2, qk, scratch, got, x, M, &w, bias, 0);
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
                skd_qmatmul(pool1, qk, scratch, one, x + i * k, 1, &w, bias, 0); /* alone, one thread */
                if (memcmp(one, got + i * n, sizeof(float) * (size_t)n)) variant++;
            }
            printf("%-5s %-12s worst error %.3f of the bound; %s\n", skd_dtype_name(dt), skd_qkernel_name(qk), worst,
                   variant ? "BATCH-VARIANT" : "rows batch-invariant");
            if (mism || variant) bad = 1;
        }
        free(x), free(bias), free(ref), free(got), free(one), free(scratch), free(w.data);
    }
    return bad;
}

/* Decode (m = 1) over ~256 MiB of weights per type: llama-400m-like [3584, 1024] matrices. */
static void timing(skd_pool *pool) {
    printf("\ndecode timing, m = 1, %d threads (GB/s of weight bytes; compare bench membw)\n", skd_pool_size(pool));
    for (size_t ti = 0; ti < sizeof TYPES / sizeof *TYPES; ti++) {
        const int dt = TYPES[ti];
        const long n = 3584, k = 1024;
        const size_t per = (size_t)n * (size_t)skd_row_bytes(dt, k);
        const int nm = (int)((256u << 20) / per);
        skd_mat *ws = malloc(sizeof(skd_mat) * (size_t)nm);
        for (int i = 0; i < nm; i++) ws[i] = make_mat(dt, n, k);
        float *x = malloc(sizeof(float) * (size_t)k), *out = malloc(sizeof(float) * (size_t)n);
        for (long i = 0; i < k; i++) x[i] = grand();
        void *scratch = aligned_alloc(64, (skd_qact_bytes(1, k) + 63) / 64 * 64);
        for (size_t ki = 0; ki <= sizeof KERNELS / sizeof *KERNELS; ki++) {
            const int qk = ki == 0 ? SKD_QKERNEL_PORTABLE : KERNELS[ki - 1];
            if (!skd_qkernel_supported(qk)) continue;
            double best = 1e30;
            for (int rep = 0; rep < 5; rep++) {
                const double t0 = now();
                for (int i = 0; i < nm; i++) skd_qmatmul(pool, qk, scratch, out, x, 1, &ws[i], NULL, 0);
                const double t = now() - t0;
                if (t < best) best = t;
            }
            printf("%-5s %-12s %6.1f GB/s\n", skd_dtype_name(dt), skd_qkernel_name(qk), (double)per * nm / best / 1e9);
        }
        for (int i = 0; i < nm; i++) free(ws[i].data);
        free(ws), free(x), free(out), free(scratch);
    }
}

int main(int argc, char **argv) {
    skd_pool *pool1 = skd_pool_create(1), *pool2 = skd_pool_create(2);
    const int bad = validate(pool1, pool2);
    printf(bad ? "FAIL\n" : "OK\n");
    if (!bad && argc > 1 && !strcmp(argv[1], "time")) {
        skd_pool *p = skd_pool_create(argc > 2 ? atoi(argv[2]) : 2);
        timing(p);
        skd_pool_free(p);
    }
    skd_pool_free(pool1);
    skd_pool_free(pool2);
    return bad;
}
