/* attention.cu — one block per (row, head), online softmax.
 *
 * The block's 4 warps split the keys 0..p round-robin. Per key a warp computes
 * q·k (lanes split head_dim, then a warp reduction) and folds it into its own
 * running (max, sum, acc[head_dim]) — the online softmax. The 4 partial states
 * are merged through shared memory at the end. fp32 throughout; no scores are
 * stored, so any sequence length fits.
 * Work: (p+1)·hd·2 multiply-adds and (p+1)·hd·2·2 bytes of K/V per (row, head).
 * TODO(perf): split-K flash-decoding for long contexts with few rows, several
 * keys per warp (one per lane) with 16-byte loads, tensor-core prefill. */
#include "attention.cuh"

#define ATTN_WARPS 4

template <typename T, int HDT> /* HDT = ceil(head_dim / 32): dims per lane */
static __global__ void __launch_bounds__(ATTN_WARPS * 32)
    attention_kernel(T *__restrict__ out, const T *__restrict__ qkv, const T *__restrict__ kc, const T *__restrict__ vc,
                     const int32_t *__restrict__ idx, const int32_t *__restrict__ slot, const int32_t *__restrict__ pos,
                     int layer, int n_layers, int max_seq, int d, int hd, float scale) {
    __shared__ float sm_max[ATTN_WARPS], sm_sum[ATTN_WARPS];
    __shared__ float sm_acc[ATTN_WARPS][HDT * 32];
    const int i = blockIdx.x, head = blockIdx.y;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int r = idx[i], p = pos[r];
    const size_t base = ((size_t)slot[r] * n_layers + layer) * (size_t)max_seq * d + (size_t)head * hd;
    const T *q = qkv + (size_t)i * 3 * d + (size_t)head * hd;

    float qv[HDT], acc[HDT];
#pragma unroll
    for (int t = 0; t < HDT; t++) {
        const int dim = lane + 32 * t;
        qv[t] = dim < hd ? skd_to_f32<T>(q[dim]) * scale : 0.f;
        acc[t] = 0.f;
    }
    float mx = -INFINITY, sum = 0.f;
    for (int j = warp; j <= p; j += ATTN_WARPS) {
        const T *k = kc + base + (size_t)j * d;
        const T *v = vc + base + (size_t)j * d;
        float part = 0.f;
#pragma unroll
        for (int t = 0; t < HDT; t++) {
            const int dim = lane + 32 * t;
            if (dim < hd) part = fmaf(qv[t], skd_to_f32<T>(k[dim]), part);
        }
        const float s = skd_warp_sum(part);
        const float mn = fmaxf(mx, s);
        const float c = expf(mx - mn); /* 0 for the first key (mx = -inf) */
        const float e = expf(s - mn);
        sum = sum * c + e;
#pragma unroll
        for (int t = 0; t < HDT; t++) {
            const int dim = lane + 32 * t;
            if (dim < hd) acc[t] = fmaf(e, skd_to_f32<T>(v[dim]), acc[t] * c);
        }
        mx = mn;
    }
    if (lane == 0) {
        sm_max[warp] = mx;
        sm_sum[warp] = sum;
    }
#pragma unroll
    for (int t = 0; t < HDT; t++) sm_acc[warp][lane + 32 * t] = acc[t];
    __syncthreads();

    /* merge: M = max_w m_w; out = Σ_w acc_w e^(m_w - M) / Σ_w sum_w e^(m_w - M).
     * A warp that saw no key has m_w = -inf and contributes 0; key 0 always exists. */
    float M = sm_max[0];
#pragma unroll
    for (int w = 1; w < ATTN_WARPS; w++) M = fmaxf(M, sm_max[w]);
    float f[ATTN_WARPS], total = 0.f;
#pragma unroll
    for (int w = 0; w < ATTN_WARPS; w++) {
        f[w] = sm_max[w] == -INFINITY ? 0.f : expf(sm_max[w] - M);
        total += sm_sum[w] * f[w];
    }
    const float inv = 1.f / total;
    T *o = out + (size_t)i * d + (size_t)head * hd;
    for (int dim = threadIdx.x; dim < hd; dim += blockDim.x) {
        float a = 0.f;
#pragma unroll
        for (int w = 0; w < ATTN_WARPS; w++) a = fmaf(sm_acc[w][dim], f[w], a);
        o[dim] = skd_from_f32<T>(a * inv);
    }
}

template <typename T>
static int launch(void *out, const void *qkv, const void *kc, const void *vc, const int32_t *idx, const int32_t *slot,
                  const int32_t *pos, int m, int layer, int n_layers, int max_seq, int d, int n_heads, cudaStream_t stream) {
    const int hd = d / n_heads;
    const float scale = 1.0f / sqrtf((float)hd);
    const dim3 grid((unsigned)m, (unsigned)n_heads);
#define SKD_ATTN_LAUNCH(HDT)                                                                                               \
    attention_kernel<T, HDT><<<grid, ATTN_WARPS * 32, 0, stream>>>((T *)out, (const T *)qkv, (const T *)kc, (const T *)vc, \
                                                                    idx, slot, pos, layer, n_layers, max_seq, d, hd, scale)
    if (hd <= 32)
        SKD_ATTN_LAUNCH(1);
    else if (hd <= 64)
        SKD_ATTN_LAUNCH(2);
    else if (hd <= 128)
        SKD_ATTN_LAUNCH(4);
    else if (hd <= SKD_ATTN_MAX_HEAD_DIM)
        SKD_ATTN_LAUNCH(8);
    else
        return skd_fail(SKD_ERR_UNSUPPORTED, "attention: head_dim %d > %d is not supported", hd, SKD_ATTN_MAX_HEAD_DIM);
#undef SKD_ATTN_LAUNCH
    SKD_CUDA_CHECK_LAUNCH("attention_kernel");
    return SKD_OK;
}

int skd_attention(void *out, const void *qkv, const void *kc, const void *vc, const int32_t *idx, const int32_t *slot,
                  const int32_t *pos, int m, int layer, int n_layers, int max_seq, int d, int n_heads, int dtype,
                  cudaStream_t stream) {
    if (m <= 0) return SKD_OK;
    if (dtype == SKD_DTYPE_F16)
        return launch<__half>(out, qkv, kc, vc, idx, slot, pos, m, layer, n_layers, max_seq, d, n_heads, stream);
    return launch<__nv_bfloat16>(out, qkv, kc, vc, idx, slot, pos, m, layer, n_layers, max_seq, d, n_heads, stream);
}
