/* matmul_avx512.c — the AVX-512 matmul over packed weights (ops.h):
 * out[m, n] = x[m, k] · W[n, k]^T, picked at run time where the CPU has
 * AVX-512F (else matmul_avx2.c, else the portable reference in ops.c).
 *
 * One panel column (16 weights) is one zmm of fp32 after widening, so a
 * column feeds R ≤ 6 FMAs, one per x row (broadcast). With 32 vector
 * registers every output keeps 4 partial sums — columns c ≡ 0, 1, 2, 3
 * (mod 4), added in a fixed order at the end — for every R: 4 independent
 * FMA chains per output even for one row (decode at batch 1 reads at memory
 * speed instead of waiting on FMA latency), and a row's sum order never
 * depends on its block, so results stay batch-invariant.
 * 6 rows × 4 partial sums = 24 zmm accumulators + weights + broadcast.
 *
 * Prefill tiles x for L2 exactly as the AVX2 kernel does.
 */
#include <immintrin.h>
#include <stdint.h>

#include "ops.h"
#include "panel_loop.h"
#include "skipdecode.h"

#define TARGET __attribute__((target("avx512f")))
#define INLINE static inline __attribute__((always_inline)) TARGET

#define MAX_R SKD_PANEL_ROWS /* x rows per micro-kernel call */
#define PARTS 4
/* Software prefetch of the weight stream, two lines per 4 columns of 16-bit weights: 64 columns (2 KiB) ahead into
 * L1 and 160 (5 KiB) ahead into L2. Against 24 columns into L1 alone, a llama-400m decode's F16 matmuls at m = 1,
 * 2 threads (Intel Xeon VM, 2026-12-08, the two builds alternating step by step): 30.2 → 33.9 GB/s, 83 → 96% of
 * the read rate. The leads are touchy there, for reasons not found: 4 KiB into L1 lost 7%, and 7-12 KiB into L2
 * lost 2-8% where 4.5-5.5 KiB gained 10-12%, 6 KiB 7%. */
#define PREFETCH_COLS 64
#define FAR_COLS 160

INLINE __m512 col_f32(const void *w, long i) { return _mm512_loadu_ps((const float *)w + i); }
INLINE __m512 col_bf16(const void *w, long i) {
    const __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
INLINE __m512 col_f16(const void *w, long i) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i)));
}
#define ES_f32 4
#define ES_bf16 2
#define ES_f16 2

/* acc[r] = panel · x[r] over k for r < R (constant after inlining); column
 * c accumulates into partial sum c % 4 whatever R is. */
#define MICRO(SUF)                                                                                        \
    INLINE void micro_##SUF(const void *W, long base, long k, const float *x, long ldx, const int R,       \
                            __m512 acc[MAX_R]) {                                                          \
        __m512 a[PARTS][MAX_R];                                                                            \
        for (int u = 0; u < PARTS; u++)                                                                    \
            for (int r = 0; r < R; r++) a[u][r] = _mm512_setzero_ps();                                     \
        long kk = 0;                                                                                       \
        for (; kk + PARTS <= k; kk += PARTS) {                                                             \
            _mm_prefetch((const char *)W + (base + (kk + PREFETCH_COLS) * SKD_PANEL) * ES_##SUF, _MM_HINT_T0); \
            _mm_prefetch((const char *)W + (base + (kk + PREFETCH_COLS + 2) * SKD_PANEL) * ES_##SUF, _MM_HINT_T0); \
            _mm_prefetch((const char *)W + (base + (kk + FAR_COLS) * SKD_PANEL) * ES_##SUF, _MM_HINT_T2);     \
            _mm_prefetch((const char *)W + (base + (kk + FAR_COLS + 2) * SKD_PANEL) * ES_##SUF, _MM_HINT_T2); \
            for (int u = 0; u < PARTS; u++) {                                                              \
                const __m512 wv = col_##SUF(W, base + (kk + u) * SKD_PANEL);                               \
                for (int r = 0; r < R; r++)                                                                \
                    a[u][r] = _mm512_fmadd_ps(wv, _mm512_set1_ps(x[r * ldx + kk + u]), a[u][r]);           \
            }                                                                                              \
        }                                                                                                  \
        for (; kk < k; kk++) {                                                                             \
            const __m512 wv = col_##SUF(W, base + kk * SKD_PANEL);                                         \
            const int u = (int)(kk % PARTS);                                                               \
            for (int r = 0; r < R; r++) a[u][r] = _mm512_fmadd_ps(wv, _mm512_set1_ps(x[r * ldx + kk]), a[u][r]); \
        }                                                                                                  \
        for (int r = 0; r < R; r++) acc[r] = _mm512_add_ps(_mm512_add_ps(a[0][r], a[1][r]), _mm512_add_ps(a[2][r], a[3][r])); \
    }

MICRO(f32)
MICRO(bf16)
MICRO(f16)

/* Writes R rows of 16 outputs (nj valid) with bias and ReLU. */
INLINE void store(__m512 acc[MAX_R], int R, float *out, long n, long j0, int nj, const float *bias, int relu) {
    const __mmask16 mask = nj == SKD_PANEL ? (__mmask16)0xffff : (__mmask16)((1u << nj) - 1);
    const __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias + j0) : _mm512_setzero_ps();
    for (int r = 0; r < R; r++) {
        __m512 v = _mm512_add_ps(acc[r], b);
        if (relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
        _mm512_mask_storeu_ps(out + (size_t)r * n + j0, mask, v);
    }
}

#define PANELS(SUF)                                                                                        \
    TARGET static void panels_##SUF(const skd_mat *w, long p0, long p1, const float *x, int m, float *out, \
                                    const float *bias, int relu) {                                         \
        __m512 acc[MAX_R];                                                                                                 \
        SKD_PANEL_LOOP(micro_##SUF, store, acc);                                                           \
    }

PANELS(f32)
PANELS(bf16)
PANELS(f16)

void skd_matmul_panels_avx512(const skd_mat *w, long p0, long p1, const float *x, int m, float *out, const float *bias,
                              int relu) {
    switch (w->dtype) {
    case SKD_DTYPE_F32: panels_f32(w, p0, p1, x, m, out, bias, relu); break;
    case SKD_DTYPE_BF16: panels_bf16(w, p0, p1, x, m, out, bias, relu); break;
    default: panels_f16(w, p0, p1, x, m, out, bias, relu); break;
    }
}
