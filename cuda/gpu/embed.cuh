/* embed.cuh — token + learned position embedding into the fp32 hidden state. */
#ifndef SKD_GPU_EMBED_CUH
#define SKD_GPU_EMBED_CUH
#include "common.cuh"

/* For each row i in 0..n:
 *   h[i, 0..d) = (tok_emb ? tok_emb[tok[i], 0..d) : h[i, 0..d)) (+ pos_emb[pos[i] + pos_offset, 0..d))
 * (pos_emb NULL: rotary models have no position table)
 * h fp32 [n, d]; tables in the compute dtype, [*, d] row-major; tok, pos device int32 [n].
 * With project_in the caller first writes h = project_in(tok_emb[tok]) and passes tok_emb = NULL. */
int skd_embed(float *h, const void *tok_emb, const void *pos_emb, const int32_t *tok, const int32_t *pos, int pos_offset,
              int n, int d, int dtype, cudaStream_t stream);

#endif
