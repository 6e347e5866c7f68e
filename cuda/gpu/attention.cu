/* attention.cu — causal self-attention of a step's active rows: one block per
 * (row, head), online softmax over keys 0..p (attention_block.cuh).
 * Work: (p+1)·hd·2 multiply-adds and (p+1)·hd·2·2 bytes of K/V per (row, head).
 *
 * skd_attention also picks the variant: the experimental split-K decode
 * kernel (attention_split.cu, SKIPDECODE_CUDA_ATTN=split) and the tiled
 * prefill kernel (attention_tiled.cu, SKIPDECODE_CUDA_ATTN=tiled) live in
 * files of their own until a GPU run verifies them (docs/cuda.md).
 * TODO(perf): several keys per warp (one per lane) with 16-byte loads. */
#include "attention.cuh"
#include "attention_block.cuh"

template <typename T, int HDT>
static __global__ void __launch_bounds__(ATTN_WARPS * 32)
    attention_kernel(T *__restrict__ out, const T *__restrict__ qkv, const T *__restrict__ kc, const T *__restrict__ vc,
                     const int32_t *__restrict__ idx, const int32_t *__restrict__ slot, const int32_t *__restrict__ pos,
                     int layer, int n_layers, int max_seq, int qd, int kd, int group, int hd, float scale) {
    __shared__ skd_attn_warps<HDT> sm;
    const int i = blockIdx.x, head = blockIdx.y;
    const int r = idx[i], p = pos[r];
    const size_t base = ((size_t)slot[r] * n_layers + layer) * (size_t)max_seq * kd + (size_t)(head / group) * hd;
    const T *q = qkv + (size_t)i * (qd + 2 * kd) + (size_t)head * hd;
    float M, total, f[ATTN_WARPS];
    skd_attn_block<T, HDT>(sm, q, kc, vc, base, kd, hd, scale, 0, p, M, total, f);
    T *o = out + (size_t)i * qd + (size_t)head * hd;
    const float inv = 1.f / total;
    for (int dim = threadIdx.x; dim < hd; dim += blockDim.x) o[dim] = skd_from_f32<T>(skd_attn_merged(sm, f, dim) * inv);
}

template <typename T>
static int launch(void *out, const void *qkv, const void *kc, const void *vc, const int32_t *idx, const int32_t *slot,
                  const int32_t *pos, int m, int layer, int n_layers, int max_seq, int n_heads, int n_kv_heads, int hd,
                  cudaStream_t stream) {
    const int qd = n_heads * hd, kd = n_kv_heads * hd, group = n_heads / n_kv_heads;
    const float scale = 1.0f / sqrtf((float)hd);
    const dim3 grid((unsigned)m, (unsigned)n_heads);
#define SKD_ATTN_LAUNCH(HDT)                                                                                               \
    attention_kernel<T, HDT><<<grid, ATTN_WARPS * 32, 0, stream>>>((T *)out, (const T *)qkv, (const T *)kc, (const T *)vc, \
                                                                    idx, slot, pos, layer, n_layers, max_seq, qd, kd, group, hd, scale)
    SKD_ATTN_DISPATCH_HDT(hd, SKD_ATTN_LAUNCH);
#undef SKD_ATTN_LAUNCH
    SKD_CUDA_CHECK_LAUNCH("attention_kernel");
    return SKD_OK;
}

int skd_attention(void *out, const void *qkv, const void *kc, const void *vc, const int32_t *idx, const int32_t *slot,
                  const int32_t *pos, int m, int layer, int n_layers, int max_seq, int n_heads, int n_kv_heads, int hd,
                  int dtype, const skd_attn_ctx *ctx, cudaStream_t stream) {
    if (m <= 0) return SKD_OK;
    if (ctx && ctx->tiled_from > 0 && m >= ctx->tiled_from && hd <= SKD_ATTN_TILED_MAX_HEAD_DIM)
        return skd_attention_tiled(out, qkv, kc, vc, idx, slot, pos, m, layer, n_layers, max_seq, n_heads, n_kv_heads, hd,
                                   dtype, stream);
    if (ctx && ctx->splits > 1 && m <= ctx->max_rows)
        return skd_attention_split(out, qkv, kc, vc, idx, slot, pos, m, layer, n_layers, max_seq, n_heads, n_kv_heads, hd,
                                   dtype, ctx, stream);
    if (dtype == SKD_DTYPE_F16)
        return launch<__half>(out, qkv, kc, vc, idx, slot, pos, m, layer, n_layers, max_seq, n_heads, n_kv_heads, hd, stream);
    return launch<__nv_bfloat16>(out, qkv, kc, vc, idx, slot, pos, m, layer, n_layers, max_seq, n_heads, n_kv_heads, hd,
                                 stream);
}
