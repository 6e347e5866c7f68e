/* kv_avx2.c — attention over the paged KV cache with AVX2/FMA/F16C (kv.h).
 * The portable skd_kv_attend in kv.c is the reference; the engine takes this
 * path when the CPU runs the AVX2 or AVX-512 matmul kernels (which imply
 * F16C).
 *
 * Per (row, KV head), for the query heads that share it (grouped-query
 * attention reads each key and value once for the group): scores q·k for
 * every position (8 lanes of the head at a time; f16 keys widened by
 * vcvtph2ps, bf16 by a shift), a max-subtracted softmax whose exponentials
 * are 8 at a time (exp8, exp_avx2.h), then the weighted sum of values accumulated
 * in registers, 16 lanes at a time.
 *
 * Napkin math, OPT-350m shape (24 layers, kd = 1024) at 2048 context: one
 * token reads 2 × 24 × 2048 × 1024 elements of K and V: 403 MB in fp32,
 * 201 MB in fp16, against 0.66 GB of fp16 weights; at batch 16 every row
 * reads its own cache, 3.2 GB fp16 against the same 0.66 GB of weights, so
 * long-context decode is bound by the KV bytes, and 16-bit storage halves
 * them.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "exp_avx2.h"
#include "kv.h"

#define TARGET __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline)) TARGET

/* 8 stored elements at p + j as fp32. */
INLINE __m256 load8(const void *p, int dtype, int j) {
    if (dtype == SKD_DTYPE_F32) return _mm256_loadu_ps((const float *)p + j);
    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + j));
    if (dtype == SKD_DTYPE_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

INLINE float load1(const void *p, int dtype, int j) {
    if (dtype == SKD_DTYPE_F32) return ((const float *)p)[j];
    const uint16_t h = ((const uint16_t *)p)[j];
    if (dtype == SKD_DTYPE_F16) return _cvtsh_ss(h);
    union { uint32_t u; float f; } v = { (uint32_t)h << 16 };
    return v.f;
}

INLINE float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INLINE float hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Scores of GC query heads (q [GC, hd]) against every position: each key row is
 * loaded and widened once for the GC heads; sc[i·n + p]; mx[i] their maxima. */
INLINE void scores(const skd_kv_cache *c, int dt, int slot, int layer, size_t head, int hd, int n, const float *q,
                   int GC, float *sc, float *mx) {
    const int B = c->block_size, h8 = hd & ~7;
    const size_t row = (size_t)c->kd * c->esize;
    for (int i = 0; i < GC; i++) mx[i] = -INFINITY;
    for (int p0 = 0; p0 < n; p0 += B) {
        const unsigned char *kb = skd_kv_block(c, slot, layer, p0 / B) + head;
        const int m = n - p0 < B ? n - p0 : B;
        for (int t = 0; t < m; t++) {
            const void *k = kb + (size_t)t * row;
            __m256 acc[4] = { _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps() };
            for (int j = 0; j < h8; j += 8) {
                const __m256 kv = load8(k, dt, j);
                for (int i = 0; i < GC; i++) acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)i * hd + j), kv, acc[i]);
            }
            for (int i = 0; i < GC; i++) {
                float dotv = hsum(acc[i]);
                for (int j = h8; j < hd; j++) dotv += q[(size_t)i * hd + j] * load1(k, dt, j);
                sc[(size_t)i * n + p0 + t] = dotv;
                if (dotv > mx[i]) mx[i] = dotv;
            }
        }
    }
}

/* sc[0..n) = exp(sc − mx), 8 at a time; returns 1 / their sum. */
INLINE float softmax_weights(float *sc, int n, float mx) {
    const __m256 vmx = _mm256_set1_ps(mx);
    __m256 vsum = _mm256_setzero_ps();
    int p = 0;
    for (; p + 8 <= n; p += 8) {
        const __m256 w = exp8(_mm256_sub_ps(_mm256_loadu_ps(sc + p), vmx));
        _mm256_storeu_ps(sc + p, w);
        vsum = _mm256_add_ps(vsum, w);
    }
    float sum = hsum(vsum);
    for (; p < n; p++) {
        sc[p] = expf(sc[p] - mx);
        sum += sc[p];
    }
    return 1.0f / sum;
}

/* out [GC, hd] = Σ_p sc[i·n + p] · V[p] · inv[i]: 16 lanes of the head at a
 * time for the GC heads (2·GC accumulators), each value widened once. */
INLINE void weighted_values(const skd_kv_cache *c, int dt, int slot, int layer, size_t head, int hd, int n,
                            const float *sc, const float *inv, int GC, float *out) {
    const int B = c->block_size, h8 = hd & ~7;
    const size_t row = (size_t)c->kd * c->esize;
    for (int j0 = 0; j0 < h8; j0 += 16) {
        const int two = h8 - j0 >= 16;
        __m256 o[4][2];
        for (int i = 0; i < 4; i++) o[i][0] = o[i][1] = _mm256_setzero_ps();
        for (int p0 = 0; p0 < n; p0 += B) {
            const unsigned char *vb = skd_kv_block(c, slot, layer, p0 / B) + (size_t)B * row + head;
            const int m = n - p0 < B ? n - p0 : B;
            for (int t = 0; t < m; t++) {
                const void *v = vb + (size_t)t * row;
                const __m256 v0 = load8(v, dt, j0), v1 = two ? load8(v, dt, j0 + 8) : _mm256_setzero_ps();
                for (int i = 0; i < GC; i++) {
                    const __m256 w = _mm256_set1_ps(sc[(size_t)i * n + p0 + t]);
                    o[i][0] = _mm256_fmadd_ps(w, v0, o[i][0]);
                    o[i][1] = _mm256_fmadd_ps(w, v1, o[i][1]);
                }
            }
        }
        for (int i = 0; i < GC; i++) {
            const __m256 s = _mm256_set1_ps(inv[i]);
            _mm256_storeu_ps(out + (size_t)i * hd + j0, _mm256_mul_ps(o[i][0], s));
            if (two) _mm256_storeu_ps(out + (size_t)i * hd + j0 + 8, _mm256_mul_ps(o[i][1], s));
        }
    }
    for (int j = h8; j < hd; j++) { /* a head size that is not a multiple of 8 */
        for (int i = 0; i < GC; i++) {
            float acc = 0.f;
            for (int p0 = 0; p0 < n; p0 += B) {
                const unsigned char *vb = skd_kv_block(c, slot, layer, p0 / B) + (size_t)B * row + head;
                const int m = n - p0 < B ? n - p0 : B;
                for (int t = 0; t < m; t++) acc += sc[(size_t)i * n + p0 + t] * load1(vb + (size_t)t * row, dt, j);
            }
            out[(size_t)i * hd + j] = acc * inv[i];
        }
    }
}

/* GC (1..4, a constant after inlining) query heads of one KV head. */
INLINE void attend(const skd_kv_cache *c, int dt, int slot, int layer, int kvh, int hd, int n, const float *q, int GC,
                   float *sc, float *out) {
    const size_t head = (size_t)kvh * hd * c->esize;
    float mx[4], inv[4];
    scores(c, dt, slot, layer, head, hd, n, q, GC, sc, mx);
    for (int i = 0; i < GC; i++) inv[i] = softmax_weights(sc + (size_t)i * n, n, mx[i]);
    weighted_values(c, dt, slot, layer, head, hd, n, sc, inv, GC, out);
}

INLINE void attend_dt(const skd_kv_cache *c, int dt, int slot, int layer, int kvh, int g, int hd, int n, const float *q,
                      float *sc, float *out) {
    for (int h0 = 0; h0 < g; h0 += 4) { /* heads in chunks of 4: the accumulators stay in registers */
        const float *qh = q + (size_t)h0 * hd;
        float *oh = out + (size_t)h0 * hd;
        switch (g - h0 < 4 ? g - h0 : 4) {
        case 1: attend(c, dt, slot, layer, kvh, hd, n, qh, 1, sc, oh); break;
        case 2: attend(c, dt, slot, layer, kvh, hd, n, qh, 2, sc, oh); break;
        case 3: attend(c, dt, slot, layer, kvh, hd, n, qh, 3, sc, oh); break;
        default: attend(c, dt, slot, layer, kvh, hd, n, qh, 4, sc, oh); break;
        }
    }
}

/* One specialisation per storage type, so the inner loops carry no branch. */
TARGET void skd_kv_attend_avx2(const skd_kv_cache *c, int slot, int layer, int kvh, int g, int hd, int n, const float *q,
                               float *sc, float *out) {
    if (c->dtype == SKD_DTYPE_F16) attend_dt(c, SKD_DTYPE_F16, slot, layer, kvh, g, hd, n, q, sc, out);
    else if (c->dtype == SKD_DTYPE_BF16) attend_dt(c, SKD_DTYPE_BF16, slot, layer, kvh, g, hd, n, q, sc, out);
    else attend_dt(c, SKD_DTYPE_F32, slot, layer, kvh, g, hd, n, q, sc, out);
}
