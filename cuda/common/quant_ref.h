/*
 * quant_ref.h — the quantized weight formats, written once: ggml's block
 * layouts bit for bit (ggml-common.h), the plain reference dequantizer of each,
 * and our quantizer. Header-only, C and C++: the CPU engine (cuda/cpu/quant.c,
 * its kernels) and the CUDA engine's host code (cuda/gpu/engine.cu, which
 * dequantizes to fp16 on load) include it, so both read a file's bytes as the
 * same numbers, and the CPU tests cover the CUDA engine's dequantizer.
 *
 * A quantized [rows, cols] tensor is row-major: rows × (cols / block) blocks,
 * each row's blocks contiguous. cols must be a multiple of the block.
 *
 *   type   block  bytes  bits/weight  element i of a block
 *   Q8_0    32     34     8.5         x = d · qs[i]                      (d fp16, qs int8)
 *   Q4_0    32     18     4.5         x = d · (q − 8), q = nibble i:     low nibbles of qs[0..15]
 *                                     are elements 0..15, high nibbles 16..31
 *   Q5_0    32     22     5.5         x = d · (q − 16), q = nibble i as Q4_0's, plus bit i of
 *                                     qh (read as a little-endian uint32) as its fifth bit
 *   Q4_K   256    144     4.5         8 sub-blocks of 32, each with a 6-bit scale sc_j and
 *                                     min m_j: x = d·sc_j·q − dmin·m_j (d, dmin fp16, q 4 bits);
 *                                     the 64 values 64c..64c+63 share qs[32c..32c+31]: low
 *                                     nibbles are sub-block 2c, high nibbles 2c+1
 *   Q6_K   256    210     6.5625      16 sub-blocks of 16 with an int8 scale sc_j:
 *                                     x = d·sc_j·(q − 32), q 6 bits (4 in ql, 2 in qh; see
 *                                     skd_q6k_codes for the bit positions)
 *
 * Dequantization follows ggml's arithmetic order exactly (fp32 products left
 * to right, no fused multiply-add), so a dequantized value is bit for bit
 * ggml's. Quantization is ours (round to nearest with a small least-squares
 * search for the K-quant scales and mins); any encoder's blocks decode the same.
 */
#ifndef SKD_QUANT_REF_H
#define SKD_QUANT_REF_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "plan.h"
#include "skipdecode.h"

#ifdef __cplusplus
#define SKD_STATIC_ASSERT(c, m) static_assert(c, m)
extern "C" {
#else
#define SKD_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif

#define SKD_QK 32    /* elements of a Q8_0 / Q4_0 block */
#define SKD_QK_K 256 /* elements of a K-quant super-block */

typedef struct {
    uint16_t d;          /* scale, fp16 */
    int8_t qs[SKD_QK];
} skd_block_q8_0;
SKD_STATIC_ASSERT(sizeof(skd_block_q8_0) == 34, "Q8_0 block is 34 bytes");

typedef struct {
    uint16_t d;              /* scale, fp16 */
    uint8_t qs[SKD_QK / 2];  /* element j: low nibble of qs[j]; element j + 16: high nibble */
} skd_block_q4_0;
SKD_STATIC_ASSERT(sizeof(skd_block_q4_0) == 18, "Q4_0 block is 18 bytes");

typedef struct {
    uint16_t d;              /* scale, fp16 */
    uint8_t qh[4];           /* bit j (of the little-endian uint32): element j's fifth bit */
    uint8_t qs[SKD_QK / 2];  /* low 4 bits, as Q4_0's */
} skd_block_q5_0;
SKD_STATIC_ASSERT(sizeof(skd_block_q5_0) == 22, "Q5_0 block is 22 bytes");

typedef struct {
    uint16_t d;               /* scale of the sub-block scales, fp16 */
    uint16_t dmin;            /* scale of the sub-block mins, fp16 */
    uint8_t scales[12];       /* 8 six-bit scales and 8 six-bit mins (skd_q4k_scale_min) */
    uint8_t qs[SKD_QK_K / 2]; /* nibbles */
} skd_block_q4_k;
SKD_STATIC_ASSERT(sizeof(skd_block_q4_k) == 144, "Q4_K block is 144 bytes");

typedef struct {
    uint8_t ql[SKD_QK_K / 2];     /* low 4 bits */
    uint8_t qh[SKD_QK_K / 4];     /* high 2 bits */
    int8_t scales[SKD_QK_K / 16]; /* sub-block scales */
    uint16_t d;                   /* super-block scale, fp16 */
} skd_block_q6_k;
SKD_STATIC_ASSERT(sizeof(skd_block_q6_k) == 210, "Q6_K block is 210 bytes");

/* ---- 16-bit floats -------------------------------------------------------- */

static inline float skd_half_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* inf / nan */
    } else if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* fp32 → fp16, round to nearest even; overflow gives ±inf. */
static inline uint16_t skd_f32_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t man = x & 0x7fffffu;
    if (((x >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) { /* subnormal or zero */
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000u;
        const int shift = 14 - exp;
        uint32_t h = man >> shift;
        const uint32_t rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)exp << 10) | (man >> 13);
    const uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++; /* a carry into the exponent is correct */
    return (uint16_t)(sign | h);
}

static inline float skd_bfloat_to_f32(uint16_t b) {
    const uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* fp32 → bf16, round to nearest even (finite inputs). */
static inline uint16_t skd_f32_to_bfloat(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* ---- types ---------------------------------------------------------------- */

/* Bytes per block (per element for the float types), 0 for an unknown dtype. */
static inline int64_t skd_dtype_block_bytes(int dtype) {
    switch (dtype) {
    case SKD_DTYPE_F32: return 4;
    case SKD_DTYPE_F16: case SKD_DTYPE_BF16: return 2;
    case SKD_DTYPE_Q8_0: return (int64_t)sizeof(skd_block_q8_0);
    case SKD_DTYPE_Q4_0: return (int64_t)sizeof(skd_block_q4_0);
    case SKD_DTYPE_Q4_K: return (int64_t)sizeof(skd_block_q4_k);
    case SKD_DTYPE_Q6_K: return (int64_t)sizeof(skd_block_q6_k);
    case SKD_DTYPE_Q5_0: return (int64_t)sizeof(skd_block_q5_0);
    default: return 0;
    }
}

/* Bytes of one row of `cols` elements (no checks: a known dtype, cols a multiple of its block). */
static inline int64_t skd_row_bytes(int dtype, int64_t cols) {
    return cols / skd_dtype_block(dtype) * skd_dtype_block_bytes(dtype);
}

/* skd_dtype_row_bytes's checks of a [rows, cols] tensor of dtype. */
static inline int skd_check_row(int dtype, int64_t rows, int64_t cols) {
    const int64_t block = skd_dtype_block(dtype);
    if (!block)
        return skd_fail(SKD_ERR_INVALID_ARG, "unknown dtype %d (F32 1, F16 2, BF16 3, Q8_0 4, Q4_0 5, Q4_K 6, Q6_K 7, Q5_0 8)", dtype);
    if (rows < 0 || cols < 1)
        return skd_fail(SKD_ERR_INVALID_ARG, "shape [%lld, %lld] must have rows >= 0 and cols >= 1", (long long)rows,
                        (long long)cols);
    if (cols % block)
        return skd_fail(SKD_ERR_INVALID_ARG, "shape [%lld, %lld]: %s needs a row length (cols) that is a multiple of %lld",
                        (long long)rows, (long long)cols, skd_dtype_name(dtype), (long long)block);
    if (rows > 0 && skd_row_bytes(dtype, cols) > INT64_MAX / rows)
        return skd_fail(SKD_ERR_INVALID_ARG, "shape [%lld, %lld] is too large", (long long)rows, (long long)cols);
    return SKD_OK;
}

/* ---- dequantization (the reference: ggml's arithmetic, in its order) ------- */

static inline void skd_dequantize_row_q8_0(const void *src, float *y, int64_t k) {
    const skd_block_q8_0 *b = (const skd_block_q8_0 *)src;
    for (int64_t i = 0; i < k / SKD_QK; i++) {
        const float d = skd_half_to_f32(b[i].d);
        for (int j = 0; j < SKD_QK; j++) y[i * SKD_QK + j] = (float)b[i].qs[j] * d;
    }
}

static inline void skd_dequantize_row_q4_0(const void *src, float *y, int64_t k) {
    const skd_block_q4_0 *b = (const skd_block_q4_0 *)src;
    for (int64_t i = 0; i < k / SKD_QK; i++) {
        const float d = skd_half_to_f32(b[i].d);
        for (int j = 0; j < SKD_QK / 2; j++) {
            y[i * SKD_QK + j] = (float)((b[i].qs[j] & 0x0f) - 8) * d;
            y[i * SKD_QK + j + SKD_QK / 2] = (float)((b[i].qs[j] >> 4) - 8) * d;
        }
    }
}

/* The little-endian uint32 of a Q5_0 block's qh bytes. */
static inline uint32_t skd_q5_0_high_bits(const skd_block_q5_0 *b) {
    return (uint32_t)b->qh[0] | (uint32_t)b->qh[1] << 8 | (uint32_t)b->qh[2] << 16 | (uint32_t)b->qh[3] << 24;
}

/* Element j (0..31) of a Q5_0 block as its signed code q − 16 (qh: skd_q5_0_high_bits). */
static inline int skd_q5_0_code(const skd_block_q5_0 *b, uint32_t qh, int j) {
    const int nib = j < SKD_QK / 2 ? b->qs[j] & 0x0f : b->qs[j - SKD_QK / 2] >> 4;
    return (int)(nib | ((qh >> j) & 1) << 4) - 16;
}

static inline void skd_dequantize_row_q5_0(const void *src, float *y, int64_t k) {
    const skd_block_q5_0 *b = (const skd_block_q5_0 *)src;
    for (int64_t i = 0; i < k / SKD_QK; i++) {
        const float d = skd_half_to_f32(b[i].d);
        const uint32_t qh = skd_q5_0_high_bits(&b[i]);
        for (int j = 0; j < SKD_QK; j++) y[i * SKD_QK + j] = (float)skd_q5_0_code(&b[i], qh, j) * d;
    }
}

/* Scale and min of sub-block j (0..7) from a Q4_K block's 12 scale bytes:
 * j < 4: the low 6 bits of bytes j (scale) and j + 4 (min); j >= 4: the
 * nibbles of byte j + 4 (scale low, min high) topped by the 2 high bits of
 * bytes j − 4 (scale) and j (min). */
static inline void skd_q4k_scale_min(int j, const uint8_t *s, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4));
        *m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

static inline void skd_dequantize_row_q4_k(const void *src, float *y, int64_t k) {
    const skd_block_q4_k *b = (const skd_block_q4_k *)src;
    for (int64_t i = 0; i < k / SKD_QK_K; i++) {
        const float d = skd_half_to_f32(b[i].d), dmin = skd_half_to_f32(b[i].dmin);
        for (int c = 0; c < 4; c++) { /* 64 values: sub-blocks 2c (low nibbles) and 2c + 1 (high) */
            uint8_t sc, m;
            skd_q4k_scale_min(2 * c, b[i].scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            skd_q4k_scale_min(2 * c + 1, b[i].scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            const uint8_t *q = b[i].qs + 32 * c;
            float *o = y + i * SKD_QK_K + 64 * c;
            for (int l = 0; l < 32; l++) {
                const float p1 = d1 * (float)(q[l] & 0x0f), p2 = d2 * (float)(q[l] >> 4);
                o[l] = p1 - m1;
                o[l + 32] = p2 - m2;
            }
        }
    }
}

/* A Q6_K block's 256 unsigned 6-bit codes (value + 32) in order, out of its ql and qh, and back in.
 * Value v (0..255): half h = v / 128, l = v % 32, r = (v % 128) / 32; low 4 bits: ql[64h + l + 32·(r & 1)],
 * low nibble for r < 2, high for r >= 2; high 2 bits: bits 2r..2r+1 of qh[32h + l]; scale: scales[v / 16]. */
static inline void skd_q6k_codes(const skd_block_q6_k *b, uint8_t L[256]) {
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        for (int l = 0; l < 32; l++)
            for (int r = 0; r < 4; r++)
                L[128 * h + 32 * r + l] = (uint8_t)(((r < 2 ? ql[l + 32 * (r & 1)] & 0x0f : ql[l + 32 * (r & 1)] >> 4)) | ((qh[l] >> (2 * r)) & 3) << 4);
    }
}
static inline void skd_q6k_set_codes(skd_block_q6_k *b, const uint8_t L[256]) {
    for (int h = 0; h < 2; h++) {
        const uint8_t *Lh = L + 128 * h;
        for (int l = 0; l < 32; l++) {
            b->ql[64 * h + l] = (uint8_t)((Lh[l] & 0x0f) | ((Lh[l + 64] & 0x0f) << 4));
            b->ql[64 * h + l + 32] = (uint8_t)((Lh[l + 32] & 0x0f) | ((Lh[l + 96] & 0x0f) << 4));
            b->qh[32 * h + l] = (uint8_t)((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6));
        }
    }
}

/* Q6_K: x = d · scales[v / 16] · (code − 32), the codes from skd_q6k_codes. */
static inline void skd_dequantize_row_q6_k(const void *src, float *y, int64_t k) {
    const skd_block_q6_k *b = (const skd_block_q6_k *)src;
    for (int64_t i = 0; i < k / SKD_QK_K; i++) {
        const float d = skd_half_to_f32(b[i].d);
        uint8_t L[SKD_QK_K];
        skd_q6k_codes(&b[i], L);
        for (int v = 0; v < SKD_QK_K; v++) y[i * SKD_QK_K + v] = (d * (float)b[i].scales[v / 16]) * (float)((int)L[v] - 32);
    }
}

/* dst[0..k) = one row of `dtype` (any of the eight) as fp32. */
static inline void skd_dequantize_row(int dtype, const void *src, float *dst, int64_t k) {
    switch (dtype) {
    case SKD_DTYPE_F32: memcpy(dst, src, sizeof(float) * (size_t)k); break;
    case SKD_DTYPE_F16:
        for (int64_t i = 0; i < k; i++) dst[i] = skd_half_to_f32(((const uint16_t *)src)[i]);
        break;
    case SKD_DTYPE_BF16:
        for (int64_t i = 0; i < k; i++) dst[i] = skd_bfloat_to_f32(((const uint16_t *)src)[i]);
        break;
    case SKD_DTYPE_Q8_0: skd_dequantize_row_q8_0(src, dst, k); break;
    case SKD_DTYPE_Q4_0: skd_dequantize_row_q4_0(src, dst, k); break;
    case SKD_DTYPE_Q4_K: skd_dequantize_row_q4_k(src, dst, k); break;
    case SKD_DTYPE_Q6_K: skd_dequantize_row_q6_k(src, dst, k); break;
    case SKD_DTYPE_Q5_0: skd_dequantize_row_q5_0(src, dst, k); break;
    default: break;
    }
}

/* ---- quantization -------------------------------------------------------------- */

static inline int skd_nearest(float x) { return (int)lrintf(x); }
/* max / min of finite values (fmaxf is a libm call on x86-64: its NaN rule is not maxss's) */
static inline float skd_maxf(float a, float b) { return a > b ? a : b; }
static inline float skd_minf(float a, float b) { return a < b ? a : b; }
static inline int skd_clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Q8_0: d = max|x| / 127, q = round(x / d) with d as stored (fp16). */
static inline void skd_quantize_block_q8_0(const float *x, skd_block_q8_0 *b) {
    float amax = 0.f;
    for (int j = 0; j < SKD_QK; j++) amax = skd_maxf(amax, fabsf(x[j]));
    b->d = skd_f32_to_half(amax / 127.f);
    const float d = skd_half_to_f32(b->d), id = d > 0.f ? 1.f / d : 0.f;
    for (int j = 0; j < SKD_QK; j++) b->qs[j] = (int8_t)skd_clampi(skd_nearest(x[j] * id), -128, 127);
}

/* Q4_0 and Q5_0 (offset 8 or 16): the value of largest magnitude maps to q − offset = −offset
 * (d = that value / −offset, stored as fp16), the rest round to nearest against the stored d;
 * q[0..32) in 0..2·offset − 1. Returns the fp16 d. */
static inline uint16_t skd_quantize_offset_codes(const float *x, int offset, int *q) {
    float amax = 0.f, max = 0.f;
    for (int j = 0; j < SKD_QK; j++)
        if (fabsf(x[j]) > amax) amax = fabsf(x[j]), max = x[j];
    const uint16_t h = skd_f32_to_half(max / (float)-offset);
    const float d = skd_half_to_f32(h), id = d != 0.f ? 1.f / d : 0.f;
    for (int j = 0; j < SKD_QK; j++) q[j] = skd_clampi(skd_nearest(x[j] * id) + offset, 0, 2 * offset - 1);
    return h;
}

static inline void skd_quantize_block_q4_0(const float *x, skd_block_q4_0 *b) {
    int q[SKD_QK];
    b->d = skd_quantize_offset_codes(x, 8, q);
    for (int j = 0; j < SKD_QK / 2; j++) b->qs[j] = (uint8_t)(q[j] | (q[j + SKD_QK / 2] << 4));
}

static inline void skd_quantize_block_q5_0(const float *x, skd_block_q5_0 *b) {
    int q[SKD_QK];
    b->d = skd_quantize_offset_codes(x, 16, q);
    uint32_t qh = 0;
    for (int j = 0; j < SKD_QK / 2; j++) {
        const int q0 = q[j], q1 = q[j + SKD_QK / 2];
        b->qs[j] = (uint8_t)((q0 & 0x0f) | (q1 & 0x0f) << 4);
        qh |= (uint32_t)(q0 >> 4) << j | (uint32_t)(q1 >> 4) << (j + 16);
    }
    for (int t = 0; t < 4; t++) b->qh[t] = (uint8_t)(qh >> (8 * t));
}

/* x[0..32) ≈ a·q − m, q in 0..15, a >= 0, m >= 0 (the min is never above 0):
 * least squares weighted by w, over a sweep of 11 steps a around
 * (max − min) / 15 (each candidate's q refitted to a and m; its error comes
 * from the weighted sums, without a second pass over x). */
static inline void skd_fit_q4k_sub(const float *x, const float *w, float *a_out, float *m_out) {
    float lo = x[0], hi = x[0], sw = 0.f, sx = 0.f, sxx = 0.f;
    for (int i = 0; i < 32; i++) {
        lo = skd_minf(lo, x[i]), hi = skd_maxf(hi, x[i]);
        sw += w[i], sx += w[i] * x[i], sxx += w[i] * x[i] * x[i];
    }
    if (lo > 0.f) lo = 0.f;
    if (hi == lo) {
        *a_out = 0.f;
        *m_out = -lo;
        return;
    }
    float best_a = (hi - lo) / 15.f, best_b = lo, best_err = INFINITY;
    for (int t = -5; t <= 5; t++) {
        const float is = (15.f + 0.2f * (float)t) / (hi - lo);
        float p[3][4] = { { 0 } }; /* four partial sums each: short dependency chains */
        for (int i = 0; i < 32; i++) {
            const float l = (float)skd_clampi(skd_nearest((x[i] - lo) * is), 0, 15);
            p[0][i & 3] += w[i] * l, p[1][i & 3] += w[i] * l * l, p[2][i & 3] += w[i] * x[i] * l;
        }
        const float sl = (p[0][0] + p[0][1]) + (p[0][2] + p[0][3]), sll = (p[1][0] + p[1][1]) + (p[1][2] + p[1][3]);
        const float sxl = (p[2][0] + p[2][1]) + (p[2][2] + p[2][3]);
        const float D = sw * sll - sl * sl;
        if (!(D > 0.f)) continue;
        float a = (sw * sxl - sx * sl) / D, b = (sll * sx - sl * sxl) / D;
        if (b > 0.f) b = 0.f, a = sxl / sll;
        if (!(a > 0.f)) continue;
        /* Σ w (a·l + b − x)² from the sums */
        const float err = a * a * sll + 2.f * a * b * sl + b * b * sw - 2.f * a * sxl - 2.f * b * sx + sxx;
        if (err < best_err) best_err = err, best_a = a, best_b = b;
    }
    *a_out = best_a;
    *m_out = -best_b;
}

static inline void skd_quantize_block_q4_k(const float *x, skd_block_q4_k *b) {
    float a[8], m[8], w[32], amax = 0.f, mmax = 0.f;
    for (int j = 0; j < 8; j++) {
        const float *xs = x + 32 * j;
        float ss = 0.f;
        for (int i = 0; i < 32; i++) ss += xs[i] * xs[i];
        const float rms = sqrtf(ss / 32.f);
        for (int i = 0; i < 32; i++) w[i] = rms + fabsf(xs[i]); /* favour the larger values */
        skd_fit_q4k_sub(xs, w, &a[j], &m[j]);
        amax = skd_maxf(amax, a[j]);
        mmax = skd_maxf(mmax, m[j]);
    }
    b->d = skd_f32_to_half(amax / 63.f);
    b->dmin = skd_f32_to_half(mmax / 63.f);
    const float d = skd_half_to_f32(b->d), dmin = skd_half_to_f32(b->dmin);
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; j++) {
        ls[j] = (uint8_t)(d > 0.f ? skd_clampi(skd_nearest(a[j] / d), 0, 63) : 0);
        lm[j] = (uint8_t)(dmin > 0.f ? skd_clampi(skd_nearest(m[j] / dmin), 0, 63) : 0);
    }
    memset(b->scales, 0, sizeof b->scales);
    for (int j = 0; j < 8; j++) { /* the packing skd_q4k_scale_min reads */
        if (j < 4) {
            b->scales[j] |= ls[j];
            b->scales[j + 4] |= lm[j];
        } else {
            b->scales[j + 4] = (uint8_t)((ls[j] & 0x0f) | ((lm[j] & 0x0f) << 4));
            b->scales[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            b->scales[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
    uint8_t L[SKD_QK_K];
    for (int j = 0; j < 8; j++) { /* q against the scale and min as stored */
        const float s = d * (float)ls[j], mm = dmin * (float)lm[j];
        for (int i = 0; i < 32; i++)
            L[32 * j + i] = (uint8_t)(s > 0.f ? skd_clampi(skd_nearest((x[32 * j + i] + mm) / s), 0, 15) : 0);
    }
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) b->qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
}

/* x[0..16) ≈ s·q, q in −32..31: the scale s minimising Σ x²·(x − s·q)², over a
 * sweep of 9 candidates that map the value of largest magnitude near −32. */
static inline float skd_fit_q6k_sub(const float *x) {
    float amax = 0.f, max = 0.f;
    for (int i = 0; i < 16; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), max = x[i];
    if (amax == 0.f) return 0.f;
    float best = -1.f, best_s = max / -32.f;
    for (int t = -4; t <= 4; t++) {
        const float is = -(32.f + 0.2f * (float)t) / max;
        float p[2][4] = { { 0 } }; /* four partial sums each: short dependency chains */
        for (int i = 0; i < 16; i++) {
            const float l = (float)skd_clampi(skd_nearest(x[i] * is), -32, 31), w = x[i] * x[i];
            p[0][i & 3] += w * x[i] * l;
            p[1][i & 3] += w * l * l;
        }
        const float sxl = (p[0][0] + p[0][1]) + (p[0][2] + p[0][3]), sll = (p[1][0] + p[1][1]) + (p[1][2] + p[1][3]);
        if (sll > 0.f && sxl * sxl / sll > best) best = sxl * sxl / sll, best_s = sxl / sll;
    }
    return best_s;
}

static inline void skd_quantize_block_q6_k(const float *x, skd_block_q6_k *b) {
    float s[16], smax = 0.f, sabs = 0.f;
    for (int j = 0; j < 16; j++) {
        s[j] = skd_fit_q6k_sub(x + 16 * j);
        if (fabsf(s[j]) > sabs) sabs = fabsf(s[j]), smax = s[j];
    }
    memset(b, 0, sizeof *b);
    b->d = skd_f32_to_half(smax / -128.f); /* the largest sub-block scale becomes −128 */
    const float d = skd_half_to_f32(b->d);
    uint8_t L[SKD_QK_K];
    for (int j = 0; j < 16; j++) {
        const int sc = d != 0.f ? skd_clampi(skd_nearest(s[j] / d), -128, 127) : 0;
        b->scales[j] = (int8_t)sc;
        const float ds = d * (float)sc;
        for (int i = 0; i < 16; i++)
            L[16 * j + i] = (uint8_t)(ds != 0.f ? skd_clampi(skd_nearest(x[16 * j + i] / ds), -32, 31) + 32 : 32);
    }
    skd_q6k_set_codes(b, L);
}

/* Quantizes rows [r0, r1) of src [rows, cols] into dst (rows × row bytes).
 * Returns SKD_OK, or SKD_ERR_INVALID_ARG naming the first value that is not
 * finite or a block whose scale overflows fp16. */
static inline int skd_quantize_rows(int dtype, const float *src, int64_t cols, void *dst, int64_t r0, int64_t r1) {
    const int64_t rb = skd_row_bytes(dtype, cols), block = skd_dtype_block(dtype), bb = skd_dtype_block_bytes(dtype);
    for (int64_t r = r0; r < r1; r++) {
        const float *x = src + r * cols;
        char *o = (char *)dst + r * rb;
        for (int64_t c = 0; c < cols; c++)
            if (!isfinite(x[c]))
                return skd_fail(SKD_ERR_INVALID_ARG, "value at row %lld, column %lld is %g (not finite)",
                                (long long)r, (long long)c, (double)x[c]);
        for (int64_t i = 0; i < cols / block; i++) {
            const float *xb = x + i * block;
            void *ob = o + i * bb;
            uint16_t d = 0, d2 = 0;
            switch (dtype) {
            case SKD_DTYPE_F32: memcpy(ob, xb, 4); break;
            case SKD_DTYPE_F16: d = skd_f32_to_half(*xb), memcpy(ob, &d, 2); break;
            case SKD_DTYPE_BF16: d2 = skd_f32_to_bfloat(*xb), memcpy(ob, &d2, 2), d2 = 0; break;
            case SKD_DTYPE_Q8_0: skd_quantize_block_q8_0(xb, (skd_block_q8_0 *)ob); d = ((skd_block_q8_0 *)ob)->d; break;
            case SKD_DTYPE_Q4_0: skd_quantize_block_q4_0(xb, (skd_block_q4_0 *)ob); d = ((skd_block_q4_0 *)ob)->d; break;
            case SKD_DTYPE_Q4_K:
                skd_quantize_block_q4_k(xb, (skd_block_q4_k *)ob);
                d = ((skd_block_q4_k *)ob)->d, d2 = ((skd_block_q4_k *)ob)->dmin;
                break;
            case SKD_DTYPE_Q6_K: skd_quantize_block_q6_k(xb, (skd_block_q6_k *)ob); d = ((skd_block_q6_k *)ob)->d; break;
            case SKD_DTYPE_Q5_0: skd_quantize_block_q5_0(xb, (skd_block_q5_0 *)ob); d = ((skd_block_q5_0 *)ob)->d; break;
            default: break;
            }
            if ((d & 0x7c00) == 0x7c00 || (d2 & 0x7c00) == 0x7c00) {
                float amax = 0.f;
                for (int64_t j = 0; j < block; j++) amax = skd_maxf(amax, fabsf(xb[j]));
                return skd_fail(SKD_ERR_INVALID_ARG, "row %lld, columns %lld..%lld: |x| up to %g overflows %s's fp16 %s",
                                (long long)r, (long long)(i * block), (long long)((i + 1) * block - 1), (double)amax,
                                skd_dtype_name(dtype), dtype == SKD_DTYPE_F16 ? "range" : "scale");
            }
        }
    }
    return SKD_OK;
}

/* The body of skd_quantize's checks (both backends). */
static inline int skd_quantize_check(int32_t dtype, const float *src, int64_t rows, int64_t cols, const void *dst,
                                     int64_t dst_bytes) {
    int st = skd_check_row(dtype, rows, cols);
    if (st) return st;
    if ((!src || !dst) && rows > 0) return skd_fail(SKD_ERR_INVALID_ARG, "src or dst is NULL");
    const int64_t need = rows * skd_row_bytes(dtype, cols);
    if (dst_bytes < need)
        return skd_fail(SKD_ERR_INVALID_ARG, "dst holds %lld bytes, [%lld, %lld] of %s needs %lld",
                        (long long)dst_bytes, (long long)rows, (long long)cols, skd_dtype_name(dtype), (long long)need);
    return SKD_OK;
}

/* skd_dequantize, whole (both backends). */
static inline int skd_dequantize_impl(int32_t dtype, const void *src, int64_t rows, int64_t cols, float *dst) {
    int st = skd_check_row(dtype, rows, cols);
    if (st) return st;
    if ((!src || !dst) && rows > 0) return skd_fail(SKD_ERR_INVALID_ARG, "src or dst is NULL");
    const int64_t rb = skd_row_bytes(dtype, cols);
    for (int64_t r = 0; r < rows; r++) skd_dequantize_row(dtype, (const char *)src + r * rb, dst + r * cols, cols);
    return SKD_OK;
}

/* skd_dtype_row_bytes, whole (both backends). */
static inline int skd_dtype_row_bytes_impl(int32_t dtype, int64_t cols, int64_t *out) {
    if (!out) return skd_fail(SKD_ERR_INVALID_ARG, "out is NULL");
    const int st = skd_check_row(dtype, 1, cols);
    if (st) return st;
    *out = skd_row_bytes(dtype, cols);
    return SKD_OK;
}

#ifdef __cplusplus
}
#endif
#endif /* SKD_QUANT_REF_H */
