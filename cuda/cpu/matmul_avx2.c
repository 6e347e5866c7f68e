/* matmul_avx2.c — the AVX2/FMA/F16C matmul over packed weights:
 * out[m, n] = x[m, k] · W[n, k]^T, W in panels of 16 rows (ops.h).
 *
 * The portable kernel (ops.c) is the reference; this one is picked at run
 * time when the CPU has AVX2, FMA and F16C.
 *
 * Outer-product micro-kernel: for each column kk of a panel, the 16 weights
 * are loaded once (32 or 64 bytes) and widened to two ymm of fp32 in
 * registers (bf16: a shift; f16: vcvtph2ps), then multiplied into R ≤ 6 rows
 * of x by broadcasting x[r][kk]: 2R FMAs per column, accumulated in 2R ymm;
 * no horizontal sums.
 * Each thread streams its panels front to back: one sequential stream, which
 * the hardware prefetcher follows at full bandwidth.
 *
 * Prefill: x is tiled so a tile (tile × k × 4 bytes ≤ 256 KiB) stays in L2
 * while every panel of the thread passes over it once.
 *
 * Napkin math, OPT-125m-shaped bf16 decode at batch 1: 236 MiB per step
 * (12 layers × 14 MB + a 50272 × 768 LM head); at ~35 GB/s that is ~140
 * steps/s. At batch 16 the step is compute-bound: 2 × 16 × 124 M = 4 GFLOP;
 * two Zen 4 cores peak near 200 GFLOP/s (2 × 2 FMA × 8 lanes × ~3 GHz).
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "ops.h"
#include "panel_loop.h"
#include "skipdecode.h"

#define TARGET __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline)) TARGET

/* 16 weights of one panel column → lo (rows 0-7), hi (rows 8-15). */
INLINE void col_f32(const void *w, long i, __m256 *lo, __m256 *hi) {
    *lo = _mm256_loadu_ps((const float *)w + i);
    *hi = _mm256_loadu_ps((const float *)w + i + 8);
}
INLINE void col_bf16(const void *w, long i, __m256 *lo, __m256 *hi) {
    const __m256i v = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i));
    *lo = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(v)), 16));
    *hi = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(v, 1)), 16));
}
INLINE void col_f16(const void *w, long i, __m256 *lo, __m256 *hi) {
    const __m256i v = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i));
    *lo = _mm256_cvtph_ps(_mm256_castsi256_si128(v));
    *hi = _mm256_cvtph_ps(_mm256_extracti128_si256(v, 1));
}

/* Bytes per element, and how far ahead (in panel columns) W is prefetched:
 * the first pass over a panel streams it from memory, and the demand loads
 * alone left the FMA loop waiting on DRAM. 64 columns (2 KiB of a 16-bit
 * panel): a llama-400m F16 decode step's matmuls at m = 1 read at 93% of
 * membw against 84% at 24 columns, and 96-192 were no better (Zen 3 VM,
 * medians of 11 interleaved rounds; cuda/dev/decode_bw.c measures the
 * same step). */
#define ES_f32 4
#define ES_bf16 2
#define ES_f16 2
#define PREFETCH_COLS 64

/* acc[r][0..1] = panel (16 rows) · x[r] over k, for r < R (a constant after
 * inlining). Each output is one FMA chain over kk in order, whatever R is, so
 * a row's result does not depend on how many rows share its block: logits
 * (and so sampled tokens) are the same whatever else runs in the batch.
 * Variants tried in cuda/dev/cpu_matmul.c (2 threads, 247 MB bf16, runs
 * interleaved because this VM's bandwidth swings between ~35 and ~65 GB/s):
 *   v1 2 W rows × 4 x rows, dot-product form, hsum per output: m=16 100 GFLOP/s
 *   v2 this, plus 4 partial sums when R = 1: m=1 ~55 GB/s, but a row's sum
 *      order then depended on its block size (batch-dependent logits)
 *   v3 2 partial sums for every R, R ≤ 3 (same order for all R): m=1 38-48
 *      GB/s, m=64 151 GFLOP/s
 *   v4 this (one chain, R ≤ 6): m=1 37-43 GB/s (two FMA chains a column cap
 *      one core near 21 GB/s), m=16 170, m=64 194 GFLOP/s — kept: prefill
 *      and batched decode gain more than batch-1 decode loses. */
#define MICRO(SUF)                                                                                        \
    INLINE void micro_##SUF(const void *W, long base, long k, const float *x, long ldx, const int R,       \
                            __m256 acc[SKD_PANEL_ROWS][2]) {                                                           \
        __m256 a[SKD_PANEL_ROWS][2]; /* local, so the accumulators live in registers */                                 \
        for (int r = 0; r < R; r++) a[r][0] = a[r][1] = _mm256_setzero_ps();                               \
        for (long kk = 0; kk < k; kk++) {                                                                  \
            _mm_prefetch((const char *)W + (base + (kk + PREFETCH_COLS) * SKD_PANEL) * ES_##SUF, _MM_HINT_T0); \
            __m256 lo, hi;                                                                                 \
            col_##SUF(W, base + kk * SKD_PANEL, &lo, &hi);                                                 \
            for (int r = 0; r < R; r++) {                                                                  \
                const __m256 xb = _mm256_broadcast_ss(x + r * ldx + kk);                                   \
                a[r][0] = _mm256_fmadd_ps(lo, xb, a[r][0]);                                                \
                a[r][1] = _mm256_fmadd_ps(hi, xb, a[r][1]);                                                \
            }                                                                                              \
        }                                                                                                  \
        for (int r = 0; r < R; r++) acc[r][0] = a[r][0], acc[r][1] = a[r][1];                               \
    }

MICRO(f32)
MICRO(bf16)
MICRO(f16)

/* Writes R rows of 16 outputs (nj valid) with bias and ReLU. */
INLINE void store(__m256 acc[SKD_PANEL_ROWS][2], int R, float *out, long n, long j0, int nj, const float *bias, int relu) {
    __m256 b0 = _mm256_setzero_ps(), b1 = b0;
    float tmp[SKD_PANEL];
    if (bias) {
        if (nj == SKD_PANEL) {
            b0 = _mm256_loadu_ps(bias + j0);
            b1 = _mm256_loadu_ps(bias + j0 + 8);
        } else {
            memset(tmp, 0, sizeof tmp);
            memcpy(tmp, bias + j0, sizeof(float) * (size_t)nj);
            b0 = _mm256_loadu_ps(tmp);
            b1 = _mm256_loadu_ps(tmp + 8);
        }
    }
    const __m256 zero = _mm256_setzero_ps();
    for (int r = 0; r < R; r++) {
        __m256 v0 = _mm256_add_ps(acc[r][0], b0), v1 = _mm256_add_ps(acc[r][1], b1);
        if (relu) {
            v0 = _mm256_max_ps(v0, zero);
            v1 = _mm256_max_ps(v1, zero);
        }
        float *o = out + (size_t)r * n + j0;
        if (nj == SKD_PANEL) {
            _mm256_storeu_ps(o, v0);
            _mm256_storeu_ps(o + 8, v1);
        } else {
            _mm256_storeu_ps(tmp, v0);
            _mm256_storeu_ps(tmp + 8, v1);
            memcpy(o, tmp, sizeof(float) * (size_t)nj);
        }
    }
}

#define PANELS(SUF)                                                                                        \
    TARGET static void panels_##SUF(const skd_mat *w, long p0, long p1, const float *x, int m, float *out, \
                                    const float *bias, int relu) {                                         \
        __m256 acc[SKD_PANEL_ROWS][2];                                                                                                 \
        SKD_PANEL_LOOP(micro_##SUF, store, acc);                                                           \
    }

PANELS(f32)
PANELS(bf16)
PANELS(f16)

void skd_matmul_panels_avx2(const skd_mat *w, long p0, long p1, const float *x, int m, float *out, const float *bias,
                            int relu) {
    switch (w->dtype) {
    case SKD_DTYPE_F32: panels_f32(w, p0, p1, x, m, out, bias, relu); break;
    case SKD_DTYPE_BF16: panels_bf16(w, p0, p1, x, m, out, bias, relu); break;
    default: panels_f16(w, p0, p1, x, m, out, bias, relu); break;
    }
}
