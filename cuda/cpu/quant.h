/* quant.h — the CPU engine's quantized matmul: out[m, n] = x[m, k] · W[n, k]^T
 * (+ bias) for W in Q8_0, Q4_0, Q5_0, Q4_K or Q6_K (cuda/common/quant_ref.h),
 * kept as ggml's row-major blocks, each row's bytes rearranged ("packed",
 * below) for the AVX2 kernels.
 *
 * Activations are quantized too, as llama.cpp does: each row of x becomes
 * int8 values with one fp32 scale per block — blocks of 32 for Q8_0/Q4_0/Q5_0
 * weights, of 256 (plus the sums of each 16 values) for the K-quants — and a
 * block's dot product is an exact integer sum times the two scales. Integer
 * dot products are what lets two cores keep up with the memory bus at 4-8
 * bits per weight (vpmaddubsw: 32 multiply-adds per instruction, against 8
 * for fp32 FMA plus the widening). The cost is the rounding of x to 8 bits
 * (relative error <= 1/254 of each block's largest |x|). Measured on the
 * embedded model (models/brown-opt-12l, held-out windows, int8 against fp32
 * activations on the same quantized weights): max |Δlogit| 0.15 (0.8% of
 * max|logit|), RMS 0.015, the same argmax for 98.9-99.5% of tokens, and
 * perplexity unchanged to the first decimal at 1x-3x — smaller than the
 * weights' own quantization error (RMS 0.012-0.089); the tables are in
 * docs/quantization.md ("Activations: int8, measured"). The reference tests
 * bound int8-activation logits at 6e-2 × max|logit| (test/quant.test.ts).
 * SKIPDECODE_CPU_QUANT_ACT=f32 keeps
 * x in fp32 instead (the portable kernel dequantizes each weight row and
 * multiplies in fp32): slower, for measuring that effect and for tests.
 *
 * A row's activation quantization and every dot product depend on that row
 * alone and are computed in the same order whatever the batch, so results are
 * batch-invariant, as for the 16-bit kernels.
 *
 * Kernels (each a file of row kernels; the portable one in quant.c is the
 * reference every other is checked against, by cuda/dev/quant_check.c):
 *   portable   plain C
 *   avx2       AVX2 + FMA + F16C (quant_avx2.c): vpmaddubsw / vpmaddwd
 *   avx2-vnni  the same with AVX-VNNI's vpdpbusd where the CPU has it
 *   avx512     AVX-512 F/BW/VL (quant_avx512.c), with AVX512-VNNI where present
 * picked at run time: the quantized kernel follows SKIPDECODE_CPU_KERNEL /
 * the 16-bit kernel's choice (avx2 → avx2-vnni where the CPU has AVX-VNNI,
 * else avx2; portable → portable; avx512 → as avx2). The avx512 kernels
 * (ggml's layout, 64-byte vectors) are used only with
 * SKIPDECODE_CPU_QUANT_AVX512=1: on the first AVX-512 machine that ran them
 * (2026-12-07, a 2-vCPU Intel Xeon with AVX512-VNNI and AVX-VNNI) they pass
 * every check but run at a half to a quarter of the packed AVX2 kernels'
 * speed for Q8_0, Q4_0 and Q4_K, Q6_K about equal (build/quant_check compute
 * 1, weights in L2, GB/s, one run before the four-row kernels: Q8_0
 * avx2-vnni 59.8 / avx512-vnni 20.8, Q4_0 32.8 / 7.9, Q4_K 24.7 / 12.2, Q6_K
 * 23.4 / 24.7; docs/quantization.md has a later run). The test suite runs every kernel the CPU has
 * (test/quant.test.ts builds quant_check; test/kernels.test.ts reruns the
 * quantized engine tests with the switch set).
 */
#ifndef SKD_QUANT_H
#define SKD_QUANT_H

#include <stdint.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "ops.h"
#include "pool.h"
#include "skipdecode.h"

enum {
    SKD_QKERNEL_PORTABLE = 1,
    SKD_QKERNEL_AVX2 = 2,
    SKD_QKERNEL_AVX2_VNNI = 3,
    SKD_QKERNEL_AVX512 = 4,
    SKD_QKERNEL_AVX512_VNNI = 5,
    SKD_QKERNEL_F32 = 6, /* portable, activations kept in fp32 (SKIPDECODE_CPU_QUANT_ACT=f32) */
    SKD_QKERNEL_COUNT = 7
};

/* "portable", "avx2", "avx2-vnni", "avx512", "avx512-vnni", "f32-activations". */
const char *skd_qkernel_name(int qk);
/* Whether this CPU runs qk. */
int skd_qkernel_supported(int qk);
/* The quantized kernel for the 16-bit kernel choice `kernel` (SKD_KERNEL_*), the
 * CPU and the environment (SKIPDECODE_CPU_QUANT_AVX512, SKIPDECODE_CPU_QUANT_ACT). */
int skd_qkernel_for(int kernel);

/* Quantized activations of m rows of length k (k a multiple of the weight's block):
 *   qs     [m, k] int8
 *   d      [m, k / 32] scales (block-32 form) or [m, k / 256] (K form)
 *   bsums  [m, k / 16] (row stride k / 16 in both forms): the sum of the codes of
 *          each 16 (K form) or each 32 (block-32 form; Q4_0's −8 offset) */
typedef struct {
    int8_t *qs;
    float *d;
    int16_t *bsums;
} skd_qact;

/* Bytes of scratch skd_qmatmul needs for m rows of length k. */
size_t skd_qact_bytes(int m, int64_t k);

/* x row → block-32 activations: per 32 values d = max|x| / 127, q = rne(x · (127 / max|x|)), bsums. */
void skd_quantize_act32(const float *x, int64_t k, int8_t *qs, float *d, int16_t *bsums);
/* x row → K activations: the same per 256 values, bsums per 16. */
void skd_quantize_act256(const float *x, int64_t k, int8_t *qs, float *d, int16_t *bsums);
/* Both of the above with AVX2, byte for byte the same (SKD_ACT_32, SKD_ACT_K); and
 * SKD_ACT_32_WORDS: the block-32 form with the codes of each full group of 8 blocks
 * transposed by 4-byte words as the packed weights are (word i of vector v = word v of
 * block i), so that a kernel's int32 lane i sums block i, and of a short last group's first
 * 4 blocks when it has 4 or more (16-byte vectors); SKD_ACT_K_WORDS: the K form
 * with each 256 values' codes transposed the same way by 32-value sub-block (its sums
 * of 16 are of the codes in order). */
enum { SKD_ACT_32 = 0, SKD_ACT_K = 1, SKD_ACT_32_WORDS = 2, SKD_ACT_K_WORDS = 3 };
void skd_quantize_act_avx2(const float *x, int64_t k, int form, int8_t *qs, float *d, int16_t *bsums);

/* The AVX2 kernels' layout of quantized matmul weights ("packed", chosen at set_tensor when
 * skd_qkernel_packs); Q8_0 and Q4_0 here, Q5_0 in quant.c, Q4_K and Q6_K below: per row, groups of 8 blocks, each
 * group its 8 fp16 scales (16 bytes) followed by the blocks' code bytes
 * transposed by 4-byte words: word i of vector v is word v of block i (Q8_0:
 * 8 vectors of 32 bytes; Q4_0: 4, whose low nibbles are codes 4v..4v+3 and
 * high nibbles codes 16+4v.. of each block). With activations transposed the
 * same way (SKD_ACT_32_WORDS), int32 lane i of every integer dot product sums
 * block i: no horizontal reduction. A row's last group, when shorter than 8
 * blocks, holds its scales, then its first 4 blocks' bytes transposed the same
 * way with 16-byte vectors when it has 4 or more (a half group: rows of 896
 * are 3 groups and one), then its other blocks' bytes in ggml's order.
 * Exactly the bytes of ggml's row, rearranged: 8 scales convert in one instruction.
 * Q4_K (the same idea per 256 values): d, dmin and the 12 scale bytes stay
 * where ggml has them; the 128 code bytes are 4 vectors whose word i holds
 * sub-block i's codes (byte j of vector t: code 4t + j low, 16 + 4t + j
 * high, as Q4_0's blocks), so with SKD_ACT_K_WORDS activations int32 lane i
 * sums sub-block i, ready for its 6-bit scale. Q6_K: its 6-bit codes in the
 * same order (quant.c, repack_q6_k), so a Q6_K matrix reads the activations a
 * Q4_K one beside it does (Q4_K_M's attn_v with q and k, one pass). */
int skd_qkernel_packs(int qkernel);
/* Every quantized type has a packed layout (Q5_0's and Q6_K's: quant.c, repack_q5_0 and repack_q6_k). */
static inline int skd_quant_packable(int dtype) {
    return dtype == SKD_DTYPE_Q8_0 || dtype == SKD_DTYPE_Q4_0 || dtype == SKD_DTYPE_Q5_0 || dtype == SKD_DTYPE_Q4_K ||
           dtype == SKD_DTYPE_Q6_K;
}
/* One row of k values: ggml's blocks → packed, and back. */
void skd_quant_pack_row(int dtype, const void *src, void *dst, int64_t k);
void skd_quant_unpack_row(int dtype, const void *src, void *dst, int64_t k);

/* out[i, r] (row stride n) = W row r · activation row i for r in [r0, r1), i in [0, m),
 * plus bias[r] and ReLU when asked: one per weight type and kernel. */
typedef void skd_qrows_fn(const skd_mat *w, long r0, long r1, const skd_qact *a, int m, float *out, long n,
                          const float *bias, int relu);
skd_qrows_fn *skd_qrows_portable(int dtype);
skd_qrows_fn *skd_qrows_avx2(int dtype, int vnni);
skd_qrows_fn *skd_qrows_avx512(int dtype, int vnni);

/* out[m, n] = x[m, k] · W^T (+ bias, ReLU) for a quantized W (packed for a
 * kernel that packs, ggml's layout for the others), threads from
 * the pool; `scratch` holds skd_qact_bytes(m, k) bytes (64-byte aligned). */
void skd_qmatmul(skd_pool *pool, int qkernel, void *scratch, float *out, const float *x, int m, const skd_mat *w,
                 const float *bias, int relu);
/* skd_qmatmul of n matrices that take the same activations (skd_qmat_same_act:
 * one quantization of x serves them all) in one pass of the pool, the threads
 * splitting their rows as one matrix's: each output as skd_qmatmul computes it. */
void skd_qmatmul_n(skd_pool *pool, int qkernel, void *scratch, const float *x, int m, const skd_mm_job *jobs, int n);
/* Whether quantized a and b have the same k and read the same quantized activations. */
int skd_qmat_same_act(int qkernel, const skd_mat *a, const skd_mat *b);

/* One output of a quantized matmul's row: the bias added and ReLU applied. ReLU as
 * maxss(0, v) where there is SSE (v when NaN, −0 kept: the same values as
 * `v < 0 ? 0 : v`): written as that test, GCC tested v's sign before `relu` and
 * branched on it, as random as the outputs' signs, a misprediction every other
 * row or so (a llama-400m step's Q4_K matmuls at m = 1, 2 threads, Intel Xeon
 * VM: 31.1 → 35.0 GB/s; Q6_K 33.2 → 37.6). */
static inline void skd_qput(float *o, float v, const float *bias, long r, int relu) {
    if (bias) v += bias[r];
#if defined(__SSE__)
    if (relu) v = _mm_cvtss_f32(_mm_max_ss(_mm_setzero_ps(), _mm_set_ss(v)));
#else
    if (relu && v < 0.f) v = 0.f;
#endif
    *o = v;
}

#endif
