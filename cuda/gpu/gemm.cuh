/* gemm.cuh — Y = X · Wᵀ + b for nn.Linear weights, fp32 accumulation, with
 * row gathers/scatters and the epilogues the OPT block needs. */
#ifndef SKD_GPU_GEMM_CUH
#define SKD_GPU_GEMM_CUH
#include "common.cuh"

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
} skd_gemm_args;

/* Runs the GEMM on `stream`. Any m, n, k >= 1 (odd shapes take a scalar path). */
int skd_gemm(const skd_gemm_args *a, int dtype, cudaStream_t stream);

#endif
