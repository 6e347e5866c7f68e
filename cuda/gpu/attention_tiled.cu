/* attention_tiled.cu — flash-style tiled attention for steps of many rows
 * (prefill), SKIPDECODE_CUDA_ATTN=tiled. Experimental: compiled everywhere,
 * never run on a GPU yet (docs/cuda.md).
 *
 * A block takes TQ = 64 consecutive active rows and one head. Keys and values
 * come through shared memory in tiles of TK = 32 positions, read once per
 * block and used by all its rows (the per-row kernel, attention.cu, reads each row's
 * whole K/V from L2: for a 2048-token prompt that is ~1000 times the cache's
 * bytes per layer). Each row keeps its online-softmax state (max, sum,
 * acc[hd]) in registers; TPR = ceil(hd / 64) threads share a row, each owning
 * 64 of its dims, and add their partial dot products with shuffles. Rows of a
 * block may belong to different sequences (a step prefills several): the
 * block serves them slot by slot, smallest first, each over keys 0..(the
 * largest position among that slot's rows), masking per row (causal).
 * Work: the same FLOPs as the per-row kernel; K/V bytes from L2 / 64.
 * TODO(perf): tensor cores (mma.sync) for Q·Kᵀ and P·V. */
#include <climits>

#include "attention.cuh"

#define TQ 64
#define TK 32
#define TDIMS 64 /* dims per thread */

template <typename T, int TPR>
static __global__ void __launch_bounds__(TQ *TPR)
    tiled_attention_kernel(T *__restrict__ out, const T *__restrict__ qkv, const T *__restrict__ kc, const T *__restrict__ vc,
                           const int32_t *__restrict__ idx, const int32_t *__restrict__ slot, const int32_t *__restrict__ pos,
                           int m, int layer, int n_layers, int max_seq, int qd, int kd, int group, int hd, float scale) {
    constexpr int HD = TDIMS * TPR;
    __shared__ T ks[TK][HD];
    __shared__ T vs[TK][HD];
    __shared__ int s_slot[TQ], s_pos[TQ];
    __shared__ int s_cur, s_kmax;
    const int t = threadIdx.x, row = t / TPR, sub = t % TPR, head = blockIdx.y;
    const int i = blockIdx.x * TQ + row;
    const bool valid = i < m;
    int my_slot = INT_MAX, my_pos = -1;
    if (valid) {
        const int r = idx[i];
        my_slot = slot[r];
        my_pos = pos[r];
    }
    const int d0 = sub * TDIMS; /* this thread's dims: d0 .. d0 + 63 (those < hd) */
    float q[TDIMS], acc[TDIMS];
    const T *qrow = qkv + (size_t)i * (qd + 2 * kd) + (size_t)head * hd;
#pragma unroll
    for (int d = 0; d < TDIMS; d++) {
        q[d] = (valid && d0 + d < hd) ? skd_to_f32<T>(qrow[d0 + d]) * scale : 0.f;
        acc[d] = 0.f;
    }
    float mx = -INFINITY, l = 0.f;
    bool done = !valid;
    const size_t head_off = (size_t)(head / group) * hd;
    for (;;) {
        if (sub == 0) {
            s_slot[row] = done ? INT_MAX : my_slot;
            s_pos[row] = my_pos;
        }
        __syncthreads();
        if (t == 0) {
            int cur = INT_MAX, kmax = -1;
            for (int k = 0; k < TQ; k++) cur = min(cur, s_slot[k]);
            for (int k = 0; k < TQ; k++)
                if (s_slot[k] == cur) kmax = max(kmax, s_pos[k]);
            s_cur = cur;
            s_kmax = kmax;
        }
        __syncthreads();
        const int cur = s_cur, kmax = s_kmax;
        if (cur == INT_MAX) break; /* uniform: every row is done */
        const bool mine = !done && my_slot == cur;
        const size_t base = ((size_t)cur * n_layers + layer) * (size_t)max_seq * kd + head_off;
        for (int k0 = 0; k0 <= kmax; k0 += TK) {
            for (int e = t; e < TK * HD; e += TQ * TPR) {
                const int kk = e / HD, dd = e % HD, key = k0 + kk;
                const bool in = key <= kmax && dd < hd;
                ks[kk][dd] = in ? kc[base + (size_t)key * kd + dd] : skd_from_f32<T>(0.f);
                vs[kk][dd] = in ? vc[base + (size_t)key * kd + dd] : skd_from_f32<T>(0.f);
            }
            __syncthreads();
            float sc[TK], tmax = -INFINITY;
#pragma unroll
            for (int kk = 0; kk < TK; kk++) {
                float dot = 0.f;
#pragma unroll
                for (int d = 0; d < TDIMS; d++) dot = fmaf(q[d], skd_to_f32<T>(ks[kk][d0 + d]), dot);
#pragma unroll
                for (int o = 1; o < TPR; o <<= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
                sc[kk] = (mine && k0 + kk <= my_pos) ? dot : -INFINITY;
                tmax = fmaxf(tmax, sc[kk]);
            }
            if (tmax > -INFINITY) {
                const float nm = fmaxf(mx, tmax), c = expf(mx - nm); /* c = 0 while mx = -inf */
                l *= c;
#pragma unroll
                for (int d = 0; d < TDIMS; d++) acc[d] *= c;
#pragma unroll
                for (int kk = 0; kk < TK; kk++) {
                    const float p = sc[kk] == -INFINITY ? 0.f : expf(sc[kk] - nm);
                    l += p;
#pragma unroll
                    for (int d = 0; d < TDIMS; d++) acc[d] = fmaf(p, skd_to_f32<T>(vs[kk][d0 + d]), acc[d]);
                }
                mx = nm;
            }
            __syncthreads(); /* the tile is reused */
        }
        if (mine) done = true;
    }
    if (!valid) return;
    T *o = out + (size_t)i * qd + (size_t)head * hd;
    const float inv = 1.f / l;
#pragma unroll
    for (int d = 0; d < TDIMS; d++)
        if (d0 + d < hd) o[d0 + d] = skd_from_f32<T>(acc[d] * inv);
}

template <typename T>
static int launch(void *out, const void *qkv, const void *kc, const void *vc, const int32_t *idx, const int32_t *slot,
                  const int32_t *pos, int m, int layer, int n_layers, int max_seq, int n_heads, int n_kv_heads, int hd,
                  cudaStream_t stream) {
    const int qd = n_heads * hd, kd = n_kv_heads * hd, group = n_heads / n_kv_heads;
    const float scale = 1.0f / sqrtf((float)hd);
    const dim3 tgrid((unsigned)((m + TQ - 1) / TQ), (unsigned)n_heads);
#define SKD_TILED_LAUNCH(TPR)                                                                                          \
    tiled_attention_kernel<T, TPR><<<tgrid, TQ * TPR, 0, stream>>>((T *)out, (const T *)qkv, (const T *)kc, (const T *)vc, \
                                                                    idx, slot, pos, m, layer, n_layers, max_seq, qd, kd, group, hd, scale)
    if (hd <= TDIMS)
        SKD_TILED_LAUNCH(1);
    else if (hd <= 2 * TDIMS)
        SKD_TILED_LAUNCH(2);
    else if (hd <= 4 * TDIMS)
        SKD_TILED_LAUNCH(4);
    else
        return skd_fail(SKD_ERR_UNSUPPORTED, "tiled attention: head_dim %d > %d is not supported", hd, 4 * TDIMS);
#undef SKD_TILED_LAUNCH
    SKD_CUDA_CHECK_LAUNCH("tiled_attention_kernel");
    return SKD_OK;
}

int skd_attention_tiled(void *out, const void *qkv, const void *kc, const void *vc, const int32_t *idx, const int32_t *slot,
                        const int32_t *pos, int m, int layer, int n_layers, int max_seq, int n_heads, int n_kv_heads, int hd,
                        int dtype, cudaStream_t stream) {
    if (dtype == SKD_DTYPE_F16)
        return launch<__half>(out, qkv, kc, vc, idx, slot, pos, m, layer, n_layers, max_seq, n_heads, n_kv_heads, hd, stream);
    return launch<__nv_bfloat16>(out, qkv, kc, vc, idx, slot, pos, m, layer, n_layers, max_seq, n_heads, n_kv_heads, hd,
                                 stream);
}
