/* quant_avx512.c — the AVX-512 row kernels of the quantized matmul (quant.h),
 * with an AVX512-VNNI variant: the AVX2 kernels' design (quant_avx2.c) on
 * 64-byte vectors.
 *
 * Opt-in (SKIPDECODE_CPU_QUANT_AVX512=1): they first ran on 2026-12-07, on a
 * 2-vCPU Intel Xeon with AVX512-VNNI, and passed cuda/dev/quant_check.c and
 * the quantized engine tests, but ran at a half to a quarter of the packed
 * AVX2 kernels' speed there for Q8_0, Q4_0 and Q4_K (quant.h has the
 * numbers), so skd_qkernel_for keeps an AVX-512 machine on the AVX2
 * (AVX-VNNI) kernels. Q5_0 has no kernel here (the portable one runs).
 *
 * Layouts: a zmm holds two 32-value blocks (Q8_0, Q4_0: the activations of
 * two blocks are 64 contiguous bytes), or for Q4_K two 64-value chunks' low
 * (then high) nibbles, with their activations gathered from two 32-byte runs,
 * or for Q6_K one half (128 values) as two vectors of 64 codes whose
 * activations are contiguous. Integer core per 64 bytes: vpmaddubsw +
 * vpmaddwd (→ 16 int32), or vpdpbusd with VNNI. AVX-512 has no vpsignb: the
 * signed × signed products use |w| (vpabsb) and x negated under the mask of
 * w's sign bits.
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "quant.h"
#include "quant_ref.h"

#define MAXR 1 /* activation rows per call of a micro-kernel: one (see rows_*) */

/* Q6_K: int16 lane j of vpmaddubsw's result covers codes 2j, 2j+1 of a 64-code vector, so it takes
 * scale 8h + 4·B + j / 8 (h: half of the block, B: the second vector of the half); row 2h + B. */
static const int16_t Q6_SCALE_IDX[4][32] = {
    { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3 },
    { 4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7 },
    { 8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9, 10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11 },
    { 12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13, 14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15 },
};

#define TARGET_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define TARGET_512VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

#define KERNELS(SUF, TGT, DOT_U8S8)                                                                             \
    static inline __attribute__((always_inline)) TGT float hsum_##SUF(__m512 v) {                             \
        const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),                                             \
                                       _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));     \
        const __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));                   \
        const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));                                                   \
        return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));                                               \
    }                                                                                                          \
                                                                                                               \
    /* Σ w·x over 64 signed bytes each → 16 int32 lanes. */                                                   \
    static inline __attribute__((always_inline)) TGT __m512i dot_s8s8_##SUF(__m512i w, __m512i x) {         \
        const __mmask64 neg = _mm512_movepi8_mask(w);                                                          \
        return DOT_U8S8(_mm512_abs_epi8(w), _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x));        \
    }                                                                                                          \
                                                                                                               \
    /* [a ×8 | b ×8] as 16 floats. */                                                                          \
    static inline __attribute__((always_inline)) TGT __m512 pair_##SUF(float a, float b) {                    \
        return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(_mm256_set1_ps(a))), \
                                                   _mm256_castps_pd(_mm256_set1_ps(b)), 1));                    \
    }                                                                                                          \
                                                                                                               \
    /* 32 signed weights of block `blk` (Q8_0: as stored; Q4_0: nibbles − 8). */                               \
    static inline __attribute__((always_inline)) TGT __m256i w32_##SUF(const char *blk, int which) {          \
        if (which == 0) return _mm256_loadu_si256((const __m256i *)(blk + 2));                                 \
        const __m128i q = _mm_loadu_si128((const __m128i *)(blk + 2));                                         \
        const __m256i both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);                                        \
        return _mm256_sub_epi8(_mm256_and_si256(both, _mm256_set1_epi8(0x0f)), _mm256_set1_epi8(8));          \
    }                                                                                                          \
                                                                                                               \
    static inline __attribute__((always_inline)) TGT float half_##SUF(const char *blk) {                     \
        uint16_t h;                                                                                            \
        memcpy(&h, blk, 2);                                                                                    \
        return _cvtsh_ss(h);                                                                                   \
    }                                                                                                          \
                                                                                                               \
    /* Q8_0 / Q4_0 against R block-32 activation rows: two blocks per step, pairs of steps alternating \
     * between two accumulators; an odd last block goes alone in the low half. */                             \
    static inline __attribute__((always_inline)) TGT void micro32_##SUF(                                      \
        const char *wr, long bb, long nb, int which, const skd_qact *a, int i0, const int R, int64_t k,       \
        float res[MAXR]) {                                                                                     \
        __m512 acc[MAXR][2];                                                                                   \
        for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();                             \
        const int8_t *xq[MAXR];                                                                                \
        const float *xd[MAXR];                                                                                 \
        for (int r = 0; r < R; r++) xq[r] = a->qs + (size_t)(i0 + r) * k, xd[r] = a->d + (size_t)(i0 + r) * (k / 32); \
        long b = 0;                                                                                            \
        for (; b + 2 <= nb; b += 2) { /* blocks b, b+1 in one zmm; pairs alternate between two accumulators */ \
            const char *b0 = wr + b * bb, *b1 = b0 + bb;                                                       \
            _mm_prefetch(b0 + 8 * bb, _MM_HINT_T0);                                                            \
            const __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(w32_##SUF(b0, which)), w32_##SUF(b1, which), 1); \
            const float d0 = half_##SUF(b0), d1 = half_##SUF(b1);                                              \
            for (int r = 0; r < R; r++) {                                                                      \
                const __m512i x = _mm512_loadu_si512((const void *)(xq[r] + b * 32));                          \
                const __m512 p = _mm512_cvtepi32_ps(dot_s8s8_##SUF(w, x));                                     \
                const __m512 sc = pair_##SUF(d0 * xd[r][b], d1 * xd[r][b + 1]);                                \
                if (b & 2) acc[r][1] = _mm512_fmadd_ps(p, sc, acc[r][1]);                                      \
                else acc[r][0] = _mm512_fmadd_ps(p, sc, acc[r][0]);                                            \
            }                                                                                                  \
        }                                                                                                      \
        if (b < nb) {                                                                                          \
            const char *b0 = wr + b * bb;                                                                      \
            const __m512i w = _mm512_zextsi256_si512(w32_##SUF(b0, which));                                    \
            const float d0 = half_##SUF(b0);                                                                   \
            for (int r = 0; r < R; r++) {                                                                      \
                const __m512i x = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(xq[r] + b * 32))); \
                const __m512 p = _mm512_cvtepi32_ps(dot_s8s8_##SUF(w, x));                                     \
                acc[r][0] = _mm512_fmadd_ps(p, pair_##SUF(d0 * xd[r][b], 0.f), acc[r][0]);                     \
            }                                                                                                  \
        }                                                                                                      \
        for (int r = 0; r < R; r++) res[r] = hsum_##SUF(_mm512_add_ps(acc[r][0], acc[r][1]));                  \
    }                                                                                                          \
                                                                                                               \
    /* Q4_K against R K-form activation rows: qs[0..63] (chunks 0, 1) and qs[64..127] (2, 3). */              \
    static inline __attribute__((always_inline)) TGT void micro_q4k_##SUF(                                   \
        const skd_block_q4_k *wb, long nb, const skd_qact *a, int i0, const int R, int64_t k, float res[MAXR]) { \
        __m512 acc[MAXR];                                                                                      \
        __m256 accm[MAXR];                                                                                     \
        for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps(), accm[r] = _mm256_setzero_ps();              \
        const __m512i m4 = _mm512_set1_epi8(0x0f);                                                             \
        for (long b = 0; b < nb; b++) {                                                                        \
            const skd_block_q4_k *blk = wb + b;                                                                \
            _mm_prefetch((const char *)(blk + 2), _MM_HINT_T0);                                                \
            _mm_prefetch((const char *)(blk + 2) + 64, _MM_HINT_T0);                                           \
            uint32_t u[3];                                                                                     \
            memcpy(u, blk->scales, 12);                                                                        \
            uint32_t scw[2] = { u[0] & 0x3f3f3f3fu, (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4) }; \
            uint32_t mw[2] = { u[1] & 0x3f3f3f3fu, ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4) }; \
            uint8_t sc[8], mn[8];                                                                              \
            memcpy(sc, scw, 8);                                                                                \
            memcpy(mn, mw, 8);                                                                                 \
            const __m128i m8 = _mm_loadl_epi64((const __m128i *)mn);                                           \
            const __m256i mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));                              \
            const float d = _cvtsh_ss(blk->d), dmin = _cvtsh_ss(blk->dmin);                                    \
            __m512i sumi[MAXR];                                                                                \
            for (int r = 0; r < R; r++) sumi[r] = _mm512_setzero_si512();                                      \
            for (int z = 0; z < 2; z++) { /* chunks 2z (low 256 bits) and 2z + 1 (high) */                     \
                const __m512i q = _mm512_loadu_si512((const void *)(blk->qs + 64 * z));                        \
                const __m512i lo = _mm512_and_si512(q, m4), hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);\
                const __m512i slo = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(sc[4 * z])),   \
                                                       _mm256_set1_epi16(sc[4 * z + 2]), 1);                  \
                const __m512i shi = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(sc[4 * z + 1])), \
                                                       _mm256_set1_epi16(sc[4 * z + 3]), 1);                  \
                for (int r = 0; r < R; r++) {                                                                  \
                    const int8_t *x = a->qs + (size_t)(i0 + r) * k + b * 256 + 128 * z;                        \
                    /* chunk 2z: values x[0..31] (low), x[32..63] (high); chunk 2z+1: x[64..95], x[96..127] */ \
                    const __m512i xl = _mm512_inserti64x4(                                                     \
                        _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)x)),                       \
                        _mm256_loadu_si256((const __m256i *)(x + 64)), 1);                                     \
                    const __m512i xh = _mm512_inserti64x4(                                                     \
                        _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(x + 32))),                \
                        _mm256_loadu_si256((const __m256i *)(x + 96)), 1);                                     \
                    const __m512i p0 = _mm512_madd_epi16(_mm512_maddubs_epi16(lo, xl), slo);                   \
                    const __m512i p1 = _mm512_madd_epi16(_mm512_maddubs_epi16(hi, xh), shi);                   \
                    sumi[r] = _mm512_add_epi32(sumi[r], _mm512_add_epi32(p0, p1));                             \
                }                                                                                              \
            }                                                                                                  \
            for (int r = 0; r < R; r++) {                                                                      \
                const float dx = a->d[(size_t)(i0 + r) * (k / 256) + b];                                       \
                const __m256i bs = _mm256_loadu_si256((const __m256i *)(a->bsums + (size_t)(i0 + r) * (k / 16) + b * 16)); \
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[r]), _mm512_set1_ps(d * dx), acc[r]);         \
                accm[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(bs, mins)), _mm256_set1_ps(dmin * dx), accm[r]); \
            }                                                                                                  \
        }                                                                                                      \
        for (int r = 0; r < R; r++)                                                                            \
            res[r] = hsum_##SUF(_mm512_sub_ps(acc[r], _mm512_zextps256_ps512(accm[r])));                       \
    }                                                                                                          \
                                                                                                               \
    /* Q6_K against R K-form activation rows: per half, codes A = values 0..63 and B = 64..127. */           \
    static inline __attribute__((always_inline)) TGT void micro_q6k_##SUF(                                   \
        const skd_block_q6_k *wb, long nb, const skd_qact *a, int i0, const int R, int64_t k, float res[MAXR]) { \
        __m512 acc[MAXR];                                                                                      \
        for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();                                             \
        const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);                              \
        /* high-bit shifts: A takes qh bits 0-1 (low half of the vector) and 2-3 (high half) to bits 4-5, \
         * B takes bits 4-5 and 6-7 */                                                                         \
        const __m512i shA = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);                \
        const __m512i shB = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);              \
        __m512i idx[4];                                                                                        \
        for (int s = 0; s < 4; s++) idx[s] = _mm512_loadu_si512((const void *)Q6_SCALE_IDX[s]);               \
        for (long b = 0; b < nb; b++) {                                                                        \
            const skd_block_q6_k *blk = wb + b;                                                                \
            _mm_prefetch((const char *)(blk + 2), _MM_HINT_T0);                                                \
            _mm_prefetch((const char *)(blk + 2) + 64, _MM_HINT_T0);                                           \
            _mm_prefetch((const char *)(blk + 2) + 128, _MM_HINT_T0);                                          \
            const __m256i sc16y = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)blk->scales));        \
            const __m512i sc16 = _mm512_zextsi256_si512(sc16y);                                                \
            __m512i sumi[MAXR];                                                                                \
            for (int r = 0; r < R; r++) {                                                                      \
                const __m256i bs = _mm256_loadu_si256((const __m256i *)(a->bsums + (size_t)(i0 + r) * (k / 16) + b * 16)); \
                sumi[r] = _mm512_zextsi256_si512(                                                              \
                    _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16y), 5))); \
            }                                                                                                  \
            for (int h = 0; h < 2; h++) {                                                                      \
                const __m512i L = _mm512_loadu_si512((const void *)(blk->ql + 64 * h));                        \
                const __m512i H = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk->qh + 32 * h))); \
                const __m512i qa = _mm512_or_si512(_mm512_and_si512(L, m4), _mm512_and_si512(_mm512_sllv_epi16(H, shA), m30)); \
                const __m512i qb = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(L, 4), m4),              \
                                                   _mm512_and_si512(_mm512_srlv_epi16(H, shB), m30));          \
                const __m512i sa = _mm512_permutexvar_epi16(idx[2 * h], sc16);                                 \
                const __m512i sb = _mm512_permutexvar_epi16(idx[2 * h + 1], sc16);                             \
                for (int r = 0; r < R; r++) {                                                                  \
                    const int8_t *x = a->qs + (size_t)(i0 + r) * k + b * 256 + 128 * h;                        \
                    const __m512i pa = _mm512_madd_epi16(_mm512_maddubs_epi16(qa, _mm512_loadu_si512((const void *)x)), sa); \
                    const __m512i pb = _mm512_madd_epi16(_mm512_maddubs_epi16(qb, _mm512_loadu_si512((const void *)(x + 64))), sb); \
                    sumi[r] = _mm512_add_epi32(sumi[r], _mm512_add_epi32(pa, pb));                             \
                }                                                                                              \
            }                                                                                                  \
            const float d = _cvtsh_ss(blk->d);                                                                 \
            for (int r = 0; r < R; r++) {                                                                      \
                const float dx = a->d[(size_t)(i0 + r) * (k / 256) + b];                                       \
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[r]), _mm512_set1_ps(d * dx), acc[r]);         \
            }                                                                                                  \
        }                                                                                                      \
        for (int r = 0; r < R; r++) res[r] = hsum_##SUF(acc[r]);                                               \
    }                                                                                                          \
                                                                                                               \
    /* One weight row · one activation row per output, so each output is computed alone (batch-     \
     * invariant) and the kernel's registers serve one row. */                                                \
    TGT static void rows_##SUF(const skd_mat *w, long r0, long r1, const skd_qact *a, int m, float *out, long n, \
                               const float *bias, int relu) {                                                 \
        const int64_t k = w->cols, rb = skd_row_bytes(w->dtype, k);                                           \
        const int dt = w->dtype;                                                                               \
        float res[MAXR];                                                                                       \
        for (long row = r0; row < r1; row++) {                                                                 \
            const char *wr = (const char *)w->data + row * rb;                                                 \
            for (int i = 0; i < m; i++) {                                                                      \
                if (dt == SKD_DTYPE_Q8_0) micro32_##SUF(wr, 34, k / 32, 0, a, i, 1, k, res);                   \
                else if (dt == SKD_DTYPE_Q4_0) micro32_##SUF(wr, 18, k / 32, 1, a, i, 1, k, res);              \
                else if (dt == SKD_DTYPE_Q4_K) micro_q4k_##SUF((const skd_block_q4_k *)wr, k / 256, a, i, 1, k, res); \
                else micro_q6k_##SUF((const skd_block_q6_k *)wr, k / 256, a, i, 1, k, res);                    \
                skd_qput(out + (size_t)i * n + row, res[0], bias, row, relu);                                  \
            }                                                                                                  \
        }                                                                                                      \
    }

#define DOT_512(u, s) _mm512_madd_epi16(_mm512_maddubs_epi16((u), (s)), _mm512_set1_epi16(1))
#define DOT_512VNNI(u, s) _mm512_dpbusd_epi32(_mm512_setzero_si512(), (u), (s))

KERNELS(avx512, TARGET_512, DOT_512)
KERNELS(avx512vnni, TARGET_512VNNI, DOT_512VNNI)

skd_qrows_fn *skd_qrows_avx512(int dtype, int vnni) {
    if (dtype == SKD_DTYPE_Q5_0) return skd_qrows_portable(dtype); /* no 512-bit Q5_0 kernel (the AVX2 one reads the packed layout) */
    return vnni ? rows_avx512vnni : rows_avx512;
}
