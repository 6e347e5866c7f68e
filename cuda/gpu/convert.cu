/* convert.cu — dst (16-bit compute type) = src (f32 / f16 / bf16), elementwise.
 * Memory-bound and run once per weight at load; a grid-stride loop is plenty. */
#include "convert.cuh"

template <typename D, typename S>
static __global__ void convert_kernel(D *__restrict__ dst, const S *__restrict__ src, size_t n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dst[i] = skd_from_f32<D>(skd_to_f32<S>(src[i]));
}

template <typename D>
static int launch(D *dst, const void *src, int src_dtype, size_t n, cudaStream_t stream) {
    const int threads = 256;
    size_t want = (n + threads - 1) / threads;
    const unsigned blocks = (unsigned)(want < 4096 ? (want ? want : 1) : 4096);
    switch (src_dtype) {
    case SKD_DTYPE_F32: convert_kernel<D, float><<<blocks, threads, 0, stream>>>(dst, (const float *)src, n); break;
    case SKD_DTYPE_F16: convert_kernel<D, __half><<<blocks, threads, 0, stream>>>(dst, (const __half *)src, n); break;
    case SKD_DTYPE_BF16:
        convert_kernel<D, __nv_bfloat16><<<blocks, threads, 0, stream>>>(dst, (const __nv_bfloat16 *)src, n);
        break;
    default: return skd_fail(SKD_ERR_INVALID_ARG, "convert: unknown source dtype %d", src_dtype);
    }
    SKD_CUDA_CHECK_LAUNCH("convert_kernel");
    return SKD_OK;
}

int skd_convert(void *dst, int dst_dtype, const void *src, int src_dtype, size_t n, cudaStream_t stream) {
    if (n == 0) return SKD_OK;
    if (dst_dtype == SKD_DTYPE_F16) return launch((__half *)dst, src, src_dtype, n, stream);
    if (dst_dtype == SKD_DTYPE_BF16) return launch((__nv_bfloat16 *)dst, src, src_dtype, n, stream);
    return skd_fail(SKD_ERR_INVALID_ARG, "convert: destination dtype %d is not F16 or BF16", dst_dtype);
}
