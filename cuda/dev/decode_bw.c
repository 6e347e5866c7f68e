/* decode_bw.c — the batch-1 decode's matmuls alone, at the memory limit or not.
 *
 * Builds random llama-400m-shaped weights (24 layers of q, k, v, o, gate, up,
 * down, and the [32000, 1024] LM head) in each weight type and runs one
 * decode step's matmuls in order at m = 1 on 2 threads: the engine's step
 * without the norms, rotary, attention and sampling between them. Rounds
 * alternate a read-bandwidth measure (skd_membw, what bench membw reports)
 * with every type (best of 3 steps each); a type's line is the median of its
 * per-round share of that round's bandwidth, so a noisy neighbour hits both
 * sides of each ratio. Compare with `bun run bench decode`'s "of membw" to see
 * what the rest of the step costs.
 *
 *   gcc -O3 -std=c11 -pthread -fopenmp-simd -fno-math-errno -fno-trapping-math -I cuda/include -I cuda/common \
 *       cuda/dev/decode_bw.c cuda/cpu/quant.c cuda/cpu/quant_avx2.c cuda/cpu/quant_avx512.c cuda/cpu/ops.c \
 *       cuda/cpu/matmul_avx2.c cuda/cpu/matmul_avx512.c cuda/cpu/pool.c cuda/cpu/errors.c cuda/cpu/membw.c \
 *       -o build/decode_bw -lm && build/decode_bw [rounds]
 */
#include <stdio.h>
#include <stdlib.h>

#include "../cpu/ops.h"
#include "../cpu/pool.h"
#include "../cpu/quant.h"
#include "quant_ref.h"
#include "skipdecode.h"
#include "timing.h"

/* A random [n, k] matrix of `dtype` in the layout the engine gives it (packed for the kernels). */
static skd_mat make(int dtype, long n, long k, int qkernel) {
    skd_mat m = { 0 };
    if (skd_dtype_is_quant(dtype)) {
        float *f = malloc(sizeof(float) * (size_t)(n * k));
        void *q = malloc((size_t)(n * skd_row_bytes(dtype, k)));
        for (long i = 0; i < n * k; i++) f[i] = urand();
        if (skd_quantize_rows(dtype, f, k, q, 0, n)) fprintf(stderr, "quantize failed\n"), exit(2);
        skd_mat_set(&m, dtype, q, n, k, skd_qkernel_packs(qkernel), NULL);
        free(f), free(q);
    } else {
        uint16_t *h = malloc(2 * (size_t)(n * k));
        for (long i = 0; i < n * k; i++) h[i] = skd_f32_to_half(urand() * 0.1f);
        skd_mat_set(&m, dtype, h, n, k, 1, NULL);
        free(h);
    }
    if (!m.data) fprintf(stderr, "out of memory\n"), exit(2);
    return m;
}

enum { L = 24, D = 1024, KV = 256, FFN = 3584, VOCAB = 32000, NM = L * 7 + 1, NT = 5 };

int main(int argc, char **argv) {
    const int rounds = argc > 1 && atoi(argv[1]) > 0 ? atoi(argv[1]) : 15;
    const int types[NT] = { SKD_DTYPE_F16, SKD_DTYPE_Q8_0, SKD_DTYPE_Q4_0, SKD_DTYPE_Q4_K, SKD_DTYPE_Q6_K };
    const long rows[7] = { D, KV, KV, D, FFN, FFN, D }, cols[7] = { D, D, D, D, D, D, FFN };
    const int kernel = skd_kernel_best(), qkernel = skd_qkernel_for(kernel);
    skd_pool *pool = skd_pool_create(2);
    float *x = malloc(sizeof(float) * FFN), *out = malloc(sizeof(float) * VOCAB);
    for (int i = 0; i < FFN; i++) x[i] = urand();
    void *scratch = aligned_alloc(64, (skd_qact_bytes(1, FFN) + 63) / 64 * 64);
    double *share = malloc(sizeof(double) * NT * (size_t)rounds), *bw = malloc(sizeof(double) * (size_t)rounds);
    skd_mat *w = malloc(sizeof(skd_mat) * NM);
    for (int t = 0; t < NT; t++) {
        double bytes = 0;
        for (int i = 0; i < NM; i++) {
            w[i] = i < L * 7 ? make(types[t], rows[i % 7], cols[i % 7], qkernel) : make(types[t], VOCAB, D, qkernel);
            bytes += (double)skd_mat_bytes(&w[i]);
        }
        for (int r = 0; r < rounds; r++) {
            double rd, cp, best = 1e30;
            skd_membw((int64_t)256 << 20, 2, 3, &rd, &cp);
            for (int rep = 0; rep < 3; rep++) {
                const double t0 = now();
                for (int i = 0; i < NM; i++) {
                    if (skd_dtype_is_quant(types[t])) skd_qmatmul(pool, qkernel, scratch, out, x, 1, &w[i], NULL, 0);
                    else skd_matmul(pool, kernel, out, x, 1, &w[i], NULL, 0);
                }
                const double dt = now() - t0;
                if (dt < best) best = dt;
            }
            share[t * rounds + r] = bytes / best / 1e9 / rd;
            bw[r] = rd;
        }
        for (int i = 0; i < NM; i++) skd_weight_free(w[i].data);
        qsort(share + t * rounds, (size_t)rounds, sizeof(double), cmp_double);
        qsort(bw, (size_t)rounds, sizeof(double), cmp_double);
        printf("%-5s %6.0f MB a step: %3.0f%% of the read bandwidth (quartiles %.0f-%.0f%%; membw median %.1f GB/s)\n",
               skd_dtype_name(types[t]), bytes / 1e6, 100 * share[t * rounds + rounds / 2], 100 * share[t * rounds + rounds / 4],
               100 * share[t * rounds + 3 * rounds / 4], bw[rounds / 2]);
        fflush(stdout);
    }
    skd_pool_free(pool);
    free(w), free(x), free(out), free(scratch), free(share), free(bw);
    return 0;
}
