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

/* The checks both entry points share: the buffer size, `count` (reps or passes) in 1..max, a device. */
static int check_args(int64_t bytes, const char *what, int32_t count, int32_t max) {
    if (bytes < (1 << 20) || bytes > ((int64_t)1 << 36))
        return skd_fail(SKD_ERR_INVALID_ARG, "bytes must be in 1 MiB .. 64 GiB, got %lld", (long long)bytes);
    if (count < 1 || count > max) return skd_fail(SKD_ERR_INVALID_ARG, "%s must be in 1..%d, got %d", what, max, count);
    int devices = 0;
    const cudaError_t err = cudaGetDeviceCount(&devices);
    if (err != cudaSuccess || devices == 0)
        return skd_fail(SKD_ERR_NO_DEVICE, "no CUDA device: %s", err != cudaSuccess ? cudaGetErrorString(err) : "none found");
    return SKD_OK;
}

/* One read pass over src's n4 float4s between events e0 and e1: its seconds in *sec. */
static cudaError_t timed_read(const float4 *src, size_t n4, float *sink, int sms, cudaEvent_t e0, cudaEvent_t e1, double *sec) {
    float ms = 0.f;
    cudaError_t e = cudaEventRecord(e0);
    if (e == cudaSuccess) read_kernel<<<sms * 8, 512>>>(src, n4, sink), e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaEventRecord(e1);
    if (e == cudaSuccess) e = cudaEventSynchronize(e1);
    if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, e0, e1);
    *sec = ms * 1e-3;
    return e;
}

/* Sets st and jumps to `done` when a CUDA call fails. */
#define TRY(call)                                                                                        \
    do {                                                                                                 \
        cudaError_t e_ = (call);                                                                         \
        if (e_ != cudaSuccess) {                                                                         \
            st = skd_fail(e_ == cudaErrorMemoryAllocation ? SKD_ERR_OUT_OF_MEMORY : SKD_ERR_DEVICE,     \
                          "membw: %s failed: %s", #call, cudaGetErrorString(e_));                        \
            goto done;                                                                                   \
        }                                                                                                \
    } while (0)

extern "C" SKD_API int skd_membw(int64_t bytes, int32_t threads, int32_t reps, double *out_read, double *out_copy) {
    (void)threads;
    if (!out_read || !out_copy) return skd_fail(SKD_ERR_INVALID_ARG, "output pointers are NULL");
    int st = check_args(bytes, "reps", reps, 1000);
    if (st != SKD_OK) return st;
    const size_t n4 = (size_t)bytes / 16;
    float4 *src = nullptr, *dst = nullptr;
    float *sink = nullptr;
    cudaEvent_t e0 = nullptr, e1 = nullptr;
    double best_read = 1e30, best_copy = 1e30;
    int sms = 0;
    TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    TRY(cudaMalloc(&src, n4 * sizeof(float4)));
    TRY(cudaMalloc(&dst, n4 * sizeof(float4)));
    TRY(cudaMalloc(&sink, 4096 * sizeof(float)));
    TRY(cudaMemset(src, 0, n4 * sizeof(float4)));
    TRY(cudaEventCreate(&e0));
    TRY(cudaEventCreate(&e1));
    for (int r = 0; r < reps; r++) {
        double sec = 0;
        TRY(timed_read(src, n4, sink, sms, e0, e1, &sec));
        if (sec < best_read) best_read = sec;
        float ms = 0.f;
        TRY(cudaEventRecord(e0));
        TRY(cudaMemcpy(dst, src, n4 * sizeof(float4), cudaMemcpyDeviceToDevice));
        TRY(cudaEventRecord(e1));
        TRY(cudaEventSynchronize(e1));
        TRY(cudaEventElapsedTime(&ms, e0, e1));
        if (ms * 1e-3 < best_copy) best_copy = ms * 1e-3;
    }
    *out_read = (double)n4 * sizeof(float4) / best_read / 1e9;
    *out_copy = 2.0 * (double)n4 * sizeof(float4) / best_copy / 1e9;
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
    int st = check_args(bytes, "passes", passes, 100000);
    if (st != SKD_OK) return st;
    const size_t n4 = (size_t)bytes / 16;
    float4 *src = nullptr;
    float *sink = nullptr;
    cudaEvent_t e0 = nullptr, e1 = nullptr;
    int sms = 0;
    double sec = 0;
    TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    TRY(cudaMalloc(&src, n4 * sizeof(float4)));
    TRY(cudaMalloc(&sink, 4096 * sizeof(float)));
    TRY(cudaMemset(src, 0, n4 * sizeof(float4)));
    TRY(cudaEventCreate(&e0));
    TRY(cudaEventCreate(&e1));
    TRY(timed_read(src, n4, sink, sms, e0, e1, &sec)); /* untimed, as on the host */
    for (int r = 0; r < passes; r++) {
        TRY(timed_read(src, n4, sink, sms, e0, e1, &sec));
        out_read[r] = (double)n4 * sizeof(float4) / sec / 1e9;
    }
done:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    cudaFree(src);
    cudaFree(sink);
    return st;
}
#undef TRY
