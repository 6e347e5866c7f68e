/* act.c — element-wise activations (ops.h): SwiGLU's gate, the portable
 * reference and the choice of the SIMD version (act_avx2.c). */
#include <math.h>
#include <stddef.h>

#include "ops.h"

void skd_swiglu(int kernel, float *h, const float *g, size_t n) {
#if defined(__x86_64__) || defined(__i386__)
    if (kernel == SKD_KERNEL_AVX2 || kernel == SKD_KERNEL_AVX512) {
        skd_swiglu_avx2(h, g, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) h[i] *= g[i] / (1.0f + expf(-g[i]));
}
