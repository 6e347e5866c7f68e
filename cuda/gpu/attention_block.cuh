/* attention_block.cuh — the online softmax of one block of ATTN_WARPS warps
 * over keys j0..j1 of one (row, head), shared by the per-(row, head) kernel
 * (attention.cu) and its split-K variant (attention_split.cu).
 *
 * The block's 4 warps split the keys round-robin. Per key a warp computes
 * q·k (lanes split head_dim, then a warp reduction) and folds it into its own
 * running (max, sum, acc[head_dim]) — the online softmax. The 4 partial states
 * meet in shared memory; the caller merges them: with M = max_w m_w,
 *   out = Σ_w acc_w e^(m_w - M) / Σ_w sum_w e^(m_w - M).
 * fp32 throughout; no scores are stored, so any sequence length fits. */
#ifndef SKD_GPU_ATTENTION_BLOCK_CUH
#define SKD_GPU_ATTENTION_BLOCK_CUH
#include "common.cuh"

#define ATTN_WARPS 4

/* Each warp's softmax state, in shared memory. HDT = ceil(head_dim / 32): dims per lane. */
template <int HDT>
struct skd_attn_warps {
    float max[ATTN_WARPS], sum[ATTN_WARPS];
    float acc[ATTN_WARPS][HDT * 32];
};

/* Runs the block over keys j0..j1 (K/V rows at kc/vc + base + j·kd; q not yet
 * scaled) and leaves each warp's state in `sm`. On return (all threads, after
 * a barrier): M = max over the warps, total = Σ_w sum_w·f[w], f[w] =
 * e^(m_w - M) — 0 for a warp that saw no key. */
template <typename T, int HDT>
static __device__ __forceinline__ void skd_attn_block(skd_attn_warps<HDT> &sm, const T *__restrict__ q,
                                                      const T *__restrict__ kc, const T *__restrict__ vc, size_t base,
                                                      int kd, int hd, float scale, int j0, int j1, float &M, float &total,
                                                      float (&f)[ATTN_WARPS]) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float qv[HDT], acc[HDT];
#pragma unroll
    for (int t = 0; t < HDT; t++) {
        const int dim = lane + 32 * t;
        qv[t] = dim < hd ? skd_to_f32<T>(q[dim]) * scale : 0.f;
        acc[t] = 0.f;
    }
    float mx = -INFINITY, sum = 0.f;
    for (int j = j0 + warp; j <= j1; j += ATTN_WARPS) {
        const T *k = kc + base + (size_t)j * kd;
        const T *v = vc + base + (size_t)j * kd;
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
        sm.max[warp] = mx;
        sm.sum[warp] = sum;
    }
#pragma unroll
    for (int t = 0; t < HDT; t++) sm.acc[warp][lane + 32 * t] = acc[t];
    __syncthreads();

    /* A warp that saw no key has m_w = -inf and contributes 0; key j0 always exists. */
    M = sm.max[0];
#pragma unroll
    for (int w = 1; w < ATTN_WARPS; w++) M = fmaxf(M, sm.max[w]);
    total = 0.f;
#pragma unroll
    for (int w = 0; w < ATTN_WARPS; w++) {
        f[w] = sm.max[w] == -INFINITY ? 0.f : expf(sm.max[w] - M);
        total += sm.sum[w] * f[w];
    }
}

/* Σ_w acc_w[dim] · f[w]: dimension `dim` of the block's unnormalised output. */
template <int HDT>
static __device__ __forceinline__ float skd_attn_merged(const skd_attn_warps<HDT> &sm, const float (&f)[ATTN_WARPS], int dim) {
    float a = 0.f;
#pragma unroll
    for (int w = 0; w < ATTN_WARPS; w++) a = fmaf(sm.acc[w][dim], f[w], a);
    return a;
}

/* Instantiates LAUNCH(HDT) for the head size: HDT = 1, 2, 4 or 8 dims per lane
 * (head_dim <= 32, 64, 128, 256); returns SKD_ERR_UNSUPPORTED above. */
#define SKD_ATTN_DISPATCH_HDT(hd, LAUNCH)                                                                              \
    do {                                                                                                               \
        if ((hd) <= 32)                                                                                                \
            LAUNCH(1);                                                                                                 \
        else if ((hd) <= 64)                                                                                           \
            LAUNCH(2);                                                                                                 \
        else if ((hd) <= 128)                                                                                          \
            LAUNCH(4);                                                                                                 \
        else if ((hd) <= SKD_ATTN_MAX_HEAD_DIM)                                                                        \
            LAUNCH(8);                                                                                                 \
        else                                                                                                           \
            return skd_fail(SKD_ERR_UNSUPPORTED, "attention: head_dim %d > %d is not supported", (hd),                 \
                            SKD_ATTN_MAX_HEAD_DIM);                                                                    \
    } while (0)

#endif
