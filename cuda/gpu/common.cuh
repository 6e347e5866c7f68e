/*
 * common.cuh — what every file of the CUDA backend shares: error checking,
 * the two 16-bit compute types and their conversions, small reductions.
 *
 * Error convention (STYLE.md): every CUDA runtime call is wrapped in
 * SKD_CUDA_TRY, which turns a cudaError_t into SKD_ERR_DEVICE (or
 * SKD_ERR_OUT_OF_MEMORY for cudaErrorMemoryAllocation) with a message naming
 * the call, the file and the line, and returns that status from the enclosing
 * function. Every launcher ends with SKD_CUDA_CHECK_LAUNCH("kernel name").
 */
#ifndef SKD_GPU_COMMON_CUH
#define SKD_GPU_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "plan.h"
#include "skipdecode.h"

/* Records the failure of `what` (a CUDA call's text) at file:line; returns
 * SKD_ERR_OUT_OF_MEMORY or SKD_ERR_DEVICE. Defined in errors.cu. */
int skd_cuda_fail(cudaError_t err, const char *what, const char *file, int line);

#define SKD_CUDA_TRY(call)                                                   \
    do {                                                                     \
        cudaError_t skd_err_ = (call);                                       \
        if (skd_err_ != cudaSuccess)                                         \
            return skd_cuda_fail(skd_err_, #call, __FILE__, __LINE__);       \
    } while (0)

/* After a kernel launch: a bad configuration shows up in cudaGetLastError. */
#define SKD_CUDA_CHECK_LAUNCH(kernel_name)                                   \
    do {                                                                     \
        cudaError_t skd_err_ = cudaGetLastError();                           \
        if (skd_err_ != cudaSuccess)                                         \
            return skd_cuda_fail(skd_err_, "launch of " kernel_name, __FILE__, __LINE__); \
    } while (0)

/* Fails with SKD_ERR_NO_DEVICE unless a CUDA device is usable (device.cu). */
int skd_cuda_require_device(void);

/* ---- 16-bit compute types ------------------------------------------------- */
/* The engine's compute dtype is SKD_DTYPE_F16 (__half) or SKD_DTYPE_BF16
 * (__nv_bfloat16); kernels are templates over T and launchers dispatch. */

template <typename T> __device__ __forceinline__ float skd_to_f32(T v);
template <> __device__ __forceinline__ float skd_to_f32<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float skd_to_f32<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ float skd_to_f32<float>(float v) { return v; }

template <typename T> __device__ __forceinline__ T skd_from_f32(float v);
template <> __device__ __forceinline__ __half skd_from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 skd_from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ float skd_from_f32<float>(float v) { return v; }

/* Loads 8 consecutive 16-bit values (one 16-byte transaction) as floats.
 * p must be 16-byte aligned. */
template <typename T> __device__ __forceinline__ void skd_load8(const T *p, float out[8]);
template <> __device__ __forceinline__ void skd_load8<__half>(const __half *p, float out[8]) {
    const uint4 u = *reinterpret_cast<const uint4 *>(p);
    const __half2 *h = reinterpret_cast<const __half2 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 f = __half22float2(h[i]);
        out[2 * i] = f.x;
        out[2 * i + 1] = f.y;
    }
}
template <> __device__ __forceinline__ void skd_load8<__nv_bfloat16>(const __nv_bfloat16 *p, float out[8]) {
    const uint4 u = *reinterpret_cast<const uint4 *>(p);
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 f = __bfloat1622float2(h[i]);
        out[2 * i] = f.x;
        out[2 * i + 1] = f.y;
    }
}

/* True when p is aligned to `bytes`. */
static inline bool skd_aligned(const void *p, size_t bytes) { return ((uintptr_t)p % bytes) == 0; }

/* ---- reductions --------------------------------------------------------- */
__device__ __forceinline__ float skd_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread
 * gets the result. `sh` is 32 floats of shared memory; the call synchronises
 * the block, so it may be reused right after. */
__device__ __forceinline__ float skd_block_sum(float v, float *sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = skd_warp_sum(v);
    __syncthreads(); /* sh may still be read by a previous call */
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    float t = lane < nw ? sh[lane] : 0.f;
    return skd_warp_sum(t);
}

#endif /* SKD_GPU_COMMON_CUH */
