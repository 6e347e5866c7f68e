/* quant_avx2.c — the AVX2 row kernels of the quantized matmul (quant.h):
 * out[i, r] = W row r · activation row i, W in Q8_0, Q4_0, Q4_K or Q6_K
 * (ggml's blocks, row-major), activations quantized by quant.c.
 *
 * One weight row meets up to 4 activation rows at a time: the row's blocks
 * are loaded and unpacked once and used for each; every activation row's sum
 * is the same sequence of operations whatever the number of rows beside it,
 * so results are batch-invariant.
 *
 * Integer core: 32 unsigned × 32 signed bytes → 8 int32 lanes
 *   AVX2       vpmaddubsw (pairs → int16) then vpmaddwd by ones (→ int32)
 *   AVX-VNNI   vpdpbusd (one instruction, no int16 step)
 * The products never saturate the int16 step: |w| <= 128 (Q8_0) or 63
 * (Q6_K, unsigned) and |x| <= 127, so a pair is at most 2·128·127 = 32512.
 *   Q8_0 × Q8: signed × signed via the sign trick (|w| × sign(w)·x)
 *   Q4_0 × Q8: nibbles − 8, then the sign trick
 *   Q4_K × Q8_K: nibbles are unsigned: vpmaddubsw directly, then vpmaddwd by
 *              the sub-block's 6-bit scale; the mins through the activation
 *              block sums (Σ m_j · xsum_j)
 *   Q6_K × Q8_K: 6-bit codes unsigned, vpmaddwd by the int8 scales; the −32
 *              offset as 32 · Σ sc_j · xsum_j
 * Floats: Q8_0/Q4_0 blocks alternate between two fp32 accumulators (the FMA
 * latency would otherwise bound a 4-cycle Q4_0 block); the K-quants keep an
 * int32 sum per 256-value block and do one FMA per block.
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "quant.h"
#include "quant_ref.h"

#define MAXR 4 /* activation rows per weight-row pass */

/* The same kernels twice: plain AVX2, and with AVX-VNNI (DOT_U8S8 differs). */
#define TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define TARGET_VNNI __attribute__((target("avx2,fma,f16c,avxvnni")))

/* Sum of the 8 lanes, in a fixed order. */
#define HSUM_DEF(TGT, NAME)                                                              \
    static inline __attribute__((always_inline)) TGT float NAME(__m256 v) {              \
        const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); \
        const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));                             \
        return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));                         \
    }

static inline void put(float *o, float v, const float *bias, long r, int relu) {
    if (bias) v += bias[r];
    *o = relu && v < 0.f ? 0.f : v;
}

/* ---- the kernels, parameterised by target and integer core ------------------- */

#define KERNELS(SUF, TGT, DOT_U8S8)                                                                             \
    HSUM_DEF(TGT, hsum_##SUF)                                                                                  \
                                                                                                               \
    /* Σ w·x over 32 signed bytes each (sign trick) → 8 int32 lanes. */                                      \
    static inline __attribute__((always_inline)) TGT __m256i dot_s8s8_##SUF(__m256i w, __m256i x) {         \
        return DOT_U8S8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));                                       \
    }                                                                                                          \
                                                                                                               \
    /* Q8_0 / Q4_0 against R block-32 activation rows. W32 loads block b as 32 signed bytes. */                \
    static inline __attribute__((always_inline)) TGT void micro32_##SUF(                                      \
        const char *wr, long bb, long nb, int which, const skd_qact *a, int i0, const int R, int64_t k,       \
        float res[MAXR]) {                                                                                     \
        __m256 acc[MAXR][2];                                                                                   \
        for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();                             \
        const int8_t *xq[MAXR];                                                                                \
        const float *xd[MAXR];                                                                                 \
        for (int r = 0; r < R; r++) xq[r] = a->qs + (size_t)(i0 + r) * k, xd[r] = a->d + (size_t)(i0 + r) * (k / 32); \
        for (long b = 0; b < nb; b++) {                                                                        \
            const char *blk = wr + b * bb;                                                                     \
            _mm_prefetch(blk + 8 * bb, _MM_HINT_T0);                                                           \
            __m256i w;                                                                                         \
            if (which == 0) { /* Q8_0 */                                                                       \
                w = _mm256_loadu_si256((const __m256i *)(blk + 2));                                            \
            } else { /* Q4_0: low nibbles are elements 0..15, high 16..31 */                                  \
                const __m128i q = _mm_loadu_si128((const __m128i *)(blk + 2));                                 \
                const __m256i both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);                                \
                w = _mm256_sub_epi8(_mm256_and_si256(both, _mm256_set1_epi8(0x0f)), _mm256_set1_epi8(8));      \
            }                                                                                                  \
            uint16_t dh;                                                                                       \
            memcpy(&dh, blk, 2);                                                                               \
            const float dw = _cvtsh_ss(dh);                                                                    \
            for (int r = 0; r < R; r++) {                                                                      \
                const __m256i x = _mm256_loadu_si256((const __m256i *)(xq[r] + b * 32));                       \
                const __m256 p = _mm256_cvtepi32_ps(dot_s8s8_##SUF(w, x));                                     \
                acc[r][b & 1] = _mm256_fmadd_ps(p, _mm256_set1_ps(dw * xd[r][b]), acc[r][b & 1]);              \
            }                                                                                                  \
        }                                                                                                      \
        for (int r = 0; r < R; r++) res[r] = hsum_##SUF(_mm256_add_ps(acc[r][0], acc[r][1]));                  \
    }                                                                                                          \
                                                                                                               \
    /* Q4_K against R K-form activation rows. */                                                              \
    static inline __attribute__((always_inline)) TGT void micro_q4k_##SUF(                                   \
        const skd_block_q4_k *wb, long nb, const skd_qact *a, int i0, const int R, int64_t k, float res[MAXR]) { \
        __m256 acc[MAXR], accm[MAXR];                                                                          \
        for (int r = 0; r < R; r++) acc[r] = accm[r] = _mm256_setzero_ps();                                   \
        const __m256i m4 = _mm256_set1_epi8(0x0f);                                                             \
        for (long b = 0; b < nb; b++) {                                                                        \
            const skd_block_q4_k *blk = wb + b;                                                                \
            _mm_prefetch((const char *)(blk + 2), _MM_HINT_T0);                                                \
            uint32_t u[3];                                                                                     \
            memcpy(u, blk->scales, 12);                                                                        \
            /* the 6-bit scales and mins (skd_q4k_scale_min), four at a time */                                \
            uint32_t scw[2] = { u[0] & 0x3f3f3f3fu, (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4) }; \
            uint32_t mw[2] = { u[1] & 0x3f3f3f3fu, ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4) }; \
            uint8_t sc[8], mn[8];                                                                              \
            memcpy(sc, scw, 8);                                                                                \
            memcpy(mn, mw, 8);                                                                                 \
            /* [m0, m0, m1, m1, ..., m7, m7] as int16: pairs with the 16 sums of 16 activations */             \
            const __m128i m8 = _mm_loadl_epi64((const __m128i *)mn);                                           \
            const __m256i mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));                              \
            const float d = _cvtsh_ss(blk->d), dmin = _cvtsh_ss(blk->dmin);                                    \
            __m256i sumi[MAXR];                                                                                \
            for (int r = 0; r < R; r++) sumi[r] = _mm256_setzero_si256();                                      \
            for (int c = 0; c < 4; c++) {                                                                      \
                const __m256i q = _mm256_loadu_si256((const __m256i *)(blk->qs + 32 * c));                     \
                const __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);\
                const __m256i s0 = _mm256_set1_epi16(sc[2 * c]), s1 = _mm256_set1_epi16(sc[2 * c + 1]);        \
                for (int r = 0; r < R; r++) {                                                                  \
                    const int8_t *x = a->qs + (size_t)(i0 + r) * k + b * 256 + 64 * c;                         \
                    const __m256i p0 = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)x));       \
                    const __m256i p1 = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(x + 32)));\
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_add_epi32(_mm256_madd_epi16(p0, s0), _mm256_madd_epi16(p1, s1))); \
                }                                                                                              \
            }                                                                                                  \
            for (int r = 0; r < R; r++) {                                                                      \
                const float dx = a->d[(size_t)(i0 + r) * (k / 256) + b];                                       \
                const __m256i bs = _mm256_loadu_si256((const __m256i *)(a->bsums + (size_t)(i0 + r) * (k / 16) + b * 16)); \
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[r]), _mm256_set1_ps(d * dx), acc[r]);         \
                accm[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(bs, mins)), _mm256_set1_ps(dmin * dx), accm[r]); \
            }                                                                                                  \
        }                                                                                                      \
        for (int r = 0; r < R; r++) res[r] = hsum_##SUF(_mm256_sub_ps(acc[r], accm[r]));                       \
    }                                                                                                          \
                                                                                                               \
    /* Q6_K against R K-form activation rows. */                                                              \
    static inline __attribute__((always_inline)) TGT void micro_q6k_##SUF(                                   \
        const skd_block_q6_k *wb, long nb, const skd_qact *a, int i0, const int R, int64_t k, float res[MAXR]) { \
        __m256 acc[MAXR];                                                                                      \
        for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();                                             \
        const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);                              \
        /* broadcast int16 element 2w of a vector to the low lane, 2w+1 to the high lane */                    \
        const __m256i pick = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,                  \
                                              2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);                 \
        for (long b = 0; b < nb; b++) {                                                                        \
            const skd_block_q6_k *blk = wb + b;                                                                \
            _mm_prefetch((const char *)(blk + 2), _MM_HINT_T0);                                                \
            _mm_prefetch((const char *)(blk + 2) + 64, _MM_HINT_T0);                                           \
            _mm_prefetch((const char *)(blk + 2) + 128, _MM_HINT_T0);                                          \
            const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)blk->scales));         \
            __m256i sumi[MAXR];                                                                                \
            for (int r = 0; r < R; r++) {                                                                      \
                /* −32 · Σ_j sc_j · xsum_j, the codes' offset */                                               \
                const __m256i bs = _mm256_loadu_si256((const __m256i *)(a->bsums + (size_t)(i0 + r) * (k / 16) + b * 16)); \
                sumi[r] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5)); \
            }                                                                                                  \
            for (int h = 0; h < 2; h++) {                                                                      \
                const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(blk->ql + 64 * h));                   \
                const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(blk->ql + 64 * h + 32));              \
                const __m256i qh = _mm256_loadu_si256((const __m256i *)(blk->qh + 32 * h));                    \
                __m256i q[4];                                                                                  \
                q[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30)); \
                q[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30)); \
                q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m30)); \
                q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),                       \
                                       _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));                       \
                for (int t = 0; t < 4; t++) {                                                                  \
                    /* values 128h + 32t.. use scales 8h + 2t (first 16) and 8h + 2t + 1 */                    \
                    const __m256i sv = _mm256_shuffle_epi8(                                                    \
                        _mm256_permutevar8x32_epi32(sc16, _mm256_set1_epi32(4 * h + t)), pick);               \
                    for (int r = 0; r < R; r++) {                                                              \
                        const int8_t *x = a->qs + (size_t)(i0 + r) * k + b * 256 + 128 * h + 32 * t;           \
                        const __m256i p = _mm256_maddubs_epi16(q[t], _mm256_loadu_si256((const __m256i *)x));  \
                        sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(p, sv));                         \
                    }                                                                                          \
                }                                                                                              \
            }                                                                                                  \
            const float d = _cvtsh_ss(blk->d);                                                                 \
            for (int r = 0; r < R; r++) {                                                                      \
                const float dx = a->d[(size_t)(i0 + r) * (k / 256) + b];                                       \
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[r]), _mm256_set1_ps(d * dx), acc[r]);         \
            }                                                                                                  \
        }                                                                                                      \
        for (int r = 0; r < R; r++) res[r] = hsum_##SUF(acc[r]);                                               \
    }                                                                                                          \
                                                                                                               \
    /* Rows [r0, r1) of W against activation rows [0, m), R <= 4 at a time. */                                \
    TGT static void rows_##SUF(const skd_mat *w, long r0, long r1, const skd_qact *a, int m, float *out, long n, \
                               const float *bias, int relu) {                                                 \
        const int64_t k = w->cols, rb = skd_row_bytes(w->dtype, k);                                           \
        const int dt = w->dtype;                                                                               \
        float res[MAXR];                                                                                       \
        for (long row = r0; row < r1; row++) {                                                                 \
            const char *wr = (const char *)w->data + row * rb;                                                 \
            for (int i = 0; i < m; i += MAXR) {                                                                \
                const int R = m - i < MAXR ? m - i : MAXR;                                                     \
                for (int rr = 1; rr <= MAXR; rr++) { /* R as a constant, so the loops over rows unroll */     \
                    if (rr != R) continue;                                                                     \
                    if (dt == SKD_DTYPE_Q8_0) micro32_##SUF(wr, 34, k / 32, 0, a, i, rr, k, res);              \
                    else if (dt == SKD_DTYPE_Q4_0) micro32_##SUF(wr, 18, k / 32, 1, a, i, rr, k, res);         \
                    else if (dt == SKD_DTYPE_Q4_K) micro_q4k_##SUF((const skd_block_q4_k *)wr, k / 256, a, i, rr, k, res); \
                    else micro_q6k_##SUF((const skd_block_q6_k *)wr, k / 256, a, i, rr, k, res);               \
                }                                                                                              \
                for (int r = 0; r < R; r++) put(out + (size_t)(i + r) * n + row, res[r], bias, row, relu);     \
            }                                                                                                  \
        }                                                                                                      \
    }

#define DOT_AVX2(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1))
#define DOT_VNNI(u, s) _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), (u), (s))

KERNELS(avx2, TARGET_AVX2, DOT_AVX2)
KERNELS(vnni, TARGET_VNNI, DOT_VNNI)

skd_qrows_fn *skd_qrows_avx2(int dtype, int vnni) {
    (void)dtype;
    return vnni ? rows_vnni : rows_avx2;
}
