/* act_avx2.c — SwiGLU's gate, h = silu(g) ⊙ h, 8 lanes at a time with AVX2
 * (ops.h, skd_swiglu; the scalar loop in ops.c is the reference). silu(g) =
 * g · sigmoid(g), and sigmoid from t = exp(−|g|) ∈ (0, 1] only: 1 / (1 + t)
 * for g ≥ 0, t / (1 + t) below, so exp8 (exp_avx2.h, ~1e-7 relative, about
 * expf's) never sees a positive argument and nothing overflows. On the
 * llama-400m shape the scalar loop (expf per element) took ~0.5 ms of a
 * 15-25 ms decode step, as long as attention. */
#include <immintrin.h>
#include <stddef.h>

#include "exp_avx2.h"
#include "ops.h"

__attribute__((target("avx2,fma"))) void skd_swiglu_avx2(float *h, const float *g, size_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 gv = _mm256_loadu_ps(g + i);
        const __m256 t = exp8(_mm256_or_ps(gv, sign)); /* exp(−|g|) */
        const __m256 num = _mm256_blendv_ps(one, t, gv); /* g < 0 (sign bit set): t */
        const __m256 sig = _mm256_div_ps(num, _mm256_add_ps(one, t));
        _mm256_storeu_ps(h + i, _mm256_mul_ps(_mm256_mul_ps(gv, sig), _mm256_loadu_ps(h + i)));
    }
    skd_swiglu(SKD_KERNEL_PORTABLE, h + i, g + i, n - i);
}
