/* gemm_tc.cu — Y[m, n] = X[m, k] · W[n, k]ᵀ on the tensor cores: mma.sync
 * m16n8k16 (sm_80 and newer), fp16/bf16 operands, fp32 accumulation, the
 * epilogue of gemm.cuh (bias, ReLU, 16-bit and/or fp32 output, row scatter,
 * residual add). Needs k % 8 == 0, ldx % 8 == 0 and 16-byte aligned X and W;
 * anything else stays on the SIMT kernels of gemm.cu.
 *
 * Two kernels, picked by m alone (so a row's result never depends on its
 * batch-mates: every output is the same sum in the same order whatever the
 * other rows are):
 *
 *   skinny_kernel   m < tile_from (default 33: decode, batches up to 32).
 *       Memory-bound: the job is to stream W [n, k] from HBM once, at full
 *       bandwidth, whatever m is. A block owns 64 output columns (8 n8 tiles)
 *       and a range of K; its 8 warps take interleaved 32-wide K chunks. Per
 *       chunk a lane loads 16 bytes of each of its 8 W rows straight into
 *       registers (no shared memory: every W byte is used once) and 16 bytes of
 *       X per m16 tile half. The 8 bf16/f16 values a lane holds serve two
 *       m16n8k16 steps: a K chunk's 32 values are assigned to mma "k slots" by a
 *       permutation that A and B share, so the dot products are unchanged:
 *         step s (0, 1), slot 2t+j   <-> k = 8t + 4s + j      (j = 0, 1)
 *                        slot 2t+8+j <-> k = 8t + 4s + 2 + j
 *       (t = lane % 4; the B fragment of m16n8k16 holds slots 2t, 2t+1 in b0
 *       and 2t+8, 2t+9 in b1, and A's a0/a2 the same slots of row g = lane/4).
 *       The 8 warps' accumulators are summed in warp order through shared
 *       memory. When there are fewer than `target_blocks` column blocks (about
 *       2 per SM), K is split over blocks as well: each writes its partial
 *       [m, 64] to ctx->part, and the last block to arrive (an atomic counter,
 *       threadfence-ordered) sums the splits in split order and applies the
 *       epilogue, then zeroes the counter for the next launch. Deterministic.
 *       Bytes: n·k·2 of W (once) + m·k·2 of X per column block (L2).
 *
 *   tile_kernel     m >= tile_from (prefill). Compute-bound: 128×128 output
 *       tiles, 8 warps of 64×32, K in steps of 32 through a 3-stage cp.async
 *       pipeline into shared memory (rows padded to 40 elements: the 8 rows an
 *       ldmatrix reads sit in distinct banks), ldmatrix.x4 fragments, 16 mma per
 *       warp per k16. Out-of-range rows/columns/K are zero-filled by cp.async's
 *       src-size operand. FLOPs 2·m·n·k.
 */
#include <stdlib.h>

#include "gemm.cuh"

/* ---- PTX wrappers --------------------------------------------------------------- */
template <typename T>
static __device__ __forceinline__ void mma16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__half>(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                 uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                        uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ uint32_t smem_addr(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16 bytes global -> shared; src_bytes 0 writes zeros (src is not read). */
static __device__ __forceinline__ void cp_async16(void *dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(src_bytes));
}
static __device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> static __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

static __device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

/* ---- skinny: small m, W streamed once ------------------------------------------- */
#define SK_WARPS 8
#define SK_NT 8               /* n8 tiles per block */
#define SK_BN (SK_NT * 8)     /* 64 output columns per block */

static size_t skinny_smem(int mt) { return (size_t)SK_WARPS * mt * 16 * SK_BN * sizeof(float); }

template <typename T, int MT> /* MT m16 tiles: m <= 16 MT */
static __global__ void __launch_bounds__(SK_WARPS * 32)
    skinny_kernel(skd_gemm_args a, int chunks_per_split, int splits, float *__restrict__ part, int *__restrict__ count) {
    extern __shared__ float red[]; /* [SK_WARPS][MT * 16][SK_BN] */
    __shared__ int is_last;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int n0 = blockIdx.x * SK_BN, split = blockIdx.y;
    const int nchunks = (a.k + 31) >> 5;
    const int c_begin = split * chunks_per_split;
    const int c_end = min(nchunks, c_begin + chunks_per_split);

    const T *xr[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int r = mt * 16 + g + 8 * h;
            xr[mt][h] = r < a.m ? (const T *)a.x + (size_t)(a.x_rows ? a.x_rows[r] : r) * a.ldx : nullptr;
        }
    const T *wr[SK_NT];
#pragma unroll
    for (int nt = 0; nt < SK_NT; nt++) {
        const int n = n0 + nt * 8 + g;
        wr[nt] = n < a.n ? (const T *)a.w + (size_t)n * a.k : nullptr;
    }
    float acc[MT][SK_NT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < SK_NT; nt++)
#pragma unroll
            for (int q = 0; q < 4; q++) acc[mt][nt][q] = 0.f;

    const uint4 zero = make_uint4(0, 0, 0, 0);
    for (int c = c_begin + warp; c < c_end; c += SK_WARPS) {
        const int kk = c * 32 + t * 8;
        const bool in = kk < a.k;
        uint4 wv[SK_NT];
#pragma unroll
        for (int nt = 0; nt < SK_NT; nt++)
            wv[nt] = (in && wr[nt]) ? __ldcs(reinterpret_cast<const uint4 *>(wr[nt] + kk)) : zero;
        uint4 xv[MT][2];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++)
                xv[mt][h] = (in && xr[mt][h]) ? __ldg(reinterpret_cast<const uint4 *>(xr[mt][h] + kk)) : zero;
#pragma unroll
        for (int nt = 0; nt < SK_NT; nt++)
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                mma16816<T>(acc[mt][nt], xv[mt][0].x, xv[mt][1].x, xv[mt][0].y, xv[mt][1].y, wv[nt].x, wv[nt].y);
                mma16816<T>(acc[mt][nt], xv[mt][0].z, xv[mt][1].z, xv[mt][0].w, xv[mt][1].w, wv[nt].z, wv[nt].w);
            }
    }
    /* C fragment: c0, c1 = (row g, cols 2t, 2t+1), c2, c3 = (row g + 8, same cols) */
    float *mine = red + (size_t)warp * MT * 16 * SK_BN;
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < SK_NT; nt++) {
            const int col = nt * 8 + 2 * t;
            float *r0 = mine + (size_t)(mt * 16 + g) * SK_BN + col, *r1 = r0 + 8 * SK_BN;
            r0[0] = acc[mt][nt][0];
            r0[1] = acc[mt][nt][1];
            r1[0] = acc[mt][nt][2];
            r1[1] = acc[mt][nt][3];
        }
    __syncthreads();
    const int outs = a.m * SK_BN;
    for (int e = threadIdx.x; e < outs; e += blockDim.x) {
        const int i = e / SK_BN, c = e % SK_BN, n = n0 + c;
        if (n >= a.n) continue;
        float v = 0.f;
#pragma unroll
        for (int w = 0; w < SK_WARPS; w++) v += red[((size_t)w * MT * 16 + i) * SK_BN + c];
        if (splits == 1) skd_gemm_epilogue<T>(a, i, n, v);
        else part[((size_t)split * a.m + i) * a.n + n] = v;
    }
    if (splits == 1) return;
    /* split K: the last block of this column block to finish sums the splits */
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) is_last = atomicAdd(&count[blockIdx.x], 1) == splits - 1;
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    for (int e = threadIdx.x; e < outs; e += blockDim.x) {
        const int i = e / SK_BN, c = e % SK_BN, n = n0 + c;
        if (n >= a.n) continue;
        float v = 0.f;
        for (int s = 0; s < splits; s++) v += __ldcg(&part[((size_t)s * a.m + i) * a.n + n]);
        skd_gemm_epilogue<T>(a, i, n, v);
    }
    if (threadIdx.x == 0) count[blockIdx.x] = 0;
}

/* ---- tile: large m, shared-memory pipeline ---------------------------------------- */
#define TB_M 128
#define TB_N 128
#define TB_K 32
#define TB_LD (TB_K + 8) /* padded row: 80 bytes, ldmatrix rows in distinct banks */
#define TB_STAGES 3
#define TB_THREADS 256

static size_t tile_smem(void) { return (size_t)TB_STAGES * (TB_M + TB_N) * TB_LD * 2; }

template <typename T>
static __global__ void __launch_bounds__(TB_THREADS) tile_kernel(skd_gemm_args a) {
    extern __shared__ uint4 tile_raw[];
    T *As = reinterpret_cast<T *>(tile_raw);     /* [STAGES][TB_M][TB_LD] */
    T *Bs = As + (size_t)TB_STAGES * TB_M * TB_LD; /* [STAGES][TB_N][TB_LD] */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int wm = warp >> 2, wn = warp & 3; /* warp tile: rows wm·64.., cols wn·32.. */
    const int m0 = blockIdx.y * TB_M, n0 = blockIdx.x * TB_N;

    /* Loads: each thread copies 2 16-byte chunks of A and 2 of B per stage:
     * chunk q = tid + 256 j, tile row q / 4, k offset (q % 4) · 8. */
    const T *asrc[2], *bsrc[2];
    int arow[2], akc[2];
#pragma unroll
    for (int j = 0; j < 2; j++) {
        const int q = tid + TB_THREADS * j;
        arow[j] = q >> 2;
        akc[j] = (q & 3) * 8;
        const int gm = m0 + arow[j], gn = n0 + arow[j];
        asrc[j] = gm < a.m ? (const T *)a.x + (size_t)(a.x_rows ? a.x_rows[gm] : gm) * a.ldx : nullptr;
        bsrc[j] = gn < a.n ? (const T *)a.w + (size_t)gn * a.k : nullptr;
    }
    auto load_stage = [&](int stage, int k0) {
        T *as = As + (size_t)stage * TB_M * TB_LD, *bs = Bs + (size_t)stage * TB_N * TB_LD;
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const int kk = k0 + akc[j];
            const bool kin = kk < a.k;
            cp_async16(as + arow[j] * TB_LD + akc[j], (asrc[j] && kin) ? asrc[j] + kk : (const T *)a.x,
                       (asrc[j] && kin) ? 16 : 0);
            cp_async16(bs + arow[j] * TB_LD + akc[j], (bsrc[j] && kin) ? bsrc[j] + kk : (const T *)a.w,
                       (bsrc[j] && kin) ? 16 : 0);
        }
    };

    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int q = 0; q < 4; q++) acc[i][j][q] = 0.f;

    const int KT = (a.k + TB_K - 1) / TB_K;
#pragma unroll
    for (int s = 0; s < TB_STAGES - 1; s++) {
        if (s < KT) load_stage(s, s * TB_K);
        cp_async_commit();
    }
    for (int kt = 0; kt < KT; kt++) {
        cp_async_wait<TB_STAGES - 2>();
        __syncthreads(); /* stage kt landed for everyone; stage kt-1 is free again */
        const int pf = kt + TB_STAGES - 1;
        if (pf < KT) load_stage(pf % TB_STAGES, pf * TB_K);
        cp_async_commit();
        const T *as = As + (size_t)(kt % TB_STAGES) * TB_M * TB_LD;
        const T *bs = Bs + (size_t)(kt % TB_STAGES) * TB_N * TB_LD;
#pragma unroll
        for (int kk = 0; kk < TB_K; kk += 16) {
            uint32_t af[4][4], bf[4][2];
#pragma unroll
            for (int mt = 0; mt < 4; mt++)
                ldmatrix_x4(af[mt], as + (wm * 64 + mt * 16 + (lane & 15)) * TB_LD + kk + (lane >> 4) * 8);
#pragma unroll
            for (int p = 0; p < 2; p++) {
                uint32_t r[4];
                ldmatrix_x4(r, bs + (wn * 32 + p * 16 + (lane & 7) + (lane >> 4) * 8) * TB_LD + kk + ((lane >> 3) & 1) * 8);
                bf[2 * p][0] = r[0];
                bf[2 * p][1] = r[1];
                bf[2 * p + 1][0] = r[2];
                bf[2 * p + 1][1] = r[3];
            }
#pragma unroll
            for (int mt = 0; mt < 4; mt++)
#pragma unroll
                for (int nt = 0; nt < 4; nt++)
                    mma16816<T>(acc[mt][nt], af[mt][0], af[mt][1], af[mt][2], af[mt][3], bf[nt][0], bf[nt][1]);
        }
    }
    cp_async_wait<0>();
#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int i = m0 + wm * 64 + mt * 16 + g + 8 * h;
                if (i >= a.m) continue;
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    const int n = n0 + wn * 32 + nt * 8 + 2 * t + c;
                    if (n < a.n) skd_gemm_epilogue<T>(a, i, n, acc[mt][nt][2 * h + c]);
                }
            }
}

/* ---- launchers ------------------------------------------------------------------ */
template <typename T>
static int launch(const skd_gemm_args *a, cudaStream_t stream) {
    const skd_gemm_ctx *ctx = a->ctx;
    if (a->m >= ctx->tile_from) {
        const dim3 grid((unsigned)((a->n + TB_N - 1) / TB_N), (unsigned)((a->m + TB_M - 1) / TB_M));
        tile_kernel<T><<<grid, TB_THREADS, tile_smem(), stream>>>(*a);
        SKD_CUDA_CHECK_LAUNCH("tile_kernel");
        return SKD_OK;
    }
    if (a->m > SKD_TC_SKINNY_M) return SKD_ERR_UNSUPPORTED;
    const int nb = (a->n + SK_BN - 1) / SK_BN, nchunks = (a->k + 31) / 32;
    /* K splits: enough blocks to fill the GPU, each warp at least one chunk */
    int splits = 1;
    if (a->n < SKD_TC_SPLIT_MAX_N && ctx->part && ctx->count) {
        splits = (ctx->target_blocks + nb - 1) / nb;
        const int most = nchunks / SK_WARPS;
        if (splits > most) splits = most;
        if (splits > SKD_TC_MAX_SPLITS) splits = SKD_TC_MAX_SPLITS;
        if (splits < 1) splits = 1;
    }
    const int cps = (nchunks + splits - 1) / splits;
    splits = (nchunks + cps - 1) / cps;
    const dim3 grid((unsigned)nb, (unsigned)splits);
    if (a->m <= 16)
        skinny_kernel<T, 1><<<grid, SK_WARPS * 32, skinny_smem(1), stream>>>(*a, cps, splits, ctx->part, ctx->count);
    else
        skinny_kernel<T, 2><<<grid, SK_WARPS * 32, skinny_smem(2), stream>>>(*a, cps, splits, ctx->part, ctx->count);
    SKD_CUDA_CHECK_LAUNCH("skinny_kernel");
    return SKD_OK;
}

int skd_gemm_tc(const skd_gemm_args *a, int dtype, cudaStream_t stream) {
    if (a->k % 8 || a->ldx % 8 || !skd_aligned(a->x, 16) || !skd_aligned(a->w, 16)) return SKD_ERR_UNSUPPORTED;
    return dtype == SKD_DTYPE_F16 ? launch<__half>(a, stream) : launch<__nv_bfloat16>(a, stream);
}

int skd_gemm_tc_init(void) {
    SKD_CUDA_TRY(cudaFuncSetAttribute(tile_kernel<__half>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)tile_smem()));
    SKD_CUDA_TRY(cudaFuncSetAttribute(tile_kernel<__nv_bfloat16>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      (int)tile_smem()));
    SKD_CUDA_TRY(cudaFuncSetAttribute(skinny_kernel<__half, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      (int)skinny_smem(2)));
    SKD_CUDA_TRY(cudaFuncSetAttribute(skinny_kernel<__nv_bfloat16, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      (int)skinny_smem(2)));
    return SKD_OK;
}
