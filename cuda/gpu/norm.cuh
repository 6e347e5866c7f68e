/* norm.cuh — gather rows of the fp32 hidden state, optionally layer-normed. */
#ifndef SKD_GPU_NORM_CUH
#define SKD_GPU_NORM_CUH
#include "common.cuh"

/* For i in 0..m, with r = idx ? idx[i] : i and x = h[r, 0..d) (fp32):
 *   kind SKD_NORM_LAYER: y = (x - mean(x)) / sqrt(var(x) + eps) * w (+ b)   (fp32, biased variance)
 *   kind SKD_NORM_RMS:   y = x / sqrt(mean(x²) + eps) * w
 *   w == NULL:           y = x (a plain gather)
 *   if write_back: h[r, :] = y        (post-LN: the norm replaces the residual stream)
 *   if out:        out[i, :] = T(y)   (compact [m, d] in the compute dtype: the next GEMM's input)
 * w / b are [d] in the compute dtype (b may be NULL); idx is a device int32 list. */
int skd_rows_norm(float *h, const int32_t *idx, int m, int d, int kind, const void *w, const void *b, float eps,
                  bool write_back, void *out, int dtype, cudaStream_t stream);

#endif
