/* attention_split.cu — split-K ("flash-decoding") attention for steps of few
 * rows over long contexts (SKIPDECODE_CUDA_ATTN=split or tiled). Experimental:
 * compiled everywhere, never run on a GPU yet (docs/cuda.md).
 *
 * Keys 0..p of a row are cut into chunks of ctx->chunk keys, one block per
 * (row, head, chunk), each running the per-(row, head) kernel's online softmax
 * (attention_block.cuh) over its chunk. A row whose keys fit one chunk writes
 * its output at once; otherwise each block writes its partial state (max,
 * sum, acc[hd]) to ctx->part, and the last block of a (row, head) to arrive
 * merges them in chunk order (so the result is deterministic) and resets its
 * counter. The grid has ctx->splits chunks per (row, head) whatever p is
 * (blocks past p exit at once), so a step's launches do not depend on
 * positions and can be replayed from a CUDA graph (graphs.cu). */
#include "attention.cuh"
#include "attention_block.cuh"

template <typename T, int HDT>
static __global__ void __launch_bounds__(ATTN_WARPS * 32)
    split_attention_kernel(T *__restrict__ out, const T *__restrict__ qkv, const T *__restrict__ kc,
                           const T *__restrict__ vc, const int32_t *__restrict__ idx, const int32_t *__restrict__ slot,
                           const int32_t *__restrict__ pos, int layer, int n_layers, int max_seq, int qd, int kd, int group,
                           int hd, float scale, int chunk, float *__restrict__ part, int *__restrict__ count) {
    __shared__ skd_attn_warps<HDT> sm;
    __shared__ int is_last;
    const int i = blockIdx.x, head = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
    const int r = idx[i], p = pos[r];
    /* keys of this block: j0 .. j1; the chunks that hold keys 0..p are 0 .. active-1 */
    const int active = p / chunk + 1;
    if (split >= active) return; /* whole block */
    const int j0 = split * chunk, j1 = min(p, j0 + chunk - 1);
    const size_t base = ((size_t)slot[r] * n_layers + layer) * (size_t)max_seq * kd + (size_t)(head / group) * hd;
    const T *q = qkv + (size_t)i * (qd + 2 * kd) + (size_t)head * hd;
    float M, total, f[ATTN_WARPS];
    skd_attn_block<T, HDT>(sm, q, kc, vc, base, kd, hd, scale, j0, j1, M, total, f);
    T *o = out + (size_t)i * qd + (size_t)head * hd;
    if (active == 1) {
        const float inv = 1.f / total;
        for (int dim = threadIdx.x; dim < hd; dim += blockDim.x) o[dim] = skd_from_f32<T>(skd_attn_merged(sm, f, dim) * inv);
        return;
    }
    /* this chunk's state (max M, sum, unnormalised acc) to the workspace */
    const size_t rh = (size_t)i * gridDim.y + head, stride = (size_t)hd + 2;
    float *mine = part + (rh * splits + split) * stride;
    if (threadIdx.x == 0) {
        mine[0] = M;
        mine[1] = total;
    }
    for (int dim = threadIdx.x; dim < hd; dim += blockDim.x) mine[2 + dim] = skd_attn_merged(sm, f, dim);
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) is_last = atomicAdd(&count[rh], 1) == active - 1;
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    /* the last chunk to finish merges all of them, in chunk order */
    const float *all = part + rh * splits * stride;
    float Mg = -INFINITY;
    for (int c = 0; c < active; c++) Mg = fmaxf(Mg, __ldcg(all + c * stride));
    float tot = 0.f;
    for (int c = 0; c < active; c++) tot += __ldcg(all + c * stride + 1) * expf(__ldcg(all + c * stride) - Mg);
    const float inv = 1.f / tot;
    for (int dim = threadIdx.x; dim < hd; dim += blockDim.x) {
        float a = 0.f;
        for (int c = 0; c < active; c++)
            a = fmaf(__ldcg(all + c * stride + 2 + dim), expf(__ldcg(all + c * stride) - Mg), a);
        o[dim] = skd_from_f32<T>(a * inv);
    }
    if (threadIdx.x == 0) count[rh] = 0;
}

template <typename T>
static int launch(void *out, const void *qkv, const void *kc, const void *vc, const int32_t *idx, const int32_t *slot,
                  const int32_t *pos, int m, int layer, int n_layers, int max_seq, int n_heads, int n_kv_heads, int hd,
                  const skd_attn_ctx *ctx, cudaStream_t stream) {
    const int qd = n_heads * hd, kd = n_kv_heads * hd, group = n_heads / n_kv_heads;
    const float scale = 1.0f / sqrtf((float)hd);
    const dim3 grid((unsigned)m, (unsigned)n_heads, (unsigned)ctx->splits);
#define SKD_SPLIT_LAUNCH(HDT)                                                                                           \
    split_attention_kernel<T, HDT><<<grid, ATTN_WARPS * 32, 0, stream>>>(                                               \
        (T *)out, (const T *)qkv, (const T *)kc, (const T *)vc, idx, slot, pos, layer, n_layers, max_seq, qd, kd, group, hd, \
        scale, ctx->chunk, ctx->part, ctx->count)
    SKD_ATTN_DISPATCH_HDT(hd, SKD_SPLIT_LAUNCH);
#undef SKD_SPLIT_LAUNCH
    SKD_CUDA_CHECK_LAUNCH("split_attention_kernel");
    return SKD_OK;
}

int skd_attention_split(void *out, const void *qkv, const void *kc, const void *vc, const int32_t *idx, const int32_t *slot,
                        const int32_t *pos, int m, int layer, int n_layers, int max_seq, int n_heads, int n_kv_heads, int hd,
                        int dtype, const skd_attn_ctx *ctx, cudaStream_t stream) {
    if (dtype == SKD_DTYPE_F16)
        return launch<__half>(out, qkv, kc, vc, idx, slot, pos, m, layer, n_layers, max_seq, n_heads, n_kv_heads, hd, ctx,
                              stream);
    return launch<__nv_bfloat16>(out, qkv, kc, vc, idx, slot, pos, m, layer, n_layers, max_seq, n_heads, n_kv_heads, hd, ctx,
                                 stream);
}
