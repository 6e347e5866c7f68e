/* exp_avx2.h — exp of 8 floats with AVX2/FMA, shared by the softmax of
 * kv_avx2.c and the SwiGLU gate of act_avx2.c (a header of one inline
 * function, compiled into each caller under its target attribute). */
#ifndef SKD_EXP_AVX2_H
#define SKD_EXP_AVX2_H

#include <immintrin.h>

/* exp(x) for x <= 0 (softmax arguments), 8 lanes: x = k·ln2 + r with |r| <= ln2/2,
 * exp(r) by Cephes' degree-7 polynomial (relative error ~1e-7, about expf's), times 2^k
 * built in the exponent bits; x below −87 gives 0. */
static inline __attribute__((always_inline, target("avx2,fma"))) __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.0f);
    const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(lo, x); /* NaN stays NaN (max returns its second operand then) */
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* r = x − k·ln2, ln2 split in two for accuracy */
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

#endif
