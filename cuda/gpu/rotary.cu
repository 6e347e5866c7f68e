/* rotary.cu — rotary tables, their application to q/k, and SwiGLU. All three
 * move a few KB per row: negligible next to the GEMMs. */
#include "rotary.cuh"

static __global__ void rope_table_kernel(float *__restrict__ table, const int32_t *__restrict__ pos,
                                         const float *__restrict__ inv_freq, int head_dim) {
    const int i = blockIdx.x, half = head_dim / 2;
    const double p = (double)pos[i];
    for (int j = threadIdx.x; j < half; j += blockDim.x) {
        double s, c;
        sincos(p * (double)inv_freq[j], &s, &c);
        table[(size_t)i * head_dim + j] = (float)c;
        table[(size_t)i * head_dim + half + j] = (float)s;
    }
}

int skd_rope_table(float *table, const int32_t *pos, const float *inv_freq, int n, int head_dim, cudaStream_t stream) {
    if (n <= 0) return SKD_OK;
    rope_table_kernel<<<n, 64, 0, stream>>>(table, pos, inv_freq, head_dim);
    SKD_CUDA_CHECK_LAUNCH("rope_table_kernel");
    return SKD_OK;
}

template <typename T>
static __global__ void rope_apply_kernel(T *__restrict__ qkv, const int32_t *__restrict__ idx, const float *__restrict__ table,
                                         int qd, int kd, int head_dim) {
    const int i = blockIdx.x, half = head_dim / 2, ld = qd + 2 * kd;
    const float *cs = table + (size_t)idx[i] * head_dim, *sn = cs + half;
    T *row = qkv + (size_t)i * ld;
    const int pairs = (qd + kd) / 2; /* q heads then k heads, half a head of pairs each */
    for (int e = threadIdx.x; e < pairs; e += blockDim.x) {
        const int head = e / half, j = e % half;
        T *x = row + (size_t)head * head_dim; /* head < qd / hd: a q head; else a k head (k follows q) */
        const float a = skd_to_f32<T>(x[j]), b = skd_to_f32<T>(x[j + half]);
        x[j] = skd_from_f32<T>(a * cs[j] - b * sn[j]);
        x[j + half] = skd_from_f32<T>(b * cs[j] + a * sn[j]);
    }
}

int skd_rope_apply(void *qkv, const int32_t *idx, const float *table, int m, int qd, int kd, int head_dim, int dtype,
                   cudaStream_t stream) {
    if (m <= 0) return SKD_OK;
    if (dtype == SKD_DTYPE_F16)
        rope_apply_kernel<__half><<<m, 128, 0, stream>>>((__half *)qkv, idx, table, qd, kd, head_dim);
    else
        rope_apply_kernel<__nv_bfloat16><<<m, 128, 0, stream>>>((__nv_bfloat16 *)qkv, idx, table, qd, kd, head_dim);
    SKD_CUDA_CHECK_LAUNCH("rope_apply_kernel");
    return SKD_OK;
}

template <typename T>
static __global__ void swiglu_kernel(T *__restrict__ ff, const T *__restrict__ gu, int f) {
    const int i = blockIdx.y;
    const T *g = gu + (size_t)i * 2 * f, *u = g + f;
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < f; j += gridDim.x * blockDim.x) {
        const float x = skd_to_f32<T>(g[j]);
        ff[(size_t)i * f + j] = skd_from_f32<T>(x / (1.f + expf(-x)) * skd_to_f32<T>(u[j]));
    }
}

int skd_swiglu(void *ff, const void *gu, int m, int f, int dtype, cudaStream_t stream) {
    if (m <= 0) return SKD_OK;
    const dim3 grid((unsigned)((f + 255) / 256 < 64 ? (f + 255) / 256 : 64), (unsigned)m);
    if (dtype == SKD_DTYPE_F16)
        swiglu_kernel<__half><<<grid, 256, 0, stream>>>((__half *)ff, (const __half *)gu, f);
    else
        swiglu_kernel<__nv_bfloat16><<<grid, 256, 0, stream>>>((__nv_bfloat16 *)ff, (const __nv_bfloat16 *)gu, f);
    SKD_CUDA_CHECK_LAUNCH("swiglu_kernel");
    return SKD_OK;
}
