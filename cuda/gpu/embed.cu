/* embed.cu — h = embed_tokens[tok] (or h itself) + embed_positions[pos + offset].
 * One block per row; d elements, coalesced. Negligible next to the layers. */
#include "embed.cuh"

template <typename T>
static __global__ void embed_kernel(float *__restrict__ h, const T *__restrict__ tok_emb, const T *__restrict__ pos_emb,
                                    const int32_t *__restrict__ tok, const int32_t *__restrict__ pos, int pos_offset, int d) {
    const int i = blockIdx.x;
    float *hr = h + (size_t)i * d;
    const T *pr = pos_emb ? pos_emb + ((size_t)pos[i] + pos_offset) * d : nullptr;
    const T *tr = tok_emb ? tok_emb + (size_t)tok[i] * d : nullptr;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        const float base = tr ? skd_to_f32<T>(tr[j]) : hr[j];
        hr[j] = base + (pr ? skd_to_f32<T>(pr[j]) : 0.f);
    }
}

int skd_embed(float *h, const void *tok_emb, const void *pos_emb, const int32_t *tok, const int32_t *pos, int pos_offset,
              int n, int d, int dtype, cudaStream_t stream) {
    if (n <= 0) return SKD_OK;
    const int threads = d >= 256 ? 256 : ((d + 31) / 32) * 32;
    if (dtype == SKD_DTYPE_F16)
        embed_kernel<__half><<<n, threads, 0, stream>>>(h, (const __half *)tok_emb, (const __half *)pos_emb, tok, pos,
                                                         pos_offset, d);
    else
        embed_kernel<__nv_bfloat16><<<n, threads, 0, stream>>>(h, (const __nv_bfloat16 *)tok_emb,
                                                                (const __nv_bfloat16 *)pos_emb, tok, pos, pos_offset, d);
    SKD_CUDA_CHECK_LAUNCH("embed_kernel");
    return SKD_OK;
}
