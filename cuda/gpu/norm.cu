/* norm.cu — LayerNorm, RMSNorm (or a plain copy) of gathered rows, fp32 statistics.
 * One block per row; the row is read three times (mean, variance, output),
 * from L1/L2 after the first. d <= 12288 for every OPT, so this is cheap.
 * TODO(perf): fuse into the following GEMM's prologue (stats pass + normalise on load). */
#include "norm.cuh"

template <typename T>
static __global__ void rows_norm_kernel(float *__restrict__ h, const int32_t *__restrict__ idx, int d, int rms,
                                        const T *__restrict__ ln_w, const T *__restrict__ ln_b, float eps, int write_back,
                                        T *__restrict__ out) {
    __shared__ float sh[32];
    const int i = blockIdx.x;
    const size_t r = idx ? (size_t)idx[i] : (size_t)i;
    float *x = h + r * d;
    float mean = 0.f, rstd = 1.f;
    if (ln_w && rms) {
        float v = 0.f;
        for (int j = threadIdx.x; j < d; j += blockDim.x) v += x[j] * x[j];
        rstd = rsqrtf(skd_block_sum(v, sh) / (float)d + eps);
    } else if (ln_w) {
        float s = 0.f;
        for (int j = threadIdx.x; j < d; j += blockDim.x) s += x[j];
        mean = skd_block_sum(s, sh) / (float)d;
        float v = 0.f;
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            const float t = x[j] - mean;
            v += t * t;
        }
        rstd = rsqrtf(skd_block_sum(v, sh) / (float)d + eps);
    }
    T *o = out ? out + (size_t)i * d : nullptr;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float y = x[j];
        if (ln_w) y = (y - mean) * rstd * skd_to_f32<T>(ln_w[j]) + (ln_b ? skd_to_f32<T>(ln_b[j]) : 0.f);
        if (write_back) x[j] = y;
        if (o) o[j] = skd_from_f32<T>(y);
    }
}

int skd_rows_norm(float *h, const int32_t *idx, int m, int d, int kind, const void *ln_w, const void *ln_b, float eps,
                  bool write_back, void *out, int dtype, cudaStream_t stream) {
    if (m <= 0) return SKD_OK;
    if (!ln_w && ln_b) return skd_fail(SKD_ERR_INVALID_ARG, "rows_norm: a norm bias without a weight");
    const int rms = kind == SKD_NORM_RMS, threads = d >= 256 ? 256 : ((d + 31) / 32) * 32;
    if (dtype == SKD_DTYPE_F16)
        rows_norm_kernel<__half><<<m, threads, 0, stream>>>(h, idx, d, rms, (const __half *)ln_w, (const __half *)ln_b, eps,
                                                             write_back ? 1 : 0, (__half *)out);
    else
        rows_norm_kernel<__nv_bfloat16><<<m, threads, 0, stream>>>(h, idx, d, rms, (const __nv_bfloat16 *)ln_w,
                                                                    (const __nv_bfloat16 *)ln_b, eps, write_back ? 1 : 0,
                                                                    (__nv_bfloat16 *)out);
    SKD_CUDA_CHECK_LAUNCH("rows_norm_kernel");
    return SKD_OK;
}
