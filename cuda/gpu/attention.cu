/* attention.cu — one block per (row, head[, key chunk]), online softmax.
 *
 * The block's 4 warps split its keys round-robin. Per key a warp computes
 * q·k (lanes split head_dim, then a warp reduction) and folds it into its own
 * running (max, sum, acc[head_dim]) — the online softmax. The 4 partial states
 * are merged through shared memory at the end. fp32 throughout; no scores are
 * stored, so any sequence length fits.
 * Split-K (attention.cuh, skd_attn_ctx): with a context, the keys 0..p of a
 * row are cut into chunks, one block each, merged by the last block to finish
 * — a decode step of a few rows over a long context then fills the GPU.
 * Work: (p+1)·hd·2 multiply-adds and (p+1)·hd·2·2 bytes of K/V per (row, head).
 * Tiled (SKIPDECODE_CUDA_ATTN=tiled, below): steps of many rows (prefill) share
 * K/V tiles through shared memory, flash-attention style.
 * TODO(perf): several keys per warp (one per lane) with 16-byte loads; tensor
 * cores (mma.sync) for the tiled kernel's Q·Kᵀ and P·V. */
#include <climits>

#include "attention.cuh"

#define ATTN_WARPS 4

template <typename T, int HDT> /* HDT = ceil(head_dim / 32): dims per lane */
static __global__ void __launch_bounds__(ATTN_WARPS * 32)
    attention_kernel(T *__restrict__ out, const T *__restrict__ qkv, const T *__restrict__ kc, const T *__restrict__ vc,
                     const int32_t *__restrict__ idx, const int32_t *__restrict__ slot, const int32_t *__restrict__ pos,
                     int layer, int n_layers, int max_seq, int qd, int kd, int group, int hd, float scale, int chunk,
                     float *__restrict__ part, int *__restrict__ count) {
    __shared__ float sm_max[ATTN_WARPS], sm_sum[ATTN_WARPS];
    __shared__ float sm_acc[ATTN_WARPS][HDT * 32];
    __shared__ int is_last;
    const int i = blockIdx.x, head = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int r = idx[i], p = pos[r];
    /* keys of this block: j0 .. j1; the chunks that hold keys 0..p are 0 .. active-1 */
    const int active = splits == 1 ? 1 : p / chunk + 1;
    if (split >= active) return; /* whole block */
    const int j0 = splits == 1 ? 0 : split * chunk, j1 = splits == 1 ? p : min(p, j0 + chunk - 1);
    const size_t base = ((size_t)slot[r] * n_layers + layer) * (size_t)max_seq * kd + (size_t)(head / group) * hd;
    const T *q = qkv + (size_t)i * (qd + 2 * kd) + (size_t)head * hd;

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
    T *o = out + (size_t)i * qd + (size_t)head * hd;
    if (active == 1) {
        const float inv = 1.f / total;
        for (int dim = threadIdx.x; dim < hd; dim += blockDim.x) {
            float a = 0.f;
#pragma unroll
            for (int w = 0; w < ATTN_WARPS; w++) a = fmaf(sm_acc[w][dim], f[w], a);
            o[dim] = skd_from_f32<T>(a * inv);
        }
        return;
    }
    /* split: this chunk's state (max M, sum, unnormalised acc) to the workspace */
    const size_t rh = (size_t)i * gridDim.y + head, stride = (size_t)hd + 2;
    float *mine = part + (rh * splits + split) * stride;
    if (threadIdx.x == 0) {
        mine[0] = M;
        mine[1] = total;
    }
    for (int dim = threadIdx.x; dim < hd; dim += blockDim.x) {
        float a = 0.f;
#pragma unroll
        for (int w = 0; w < ATTN_WARPS; w++) a = fmaf(sm_acc[w][dim], f[w], a);
        mine[2 + dim] = a;
    }
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


/* ---- tiled (flash-attention style) for steps of many rows: prefill ------------------
 * A block takes TQ = 64 consecutive active rows and one head. Keys and values
 * come through shared memory in tiles of TK = 32 positions, read once per
 * block and used by all its rows (the per-row kernel above reads each row's
 * whole K/V from L2: for a 2048-token prompt that is ~1000 times the cache's
 * bytes per layer). Each row keeps its online-softmax state (max, sum,
 * acc[hd]) in registers; TPR = ceil(hd / 64) threads share a row, each owning
 * 64 of its dims, and add their partial dot products with shuffles. Rows of a
 * block may belong to different sequences (a step prefills several): the
 * block serves them slot by slot, smallest first, each over keys 0..(the
 * largest position among that slot's rows), masking per row (causal).
 * Work: the same FLOPs as the per-row kernel; K/V bytes from L2 / 64. */
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
                  const skd_attn_ctx *ctx, cudaStream_t stream) {
    const int qd = n_heads * hd, kd = n_kv_heads * hd, group = n_heads / n_kv_heads;
    const float scale = 1.0f / sqrtf((float)hd);
    if (ctx && ctx->tiled_from > 0 && m >= ctx->tiled_from && hd <= 4 * TDIMS) {
        const dim3 tgrid((unsigned)((m + TQ - 1) / TQ), (unsigned)n_heads);
#define SKD_TILED_LAUNCH(TPR)                                                                                          \
    tiled_attention_kernel<T, TPR><<<tgrid, TQ * TPR, 0, stream>>>((T *)out, (const T *)qkv, (const T *)kc, (const T *)vc, \
                                                                    idx, slot, pos, m, layer, n_layers, max_seq, qd, kd, group, hd, scale)
        if (hd <= TDIMS)
            SKD_TILED_LAUNCH(1);
        else if (hd <= 2 * TDIMS)
            SKD_TILED_LAUNCH(2);
        else
            SKD_TILED_LAUNCH(4);
#undef SKD_TILED_LAUNCH
        SKD_CUDA_CHECK_LAUNCH("tiled_attention_kernel");
        return SKD_OK;
    }
    const bool split = ctx && ctx->splits > 1 && m <= ctx->max_rows;
    const int splits = split ? ctx->splits : 1, chunk = split ? ctx->chunk : max_seq;
    float *part = split ? ctx->part : nullptr;
    int *count = split ? ctx->count : nullptr;
    const dim3 grid((unsigned)m, (unsigned)n_heads, (unsigned)splits);
#define SKD_ATTN_LAUNCH(HDT)                                                                                               \
    attention_kernel<T, HDT><<<grid, ATTN_WARPS * 32, 0, stream>>>((T *)out, (const T *)qkv, (const T *)kc, (const T *)vc, \
                                                                    idx, slot, pos, layer, n_layers, max_seq, qd, kd, group, hd, scale, chunk, part, count)
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
                  const int32_t *pos, int m, int layer, int n_layers, int max_seq, int n_heads, int n_kv_heads, int hd,
                  int dtype, const skd_attn_ctx *ctx, cudaStream_t stream) {
    if (m <= 0) return SKD_OK;
    if (dtype == SKD_DTYPE_F16)
        return launch<__half>(out, qkv, kc, vc, idx, slot, pos, m, layer, n_layers, max_seq, n_heads, n_kv_heads, hd, ctx, stream);
    return launch<__nv_bfloat16>(out, qkv, kc, vc, idx, slot, pos, m, layer, n_layers, max_seq, n_heads, n_kv_heads, hd, ctx,
                                 stream);
}
