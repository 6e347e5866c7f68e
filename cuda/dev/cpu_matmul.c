/* cpu_matmul.c — dev harness for the CPU matmul kernels (STYLE.md: variants
 * are validated against the portable reference, then timed).
 *
 *   gcc -O3 -pthread -fopenmp-simd -I cuda/include -I cuda/common cuda/dev/cpu_matmul.c \
 *       cuda/cpu/ops.c cuda/cpu/matmul_avx2.c cuda/cpu/matmul_avx512.c cuda/cpu/pool.c cuda/cpu/errors.c \
 *       cuda/cpu/quant.c cuda/cpu/quant_avx2.c cuda/cpu/quant_avx512.c -o build/cpu_matmul -lm
 *   build/cpu_matmul [threads]
 *
 * Decode napkin math: a model's worth of bf16 weights (~240 MB, the size of
 * OPT-125m's step) streamed at m = 1 is bandwidth-bound: GB/s here should
 * approach `bun run bench membw`'s read figure. Each variant runs the same
 * matrices, packed in panels as the engine stores them; "huge pages" asks the
 * kernel for 2 MiB pages (madvise).
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "../cpu/ops.h"
#include "../cpu/pool.h"
#include "halfs.h"
#include "skipdecode.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}


int main(int argc, char **argv) {
    const int nth = argc > 1 ? atoi(argv[1]) : 2;
    skd_pool *pool = skd_pool_create(nth);
    /* 12 "layers" of fc1-shaped matrices [3072, 768] + one LM head [50272, 768], bf16 */
    const int n_mats = 13;
    skd_mat mats[13];
    size_t total = 0;
    for (int huge = 0; huge < 2; huge++) {
        total = 0;
        for (int i = 0; i < n_mats; i++) {
            long rows = i < 12 ? 3072 * 3 : 50272, cols = 768; /* ~ a layer's weights: 3 fc1-size blocks */
            size_t bytes = (size_t)rows * cols * 2;
            uint16_t *w = malloc(bytes);
            for (size_t k = 0; k < (size_t)rows * cols; k++) w[k] = f32_to_bf16((float)((k * 2654435761u) % 1000) / 1000.f - 0.5f);
            mats[i] = (skd_mat){ 0 };
            skd_mat_set(&mats[i], SKD_DTYPE_BF16, w, rows, cols, 1, NULL);
            free(w);
            if (huge) madvise(mats[i].data, bytes, MADV_HUGEPAGE);
            total += bytes;
        }
        float *x = malloc(sizeof(float) * 768 * 64), *out = malloc(sizeof(float) * 50272 * 64),
              *ref = malloc(sizeof(float) * 50272 * 64);
        for (int i = 0; i < 768 * 64; i++) x[i] = sinf((float)i);
        /* validate AVX2 vs portable on the LM head, m = 1..5 */
        double maxd = 0;
        for (int m = 1; m <= 13; m++) {
            skd_matmul(pool, SKD_KERNEL_PORTABLE, ref, x, m, &mats[12], NULL, 0);
            for (int kern = SKD_KERNEL_AVX2; kern <= SKD_KERNEL_AVX512; kern++) {
                if (!skd_kernel_supported(kern)) continue;
                skd_matmul(pool, kern, out, x, m, &mats[12], NULL, 0);
                for (long i = 0; i < (long)m * 50272; i++) maxd = fmax(maxd, fabs(out[i] - ref[i]));
            }
        }
        printf("%s pages: %.0f MB of bf16 weights, %d threads; simd vs portable max |diff| %.2e\n",
               huge ? "huge" : "4 KiB", total / 1e6, nth, maxd);
        for (int kern = SKD_KERNEL_PORTABLE; kern <= SKD_KERNEL_AVX512; kern++) {
            if (!skd_kernel_supported(kern)) continue;
            for (int m = 1; m <= 64; m = m < 4 ? m + 1 : m * 2) {
                if (kern == SKD_KERNEL_PORTABLE && m > 4) continue; /* slow; m = 1..4 shows it */
                double best = 1e9;
                for (int rep = 0; rep < 5; rep++) {
                    double t = now();
                    for (int i = 0; i < n_mats; i++) skd_matmul(pool, kern, out, x, m, &mats[i], NULL, 0);
                    t = now() - t;
                    if (t < best) best = t;
                }
                printf("  %-8s m=%-2d %7.2f ms  %6.1f GB/s  %6.1f GFLOP/s\n", skd_kernel_name(kern), m, best * 1e3,
                       total / best / 1e9, 2.0 * m * (total / 2) / best / 1e9);
            }
        }
        for (int i = 0; i < n_mats; i++) skd_weight_free(mats[i].data);
        free(x), free(out), free(ref);
    }
    skd_pool_free(pool);
    return 0;
}
