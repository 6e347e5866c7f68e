/* rotary.cuh — rotary position embeddings (rotate-half convention) and the
 * SwiGLU activation: the two LLaMA-family pieces of the generic block. */
#ifndef SKD_GPU_ROTARY_CUH
#define SKD_GPU_ROTARY_CUH
#include "common.cuh"

/* table[i, j] = cos(pos[i] · inv_freq[j]), table[i, half + j] = sin(...), for
 * j < half = head_dim / 2 and the step's n rows; angles in double precision
 * (a position of 10^4 times a frequency near 1 keeps its fractional digits). */
int skd_rope_table(float *table, const int32_t *pos, const float *inv_freq, int n, int head_dim, cudaStream_t stream);

/* Rotates, in place, the q heads (columns 0..qd) and k heads (qd..qd+kd) of
 * the compact qkv rows i in 0..m, row r = idx[i] of the table:
 *   (x_j, x_{j+half}) <- (x_j cos − x_{j+half} sin, x_{j+half} cos + x_j sin)
 * qkv [m, qd + 2kd] in the compute dtype. */
int skd_rope_apply(void *qkv, const int32_t *idx, const float *table, int m, int qd, int kd, int head_dim, int dtype,
                   cudaStream_t stream);

/* ff[i, j] = silu(gu[i, j]) · gu[i, f + j] for i < m, j < f: gu is the
 * compact [m, 2f] output of the fused [gate; up] projection. */
int skd_swiglu(void *ff, const void *gu, int m, int f, int dtype, cudaStream_t stream);

#endif
