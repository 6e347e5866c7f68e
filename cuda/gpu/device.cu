/* device.cu — device discovery: skd_device_count, skd_device_name, and the
 * "is there a usable GPU at all" gate that skd_engine_create runs first. */
#include <stdio.h>

#include "common.cuh"

/* cudaGetDeviceCount fails with cudaErrorInsufficientDriver (35) on a machine
 * without the NVIDIA driver and cudaErrorNoDevice (100) on one without a GPU;
 * any failure here means "no usable device". */
static int device_count(int *n) {
    *n = 0;
    const cudaError_t err = cudaGetDeviceCount(n);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        *n = 0;
        return skd_fail(SKD_ERR_NO_DEVICE, "no CUDA device: %s (%s)", cudaGetErrorString(err), cudaGetErrorName(err));
    }
    if (*n < 1) return skd_fail(SKD_ERR_NO_DEVICE, "no CUDA device: the driver reports 0 devices");
    return SKD_OK;
}

int skd_cuda_require_device(void) {
    int n;
    return device_count(&n);
}

SKD_API int skd_device_count(int32_t *out_count) {
    if (!out_count) return skd_fail(SKD_ERR_INVALID_ARG, "out_count is NULL");
    *out_count = 0;
    int n = 0;
    const int st = device_count(&n);
    if (st) return st;
    *out_count = n;
    return SKD_OK;
}

SKD_API int skd_device_name(int32_t index, char *buf, int32_t cap) {
    if (!buf || cap < 1) return skd_fail(SKD_ERR_INVALID_ARG, "buffer is NULL or empty");
    buf[0] = 0;
    int n = 0;
    const int st = device_count(&n);
    if (st) return st;
    if (index < 0 || index >= n)
        return skd_fail(SKD_ERR_INVALID_ARG, "device index %d out of range 0..%d", index, n - 1);
    cudaDeviceProp p;
    SKD_CUDA_TRY(cudaGetDeviceProperties(&p, index));
    snprintf(buf, (size_t)cap, "%s, sm_%d%d, %.0f GiB", p.name, p.major, p.minor,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return SKD_OK;
}
