/* convert.cuh — element type conversion on the device. */
#ifndef SKD_GPU_CONVERT_CUH
#define SKD_GPU_CONVERT_CUH
#include "common.cuh"

/* dst[0..n) (dst_dtype: F16 or BF16) = src[0..n) (src_dtype: F32, F16 or BF16),
 * rounding to nearest even. Used to bring weights into the compute dtype. */
int skd_convert(void *dst, int dst_dtype, const void *src, int src_dtype, size_t n, cudaStream_t stream);

#endif
