/* gemm.cu — Y[m, n] = X[m, k] · W[n, k]ᵀ (+ bias, ReLU, residual add), fp32 accumulation.
 *
 * Two kernels, picked by m:
 *   gemv_kernel   m <= 16 (decode): one warp per output column n and up to 8
 *                 rows per block row; W is streamed once per 8 rows with 16-byte
 *                 loads (k % 8 == 0 and aligned), else 2-byte loads. X rows are
 *                 tiny and come from L1/L2. Bandwidth-bound: reads n·k·2 bytes of W.
 *   tiled_kernel  m > 16 (prefill): classic 64×64 shared-memory tiles, BK = 16,
 *                 256 threads × 4×4 outputs, fp32 in shared memory, bounds-checked
 *                 loads so any shape works.
 * These are the SIMT kernels: the first path verified on a GPU, and the one
 * for shapes the tensor-core kernels (gemm_tc.cu, SKIPDECODE_CUDA_GEMM=tc)
 * do not take (k % 8 != 0, unaligned rows).
 * TODO(perf): wgmma + TMA on sm_90 for prefill; fusing the LN prologue and the
 * LM head's top-k. */
#include "gemm.cuh"

/* ---- small m: one warp per output column ------------------------------------ */
#define GEMV_ROWS 8
#define GEMV_WARPS 8

template <typename T, bool VEC>
static __global__ void __launch_bounds__(GEMV_WARPS * 32) gemv_kernel(skd_gemm_args a) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n = blockIdx.x * GEMV_WARPS + warp;
    if (n >= a.n) return; /* whole warp; no block-level sync below */
    const int r0 = blockIdx.y * GEMV_ROWS;
    const int mr = min(GEMV_ROWS, a.m - r0);
    const T *w = (const T *)a.w + (size_t)n * a.k;
    const T *xr[GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) {
        const int i = r0 + (r < mr ? r : 0);
        xr[r] = (const T *)a.x + (size_t)(a.x_rows ? a.x_rows[i] : i) * a.ldx;
    }
    float acc[GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) acc[r] = 0.f;

    if constexpr (VEC) { /* k % 8 == 0, rows 16-byte aligned */
        for (int kk = lane * 8; kk < a.k; kk += 32 * 8) {
            float wv[8];
            skd_load8<T>(w + kk, wv);
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; r++) {
                if (r < mr) {
                    float xv[8];
                    skd_load8<T>(xr[r] + kk, xv);
#pragma unroll
                    for (int q = 0; q < 8; q++) acc[r] = fmaf(wv[q], xv[q], acc[r]);
                }
            }
        }
    } else {
        for (int kk = lane; kk < a.k; kk += 32) {
            const float wv = skd_to_f32<T>(w[kk]);
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; r++)
                if (r < mr) acc[r] = fmaf(wv, skd_to_f32<T>(xr[r][kk]), acc[r]);
        }
    }
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) {
        const float s = skd_warp_sum(acc[r]);
        if (lane == r && r < mr) skd_gemm_epilogue<T>(a, r0 + r, n, s);
    }
}

/* ---- larger m: shared-memory tiles ------------------------------------------ */
#define TILE_M 64
#define TILE_N 64
#define TILE_K 16

template <typename T>
static __global__ void __launch_bounds__(256) tiled_kernel(skd_gemm_args a) {
    __shared__ float xs[TILE_K][TILE_M + 4]; /* X tile, transposed: xs[kk][row] */
    __shared__ float ws[TILE_K][TILE_N + 4]; /* W tile, transposed: ws[kk][col] */
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int m0 = blockIdx.y * TILE_M, n0 = blockIdx.x * TILE_N;
    /* Loading: thread tid fills column kk = tid % 16 of tile rows tid / 16 + 16 q. */
    const int lk = tid % TILE_K;
    const T *xrow[4], *wrow[4];
#pragma unroll
    for (int q = 0; q < 4; q++) {
        const int row = tid / TILE_K + 16 * q;
        const int gm = m0 + row, gn = n0 + row;
        xrow[q] = gm < a.m ? (const T *)a.x + (size_t)(a.x_rows ? a.x_rows[gm] : gm) * a.ldx : nullptr;
        wrow[q] = gn < a.n ? (const T *)a.w + (size_t)gn * a.k : nullptr;
    }
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.f;

    for (int k0 = 0; k0 < a.k; k0 += TILE_K) {
        const int kg = k0 + lk;
#pragma unroll
        for (int q = 0; q < 4; q++) {
            const int row = tid / TILE_K + 16 * q;
            xs[lk][row] = (xrow[q] && kg < a.k) ? skd_to_f32<T>(xrow[q][kg]) : 0.f;
            ws[lk][row] = (wrow[q] && kg < a.k) ? skd_to_f32<T>(wrow[q][kg]) : 0.f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TILE_K; kk++) {
            float av[4], bv[4];
#pragma unroll
            for (int i = 0; i < 4; i++) av[i] = xs[kk][ty * 4 + i];
#pragma unroll
            for (int j = 0; j < 4; j++) bv[j] = ws[kk][tx * 4 + j];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int gm = m0 + ty * 4 + i;
        if (gm >= a.m) continue;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int gn = n0 + tx * 4 + j;
            if (gn < a.n) skd_gemm_epilogue<T>(a, gm, gn, acc[i][j]);
        }
    }
}

template <typename T>
static int launch(const skd_gemm_args *a, cudaStream_t stream) {
    if (a->m <= 16) {
        const dim3 grid((unsigned)((a->n + GEMV_WARPS - 1) / GEMV_WARPS), (unsigned)((a->m + GEMV_ROWS - 1) / GEMV_ROWS));
        const bool vec = a->k % 8 == 0 && a->ldx % 8 == 0 && skd_aligned(a->x, 16) && skd_aligned(a->w, 16);
        if (vec)
            gemv_kernel<T, true><<<grid, GEMV_WARPS * 32, 0, stream>>>(*a);
        else
            gemv_kernel<T, false><<<grid, GEMV_WARPS * 32, 0, stream>>>(*a);
        SKD_CUDA_CHECK_LAUNCH("gemv_kernel");
    } else {
        const dim3 grid((unsigned)((a->n + TILE_N - 1) / TILE_N), (unsigned)((a->m + TILE_M - 1) / TILE_M));
        tiled_kernel<T><<<grid, 256, 0, stream>>>(*a);
        SKD_CUDA_CHECK_LAUNCH("tiled_kernel");
    }
    return SKD_OK;
}

int skd_gemm(const skd_gemm_args *a, int dtype, cudaStream_t stream) {
    if (a->m <= 0) return SKD_OK;
    if (a->n < 1 || a->k < 1 || !a->x || !a->w || (!a->y && !a->yf))
        return skd_fail(SKD_ERR_INVALID_ARG, "gemm: bad arguments (m %d, n %d, k %d)", a->m, a->n, a->k);
    if (a->ctx && a->ctx->tensor_cores) {
        const int st = skd_gemm_tc(a, dtype, stream);
        if (st != SKD_ERR_UNSUPPORTED) return st;
    }
    return dtype == SKD_DTYPE_F16 ? launch<__half>(a, stream) : launch<__nv_bfloat16>(a, stream);
}
