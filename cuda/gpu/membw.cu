/* membw.cu — skd_membw for the device: read (a summing kernel) and copy
 * (cudaMemcpy device to device) bandwidth of GPU memory, best of reps; and
 * skd_membw_passes, the read rate of each pass in a row. */
#include <cuda_runtime.h>

#include "common.cuh"
#include "plan.h"
#include "skipdecode.h"

/* Sums float4s grid-stride; one float per block keeps the reads alive. */
static __global__ void read_kernel(const float4 *__restrict__ src, size_t n, float *__restrict__ sink) {
    float s = 0.f;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float4 v = src[i];
        s += v.x + v.y + v.z + v.w;
    }
    if (s == 12345.678f) sink[blockIdx.x] = s; /* practically never: no write traffic */
}

extern "C" SKD_API int skd_membw(int64_t bytes, int32_t threads, int32_t reps, double *out_read, double *out_copy) {
    (void)threads;
    if (!out_read || !out_copy) return skd_fail(SKD_ERR_INVALID_ARG, "output pointers are NULL");
    if (bytes < (1 << 20) || bytes > ((int64_t)1 << 36))
        return skd_fail(SKD_ERR_INVALID_ARG, "bytes must be in 1 MiB .. 64 GiB, got %lld", (long long)bytes);
    if (reps < 1 || reps > 1000) return skd_fail(SKD_ERR_INVALID_ARG, "reps must be in 1..1000, got %d", reps);
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0)
        return skd_fail(SKD_ERR_NO_DEVICE, "no CUDA device: %s", err != cudaSuccess ? cudaGetErrorString(err) : "none found");
    const size_t n4 = (size_t)bytes / 16;
    float4 *src = nullptr, *dst = nullptr;
    float *sink = nullptr;
    cudaEvent_t e0 = nullptr, e1 = nullptr;
    int st = SKD_OK;
    double best_read = 1e30, best_copy = 1e30;
    int sms = 0;
#define TRY(call)                                                                                        \
    do {                                                                                                 \
        cudaError_t e_ = (call);                                                                         \
        if (e_ != cudaSuccess) {                                                                         \
            st = skd_fail(e_ == cudaErrorMemoryAllocation ? SKD_ERR_OUT_OF_MEMORY : SKD_ERR_DEVICE,     \
                          "membw: %s failed: %s", #call, cudaGetErrorString(e_));                        \
            goto done;                                                                                   \
        }                                                                                                \
    } while (0)
    TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    TRY(cudaMalloc(&src, n4 * sizeof(float4)));
    TRY(cudaMalloc(&dst, n4 * sizeof(float4)));
    TRY(cudaMalloc(&sink, 4096 * sizeof(float)));
    TRY(cudaMemset(src, 0, n4 * sizeof(float4)));
    TRY(cudaEventCreate(&e0));
    TRY(cudaEventCreate(&e1));
    for (int r = 0; r < reps; r++) {
        float ms = 0.f;
        TRY(cudaEventRecord(e0));
        read_kernel<<<sms * 8, 512>>>(src, n4, sink);
        TRY(cudaGetLastError());
        TRY(cudaEventRecord(e1));
        TRY(cudaEventSynchronize(e1));
        TRY(cudaEventElapsedTime(&ms, e0, e1));
        if (ms * 1e-3 < best_read) best_read = ms * 1e-3;
        TRY(cudaEventRecord(e0));
        TRY(cudaMemcpy(dst, src, n4 * sizeof(float4), cudaMemcpyDeviceToDevice));
        TRY(cudaEventRecord(e1));
        TRY(cudaEventSynchronize(e1));
        TRY(cudaEventElapsedTime(&ms, e0, e1));
        if (ms * 1e-3 < best_copy) best_copy = ms * 1e-3;
    }
    *out_read = (double)n4 * sizeof(float4) / best_read / 1e9;
    *out_copy = 2.0 * (double)n4 * sizeof(float4) / best_copy / 1e9;
#undef TRY
done:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    cudaFree(src);
    cudaFree(dst);
    cudaFree(sink);
    return st;
}

extern "C" SKD_API int skd_membw_passes(int64_t bytes, int32_t threads, int32_t passes, double *out_read) {
    (void)threads;
    if (!out_read) return skd_fail(SKD_ERR_INVALID_ARG, "output pointer is NULL");
    if (bytes < (1 << 20) || bytes > ((int64_t)1 << 36))
        return skd_fail(SKD_ERR_INVALID_ARG, "bytes must be in 1 MiB .. 64 GiB, got %lld", (long long)bytes);
    if (passes < 1 || passes > 100000) return skd_fail(SKD_ERR_INVALID_ARG, "passes must be in 1..100000, got %d", passes);
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0)
        return skd_fail(SKD_ERR_NO_DEVICE, "no CUDA device: %s", err != cudaSuccess ? cudaGetErrorString(err) : "none found");
    const size_t n4 = (size_t)bytes / 16;
    float4 *src = nullptr;
    float *sink = nullptr;
    cudaEvent_t e0 = nullptr, e1 = nullptr;
    int st = SKD_OK;
    int sms = 0;
#define TRY(call)                                                                                        \
    do {                                                                                                 \
        cudaError_t e_ = (call);                                                                         \
        if (e_ != cudaSuccess) {                                                                         \
            st = skd_fail(e_ == cudaErrorMemoryAllocation ? SKD_ERR_OUT_OF_MEMORY : SKD_ERR_DEVICE,     \
                          "membw: %s failed: %s", #call, cudaGetErrorString(e_));                        \
            goto done;                                                                                   \
        }                                                                                                \
    } while (0)
    TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    TRY(cudaMalloc(&src, n4 * sizeof(float4)));
    TRY(cudaMalloc(&sink, 4096 * sizeof(float)));
    TRY(cudaMemset(src, 0, n4 * sizeof(float4)));
    TRY(cudaEventCreate(&e0));
    TRY(cudaEventCreate(&e1));
    read_kernel<<<sms * 8, 512>>>(src, n4, sink); /* untimed, as on the host */
    TRY(cudaGetLastError());
    for (int r = 0; r < passes; r++) {
        float ms = 0.f;
        TRY(cudaEventRecord(e0));
        read_kernel<<<sms * 8, 512>>>(src, n4, sink);
        TRY(cudaGetLastError());
        TRY(cudaEventRecord(e1));
        TRY(cudaEventSynchronize(e1));
        TRY(cudaEventElapsedTime(&ms, e0, e1));
        out_read[r] = (double)n4 * sizeof(float4) / (ms * 1e-3) / 1e9;
    }
#undef TRY
done:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    cudaFree(src);
    cudaFree(sink);
    return st;
}
