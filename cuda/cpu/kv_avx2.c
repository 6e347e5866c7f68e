/* kv_avx2.c — attention over the paged KV cache with AVX2/FMA/F16C (kv.h).
 * The portable skd_kv_attend in kv.c is the reference; the engine takes this
 * path when the CPU runs the AVX2 or AVX-512 matmul kernels (which imply
 * F16C).
 *
 * Per (row, KV head), for the query heads that share it (grouped-query
 * attention reads each key and value once for the group): scores q·k for
 * every position (8 lanes of the head at a time; f16 keys widened by
 * vcvtph2ps, bf16 by a shift; 8 / group-size positions at a time, whose
 * dot products one hadd tree reduces together), a max-subtracted softmax
 * whose exponentials are 8 at a time (exp8, exp_avx2.h), then the weighted
 * sum of values accumulated in registers, 16 lanes at a time.
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

/* The sum of v's 8 lanes as ((v0 + v1) + (v2 + v3)) + ((v4 + v5) + (v6 + v7)): the order hsum8 adds
 * each of its vectors in, so a score is the same number whichever path computes it (a position's path
 * depends on where it sits in its block, and decoding must equal the prefill bit for bit). */
INLINE float hsum_tree(__m256 v) {
    const __m256 h = _mm256_hadd_ps(v, v), h2 = _mm256_hadd_ps(h, h);
    return _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(h2), _mm256_extractf128_ps(h2, 1)));
}

/* Lane a of the result = the sum of v[a]'s 8 lanes (an hadd tree; hsum_tree's order). */
INLINE __m256 hsum8(const __m256 v[8]) {
    const __m256 s0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    const __m256 s1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    /* s0: lanes 0-3 v[0..3]'s low halves, 4-7 their high halves; s1 the same for v[4..7] */
    return _mm256_add_ps(_mm256_permute2f128_ps(s0, s1, 0x20), _mm256_permute2f128_ps(s0, s1, 0x31));
}

/* Fetches the start of a head's run of a block (its keys or its values: B·hd elements), at most 4 KiB, into
 * the cache ahead of use: the next block sits wherever the table says, which no hardware prefetcher can guess;
 * within a longer run (a large block size) they follow the stream themselves. */
INLINE void prefetch_run(const unsigned char *p, size_t bytes) {
    for (size_t o = 0; o < bytes && o < 4096; o += 64) _mm_prefetch((const char *)p + o, _MM_HINT_T0);
}

/* Scores of GC query heads (q [GC, hd]) against every position: each key row is
 * loaded and widened once for the GC heads; sc[i·n + p]; mx[i] their maxima.
 * With hd a multiple of 8, P = 8, 4, 2, 2 positions at a time (GC 1-4): their
 * P·GC dot products reduced together (hsum8) instead of one horizontal sum
 * each, and stored P at a time; a block's last positions, and any other head
 * size, one at a time. */
INLINE void scores(const skd_kv_cache *c, int dt, int slot, int layer, int kvh, int hd, int n, const float *q,
                   int GC, float *sc, float *mx) {
    const int B = c->block_size, h8 = hd & ~7, P = GC == 1 ? 8 : GC == 2 ? 4 : 2;
    const size_t row = (size_t)hd * c->esize; /* a head's positions are contiguous (kv.h) */
    __m256 vmx = _mm256_set1_ps(-INFINITY); /* the maxima of the P-at-a-time scores, lanes as hsum8's */
    for (int i = 0; i < GC; i++) mx[i] = -INFINITY;
    for (int p0 = 0; p0 < n; p0 += B) {
        const unsigned char *kb = skd_kv_keys(c, slot, layer, p0 / B, kvh);
        const int m = n - p0 < B ? n - p0 : B;
        if (p0 + B < n) prefetch_run(skd_kv_keys(c, slot, layer, p0 / B + 1, kvh), (size_t)B * row);
        else prefetch_run(skd_kv_values(c, slot, layer, 0, kvh), (size_t)B * row); /* weighted_values' first */
        int t = 0;
        for (; h8 == hd && t + P <= m; t += P) {
            __m256 acc[8]; /* acc[i·P + u]: head i, position t + u */
            for (int a = 0; a < 8; a++) acc[a] = _mm256_setzero_ps();
            for (int j = 0; j < hd; j += 8) {
                for (int u = 0; u < P; u++) {
                    const __m256 kv = load8(kb + (size_t)(t + u) * row, dt, j);
                    for (int i = 0; i < GC; i++)
                        acc[i * P + u] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)i * hd + j), kv, acc[i * P + u]);
                }
            }
            const __m256 d = hsum8(acc); /* lanes i·P .. i·P + P − 1: head i's P scores */
            vmx = _mm256_max_ps(vmx, d);
            float *o = sc + p0 + t;
            if (P == 8) _mm256_storeu_ps(o, d);
            else if (P == 4) _mm_storeu_ps(o, _mm256_castps256_ps128(d)), _mm_storeu_ps(o + n, _mm256_extractf128_ps(d, 1));
            else
                for (int i = 0; i < GC; i++) {
                    const __m128 h = (i & 2) ? _mm256_extractf128_ps(d, 1) : _mm256_castps256_ps128(d);
                    if (i & 1) _mm_storeh_pi((__m64 *)(o + (size_t)i * n), h);
                    else _mm_storel_pi((__m64 *)(o + (size_t)i * n), h);
                }
        }
        for (; t < m; t++) {
            const void *k = kb + (size_t)t * row;
            __m256 acc[4] = { _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps() };
            for (int j = 0; j < h8; j += 8) {
                const __m256 kv = load8(k, dt, j);
                for (int i = 0; i < GC; i++) acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)i * hd + j), kv, acc[i]);
            }
            for (int i = 0; i < GC; i++) {
                float dotv = hsum_tree(acc[i]);
                for (int j = h8; j < hd; j++) dotv += q[(size_t)i * hd + j] * load1(k, dt, j);
                sc[(size_t)i * n + p0 + t] = dotv;
                if (dotv > mx[i]) mx[i] = dotv;
            }
        }
    }
    float v[8];
    _mm256_storeu_ps(v, vmx);
    for (int i = 0; i < GC; i++)
        for (int u = 0; u < P; u++) mx[i] = v[i * P + u] > mx[i] ? v[i * P + u] : mx[i];
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
INLINE void weighted_values(const skd_kv_cache *c, int dt, int slot, int layer, int kvh, int hd, int n,
                            const float *sc, const float *inv, int GC, float *out) {
    const int B = c->block_size, h8 = hd & ~7;
    const size_t row = (size_t)hd * c->esize; /* a head's positions are contiguous (kv.h) */
    for (int j0 = 0; j0 < h8; j0 += 16) {
        const int two = h8 - j0 >= 16;
        __m256 o[4][2];
        for (int i = 0; i < 4; i++) o[i][0] = o[i][1] = _mm256_setzero_ps();
        for (int p0 = 0; p0 < n; p0 += B) {
            const unsigned char *vb = skd_kv_values(c, slot, layer, p0 / B, kvh);
            const int m = n - p0 < B ? n - p0 : B;
            if (j0 == 0 && p0 + B < n) prefetch_run(skd_kv_values(c, slot, layer, p0 / B + 1, kvh), (size_t)B * row);
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
                const unsigned char *vb = skd_kv_values(c, slot, layer, p0 / B, kvh);
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
    float mx[4], inv[4];
    scores(c, dt, slot, layer, kvh, hd, n, q, GC, sc, mx);
    for (int i = 0; i < GC; i++) inv[i] = softmax_weights(sc + (size_t)i * n, n, mx[i]);
    weighted_values(c, dt, slot, layer, kvh, hd, n, sc, inv, GC, out);
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
