/* matmul_avx2.c — the AVX2/FMA/F16C matmul: out[m, n] = x[m, k] · W[n, k]^T.
 *
 * The portable kernel (ops.c) is the reference; this one is picked at run
 * time when the CPU has AVX2, FMA and F16C (see skd_cpu_kernel_name).
 *
 * Decode is memory-bound: a step reads every weight once, so the kernel
 * streams each W row from memory exactly once per step and widens 16-bit
 * weights to fp32 in registers (bf16: a shift; f16: vcvtph2ps). A micro-kernel
 * takes 2 W rows × up to 4 x rows (8 ymm accumulators): each W load feeds 4
 * FMAs, each x load 2. For many rows (prefill) x is tiled in blocks of 64 rows
 * (64 × k × 4 bytes, 192 KiB at k = 768: L2-resident) and W, converted on the
 * fly, is re-read once per tile from cache.
 *
 * Napkin math, OPT-125m decode at batch 1 with bf16 weights: 247 MB per step
 * (85 M layer weights + a 50272 × 768 LM head, 2 bytes each); at the 34 GB/s
 * this machine reads, the roofline is ~138 steps/s.
 */
#include <immintrin.h>
#include <stdint.h>

#include "ops.h"
#include "skipdecode.h"

#define TARGET __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline)) TARGET

INLINE __m256 load_f32(const void *w, long i) { return _mm256_loadu_ps((const float *)w + i); }
INLINE __m256 load_bf16(const void *w, long i) {
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
INLINE __m256 load_f16(const void *w, long i) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
}
INLINE float one_f32(const void *w, long i) { return ((const float *)w)[i]; }
INLINE float one_bf16(const void *w, long i) { return skd_bf16_to_f32(((const uint16_t *)w)[i]); }
INLINE float one_f16(const void *w, long i) { return _cvtsh_ss(((const uint16_t *)w)[i]); }

INLINE float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* acc[c][r] = W[j+c] · x[r] for c < 2, r < R (R a constant after inlining). */
#define MICRO(SUF)                                                                                        \
    INLINE void micro_##SUF(const void *W, long k, long j0, long j1, const float *x, long ldx, const int R, \
                            float acc[2][4]) {                                                            \
        __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;                                 \
        __m256 a10 = a00, a11 = a00, a12 = a00, a13 = a00;                                                 \
        const long o0 = j0 * k, o1 = j1 * k;                                                              \
        long i = 0;                                                                                        \
        for (; i + 8 <= k; i += 8) {                                                                       \
            const __m256 w0 = load_##SUF(W, o0 + i), w1 = load_##SUF(W, o1 + i);                          \
            __m256 xv = _mm256_loadu_ps(x + i);                                                            \
            a00 = _mm256_fmadd_ps(w0, xv, a00);                                                            \
            a10 = _mm256_fmadd_ps(w1, xv, a10);                                                            \
            if (R > 1) {                                                                                   \
                xv = _mm256_loadu_ps(x + ldx + i);                                                         \
                a01 = _mm256_fmadd_ps(w0, xv, a01);                                                        \
                a11 = _mm256_fmadd_ps(w1, xv, a11);                                                        \
            }                                                                                              \
            if (R > 2) {                                                                                   \
                xv = _mm256_loadu_ps(x + 2 * ldx + i);                                                     \
                a02 = _mm256_fmadd_ps(w0, xv, a02);                                                        \
                a12 = _mm256_fmadd_ps(w1, xv, a12);                                                        \
            }                                                                                              \
            if (R > 3) {                                                                                   \
                xv = _mm256_loadu_ps(x + 3 * ldx + i);                                                     \
                a03 = _mm256_fmadd_ps(w0, xv, a03);                                                        \
                a13 = _mm256_fmadd_ps(w1, xv, a13);                                                        \
            }                                                                                              \
        }                                                                                                  \
        acc[0][0] = hsum(a00), acc[1][0] = hsum(a10);                                                      \
        if (R > 1) acc[0][1] = hsum(a01), acc[1][1] = hsum(a11);                                           \
        if (R > 2) acc[0][2] = hsum(a02), acc[1][2] = hsum(a12);                                           \
        if (R > 3) acc[0][3] = hsum(a03), acc[1][3] = hsum(a13);                                           \
        for (; i < k; i++) {                                                                               \
            const float w0 = one_##SUF(W, o0 + i), w1 = one_##SUF(W, o1 + i);                              \
            for (int r = 0; r < R; r++) {                                                                  \
                acc[0][r] += w0 * x[r * ldx + i];                                                          \
                acc[1][r] += w1 * x[r * ldx + i];                                                          \
            }                                                                                              \
        }                                                                                                  \
    }

MICRO(f32)
MICRO(bf16)
MICRO(f16)

/* acc[c][r] = W[j[c]] · x[r] for c < 4, r < R, R = 1 or 2: the skinny case
 * (decode at batch 1-2). Eight independent FMA chains hide the FMA latency:
 * for R = 1 each row keeps two accumulators over alternate 8-wide chunks. */
#define MICRO4(SUF)                                                                                       \
    INLINE void micro4_##SUF(const void *W, long k, const long *j, const float *x, long ldx, const int R,  \
                             float acc[4][4]) {                                                           \
        __m256 a[4][2];                                                                                   \
        for (int c = 0; c < 4; c++) a[c][0] = a[c][1] = _mm256_setzero_ps();                               \
        const long o0 = j[0] * k, o1 = j[1] * k, o2 = j[2] * k, o3 = j[3] * k;                            \
        long i = 0;                                                                                       \
        if (R == 1) {                                                                                     \
            /* one row after another: W is read strictly sequentially, which the                    \
             * hardware prefetcher follows far better than 4 interleaved 1.5 KB rows */              \
            const long o[4] = { o0, o1, o2, o3 };                                                         \
            for (int c = 0; c < 4; c++) {                                                                 \
                __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;                               \
                long q = 0;                                                                               \
                for (; q + 32 <= k; q += 32) {                                                            \
                    s0 = _mm256_fmadd_ps(load_##SUF(W, o[c] + q), _mm256_loadu_ps(x + q), s0);            \
                    s1 = _mm256_fmadd_ps(load_##SUF(W, o[c] + q + 8), _mm256_loadu_ps(x + q + 8), s1);    \
                    s2 = _mm256_fmadd_ps(load_##SUF(W, o[c] + q + 16), _mm256_loadu_ps(x + q + 16), s2);  \
                    s3 = _mm256_fmadd_ps(load_##SUF(W, o[c] + q + 24), _mm256_loadu_ps(x + q + 24), s3);  \
                }                                                                                         \
                for (; q + 8 <= k; q += 8) s0 = _mm256_fmadd_ps(load_##SUF(W, o[c] + q), _mm256_loadu_ps(x + q), s0); \
                float t = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));             \
                for (; q < k; q++) t += one_##SUF(W, o[c] + q) * x[q];                                    \
                acc[c][0] = t;                                                                            \
            }                                                                                             \
            return;                                                                                       \
        }                                                                                                 \
        for (; i + 8 <= k; i += 8) {                                                                      \
            const __m256 w0 = load_##SUF(W, o0 + i), w1 = load_##SUF(W, o1 + i);                         \
            const __m256 w2 = load_##SUF(W, o2 + i), w3 = load_##SUF(W, o3 + i);                         \
            __m256 xv = _mm256_loadu_ps(x + i);                                                           \
            a[0][0] = _mm256_fmadd_ps(w0, xv, a[0][0]);                                                   \
            a[1][0] = _mm256_fmadd_ps(w1, xv, a[1][0]);                                                   \
            a[2][0] = _mm256_fmadd_ps(w2, xv, a[2][0]);                                                   \
            a[3][0] = _mm256_fmadd_ps(w3, xv, a[3][0]);                                                   \
            if (R > 1) {                                                                                  \
                xv = _mm256_loadu_ps(x + ldx + i);                                                        \
                a[0][1] = _mm256_fmadd_ps(w0, xv, a[0][1]);                                               \
                a[1][1] = _mm256_fmadd_ps(w1, xv, a[1][1]);                                               \
                a[2][1] = _mm256_fmadd_ps(w2, xv, a[2][1]);                                               \
                a[3][1] = _mm256_fmadd_ps(w3, xv, a[3][1]);                                               \
            }                                                                                             \
        }                                                                                                 \
        for (int c = 0; c < 4; c++)                                                                       \
            for (int r = 0; r < R; r++) acc[c][r] = hsum(a[c][r]);                                        \
        const long o[4] = { o0, o1, o2, o3 };                                                             \
        for (; i < k; i++)                                                                                \
            for (int c = 0; c < 4; c++) {                                                                 \
                const float wv = one_##SUF(W, o[c] + i);                                                  \
                for (int r = 0; r < R; r++) acc[c][r] += wv * x[r * ldx + i];                             \
            }                                                                                             \
    }

MICRO4(f32)
MICRO4(bf16)
MICRO4(f16)

/* acc[r] = W[j] · x[r] for r < R ≤ 4, W read strictly in order (decode at
 * batch ≤ 4: memory-bound, so the access pattern matters most); two
 * accumulators per x row over alternate 8-wide chunks. */
#define MICRO_ROW(SUF)                                                                                     \
    INLINE void row_##SUF(const void *W, long k, long j, const float *x, long ldx, const int R, float *acc) { \
        __m256 a[4][2];                                                                                    \
        for (int r = 0; r < 4; r++) a[r][0] = a[r][1] = _mm256_setzero_ps();                               \
        const long o = j * k;                                                                              \
        long i = 0;                                                                                        \
        for (; i + 16 <= k; i += 16) {                                                                     \
            const __m256 w0 = load_##SUF(W, o + i), w1 = load_##SUF(W, o + i + 8);                        \
            for (int r = 0; r < R; r++) {                                                                  \
                a[r][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + r * ldx + i), a[r][0]);                 \
                a[r][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + r * ldx + i + 8), a[r][1]);             \
            }                                                                                              \
        }                                                                                                  \
        for (; i + 8 <= k; i += 8) {                                                                       \
            const __m256 w0 = load_##SUF(W, o + i);                                                        \
            for (int r = 0; r < R; r++) a[r][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + r * ldx + i), a[r][0]); \
        }                                                                                                  \
        for (int r = 0; r < R; r++) acc[r] = hsum(_mm256_add_ps(a[r][0], a[r][1]));                        \
        for (; i < k; i++) {                                                                               \
            const float wv = one_##SUF(W, o + i);                                                          \
            for (int r = 0; r < R; r++) acc[r] += wv * x[r * ldx + i];                                     \
        }                                                                                                  \
    }

MICRO_ROW(f32)
MICRO_ROW(bf16)
MICRO_ROW(f16)

#define TILE_ROWS 64

/* Rows j0..j1 of W against all m rows of x, into out (row stride n). Output
 * rows go 4 at a time (a short tail repeats its last row and discards the
 * copies); x rows 4 at a time through micro (2 W rows × 4), the last 1-2
 * through micro4 (4 W rows × 1-2). */
#define ROWS(SUF)                                                                                          \
    TARGET static void rows_##SUF(const skd_mat *w, long j0, long j1, const float *x, int m, float *out,   \
                                  const float *bias, int relu) {                                           \
        const long k = w->cols, n = w->rows;                                                               \
        float acc[4][4];                                                                                   \
        if (m <= 4) { /* decode at small batch: one W row after another */                                 \
            for (long j = j0; j < j1; j++) {                                                               \
                switch (m) {                                                                               \
                case 4: row_##SUF(w->data, k, j, x, k, 4, acc[0]); break;                                  \
                case 3: row_##SUF(w->data, k, j, x, k, 3, acc[0]); break;                                  \
                case 2: row_##SUF(w->data, k, j, x, k, 2, acc[0]); break;                                  \
                default: row_##SUF(w->data, k, j, x, k, 1, acc[0]); break;                                 \
                }                                                                                          \
                for (int r = 0; r < m; r++) {                                                              \
                    float v = acc[0][r] + (bias ? bias[j] : 0.f);                                          \
                    out[(size_t)r * n + j] = relu && v < 0.f ? 0.f : v;                                    \
                }                                                                                          \
            }                                                                                              \
            return;                                                                                        \
        }                                                                                                  \
        for (int t0 = 0; t0 < m; t0 += TILE_ROWS) {                                                        \
            const int t1 = m - t0 < TILE_ROWS ? m : t0 + TILE_ROWS;                                        \
            for (long j = j0; j < j1; j += 4) {                                                            \
                const int nj = j1 - j < 4 ? (int)(j1 - j) : 4;                                             \
                long jj[4];                                                                                \
                for (int c = 0; c < 4; c++) jj[c] = j + (c < nj ? c : nj - 1);                              \
                for (int i = t0; i < t1;) {                                                                \
                    const float *xi = x + (size_t)i * k;                                                   \
                    const int R = t1 - i < 4 ? t1 - i : 4;                                                 \
                    float a2[2][4];                                                                        \
                    switch (R) {                                                                           \
                    case 4:                                                                                \
                    case 3:                                                                                \
                        if (R == 4) {                                                                      \
                            micro_##SUF(w->data, k, jj[0], jj[1], xi, k, 4, a2);                           \
                            for (int r = 0; r < 4; r++) acc[0][r] = a2[0][r], acc[1][r] = a2[1][r];        \
                            micro_##SUF(w->data, k, jj[2], jj[3], xi, k, 4, a2);                           \
                        } else {                                                                           \
                            micro_##SUF(w->data, k, jj[0], jj[1], xi, k, 3, a2);                           \
                            for (int r = 0; r < 3; r++) acc[0][r] = a2[0][r], acc[1][r] = a2[1][r];        \
                            micro_##SUF(w->data, k, jj[2], jj[3], xi, k, 3, a2);                           \
                        }                                                                                  \
                        for (int r = 0; r < R; r++) acc[2][r] = a2[0][r], acc[3][r] = a2[1][r];            \
                        break;                                                                             \
                    case 2: micro4_##SUF(w->data, k, jj, xi, k, 2, acc); break;                            \
                    default: micro4_##SUF(w->data, k, jj, xi, k, 1, acc); break;                           \
                    }                                                                                      \
                    for (int r = 0; r < R; r++) {                                                          \
                        float *o = out + (size_t)(i + r) * n;                                              \
                        for (int c = 0; c < nj; c++) {                                                     \
                            float v = acc[c][r] + (bias ? bias[j + c] : 0.f);                              \
                            o[j + c] = relu && v < 0.f ? 0.f : v;                                          \
                        }                                                                                  \
                    }                                                                                      \
                    i += R;                                                                                \
                }                                                                                          \
            }                                                                                              \
        }                                                                                                  \
    }

ROWS(f32)
ROWS(bf16)
ROWS(f16)

void skd_matmul_rows_avx2(const skd_mat *w, long j0, long j1, const float *x, int m, float *out, const float *bias,
                          int relu) {
    switch (w->dtype) {
    case SKD_DTYPE_F32: rows_f32(w, j0, j1, x, m, out, bias, relu); break;
    case SKD_DTYPE_BF16: rows_bf16(w, j0, j1, x, m, out, bias, relu); break;
    default: rows_f16(w, j0, j1, x, m, out, bias, relu); break;
    }
}
