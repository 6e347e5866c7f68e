/* norm.cuh — gather rows of the fp32 hidden state, optionally layer-normed. */
#ifndef SKD_GPU_NORM_CUH
#define SKD_GPU_NORM_CUH
#include "common.cuh"

/* For i in 0..m, with r = idx ? idx[i] : i and x = h[r, 0..d) (fp32):
 *   y = ln_w ? (x - mean(x)) / sqrt(var(x) + 1e-5) * ln_w + ln_b : x   (fp32, biased variance)
 *   if write_back: h[r, :] = y        (post-LN: the norm replaces the residual stream)
 *   if out:        out[i, :] = T(y)   (compact [m, d] in the compute dtype: the next GEMM's input)
 * ln_w / ln_b are [d] in the compute dtype; idx is a device int32 list. */
int skd_rows_norm(float *h, const int32_t *idx, int m, int d, const void *ln_w, const void *ln_b, bool write_back, void *out,
                  int dtype, cudaStream_t stream);

#endif
