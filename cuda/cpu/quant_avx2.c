/* quant_avx2.c — the AVX2 kernels of the quantized matmul (quant.h): the
 * activation quantizer, and per weight type one dot product of a weight row
 * with one quantized activation row; rows_* runs them over rows × activations.
 * Compiled twice: plain AVX2 (+FMA, F16C) and with AVX-VNNI.
 *
 * Every output is its type's dot product of its own weight row and activation
 * row, in the same operations whatever the batch, the thread split or the
 * rows beside it, so results do not depend on them. Q8_0, Q4_0 and Q5_0 run
 * four weight rows in one loop (dot32's R): each keeps its own accumulator
 * and sums, and a decode's short rows (4 groups in llama-400m's q) no longer
 * leave each row's horizontal sum exposed: Q4_0 19.4 → 29.4, Q8_0 34.5 →
 * 46.3 GB/s a core in L2 on an Intel Xeon VM. A weight row (a few KiB)
 * stays in L1 while the activation rows of a tile pass over it (quant.c
 * tiles them for L2).
 *
 * Integer core: 32 unsigned × 32 signed bytes → 8 int32 lanes,
 *   AVX2: vpmaddubsw (pairs → int16), vpmaddwd by ones (→ int32); AVX-VNNI: vpdpbusd.
 * No int16 sum saturates: |w| <= 128 (Q8_0, via |w| and x·sign(w)) or <= 63
 * (unsigned Q4 / Q6 codes), |x| <= 127, so a pair is at most 2·128·127 = 32512
 * (the int16 sums of eight 4-bit pairs are bounded above).
 *
 * Q8_0, Q4_0 (packed layout, quant.h): a group of 8 blocks is 8 fp16 scales,
 *   converted in one vcvtph2ps, and the blocks' codes transposed by 4-byte
 *   words, as the activations are (SKD_ACT_32_WORDS): int32 lane i of every
 *   integer product belongs to block i, so the 8 or 16 products of a group
 *   add up to the 8 blocks' exact sums with no horizontal reduction, and one
 *   FMA adds Σ_b isum_b · d_w,b · d_x,b. Q4_0 codes are the unsigned nibbles
 *   (a 32-byte load holds codes 4v.. in its low nibbles and 16+4v.. in its
 *   high ones): isum = Σ q·x − 8 Σ x (Σ x from the activations' block sums),
 *   which spares the sign trick. The eight vpmaddubsw products add in int16
 *   (a pair is at most 2·15·127 = 3810, eight 30480) as a tree, then one
 *   vpmaddwd. A row's short last group: its first 4 blocks as a half group
 *   (two 16-byte vectors to a register) when it has 4 or more, the others
 *   block by block (into one vector of lane sums).
 *   Q4_0, one Zen 3 core, weights in L2: 22.1 GB/s.
 * Q5_0 (packed layout, quant.c repack_q5_0): Q4_0's groups plus 32 bytes of
 *   fifth bits per group, arranged so code vector t's bits are one shift and
 *   one mask away; unsigned codes 0..31 (pairs ≤ 2·31·127 = 7874, so two
 *   int16 trees of four), the −16 offset from the block sums.
 *   One core, weights in L2: 27.4 GB/s (avx2), 30.2 (VNNI), 10.0 in ggml's layout.
 * Q4_K (packed layout, quant.h): per 256 values, 4 loads of 64 codes whose
 *   word i is sub-block i's, against SKD_ACT_K_WORDS activations: the eight
 *   products add in int16 as Q4_0's, one vpmaddwd by the 6-bit scales gives
 *   sc_i times sub-block i's exact sum in lane i (VNNI: vpmulld after
 *   vpdpbusd), one FMA by d · d_x; the mins through the activations' sums of
 *   16 (Σ m_j · xsum_j), one FMA. The scales and mins are decoded with two
 *   vpshufb and masks, d and dmin converted together.
 *   One Zen 3 core, weights in L2 (build/quant_check compute 1, this VM's two
 *   modes: alone on its core, or sharing it): 16.4-17.0 and 12.8-14.2 GB/s,
 *   against 16.6-17.2 and 11.4-12.0 with the scales decoded in scalar code
 *   and a vpmulld (15.0 in ggml's layout, earlier). Whole llama-400m steps'
 *   matmuls (a Q4_K-only decode_bw, 6 alternating runs each): median 77% of
 *   membw against 73%, within this VM's ±15 points.
 * Q6_K (packed layout, quant.c repack_q6_k): its codes in Q4_K's order, so
 *   against SKD_ACT_K_WORDS activations code vectors 0-3 sum each 32-value
 *   sub-block's first 16 values in its lane and 4-7 its last 16: each lane
 *   times its int8 scale once (VNNI: two vpdpbusd chains, two vpmulld;
 *   AVX2: vpmaddubsw pairs added in int16, vpmaddwd by the scales), not a
 *   vpshufb and a vpmaddwd per 32 values as in ggml's layout: 24.0 → 28.2
 *   (avx2), 29.5 (VNNI) GB/s a core in L2 on the Intel Xeon VM. The −32
 *   offset as 32 · Σ sc_j · xsum_j; one FMA per 256 values.
 * The float order differs from the reference (lanes, then a fixed horizontal
 * sum); the integer sums are exact. cuda/dev/quant_check.c compares.
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "quant.h"
#include "quant_ref.h"

#define TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define TARGET_VNNI __attribute__((target("avx2,fma,f16c,avxvnni")))
/* Software prefetch ~2 KiB ahead of the weight stream (Q8_0 8 groups, Q4_0 16 groups, Q5_0 12 groups, Q4_K
 * 16 blocks, Q6_K 10 blocks; the block-32 types split it among the 4 rows they read at once, dot32):
 * against 0.4-1 KiB, the whole 24-layer llama-400m matmul sequence at m = 1 went from 69 to 79% of the
 * read bandwidth for Q4_0, 67 to 74% for Q4_K and 76 to 87% for Q6_K (Q8_0 level at 87-89%); 4-8 KiB was no better (medians of 15 rounds, cuda/dev/decode_bw.c). Each block or group prefetches
 * lines 64 bytes apart up to at most 16 bytes short of the next one's first, so no line of the stream is skipped
 * (Q8_0's 272-byte groups once took 4 lines and Q4_0's 144-byte ones 2, skipping a line every 4 groups: Q8_0
 * 83 → 87% of membw, medians of 6 interleaved decode_bw runs; Q4_0 no clear change). */
/* And a second prefetch ~6 KiB ahead into L2 (_MM_HINT_T2), a line for each line the loop reads: whole llama-400m
 * decodes, this library against the one without it alternating (64 tokens, middle four of six runs, three
 * rounds, Intel Xeon VM, 2026-12-08): Q4_0 116-122 → 125-139 tok/s, Q4_K_M 108-112 → 117-127 (Q4_K alone
 * 116-122), Q8_0 +1%; the 16-bit kernels gained nothing from it. In the kernel microbenchmarks (one matrix
 * shape repeated) it had looked like noise: what it helps is where a step's matmuls change shape and stream. */
#define FAR_BYTES 6144
#define PF_Q8_0 8
#define PF_Q4_0 16
#define PF_Q4_K 16
#define PF_Q6_K 10
#define PF_Q5_0 12
#define AI static inline __attribute__((always_inline))

/* The two prefetches of a block or group: n lines from near into L1, the same n from far (FAR_BYTES ahead) into L2. */
AI void prefetch_lines(const char *near, const char *far, int n) {
    for (int l = 0; l < n; l++) _mm_prefetch(near + 64 * l, _MM_HINT_T0);
    for (int l = 0; l < n; l++) _mm_prefetch(far + 64 * l, _MM_HINT_T2);
}

/* Q4_K's scales bytes (at 4 + j in a block) for its vector decode: Q4K_LO gathers sc0-3's and m0-3's low-6-bit
 * bytes (scales 0-3, 4-7) into lanes 0-3 and 8-11 and the low-nibble bytes (scales 8-11) into 4-7 and 12-15;
 * Q4K_HI puts the bytes whose top 2 bits are sc4-7's and m4-7's high bits (scales 0-3, 4-7) in lanes 4-7 and
 * 12-15. Lane j of the result: lanes 0-3, 8-11 `lo6 & 0x3f`; 4-7 `lo6 & 0x0f`; 12-15 `(lo6 >> 4) & 0x0f`;
 * 4-7 and 12-15 also `(hi2 >> 6) << 4` (as (hi2 >> 2) & 0x30: the bits shifted in from the next byte are
 * masked off). */
#define Q4K_LO _mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15)
#define Q4K_HI _mm_setr_epi8(-1, -1, -1, -1, 4, 5, 6, 7, -1, -1, -1, -1, 8, 9, 10, 11)
#define Q4K_MASK_LO _mm_setr_epi8(0x3f, 0x3f, 0x3f, 0x3f, 0x0f, 0x0f, 0x0f, 0x0f, 0x3f, 0x3f, 0x3f, 0x3f, 0, 0, 0, 0)
#define Q4K_MASK_HI _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0f, 0x0f, 0x0f, 0x0f)

/* One set of kernels per instruction set: DOT_U8S8 / DOTACC, the 8 int32 lanes of a u8 · s8 product (plus
 * an accumulator); WIDE16, whether the 4-bit kernels add their eight products in int16 first (AVX2: one
 * vpmaddwd instead of eight; VNNI's vpdpbusd adds into int32 itself). */
#define KERNELS(SUF, TGT, DOT_U8S8, DOTACC, WIDE16)                                                            \
    AI TGT float hsum_##SUF(__m256 v) {                                                                        \
        const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));                   \
        const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));                                                   \
        return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));                                               \
    }                                                                                                          \
    AI TGT int hsumi_##SUF(__m256i v) {                                                                        \
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));                  \
        s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));                                                        \
        return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 1)));                                   \
    }                                                                                                          \
    AI TGT __m256i dot_s8s8_##SUF(__m256i w, __m256i x) {                                                      \
        return DOT_U8S8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));                                       \
    }                                                                                                          \
    AI TGT float half_##SUF(const uint8_t *p) {                                                                \
        uint16_t h;                                                                                            \
        memcpy(&h, p, 2);                                                                                      \
        return _cvtsh_ss(h);                                                                                   \
    }                                                                                                          \
                                                                                                               \
    /* WIDE16 only: 4 vectors of nibble codes at q · the 8 word-transposed activation vectors at x (low      \
     * nibbles: vectors 0-3, high: 4-7), the eight vpmaddubsw results added in int16 as a tree (a pair is at  \
     * most 2·15·127 = 3810, eight ≤ 30480): int16 lanes 2i and 2i + 1 together sum word i's 64 products. */  \
    AI TGT __m256i dot_nib16_##SUF(const uint8_t *q, const int8_t *x) {                                        \
        const __m256i m4 = _mm256_set1_epi8(0x0f);                                                             \
        __m256i p[8];                                                                                          \
        for (int t = 0; t < 4; t++) {                                                                          \
            const __m256i v = _mm256_loadu_si256((const __m256i *)(q + 32 * t));                               \
            p[t] = _mm256_maddubs_epi16(_mm256_and_si256(v, m4), _mm256_loadu_si256((const __m256i *)(x + 32 * t))); \
            p[t + 4] = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4),                    \
                                            _mm256_loadu_si256((const __m256i *)(x + 32 * t + 128)));          \
        }                                                                                                      \
        return _mm256_add_epi16(_mm256_add_epi16(_mm256_add_epi16(p[0], p[1]), _mm256_add_epi16(p[2], p[3])),  \
                                _mm256_add_epi16(_mm256_add_epi16(p[4], p[5]), _mm256_add_epi16(p[6], p[7]))); \
    }                                                                                                          \
                                                                                                               \
    /* The same codes · activations: int32 lane i sums word i's 64 products (WIDE16: one vpmaddwd of the     \
     * int16 tree; VNNI: vpdpbusd adds into int32 itself). */                                                 \
    AI TGT __m256i dot_nib_##SUF(const uint8_t *q, const int8_t *x) {                                          \
        const __m256i m4 = _mm256_set1_epi8(0x0f);                                                             \
        if (WIDE16) return _mm256_madd_epi16(dot_nib16_##SUF(q, x), _mm256_set1_epi16(1));                      \
        /* two chains (Q4_K +8% in L2); the high nibbles stay in place (16 · code ≤ 240, 16 such products to   \
         * an int32 lane) and their chain is shifted once, exactly, instead of each vector (Q4_0 +5%, Q4_K +6%  \
         * in L2 on an Intel Xeon VM) */                                                                     \
        __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();                                     \
        for (int t = 0; t < 4; t++) {                                                                          \
            const __m256i v = _mm256_loadu_si256((const __m256i *)(q + 32 * t));                               \
            lo = DOTACC(lo, _mm256_and_si256(v, m4), _mm256_loadu_si256((const __m256i *)(x + 32 * t)));       \
            hi = DOTACC(hi, _mm256_and_si256(v, _mm256_set1_epi8((char)0xf0)), _mm256_loadu_si256((const __m256i *)(x + 32 * t + 128))); \
        }                                                                                                      \
        return _mm256_add_epi32(lo, _mm256_srai_epi32(hi, 4));                                                 \
    }                                                                                                          \
                                                                                                               \
    /* Q5_0 code vector t (t = 0..3) of a packed group, unsigned 0..31: the nibbles at q + 32t topped by   \
     * their fifth bits from the group's 32 bytes hb (quant.c, repack_q5_0: bit t of a byte for the low   \
     * nibble's code, bit 4 + t for the high one's), one shift and one mask each. */                         \
    AI TGT void q5_codes_##SUF(const uint8_t *q, __m256i hb, int t, __m256i *lo, __m256i *hi) {                \
        const __m256i m4 = _mm256_set1_epi8(0x0f), b4 = _mm256_set1_epi8(0x10);                               \
        const __m256i v = _mm256_loadu_si256((const __m256i *)(q + 32 * t));                                   \
        *lo = _mm256_or_si256(_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4 - t), b4));   \
        *hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), _mm256_and_si256(_mm256_srli_epi16(hb, t), b4)); \
    }                                                                                                          \
                                                                                                               \
    /* Σ of a packed Q5_0 group's 256 codes · the 8 word-transposed activation vectors at x: int32 lane i     \
     * sums block i's unsigned codes (WIDE16: two int16 trees of four, a pair being at most 2·31·127 = 7874). */ \
    AI TGT __m256i dot_q5_##SUF(const uint8_t *g, const int8_t *x) {                                          \
        const __m256i hb = _mm256_loadu_si256((const __m256i *)(g + 16));                                      \
        __m256i lo[4], hi[4];                                                                                  \
        for (int t = 0; t < 4; t++) q5_codes_##SUF(g + 48, hb, t, &lo[t], &hi[t]);                              \
        if (WIDE16) {                                                                                          \
            __m256i p[8];                                                                                      \
            for (int t = 0; t < 4; t++) {                                                                      \
                p[t] = _mm256_maddubs_epi16(lo[t], _mm256_loadu_si256((const __m256i *)(x + 32 * t)));         \
                p[t + 4] = _mm256_maddubs_epi16(hi[t], _mm256_loadu_si256((const __m256i *)(x + 32 * t + 128))); \
            }                                                                                                  \
            const __m256i one = _mm256_set1_epi16(1);                                                          \
            return _mm256_add_epi32(                                                                           \
                _mm256_madd_epi16(_mm256_add_epi16(_mm256_add_epi16(p[0], p[1]), _mm256_add_epi16(p[2], p[3])), one), \
                _mm256_madd_epi16(_mm256_add_epi16(_mm256_add_epi16(p[4], p[5]), _mm256_add_epi16(p[6], p[7])), one)); \
        }                                                                                                      \
        __m256i isum = _mm256_setzero_si256();                                                                 \
        for (int t = 0; t < 4; t++) {                                                                          \
            isum = DOTACC(isum, lo[t], _mm256_loadu_si256((const __m256i *)(x + 32 * t)));                     \
            isum = DOTACC(isum, hi[t], _mm256_loadu_si256((const __m256i *)(x + 32 * t + 128)));               \
        }                                                                                                      \
        return isum;                                                                                           \
    }                                                                                                          \
                                                                                                               \
    /* Q8_0 (kind 0), Q4_0 (1) or Q5_0 (2): R (1-4) packed rows, rb bytes apart, · one block-32 activation  \
     * row whose full and half groups are word-transposed (SKD_ACT_32_WORDS): lane i of each product sums    \
     * block i; Q4_0 and Q5_0 codes are unsigned, their offset (8 or 16 Σx) taken from the block sums. Each   \
     * row's arithmetic is the same whatever R (its own accumulator, lanes, tail and horizontal sum): R > 1   \
     * only interleaves rows' work, so a row's result does not depend on its neighbour. Row j's output goes  \
     * to o[j] through skd_qput (bias[r0 + j], ReLU). */                                                      \
    AI TGT void dot32_##SUF(const uint8_t *wr, long rb, const int R, long nb, int kind, const int8_t *xq,      \
                            const float *xd, const int16_t *xs, float *o, const float *bias, long r0, int relu) { \
        const long gb = kind == 0 ? 272 : kind == 1 ? 144 : 176; /* bytes of a group of 8 blocks */             \
        const int pfd = kind == 0 ? PF_Q8_0 : kind == 1 ? PF_Q4_0 : PF_Q5_0;                                   \
        const __m256i m4 = _mm256_set1_epi8(0x0f);                                                             \
        __m256 acc[4] = { _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps() }; \
        /* The prefetch: a quarter of ~2 KiB ahead in each of the 4 rows' lanes (row r's lane: rows r, r + 4,   \
         * r + 8, ..., what this loop slot reads next), so past a row's end it goes on in the row 4 further,  \
         * not the next one, which the next slot is reading now (pf_row + pf_off). With rows of one group    \
         * of 4 (k = 1024) that is the row 4 further on at the same offset, as before; with longer ones it kept \
         * a llama-400m ffn_down ([1024, 3584]) at 86-89% of membw, not 72-77% (Q4_0; Q8_0 98-102, not 84-86,  \
         * build/quant_check time 2 with that shape, three alternating runs, Intel Xeon VM). */              \
        long pf_off = pfd * gb / 4, pf_row = 0, ff_off = FAR_BYTES / 4, ff_row = 0; /* ff: the L2 prefetch's lane */ \
        while (pf_off >= rb) pf_off -= rb, pf_row += 4 * rb;                                                   \
        while (ff_off >= rb) ff_off -= rb, ff_row += 4 * rb;                                                   \
        long b = 0;                                                                                            \
        for (; b + 8 <= nb; b += 8, pf_off += gb, ff_off += gb) {                                              \
            if (pf_off >= rb) pf_off -= rb, pf_row += 4 * rb;                                                  \
            if (ff_off >= rb) ff_off -= rb, ff_row += 4 * rb;                                                  \
            const int8_t *x = xq + b * 32;                                                                     \
            const __m256 dx = _mm256_loadu_ps(xd + b);                                                         \
            const __m256i xoff = kind ? _mm256_slli_epi32(_mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(xs + b))), kind == 1 ? 3 : 4) \
                                    : _mm256_setzero_si256(); /* 8 or 16 Σx of each block */                    \
            for (int r = 0; r < R; r++) {                                                                      \
                const uint8_t *g = wr + r * rb + (b / 8) * gb;                                                 \
                const char *pf = (const char *)wr + r * rb + pf_row + pf_off;                                  \
                prefetch_lines(pf, (const char *)wr + r * rb + ff_row + ff_off, kind == 0 ? 5 : 3);             \
                __m256i isum = _mm256_setzero_si256();                                                         \
                if (kind == 1) {                                                                               \
                    isum = _mm256_sub_epi32(dot_nib_##SUF(g + 16, x), xoff);                                   \
                } else if (kind == 2) {                                                                        \
                    isum = _mm256_sub_epi32(dot_q5_##SUF(g, x), xoff);                                         \
                } else {                                                                                       \
                    for (int v = 0; v < 8; v++) {                                                              \
                        const __m256i w = _mm256_loadu_si256((const __m256i *)(g + 16 + 32 * v));              \
                        const __m256i xv = _mm256_loadu_si256((const __m256i *)(x + 32 * v));                  \
                        isum = DOTACC(isum, _mm256_sign_epi8(w, w), _mm256_sign_epi8(xv, w));                  \
                    }                                                                                          \
                }                                                                                              \
                const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)g));                        \
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, dx), acc[r]);             \
            }                                                                                                  \
        }                                                                                                      \
        for (int r = 0; r < R; r++) {                                                                          \
            /* a short last group (t < 8 blocks): its first 4 as a half group when t >= 4, the others (ggml's \
             * byte order) a block at a time into one more vector of lane sums (no horizontal sum per block) */ \
            __m256 tail = _mm256_setzero_ps();                                                                 \
            __m128 half = _mm_setzero_ps();                                                                    \
            const int t = (int)(nb - b);                                                                       \
            const uint8_t *g = wr + r * rb + (b / 8) * gb;                                                     \
            int j0 = 0;                                                                                        \
            if (t >= 4) {                                                                                      \
                /* 16-byte vectors two to a ymm (quant.c, repack_row): lanes i and 4 + i both sum block i */   \
                const int8_t *x = xq + b * 32;                                                                 \
                const uint8_t *c = g + 2 * t + (kind == 2 ? 16 : 0); /* the codes, after Q5_0's fifth bits */  \
                __m256i isum = _mm256_setzero_si256();                                                         \
                if (kind == 0) {                                                                               \
                    for (int p = 0; p < 4; p++) {                                                              \
                        const __m256i w = _mm256_loadu_si256((const __m256i *)(c + 32 * p));                   \
                        const __m256i xv = _mm256_loadu_si256((const __m256i *)(x + 32 * p));                  \
                        isum = DOTACC(isum, _mm256_sign_epi8(w, w), _mm256_sign_epi8(xv, w));                  \
                    }                                                                                          \
                } else {                                                                                       \
                    const __m256i hb = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(g + 2 * t))); \
                    for (int p = 0; p < 2; p++) { /* code vectors 2p and 2p + 1 */                             \
                        const __m256i v = _mm256_loadu_si256((const __m256i *)(c + 32 * p));                   \
                        __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4); \
                        if (kind == 2) { /* fifth bits: bit 2p (2p + 1 in the high half) and 4 + that */     \
                            const __m256i b5 = _mm256_set1_epi8(0x10);                                        \
                            lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_sllv_epi32(hb, _mm256_setr_epi32(4 - 2 * p, 4 - 2 * p, 4 - 2 * p, 4 - 2 * p, 3 - 2 * p, 3 - 2 * p, 3 - 2 * p, 3 - 2 * p)), b5)); \
                            hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_srlv_epi32(hb, _mm256_setr_epi32(2 * p, 2 * p, 2 * p, 2 * p, 2 * p + 1, 2 * p + 1, 2 * p + 1, 2 * p + 1)), b5)); \
                        }                                                                                      \
                        isum = DOTACC(isum, lo, _mm256_loadu_si256((const __m256i *)(x + 32 * p)));            \
                        isum = DOTACC(isum, hi, _mm256_loadu_si256((const __m256i *)(x + 64 + 32 * p)));       \
                    }                                                                                          \
                }                                                                                              \
                __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(isum), _mm256_extracti128_si256(isum, 1));    \
                if (kind) /* 8 or 16 Σx of each block */                                                      \
                    s4 = _mm_sub_epi32(s4, _mm_slli_epi32(_mm_cvtepi16_epi32(_mm_loadl_epi64((const __m128i *)(xs + b))), kind == 1 ? 3 : 4)); \
                const __m128 dwx = _mm_mul_ps(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)g)), _mm_loadu_ps(xd + b)); \
                half = _mm_fmadd_ps(_mm_cvtepi32_ps(s4), dwx, half);                                           \
                j0 = 4;                                                                                        \
            }                                                                                                  \
            for (int j = j0; j < t; j++) {                                                                     \
                __m256i w;                                                                                     \
                if (kind == 1) {                                                                               \
                    const __m128i q = _mm_loadu_si128((const __m128i *)(g + 2 * t + 16 * j));                  \
                    w = _mm256_sub_epi8(_mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), m4), _mm256_set1_epi8(8)); \
                } else if (kind == 2) { /* qh's 32 bits spread to bytes (vpshufb, compare), − 16 */         \
                    const uint8_t *blk = g + 2 * t + 20 * j;                                                   \
                    uint32_t qh;                                                                               \
                    memcpy(&qh, blk, 4);                                                                       \
                    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,    \
                                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);   \
                    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201LL);                               \
                    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), spread), bit), bit); \
                    const __m128i q = _mm_loadu_si128((const __m128i *)(blk + 4));                             \
                    const __m256i codes = _mm256_or_si256(_mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), m4), \
                                                          _mm256_and_si256(set, _mm256_set1_epi8(0x10)));      \
                    w = _mm256_sub_epi8(codes, _mm256_set1_epi8(16));                                          \
                } else {                                                                                       \
                    w = _mm256_loadu_si256((const __m256i *)(g + 2 * t + 32 * j));                             \
                }                                                                                              \
                const __m256i x = _mm256_loadu_si256((const __m256i *)(xq + (b + j) * 32));                    \
                tail = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_s8s8_##SUF(w, x)),                               \
                                       _mm256_set1_ps(half_##SUF(g + 2 * j) * xd[b + j]), tail);               \
            }                                                                                                  \
            const __m128 hh = _mm_add_ps(half, _mm_movehl_ps(half, half));                                     \
            skd_qput(o + r, hsum_##SUF(acc[r]) + hsum_##SUF(tail) + _mm_cvtss_f32(_mm_add_ss(hh, _mm_movehdup_ps(hh))), bias, r0 + r, relu); \
        }                                                                                                      \
    }                                                                                                          \
                                                                                                               \
    /* A Q4_K block's 12 bytes of 6-bit scales and mins (skd_q4k_scale_min) decoded in the vector unit, from   \
     * a load of its first 16 bytes (d, dmin, scales): bytes 0-7 of a lane's result sc0..7, bytes 8-15 m0..7.  \
     * Per 128-bit lane, so two blocks at once (an odd last one in lane 0): against one block at a time, a     \
     * llama-400m step's Q4_K matmuls at m = 1, 2 threads (Intel Xeon VM, the two builds alternating step by   \
     * step) +3.7-4.0% with AVX2, +0.6-1.5% with VNNI, which there already reads at the memory's rate. */      \
    AI TGT __m256i q4k_scales2_##SUF(__m256i v) {                                                              \
        const __m256i lo6 = _mm256_shuffle_epi8(v, _mm256_broadcastsi128_si256(Q4K_LO)),                       \
                      hi2 = _mm256_shuffle_epi8(v, _mm256_broadcastsi128_si256(Q4K_HI));                       \
        return _mm256_or_si256(_mm256_or_si256(_mm256_and_si256(lo6, _mm256_broadcastsi128_si256(Q4K_MASK_LO)), \
                                               _mm256_and_si256(_mm256_srli_epi16(lo6, 4), _mm256_broadcastsi128_si256(Q4K_MASK_HI))), \
                               _mm256_and_si256(_mm256_srli_epi16(hi2, 2), _mm256_set1_epi8(0x30)));           \
    }                                                                                                          \
                                                                                                               \
    /* One packed Q4_K block (scales and mins decoded in sm) · its 256 activations x (scale xd, 16 sums of 16  \
     * at bsums): acc += d·xd · Σ sc_i · isum_i, accm += dmin·xd · Σ m_i · xsum_i (lane i: sub-block i) */     \
    AI TGT void q4k_block_##SUF(const skd_block_q4_k *blk, __m128i sm, const int8_t *x, float xd, const int16_t *bsums, \
                                __m256 *acc, __m256 *accm) {                                                   \
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm)); /* m0 m0 m1 m1 .. m7 m7 */       \
        /* Σ sc_i · isum_i and Σ m_i · xsum_i, exact in int32 (< 2^22 a lane); WIDE16: the scales go into      \
         * the vpmaddwd that adds the int16 pairs (sc_i · (a + b), the same int32 as vpmulld after it) */      \
        const __m256i scaled = WIDE16 ? _mm256_madd_epi16(dot_nib16_##SUF(blk->qs, x), _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(sm, sm))) \
                                      : _mm256_mullo_epi32(dot_nib_##SUF(blk->qs, x), _mm256_cvtepu8_epi32(sm)); \
        const __m256i bs = _mm256_loadu_si256((const __m256i *)bsums);                                         \
        /* d · d_x and dmin · d_x: converted and multiplied at once, the same fp32 products as one at a time */ \
        const __m128 dm = _mm_mul_ps(_mm_cvtph_ps(_mm_loadu_si128((const __m128i *)blk)), _mm_set1_ps(xd));    \
        *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(scaled), _mm256_broadcastss_ps(dm), *acc);                   \
        *accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(bs, mins)), _mm256_broadcastss_ps(_mm_movehdup_ps(dm)), *accm); \
    }                                                                                                          \
                                                                                                               \
    /* Q4_K packed row · one SKD_ACT_K_WORDS activation row: int32 lane i sums sub-block i; blocks two at a    \
     * time (their scales decoded together), an odd last one alone */                                          \
    AI TGT float dot_q4k_##SUF(const skd_block_q4_k *wb, long nb, const int8_t *xq, const float *xd,           \
                               const int16_t *bsums) {                                                         \
        __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();                                          \
        long b = 0;                                                                                            \
        for (; b + 2 <= nb; b += 2) {                                                                          \
            const skd_block_q4_k *blk = wb + b;                                                                \
            prefetch_lines((const char *)(blk + PF_Q4_K), (const char *)blk + FAR_BYTES, 5); /* 288 bytes: 4.5 lines */ \
            const __m256i sm = q4k_scales2_##SUF(_mm256_loadu2_m128i((const __m128i *)(blk + 1), (const __m128i *)blk)); \
            q4k_block_##SUF(blk, _mm256_castsi256_si128(sm), xq + b * 256, xd[b], bsums + b * 16, &acc, &accm); \
            q4k_block_##SUF(blk + 1, _mm256_extracti128_si256(sm, 1), xq + (b + 1) * 256, xd[b + 1], bsums + (b + 1) * 16, &acc, &accm); \
        }                                                                                                      \
        if (b < nb) {                                                                                          \
            const skd_block_q4_k *blk = wb + b;                                                                \
            prefetch_lines((const char *)(blk + PF_Q4_K), (const char *)blk + FAR_BYTES, 3);                   \
            const __m256i sm = q4k_scales2_##SUF(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)blk))); /* lane 0 */ \
            q4k_block_##SUF(blk, _mm256_castsi256_si128(sm), xq + b * 256, xd[b], bsums + b * 16, &acc, &accm); \
        }                                                                                                      \
        return hsum_##SUF(_mm256_sub_ps(acc, accm));                                                           \
    }                                                                                                          \
                                                                                                               \
    /* Q6_K packed row (quant.c, repack_q6_k) · one SKD_ACT_K_WORDS activation row: code vectors 0-3 (ql's low \
     * nibbles, qh's vector 0) and 4-7 (high nibbles, qh's vector 1) give in int32 lane i the exact sums of   \
     * sub-block i's first and last 16 values, each multiplied once by its int8 scale; the −32 offset as       \
     * 32 · Σ sc_j · xsum_j; one FMA per 256 values. */                                                       \
    AI TGT float dot_q6k_##SUF(const skd_block_q6_k *wb, long nb, const int8_t *xq, const float *xd,           \
                               const int16_t *bsums) {                                                         \
        const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);                              \
        __m256 acc = _mm256_setzero_ps();                                                                      \
        for (long b = 0; b < nb; b++) {                                                                        \
            const skd_block_q6_k *blk = wb + b;                                                                \
            const char *pf = (const char *)(blk + PF_Q6_K);                                                    \
            prefetch_lines(pf, (const char *)blk + FAR_BYTES, 4);                                              \
            const __m128i sc = _mm_loadu_si128((const __m128i *)blk->scales);                                  \
            const __m256i bs = _mm256_loadu_si256((const __m256i *)(bsums + b * 16));                          \
            /* 32 · Σ_j sc_j · xsum_j (lane i: sub-blocks 2i and 2i + 1): the codes' offset */                 \
            const __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(bs, _mm256_cvtepi8_epi16(sc)), 5);         \
            const int8_t *x = xq + b * 256;                                                                    \
            __m256i q[8];                                                                                      \
            for (int u = 0; u < 2; u++) {                                                                      \
                const __m256i h = _mm256_loadu_si256((const __m256i *)(blk->qh + 32 * u));                     \
                const __m256i hb[4] = { _mm256_and_si256(_mm256_slli_epi16(h, 4), m30), _mm256_and_si256(_mm256_slli_epi16(h, 2), m30), \
                                        _mm256_and_si256(h, m30), _mm256_and_si256(_mm256_srli_epi16(h, 2), m30) }; \
                for (int t = 0; t < 4; t++) {                                                                  \
                    const __m256i l = _mm256_loadu_si256((const __m256i *)(blk->ql + 32 * t));                 \
                    q[4 * u + t] = _mm256_or_si256(_mm256_and_si256(u ? _mm256_srli_epi16(l, 4) : l, m4), hb[t]); \
                }                                                                                              \
            }                                                                                                  \
            __m256i sumi;                                                                                      \
            if (WIDE16) { /* pairs of vpmaddubsw add in int16 (≤ 2 · 2·63·127 = 32004), then the scales */     \
                __m256i p[8];                                                                                  \
                for (int c = 0; c < 8; c++) p[c] = _mm256_maddubs_epi16(q[c], _mm256_loadu_si256((const __m256i *)(x + 32 * c))); \
                const __m256i se = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, _mm_setr_epi8(0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14))); \
                const __m256i so = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, _mm_setr_epi8(1, 1, 3, 3, 5, 5, 7, 7, 9, 9, 11, 11, 13, 13, 15, 15))); \
                sumi = _mm256_add_epi32(_mm256_add_epi32(_mm256_madd_epi16(_mm256_add_epi16(p[0], p[1]), se), _mm256_madd_epi16(_mm256_add_epi16(p[2], p[3]), se)), \
                                        _mm256_add_epi32(_mm256_madd_epi16(_mm256_add_epi16(p[4], p[5]), so), _mm256_madd_epi16(_mm256_add_epi16(p[6], p[7]), so))); \
            } else { /* two vpdpbusd chains, one vpmulld each by the scales as int32 */                        \
                __m256i ev = _mm256_setzero_si256(), od = _mm256_setzero_si256();                             \
                for (int c = 0; c < 4; c++) {                                                                  \
                    ev = DOTACC(ev, q[c], _mm256_loadu_si256((const __m256i *)(x + 32 * c)));                  \
                    od = DOTACC(od, q[c + 4], _mm256_loadu_si256((const __m256i *)(x + 32 * c + 128)));        \
                }                                                                                              \
                const __m128i eo = _mm_shuffle_epi8(sc, _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15)); \
                sumi = _mm256_add_epi32(_mm256_mullo_epi32(ev, _mm256_cvtepi8_epi32(eo)),                     \
                                        _mm256_mullo_epi32(od, _mm256_cvtepi8_epi32(_mm_unpackhi_epi64(eo, eo)))); \
            }                                                                                                  \
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(sumi, off)), _mm256_set1_ps(_cvtsh_ss(blk->d) * xd[b]), acc); \
        }                                                                                                      \
        return hsum_##SUF(acc);                                                                                \
    }                                                                                                          \
                                                                                                               \
    /* One function per type, so each gets its registers to itself. */                                       \
    /* Q8_0, Q4_0, Q5_0 (dot32's kinds): weight rows four at a time (dot32's R; 1-3 for the last ones): the   \
     * activation row's codes are read once for four rows, and four rows' horizontal sums overlap. Q4_K gains \
     * nothing from it (its blocks are long enough alone). */                                                 \
    AI TGT void rows32_##SUF(const skd_mat *w, long r0, long r1, const skd_qact *a, int m, float *out, long n, \
                             const float *bias, int relu, int kind) {                                           \
        const int64_t k = w->cols, rb = skd_row_bytes(w->dtype, k);                                           \
        for (long r = r0; r < r1; r += 4) {                                                                    \
            const uint8_t *wr = (const uint8_t *)w->data + r * rb;                                             \
            const int R = r1 - r < 4 ? (int)(r1 - r) : 4;                                                      \
            for (int i = 0; i < m; i++) {                                                                      \
                const int8_t *xq = a->qs + (size_t)i * k;                                                      \
                const float *xd = a->d + (size_t)i * (k / 32);                                                 \
                const int16_t *xs = a->bsums + (size_t)i * (k / 16);                                           \
                float *o = out + (size_t)i * n + r;                                                            \
                /* the outputs stored in dot32, R a constant there: a loop over a runtime R storing res[] became \
                 * a call to memcpy where there is no bias or ReLU (2% of a Q8_0 decode) */                      \
                if (R == 4) dot32_##SUF(wr, rb, 4, k / 32, kind, xq, xd, xs, o, bias, r, relu);                  \
                else if (R == 3) dot32_##SUF(wr, rb, 3, k / 32, kind, xq, xd, xs, o, bias, r, relu);             \
                else if (R == 2) dot32_##SUF(wr, rb, 2, k / 32, kind, xq, xd, xs, o, bias, r, relu);             \
                else dot32_##SUF(wr, rb, 1, k / 32, kind, xq, xd, xs, o, bias, r, relu);                         \
            }                                                                                                  \
        }                                                                                                      \
    }                                                                                                          \
    TGT static void rows_q8_0_##SUF(const skd_mat *w, long r0, long r1, const skd_qact *a, int m, float *out,  \
                                    long n, const float *bias, int relu) {                                     \
        rows32_##SUF(w, r0, r1, a, m, out, n, bias, relu, 0);                                                  \
    }                                                                                                          \
    TGT static void rows_q4_0_##SUF(const skd_mat *w, long r0, long r1, const skd_qact *a, int m, float *out,  \
                                    long n, const float *bias, int relu) {                                     \
        rows32_##SUF(w, r0, r1, a, m, out, n, bias, relu, 1);                                                  \
    }                                                                                                          \
    TGT static void rows_q5_0_##SUF(const skd_mat *w, long r0, long r1, const skd_qact *a, int m, float *out,  \
                                    long n, const float *bias, int relu) {                                     \
        rows32_##SUF(w, r0, r1, a, m, out, n, bias, relu, 2);                                                  \
    }                                                                                                          \
    TGT static void rows_q4_k_##SUF(const skd_mat *w, long r0, long r1, const skd_qact *a, int m, float *out,  \
                                    long n, const float *bias, int relu) {                                     \
        const int64_t k = w->cols, rb = skd_row_bytes(w->dtype, k);                                           \
        for (long r = r0; r < r1; r++)                                                                         \
            for (int i = 0; i < m; i++)                                                                        \
                skd_qput(out + (size_t)i * n + r, dot_q4k_##SUF((const skd_block_q4_k *)((const char *)w->data + r * rb), k / 256, \
                                                                a->qs + (size_t)i * k, a->d + (size_t)i * (k / 256), \
                                                                a->bsums + (size_t)i * (k / 16)), bias, r, relu); \
    }                                                                                                          \
    TGT static void rows_q6_k_##SUF(const skd_mat *w, long r0, long r1, const skd_qact *a, int m, float *out,  \
                                    long n, const float *bias, int relu) {                                     \
        const int64_t k = w->cols, rb = skd_row_bytes(w->dtype, k);                                           \
        for (long r = r0; r < r1; r++)                                                                         \
            for (int i = 0; i < m; i++)                                                                        \
                skd_qput(out + (size_t)i * n + r, dot_q6k_##SUF((const skd_block_q6_k *)((const char *)w->data + r * rb), k / 256, \
                                                                a->qs + (size_t)i * k, a->d + (size_t)i * (k / 256), \
                                                                a->bsums + (size_t)i * (k / 16)), bias, r, relu); \
    }

#define DOT_AVX2(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1))
#define DOT_VNNI(u, s) _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), (u), (s))
/* acc + the 8 int32 lanes of u · s */
#define DOTACC_AVX2(acc, u, s) _mm256_add_epi32((acc), DOT_AVX2(u, s))
#define DOTACC_VNNI(acc, u, s) _mm256_dpbusd_avx_epi32((acc), (u), (s))

KERNELS(avx2, TARGET_AVX2, DOT_AVX2, DOTACC_AVX2, 1)
KERNELS(vnni, TARGET_VNNI, DOT_VNNI, DOTACC_VNNI, 0)

skd_qrows_fn *skd_qrows_avx2(int dtype, int vnni) {
    switch (dtype) {
    case SKD_DTYPE_Q8_0: return vnni ? rows_q8_0_vnni : rows_q8_0_avx2;
    case SKD_DTYPE_Q4_0: return vnni ? rows_q4_0_vnni : rows_q4_0_avx2;
    case SKD_DTYPE_Q5_0: return vnni ? rows_q5_0_vnni : rows_q5_0_avx2;
    case SKD_DTYPE_Q4_K: return vnni ? rows_q4_k_vnni : rows_q4_k_avx2;
    default: return vnni ? rows_q6_k_vnni : rows_q6_k_avx2;
    }
}

/* ---- activation quantization, the bytes of quant.c's quantize_act_block ---------- */

/* Block `xb` of n values (32 or 256) → codes (n/32 vectors: stored at qs, or into q_out[0 .. n/32) when
 * given), scale, sums. */
static inline __attribute__((always_inline)) TARGET_AVX2 void act_block(const float *xb, int n, int kform, int8_t *qs,
                                                                        float *d, int16_t *sums, __m256i *q_out) {
    const __m256 sign = _mm256_set1_ps(-0.f);
    __m256 m = _mm256_setzero_ps();
    for (int j = 0; j < n; j += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(xb + j)));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float amax = _mm_cvtss_f32(h);
    const float id = amax > 0.f ? 127.f / amax : 0.f;
    *d = amax / 127.f;
    const __m256 vid = _mm256_set1_ps(id);
    for (int j = 0; j < n; j += 32) { /* rne(x · id), as the portable code rounds */
        const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + j), vid));
        const __m256i bq = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + j + 8), vid));
        const __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + j + 16), vid));
        const __m256i e = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + j + 24), vid));
        /* packs interleave the 128-bit lanes: put them back in order */
        const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(a, bq), _mm256_packs_epi32(c, e));
        const __m256i q = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        if (q_out) q_out[j / 32] = q;
        else _mm256_storeu_si256((__m256i *)(qs + j), q);
        /* sums of each 16 codes (K form) or of the 32 (block-32 form) */
        const __m256i s4 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
        const __m256i s2 = _mm256_hadd_epi32(s4, s4), s1 = _mm256_hadd_epi32(s2, s2);
        const int lo = _mm256_extract_epi32(s1, 0), hi = _mm256_extract_epi32(s1, 4);
        if (kform) {
            sums[j / 16] = (int16_t)lo;
            sums[j / 16 + 1] = (int16_t)hi;
        } else {
            sums[0] = (int16_t)(lo + hi);
        }
    }
}

/* 8 vectors of 32 codes → o[32 v + 4 i ..] = word v of r[i]: transposed by 4-byte words. */
static inline __attribute__((always_inline)) TARGET_AVX2 void store_words(const __m256i r[8], int8_t *o) {
    __m256i t[8], u[8];
    for (int i = 0; i < 8; i += 2) t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]), t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]), u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]), u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int v = 0; v < 4; v++) {
        _mm256_storeu_si256((__m256i *)(o + 32 * v), _mm256_permute2x128_si256(u[v], u[v + 4], 0x20));
        _mm256_storeu_si256((__m256i *)(o + 32 * (v + 4)), _mm256_permute2x128_si256(u[v], u[v + 4], 0x31));
    }
}

/* 4 vectors of 32 codes → o[16 v + 4 i ..] = word v of r[i] (v = 0..7): a half group, transposed by 4-byte words
 * with 16-byte vectors, stored as 4 vectors of two (v = 2p, 2p + 1). */
static inline __attribute__((always_inline)) TARGET_AVX2 void store_words4(const __m256i r[4], int8_t *o) {
    const __m256i a = _mm256_unpacklo_epi32(r[0], r[1]), b = _mm256_unpackhi_epi32(r[0], r[1]); /* words 0,1 | 4,5 ; 2,3 | 6,7 */
    const __m256i c = _mm256_unpacklo_epi32(r[2], r[3]), d = _mm256_unpackhi_epi32(r[2], r[3]);
    const __m256i v04 = _mm256_unpacklo_epi64(a, c), v15 = _mm256_unpackhi_epi64(a, c); /* word 0 of the 4 | word 4 */
    const __m256i v26 = _mm256_unpacklo_epi64(b, d), v37 = _mm256_unpackhi_epi64(b, d);
    _mm256_storeu_si256((__m256i *)o, _mm256_permute2x128_si256(v04, v15, 0x20));
    _mm256_storeu_si256((__m256i *)(o + 32), _mm256_permute2x128_si256(v26, v37, 0x20));
    _mm256_storeu_si256((__m256i *)(o + 64), _mm256_permute2x128_si256(v04, v15, 0x31));
    _mm256_storeu_si256((__m256i *)(o + 96), _mm256_permute2x128_si256(v26, v37, 0x31));
}

TARGET_AVX2 void skd_quantize_act_avx2(const float *x, int64_t k, int form, int8_t *qs, float *d, int16_t *bsums) {
    if (form == SKD_ACT_K || form == SKD_ACT_K_WORDS) {
        for (int64_t b = 0; b < k / 256; b++) {
            if (form == SKD_ACT_K) {
                act_block(x + b * 256, 256, 1, qs + b * 256, d + b, bsums + b * 16, NULL);
                continue;
            }
            __m256i r[8]; /* the 8 sub-blocks' codes, transposed by 4-byte words */
            act_block(x + b * 256, 256, 1, NULL, d + b, bsums + b * 16, r);
            store_words(r, qs + b * 256);
        }
        return;
    }
    const int64_t nb = k / 32;
    int64_t b = 0;
    if (form == SKD_ACT_32_WORDS) {
        for (; b + 8 <= nb; b += 8) { /* 8 blocks' codes, transposed by 4-byte words */
            __m256i r[8];
            for (int i = 0; i < 8; i++) act_block(x + (b + i) * 32, 32, 0, NULL, d + b + i, bsums + b + i, &r[i]);
            store_words(r, qs + b * 32);
        }
        if (nb - b >= 4) { /* a short last group's first 4 blocks: a half group, as the packed weights */
            __m256i r[4];
            for (int i = 0; i < 4; i++) act_block(x + (b + i) * 32, 32, 0, NULL, d + b + i, bsums + b + i, &r[i]);
            store_words4(r, qs + b * 32);
            b += 4;
        }
    }
    for (; b < nb; b++) act_block(x + b * 32, 32, 0, qs + b * 32, d + b, bsums + b, NULL);
}
