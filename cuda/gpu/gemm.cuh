/* gemm.cuh — Y = X · Wᵀ + b for nn.Linear weights, fp32 accumulation, with
 * row gathers/scatters and the epilogues the OPT block needs. */
#ifndef SKD_GPU_GEMM_CUH
#define SKD_GPU_GEMM_CUH
#include "common.cuh"

/* Which kernels skd_gemm may use, and the tensor-core path's workspace
 * (engine.cu owns it; gemm_tc.cu documents it). NULL in skd_gemm_args.ctx
 * means the SIMT kernels only. */
typedef struct {
    int tensor_cores;    /* 1: the mma.sync kernels of gemm_tc.cu where the shape allows */
    int tile_from;       /* m >= tile_from takes the tiled tensor-core GEMM, smaller m the skinny one */
    int target_blocks;   /* skinny kernel: split K until the grid has about this many blocks */
    float *part;         /* skinny split-K partial sums: SKD_TC_MAX_SPLITS × SKD_TC_SKINNY_M × SKD_TC_SPLIT_MAX_N fp32 */
    int *count;          /* skinny split-K arrival counters, SKD_TC_MAX_COUNTERS ints, zero between launches */
} skd_gemm_ctx;

#define SKD_TC_SKINNY_M 32        /* largest m of the skinny kernel */
#define SKD_TC_MAX_SPLITS 16      /* K splits of the skinny kernel, at most */
#define SKD_TC_SPLIT_MAX_N 16896  /* split K only when n is below this (264 blocks of 64 columns) */
#define SKD_TC_MAX_COUNTERS ((SKD_TC_SPLIT_MAX_N + 63) / 64)

typedef struct {
    /* X [m, k] in the compute dtype; row i is x + (x_rows ? x_rows[i] : i) * ldx
     * (x_rows lets project_in read the embedding table by token id). */
    const void *x;
    int ldx;
    const int32_t *x_rows;
    const void *w;    /* W [n, k] row-major (PyTorch [out, in]), compute dtype */
    const void *bias; /* [n] compute dtype, or NULL */
    int m, n, k;
    int relu;         /* v = max(v, 0) after the bias */
    /* Outputs (either or both): */
    void *y;          /* compute dtype, row i at y + i * ldy */
    int ldy;
    float *yf;        /* fp32, row (yf_rows ? yf_rows[i] : i) at yf + row * ldyf */
    int ldyf;
    const int32_t *yf_rows;
    int accumulate;   /* yf += v (the residual add) instead of yf = v */
    const skd_gemm_ctx *ctx; /* kernel choice and workspace; NULL = SIMT kernels */
} skd_gemm_args;

/* The epilogue every GEMM kernel applies to output (i, n) with its fp32 sum v. */
template <typename T>
static __device__ __forceinline__ void skd_gemm_epilogue(const skd_gemm_args &a, int i, int n, float v) {
    if (a.bias) v += skd_to_f32<T>(((const T *)a.bias)[n]);
    if (a.relu) v = fmaxf(v, 0.f);
    if (a.y) ((T *)a.y)[(size_t)i * a.ldy + n] = skd_from_f32<T>(v);
    if (a.yf) {
        const size_t r = a.yf_rows ? (size_t)a.yf_rows[i] : (size_t)i;
        float *p = a.yf + r * a.ldyf + n;
        *p = a.accumulate ? *p + v : v;
    }
}

/* Tensor-core GEMM (gemm_tc.cu) for T = __half or __nv_bfloat16. Returns
 * SKD_ERR_UNSUPPORTED, launching nothing, when the shape or alignment does not
 * fit (k % 8, ldx % 8, 16-byte aligned X and W, m <= SKD_TC_SKINNY_M for the
 * skinny kernel's workspace); skd_gemm then takes the SIMT kernels. */
int skd_gemm_tc(const skd_gemm_args *a, int dtype, cudaStream_t stream);

/* Once per process before any launch (and outside stream capture): raises the
 * dynamic shared-memory limit of the tensor-core kernels. */
int skd_gemm_tc_init(void);

/* Runs the GEMM on `stream`. Any m, n, k >= 1 (odd shapes take a scalar path). */
int skd_gemm(const skd_gemm_args *a, int dtype, cudaStream_t stream);

#endif
