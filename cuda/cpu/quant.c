/* quant.c — the CPU engine's quantized matmul (quant.h): activation
 * quantization, the portable reference row kernels, kernel choice, and the
 * threaded driver; and the backend's quantization entry points
 * (skd_dtype_row_bytes, skd_quantize, skd_dequantize: cuda/common/quant_ref.h
 * does the work; skd_quantize splits large tensors by rows across the cores,
 * which gives the same bytes as one thread: every row is encoded on its own).
 *
 * The reference row kernels define each dot product: per block an exact
 * integer sum of weight × activation codes, then, in block order,
 *   Q8_0, Q4_0, Q5_0   s += (float)isum · (d_w · d_x)
 *   Q4_K         s += d_x · (d_w · Σ_j sc_j·isum_j − dmin_w · Σ_j m_j·xsum_j)   (j: 8 sub-blocks of 32)
 *   Q6_K         s += d_x · (d_w · Σ_j sc_j·isum_j)                           (j: 16 sub-blocks of 16,
 *                                                                   isum_j over q − 32)
 * The SIMD kernels compute the same integer sums exactly and add the float
 * terms in another order (lanes), so they agree with these to rounding.
 *
 * Napkin math, decode at batch 1 on a llama-400m shape (~390 M weights):
 * Q8_0 415 MB, Q4_0 220 MB, Q4_K ~230 MB per token; at 27 GB/s (this VM's
 * read bandwidth) that is 15 ms / 8 ms per token, i.e. ~7 / 3.5 bytes per
 * cycle per core at 2 cores × ~3 GHz: a Q4_0 block (18 bytes, 32 weights) must
 * cost at most ~5 cycles of one core, which only integer dot products reach.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "quant.h"
#include "quant_ref.h"

/* ---- activation quantization (every kernel uses these: bit-identical rows) ---- */

/* q = rne(x · id) with id = 127 / max|x| over the block (0 for an all-zero
 * block); d = max|x| / 127. Rounding to nearest even by adding and taking
 * away 1.5·2^23 (exact for |v| <= 127, and what vcvtps2dq does): the SIMD
 * quantizers (skd_quantize_act_avx2) give the same bytes. */
static void quantize_act_block(const float *x, int n, int8_t *q, float *d) {
    float amax = 0.f;
    for (int j = 0; j < n; j++) {
        const float a = fabsf(x[j]);
        amax = a > amax ? a : amax;
    }
    const float id = amax > 0.f ? 127.f / amax : 0.f;
    for (int j = 0; j < n; j++) {
        const float v = x[j] * id + 12582912.f; /* IEEE arithmetic: no compiler may fold the pair away */
        q[j] = (int8_t)(int)(v - 12582912.f);
    }
    *d = amax / 127.f;
}

/* sums[g] = Σ qs[g·n .. g·n + n) */
static void code_sums(const int8_t *qs, int64_t k, int n, int16_t *sums) {
    for (int64_t g = 0; g < k / n; g++) {
        int s = 0;
        for (int j = 0; j < n; j++) s += qs[g * n + j];
        sums[g] = (int16_t)s;
    }
}

void skd_quantize_act32(const float *x, int64_t k, int8_t *qs, float *d, int16_t *bsums) {
    for (int64_t b = 0; b < k / SKD_QK; b++) quantize_act_block(x + b * SKD_QK, SKD_QK, qs + b * SKD_QK, d + b);
    code_sums(qs, k, SKD_QK, bsums);
}

void skd_quantize_act256(const float *x, int64_t k, int8_t *qs, float *d, int16_t *bsums) {
    for (int64_t b = 0; b < k / SKD_QK_K; b++) quantize_act_block(x + b * SKD_QK_K, SKD_QK_K, qs + b * SKD_QK_K, d + b);
    code_sums(qs, k, 16, bsums);
}

/* ---- the packed layouts (quant.h) --------------------------------------------------------------- */

int skd_qkernel_packs(int qk) { return qk == SKD_QKERNEL_AVX2 || qk == SKD_QKERNEL_AVX2_VNNI; }

/* How many blocks of a group of t (1..8) are transposed together: all 8 of a full group; the first 4 of a
 * short last group of 4 to 7 (a half group, read as two 16-byte halves of each vector); none of a shorter
 * one. The blocks after them keep ggml's byte order. */
static int transposed_blocks(int t) { return t == 8 ? 8 : t >= 4 ? 4 : 0; }

/* Converts one row between ggml's blocks and the packed groups (pack = 1: ggml → packed). A full
 * group (8 blocks) holds the 8 scales, then the blocks' code bytes transposed by 4-byte words:
 * word i of vector v is word v of block i (Q8_0: 8 vectors of 32 bytes; Q4_0: 4). A short last
 * group holds its t scales, then its first 4 blocks' code bytes transposed the same way when t >= 4
 * (16-byte vectors: word i of vector v is word v of block i < 4), then the other blocks' in order. */
static void repack_row(int dtype, const uint8_t *src, uint8_t *dst, int64_t k, int pack) {
    const int64_t nb = k / SKD_QK, bb = dtype == SKD_DTYPE_Q8_0 ? 34 : 18, qb = bb - 2, words = qb / 4;
    for (int64_t g0 = 0; g0 < nb; g0 += 8) {
        const int t = nb - g0 < 8 ? (int)(nb - g0) : 8, h = transposed_blocks(t);
        const uint8_t *gs = src + g0 * bb; /* the group in ggml's layout (pack) or packed (unpack) */
        uint8_t *gd = dst + g0 * bb;
        for (int j = 0; j < t; j++) { /* block j: its scale, then its code bytes (word v at packed word v·h + j) */
            const uint8_t *gp = pack ? gd : gs; /* the packed side */
            uint8_t *blk = (uint8_t *)(pack ? gs : gd) + j * bb;
            uint8_t *sp = (uint8_t *)gp + 2 * j;
            if (pack) memcpy(sp, blk, 2);
            else memcpy(blk, sp, 2);
            for (int64_t v = 0; v < words; v++) {
                uint8_t *pw = (uint8_t *)gp + 2 * t + (j < h ? (v * h + j) * 4 : j * qb + v * 4);
                if (pack) memcpy(pw, blk + 2 + v * 4, 4);
                else memcpy(blk + 2 + v * 4, pw, 4);
            }
        }
    }
}

/* Q4_K: d, dmin and the 12 scale bytes stay; the 128 code bytes hold the same 256 nibbles so that byte j of
 * word i of vector t (t = 0..3) has code 4t + j of sub-block i in its low nibble and code 16 + 4t + j in its
 * high one. ggml's byte b of chunk c holds code b of sub-block 2c (low) and of 2c + 1 (high). */
static void repack_q4_k(const skd_block_q4_k *src, skd_block_q4_k *dst, int64_t k, int pack) {
    const uint32_t m4 = 0x0f0f0f0fu;
    for (int64_t b = 0; b < k / SKD_QK_K; b++) {
        const skd_block_q4_k *s = src + b;
        skd_block_q4_k *d = dst + b;
        memcpy(d, s, offsetof(skd_block_q4_k, qs));
        uint32_t in[32], out[32]; /* the code bytes as 4-byte words */
        memcpy(in, s->qs, sizeof in);
        if (pack)
            for (int t = 0; t < 4; t++)
                for (int sb = 0; sb < 8; sb++) { /* packed word 8t + sb: ggml words 8(sb/2) + t (codes 4t..) and + 4 (16 + 4t..) */
                    const int g = 8 * (sb / 2) + t, sh = 4 * (sb % 2);
                    out[8 * t + sb] = ((in[g] >> sh) & m4) | ((in[g + 4] >> sh) & m4) << 4;
                }
        else
            for (int c0 = 0; c0 < 4; c0++)
                for (int w = 0; w < 8; w++) { /* ggml word 8c0 + w: codes 4w.. of sub-blocks 2c0 (low) and 2c0 + 1 (high) */
                    const int t = w % 4, sh = w < 4 ? 0 : 4;
                    out[8 * c0 + w] = ((in[8 * t + 2 * c0] >> sh) & m4) | ((in[8 * t + 2 * c0 + 1] >> sh) & m4) << 4;
                }
        memcpy(d->qs, out, sizeof out);
    }
}

/* Q6_K: the scales and d stay; the 256 6-bit codes are rearranged as Q4_K's, by 32-value sub-block and
 * 4-byte word: code vector c (c = 0..7) holds at byte p = 4i + j code 4c + j of sub-block i (value
 * 32i + 4c + j). ql's 4 vectors t: c = t in the low nibbles, c = 4 + t in the high ones; qh's 2 vectors u:
 * bits 2s..2s + 1 the top 2 bits of c = 4u + s. With SKD_ACT_K_WORDS activations int32 lane i of each
 * product sums sub-block i: vectors 0-3 its first 16 values (scale 2i), 4-7 its last 16 (scale 2i + 1). */
static void repack_q6_k(const skd_block_q6_k *src, skd_block_q6_k *dst, int64_t k, int pack) {
    for (int64_t b = 0; b < k / SKD_QK_K; b++) {
        skd_block_q6_k t = src[b]; /* the scales and d as they are */
        uint8_t L[256];            /* the codes in order */
        if (pack) skd_q6k_codes(&src[b], L), memset(t.ql, 0, sizeof t.ql), memset(t.qh, 0, sizeof t.qh);
        for (int c = 0; c < 8; c++)
            for (int p = 0; p < 32; p++) {
                const int v = 32 * (p / 4) + 4 * c + p % 4, lsh = 4 * (c / 4), hsh = 2 * (c % 4);
                const int lo = 32 * (c % 4) + p, hi = 32 * (c / 4) + p;
                if (pack) t.ql[lo] |= (uint8_t)((L[v] & 0x0f) << lsh), t.qh[hi] |= (uint8_t)((L[v] >> 4) << hsh);
                else L[v] = (uint8_t)(((src[b].ql[lo] >> lsh) & 0x0f) | ((src[b].qh[hi] >> hsh) & 3) << 4);
            }
        if (!pack) skd_q6k_set_codes(&t, L);
        dst[b] = t;
    }
}

/* Q5_0: a full group of 8 blocks is their 8 scales (16 bytes), 32 bytes of fifth bits, then the code
 * bytes transposed by 4-byte words as Q4_0's (128 bytes). Byte j of word i of the fifth bits holds block
 * i's bits of codes 4t + j at bit t and of codes 16 + 4t + j at bit 4 + t (t = 0..3): code vector t's
 * bits are one shift and one mask away (quant_avx2.c). A short last group: its t scales, then, when
 * t >= 4, its first 4 blocks as a half group (16 bytes of fifth bits, 64 of codes, as a full group's with
 * 4 words to a vector), then each other block's qh and qs in ggml's order. */
static void repack_q5_0(const uint8_t *src, uint8_t *dst, int64_t k, int pack) {
    const int64_t nb = k / SKD_QK, bb = (int64_t)sizeof(skd_block_q5_0);
    for (int64_t g0 = 0; g0 < nb; g0 += 8) {
        const int t = nb - g0 < 8 ? (int)(nb - g0) : 8, h = transposed_blocks(t);
        const uint8_t *gs = src + g0 * bb;
        uint8_t *gd = dst + g0 * bb;
        const uint8_t *gp = pack ? gd : gs; /* the packed side */
        for (int j = 0; j < t; j++) {
            uint8_t *blk = (uint8_t *)(pack ? gs : gd) + j * bb; /* block j in ggml's layout */
            uint8_t *sp = (uint8_t *)gp + 2 * j;
            if (pack) memcpy(sp, blk, 2);
            else memcpy(blk, sp, 2);
            if (j >= h) { /* past the transposed blocks: qh and qs as they are */
                uint8_t *bp = (uint8_t *)gp + 2 * t + j * (bb - 2);
                if (pack) memcpy(bp, blk + 2, (size_t)(bb - 2));
                else memcpy(blk + 2, bp, (size_t)(bb - 2));
                continue;
            }
            uint8_t *hb = (uint8_t *)gp + 2 * t + 4 * j, *codes = (uint8_t *)gp + 2 * t + 4 * h;
            if (pack) {
                const uint32_t qh = skd_q5_0_high_bits((const skd_block_q5_0 *)blk);
                for (int b = 0; b < 4; b++) {
                    uint8_t v = 0;
                    for (int w = 0; w < 4; w++)
                        v |= (uint8_t)(((qh >> (4 * w + b)) & 1) << w | ((qh >> (16 + 4 * w + b)) & 1) << (4 + w));
                    hb[b] = v;
                }
            } else {
                uint32_t qh = 0;
                for (int b = 0; b < 4; b++)
                    for (int w = 0; w < 4; w++)
                        qh |= (uint32_t)((hb[b] >> w) & 1) << (4 * w + b) | (uint32_t)((hb[b] >> (4 + w)) & 1) << (16 + 4 * w + b);
                for (int b = 0; b < 4; b++) blk[2 + b] = (uint8_t)(qh >> (8 * b));
            }
            for (int v = 0; v < 4; v++) { /* code word v of block j at packed word v·h + j */
                if (pack) memcpy(codes + (v * h + j) * 4, blk + 6 + v * 4, 4);
                else memcpy(blk + 6 + v * 4, codes + (v * h + j) * 4, 4);
            }
        }
    }
}

void skd_quant_pack_row(int dtype, const void *src, void *dst, int64_t k) {
    if (dtype == SKD_DTYPE_Q4_K) repack_q4_k(src, dst, k, 1);
    else if (dtype == SKD_DTYPE_Q6_K) repack_q6_k(src, dst, k, 1);
    else if (dtype == SKD_DTYPE_Q5_0) repack_q5_0(src, dst, k, 1);
    else repack_row(dtype, src, dst, k, 1);
}
void skd_quant_unpack_row(int dtype, const void *src, void *dst, int64_t k) {
    if (dtype == SKD_DTYPE_Q4_K) repack_q4_k(src, dst, k, 0);
    else if (dtype == SKD_DTYPE_Q6_K) repack_q6_k(src, dst, k, 0);
    else if (dtype == SKD_DTYPE_Q5_0) repack_q5_0(src, dst, k, 0);
    else repack_row(dtype, src, dst, k, 0);
}

void skd_qmat_row_f32(const skd_mat *m, int64_t r, float *dst) {
    const int64_t rb = skd_row_bytes(m->dtype, m->cols);
    const char *row = (const char *)m->data + r * rb;
    if (m->packed) { /* not on a hot path: embeddings are never packed */
        void *tmp = malloc((size_t)rb);
        if (!tmp) return;
        skd_quant_unpack_row(m->dtype, row, tmp, m->cols);
        skd_dequantize_row(m->dtype, tmp, dst, m->cols);
        free(tmp);
        return;
    }
    skd_dequantize_row(m->dtype, row, dst, m->cols);
}

/* ---- the reference row kernels ------------------------------------------------------ */

static float dot_q8_0(const void *wrow, int64_t k, const int8_t *xq, const float *xd) {
    const skd_block_q8_0 *b = wrow;
    float s = 0.f;
    for (int64_t i = 0; i < k / SKD_QK; i++) {
        int isum = 0;
        for (int j = 0; j < SKD_QK; j++) isum += b[i].qs[j] * xq[i * SKD_QK + j];
        s += (float)isum * (skd_half_to_f32(b[i].d) * xd[i]);
    }
    return s;
}

static float dot_q4_0(const void *wrow, int64_t k, const int8_t *xq, const float *xd) {
    const skd_block_q4_0 *b = wrow;
    float s = 0.f;
    for (int64_t i = 0; i < k / SKD_QK; i++) {
        const int8_t *x = xq + i * SKD_QK;
        int isum = 0;
        for (int j = 0; j < SKD_QK / 2; j++)
            isum += ((b[i].qs[j] & 0x0f) - 8) * x[j] + ((b[i].qs[j] >> 4) - 8) * x[j + SKD_QK / 2];
        s += (float)isum * (skd_half_to_f32(b[i].d) * xd[i]);
    }
    return s;
}

static float dot_q5_0(const void *wrow, int64_t k, const int8_t *xq, const float *xd) {
    const skd_block_q5_0 *b = wrow;
    float s = 0.f;
    for (int64_t i = 0; i < k / SKD_QK; i++) {
        const int8_t *x = xq + i * SKD_QK;
        const uint32_t qh = skd_q5_0_high_bits(&b[i]);
        int isum = 0;
        for (int j = 0; j < SKD_QK; j++) isum += skd_q5_0_code(&b[i], qh, j) * x[j];
        s += (float)isum * (skd_half_to_f32(b[i].d) * xd[i]);
    }
    return s;
}

static float dot_q4_k(const void *wrow, int64_t k, const int8_t *xq, const float *xd, const int16_t *bsums) {
    const skd_block_q4_k *b = wrow;
    float s = 0.f;
    for (int64_t i = 0; i < k / SKD_QK_K; i++) {
        const int8_t *x = xq + i * SKD_QK_K;
        const int16_t *bs = bsums + i * 16;
        int sumi = 0, summ = 0;
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            skd_q4k_scale_min(j, b[i].scales, &sc, &m);
            const uint8_t *q = b[i].qs + 32 * (j / 2);
            const int shift = 4 * (j & 1); /* even sub-blocks: low nibbles; odd: high */
            int isum = 0;
            for (int l = 0; l < 32; l++) isum += ((q[l] >> shift) & 0x0f) * x[32 * j + l];
            sumi += sc * isum;
            summ += m * (bs[2 * j] + bs[2 * j + 1]);
        }
        s += xd[i] * (skd_half_to_f32(b[i].d) * (float)sumi - skd_half_to_f32(b[i].dmin) * (float)summ);
    }
    return s;
}

static float dot_q6_k(const void *wrow, int64_t k, const int8_t *xq, const float *xd) {
    const skd_block_q6_k *b = wrow;
    float s = 0.f;
    for (int64_t i = 0; i < k / SKD_QK_K; i++) {
        const int8_t *x = xq + i * SKD_QK_K;
        uint8_t L[SKD_QK_K]; /* the codes in order (value + 32) */
        skd_q6k_codes(&b[i], L);
        int sumi = 0;
        for (int j = 0; j < 16; j++) { /* sub-block j: values 16j..16j+15 */
            int isum = 0;
            for (int t = 0; t < 16; t++) isum += ((int)L[16 * j + t] - 32) * x[16 * j + t];
            sumi += b[i].scales[j] * isum;
        }
        s += xd[i] * (skd_half_to_f32(b[i].d) * (float)sumi);
    }
    return s;
}

/* A packed matrix's rows are unpacked to ggml's blocks first (the reference reads only those). */
#define PORTABLE_ROWS(T, CALL)                                                                                  \
    static void rows_##T(const skd_mat *w, long r0, long r1, const skd_qact *a, int m, float *out, long n,     \
                         const float *bias, int relu) {                                                         \
        const int64_t k = w->cols, rb = skd_row_bytes(w->dtype, k);                                            \
        void *tmp = w->packed ? malloc((size_t)rb) : NULL;                                                      \
        if (w->packed && !tmp) return;                                                                          \
        for (long r = r0; r < r1; r++) {                                                                        \
            const void *wr = (const char *)w->data + r * rb;                                                    \
            if (tmp) skd_quant_unpack_row(w->dtype, wr, tmp, k), wr = tmp;                                     \
            for (int i = 0; i < m; i++) skd_qput(out + (size_t)i * n + r, CALL, bias, r, relu);                \
        }                                                                                                       \
        free(tmp);                                                                                              \
    }

PORTABLE_ROWS(q8_0, dot_q8_0(wr, k, a->qs + (size_t)i * k, a->d + (size_t)i * (k / SKD_QK)))
PORTABLE_ROWS(q4_0, dot_q4_0(wr, k, a->qs + (size_t)i * k, a->d + (size_t)i * (k / SKD_QK)))
PORTABLE_ROWS(q5_0, dot_q5_0(wr, k, a->qs + (size_t)i * k, a->d + (size_t)i * (k / SKD_QK)))
PORTABLE_ROWS(q4_k, dot_q4_k(wr, k, a->qs + (size_t)i * k, a->d + (size_t)i * (k / SKD_QK_K), a->bsums + (size_t)i * (k / 16)))
PORTABLE_ROWS(q6_k, dot_q6_k(wr, k, a->qs + (size_t)i * k, a->d + (size_t)i * (k / SKD_QK_K)))

skd_qrows_fn *skd_qrows_portable(int dtype) {
    switch (dtype) {
    case SKD_DTYPE_Q8_0: return rows_q8_0;
    case SKD_DTYPE_Q4_0: return rows_q4_0;
    case SKD_DTYPE_Q5_0: return rows_q5_0;
    case SKD_DTYPE_Q4_K: return rows_q4_k;
    default: return rows_q6_k;
    }
}

/* ---- the ABI's quantization entry points -------------------------------------------- */

SKD_API int skd_dtype_row_bytes(int32_t dtype, int64_t cols, int64_t *out) {
    return skd_dtype_row_bytes_impl(dtype, cols, out);
}

SKD_API int skd_dequantize(int32_t dtype, const void *src, int64_t rows, int64_t cols, float *dst) {
    return skd_dequantize_impl(dtype, src, rows, cols, dst);
}

typedef struct {
    int dtype;
    const float *src;
    int64_t rows, cols;
    void *dst;
    int64_t bad_row[64]; /* per thread: first row that failed, or -1 */
} quantize_args;

static void encode_task(void *ctx, int ith, int nth) {
    quantize_args *a = ctx;
    long r0, r1;
    skd_split((long)a->rows, ith, nth, &r0, &r1);
    a->bad_row[ith] = -1;
    for (long r = r0; r < r1; r++) {
        if (skd_quantize_rows(a->dtype, a->src, a->cols, a->dst, r, r + 1)) {
            a->bad_row[ith] = r;
            return;
        }
    }
}

SKD_API int skd_quantize(int32_t dtype, const float *src, int64_t rows, int64_t cols, void *dst, int64_t dst_bytes) {
    int st = skd_quantize_check(dtype, src, rows, cols, dst, dst_bytes);
    if (st) return st;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int nth = cores < 1 ? 1 : cores > 64 ? 64 : (int)cores;
    if (rows * cols < (1 << 16) || rows < nth) nth = 1;
    if (nth == 1) return skd_quantize_rows(dtype, src, cols, dst, 0, rows);
    skd_pool *pool = skd_pool_create(nth);
    if (!pool) return skd_quantize_rows(dtype, src, cols, dst, 0, rows);
    quantize_args a = { dtype, src, rows, cols, dst, { 0 } };
    skd_pool_run(pool, encode_task, &a);
    skd_pool_free(pool);
    for (int i = 0; i < nth; i++) /* the message is thread-local: redo the failing row here */
        if (a.bad_row[i] >= 0) return skd_quantize_rows(dtype, src, cols, dst, a.bad_row[i], a.bad_row[i] + 1);
    return SKD_OK;
}

/* ---- kernel choice ------------------------------------------------------------- */

const char *skd_qkernel_name(int qk) {
    switch (qk) {
    case SKD_QKERNEL_PORTABLE: return "portable";
    case SKD_QKERNEL_AVX2: return "avx2";
    case SKD_QKERNEL_AVX2_VNNI: return "avx2-vnni";
    case SKD_QKERNEL_AVX512: return "avx512";
    case SKD_QKERNEL_AVX512_VNNI: return "avx512-vnni";
    case SKD_QKERNEL_F32: return "f32-activations";
    default: return "unknown";
    }
}

int skd_qkernel_supported(int qk) {
    if (qk == SKD_QKERNEL_PORTABLE || qk == SKD_QKERNEL_F32) return 1;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    const int avx2 = skd_kernel_supported(SKD_KERNEL_AVX2);
    const int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                       __builtin_cpu_supports("avx512vl") && avx2;
    switch (qk) {
    case SKD_QKERNEL_AVX2: return avx2;
    case SKD_QKERNEL_AVX2_VNNI: return avx2 && __builtin_cpu_supports("avxvnni");
    case SKD_QKERNEL_AVX512: return avx512;
    case SKD_QKERNEL_AVX512_VNNI: return avx512 && __builtin_cpu_supports("avx512vnni");
    default: return 0;
    }
#else
    return 0;
#endif
}

static int env_on(const char *name) {
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

int skd_qkernel_for(int kernel) {
    const char *act = getenv("SKIPDECODE_CPU_QUANT_ACT");
    if (act && !strcmp(act, "f32")) return SKD_QKERNEL_F32;
    if (kernel == SKD_KERNEL_PORTABLE) return SKD_QKERNEL_PORTABLE;
    /* the AVX-512 kernels are slower than the packed AVX2 ones where they have run: opt-in (quant.h) */
    if (kernel == SKD_KERNEL_AVX512 && env_on("SKIPDECODE_CPU_QUANT_AVX512")) {
        if (skd_qkernel_supported(SKD_QKERNEL_AVX512_VNNI)) return SKD_QKERNEL_AVX512_VNNI;
        if (skd_qkernel_supported(SKD_QKERNEL_AVX512)) return SKD_QKERNEL_AVX512;
    }
    if (skd_qkernel_supported(SKD_QKERNEL_AVX2_VNNI)) return SKD_QKERNEL_AVX2_VNNI;
    if (skd_qkernel_supported(SKD_QKERNEL_AVX2)) return SKD_QKERNEL_AVX2;
    return SKD_QKERNEL_PORTABLE;
}

/* The row kernel of qk for w; a matrix in the other layout than qk reads (packed or not) goes to
 * the portable reference, which reads both. */
static skd_qrows_fn *rows_fn(int qk, const skd_mat *w) {
#if defined(__x86_64__) || defined(__i386__)
    if (!skd_quant_packable(w->dtype) || w->packed == skd_qkernel_packs(qk)) {
        switch (qk) {
        case SKD_QKERNEL_AVX2: return skd_qrows_avx2(w->dtype, 0);
        case SKD_QKERNEL_AVX2_VNNI: return skd_qrows_avx2(w->dtype, 1);
        case SKD_QKERNEL_AVX512: return skd_qrows_avx512(w->dtype, 0);
        case SKD_QKERNEL_AVX512_VNNI: return skd_qrows_avx512(w->dtype, 1);
        default: break;
        }
    }
#endif
    return skd_qrows_portable(w->dtype);
}

/* ---- the matmul ------------------------------------------------------------------- */

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

size_t skd_qact_bytes(int m, int64_t k) {
    return align64((size_t)m * (size_t)k) + align64(sizeof(float) * (size_t)m * (size_t)(k / 32)) +
           align64(sizeof(int16_t) * (size_t)m * (size_t)(k / 16));
}

typedef struct {
    int qkernel;
    skd_qact act;
    const float *x;
    int m;
    int64_t k;
    int kform; /* activations in K form (256-blocks) */
    int words; /* activations word-transposed (packed weights) */
    const skd_mm_job *jobs;
    int n;
} qmm_args;

static int is_kquant(int dtype) { return dtype == SKD_DTYPE_Q4_K || dtype == SKD_DTYPE_Q6_K; }

int skd_qmat_same_act(int qkernel, const skd_mat *a, const skd_mat *b) {
    if (!skd_dtype_is_quant(a->dtype) || !skd_dtype_is_quant(b->dtype) || a->cols != b->cols) return 0;
    if (qkernel == SKD_QKERNEL_F32) return 1; /* x itself */
    return is_kquant(a->dtype) == is_kquant(b->dtype) && a->packed == b->packed; /* packed K-quants: K words */
}

/* Activation row i of a (block-32 or K form). */
static void quantize_act_row(const qmm_args *a, int i) {
    const int64_t k = a->k;
#if defined(__x86_64__) || defined(__i386__)
    if (a->qkernel != SKD_QKERNEL_PORTABLE && a->qkernel != SKD_QKERNEL_F32) { /* the same bytes, faster */
        const int form = a->kform ? (a->words ? SKD_ACT_K_WORDS : SKD_ACT_K) : a->words ? SKD_ACT_32_WORDS : SKD_ACT_32;
        skd_quantize_act_avx2(a->x + (size_t)i * k, k, form, a->act.qs + (size_t)i * k,
                              a->act.d + (size_t)i * (a->kform ? k / SKD_QK_K : k / SKD_QK), a->act.bsums + (size_t)i * (k / 16));
        return;
    }
#endif
    if (a->kform)
        skd_quantize_act256(a->x + (size_t)i * k, k, a->act.qs + (size_t)i * k, a->act.d + (size_t)i * (k / SKD_QK_K),
                            a->act.bsums + (size_t)i * (k / 16));
    else
        skd_quantize_act32(a->x + (size_t)i * k, k, a->act.qs + (size_t)i * k, a->act.d + (size_t)i * (k / SKD_QK),
                           a->act.bsums + (size_t)i * (k / 16));
}

static void quantize_task(void *ctx, int ith, int nth) {
    const qmm_args *a = ctx;
    long i0, i1;
    skd_split(a->m, ith, nth, &i0, &i1);
    for (long i = i0; i < i1; i++) quantize_act_row(a, (int)i);
}

/* The f32-activation path: each weight row dequantized, then dotted with x in fp32. */
static void rows_f32act(const skd_mm_job *job, const float *xs, int m, long r0, long r1) {
    const skd_mat *w = job->w;
    const int64_t k = w->cols, rb = skd_row_bytes(w->dtype, k), n = w->rows;
    float *row = malloc(sizeof(float) * (size_t)k);
    if (!row) return; /* out of memory for one row: leaves out unchanged */
    void *tmp = w->packed ? malloc((size_t)rb) : NULL;
    for (long r = r0; r < r1; r++) {
        const void *wr = (const char *)w->data + r * rb;
        if (tmp) skd_quant_unpack_row(w->dtype, wr, tmp, k), wr = tmp;
        skd_dequantize_row(w->dtype, wr, row, k);
        for (int i = 0; i < m; i++) {
            const float *x = xs + (size_t)i * k;
            float s = 0.f;
            for (int64_t j = 0; j < k; j++) s += row[j] * x[j];
            skd_qput(job->out + (size_t)i * n + r, s, job->bias, r, job->relu);
        }
    }
    free(tmp);
    free(row);
}

/* x tiles of this many rows share one pass over a thread's weight rows (kept in L2). */
static int act_tile(int64_t k) {
    int t = (int)((128 * 1024) / k);
    return t < 4 ? 4 : t / 4 * 4;
}

/* Rows [g0, g1) of the jobs' rows counted as one run (job 0's, then job 1's, ...). */
static void rows_range(void *ctx, long g0, long g1) {
    const qmm_args *a = ctx;
    long off = 0;
    const int64_t k = a->k, nd = a->kform ? k / SKD_QK_K : k / SKD_QK;
    const int tile = act_tile(k);
    for (int j = 0; j < a->n && off < g1; j++) {
        const skd_mm_job *job = &a->jobs[j];
        const skd_mat *w = job->w;
        const long nr = (long)w->rows, r0 = g0 > off ? g0 - off : 0, r1 = g1 - off < nr ? g1 - off : nr;
        off += nr;
        if (r0 >= r1) continue;
        if (a->qkernel == SKD_QKERNEL_F32) {
            rows_f32act(job, a->x, a->m, r0, r1);
            continue;
        }
        skd_qrows_fn *fn = rows_fn(a->qkernel, w);
        for (int t0 = 0; t0 < a->m; t0 += tile) {
            const int mt = a->m - t0 < tile ? a->m - t0 : tile;
            const skd_qact at = { a->act.qs + (size_t)t0 * k, a->act.d + (size_t)t0 * nd, a->act.bsums + (size_t)t0 * (k / 16) };
            fn(w, r0, r1, &at, mt, job->out + (size_t)t0 * nr, nr, job->bias, job->relu);
        }
    }
}

void skd_qmatmul_n(skd_pool *pool, int qkernel, void *scratch, const float *x, int m, const skd_mm_job *jobs, int n) {
    if (m <= 0 || n <= 0) return;
    const skd_mat *w = jobs[0].w;
    const int64_t k = w->cols;
    char *s = scratch;
    qmm_args a = { qkernel, { 0 }, x, m, k, is_kquant(w->dtype), skd_qkernel_packs(qkernel) && w->packed, jobs, n };
    if (qkernel != SKD_QKERNEL_F32) {
        a.act.qs = (int8_t *)s;
        a.act.d = (float *)(s + align64((size_t)m * (size_t)k));
        a.act.bsums = (int16_t *)(s + align64((size_t)m * (size_t)k) + align64(sizeof(float) * (size_t)m * (size_t)(k / 32)));
        if (m < 4) /* decode: one row is quicker here than a round trip through the pool */
            for (int i = 0; i < m; i++) quantize_act_row(&a, i);
        else
            skd_pool_run(pool, quantize_task, &a);
    }
    long total = 0;
    for (int j = 0; j < n; j++) total += (long)jobs[j].w->rows;
    skd_pool_run_range(pool, total, SKD_CHUNK_BYTES / (long)skd_row_bytes(w->dtype, k), rows_range, &a);
}

void skd_qmatmul(skd_pool *pool, int qkernel, void *scratch, float *out, const float *x, int m, const skd_mat *w,
                 const float *bias, int relu) {
    const skd_mm_job job = { out, w, bias, relu };
    skd_qmatmul_n(pool, qkernel, scratch, x, m, &job, 1);
}
