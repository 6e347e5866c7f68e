/* attention.cuh — causal self-attention of the active rows over their slot's KV cache. */
#ifndef SKD_GPU_ATTENTION_CUH
#define SKD_GPU_ATTENTION_CUH
#include "common.cuh"

/* Largest head_dim the kernel handles (OPT uses 64, 80 and 128). */
#define SKD_ATTN_MAX_HEAD_DIM 256

/* For each active row i (r = idx[i], s = slot[r], p = pos[r]) and head h, with
 * KV head g = h / (n_heads / n_kv_heads) (grouped-query attention):
 *   q   = qkv[i, h·hd .. (h+1)·hd) · hd^-1/2
 *   out[i, h·hd ..) = softmax_j(q · K[s][layer][j][g]) · V[s][layer][j][g],  j = 0..p
 * qkv compact [m, qd + 2kd] (q first; qd = n_heads·hd, kd = n_kv_heads·hd);
 * kc, vc [max_slots][n_layers][max_seq][kd]; out compact [m, qd]; all in the
 * compute dtype; scores and softmax in fp32.
 * Every position 0..p must hold keys/values at `layer` (plan.h guarantees it,
 * and skd_kv_store has written this step's rows before this runs). */
/* Split-K ("flash-decoding", attention_split.cu) for steps of few rows and long contexts: keys
 * 0..p are cut into chunks of `chunk` keys, one block per (row, head, chunk);
 * each writes its partial softmax state (max, sum, acc[hd]) to `part`, and
 * the last block of a (row, head) to arrive merges them in chunk order (so
 * the result is deterministic) and resets its counter. The grid has `splits`
 * chunks per (row, head) whatever p is (blocks past p exit at once), so a
 * step's launches do not depend on positions and can be replayed from a CUDA
 * graph. Used when m <= max_rows; NULL or m > max_rows: one block per (row, head).
 * Tiled: with tiled_from > 0, a step of m >= tiled_from rows (prefill) takes
 * a kernel whose blocks serve 64 rows and share K/V tiles in shared memory
 * (attention_tiled.cu); head_dim <= 256. */
typedef struct {
    int tiled_from;    /* > 0: steps of at least this many rows take the tiled (flash-style) kernel */
    int splits, chunk; /* splits · chunk >= max_seq */
    int max_rows;      /* rows the workspace holds */
    float *part;       /* [max_rows][n_heads][splits][head_dim + 2] */
    int *count;        /* [max_rows][n_heads], zero between launches */
} skd_attn_ctx;

/* Largest head_dim of the tiled kernel (attention_tiled.cu). */
#define SKD_ATTN_TILED_MAX_HEAD_DIM 256

/* Runs the step's attention: the tiled kernel for steps of >= ctx->tiled_from
 * rows, split-K for steps of <= ctx->max_rows rows when ctx->splits > 1, else
 * one block per (row, head). ctx NULL: always the latter. */
int skd_attention(void *out, const void *qkv, const void *kc, const void *vc, const int32_t *idx, const int32_t *slot,
                  const int32_t *pos, int m, int layer, int n_layers, int max_seq, int n_heads, int n_kv_heads, int hd,
                  int dtype, const skd_attn_ctx *ctx, cudaStream_t stream);

/* The experimental variants skd_attention picks (attention_split.cu, attention_tiled.cu). */
int skd_attention_split(void *out, const void *qkv, const void *kc, const void *vc, const int32_t *idx, const int32_t *slot,
                        const int32_t *pos, int m, int layer, int n_layers, int max_seq, int n_heads, int n_kv_heads, int hd,
                        int dtype, const skd_attn_ctx *ctx, cudaStream_t stream);
int skd_attention_tiled(void *out, const void *qkv, const void *kc, const void *vc, const int32_t *idx, const int32_t *slot,
                        const int32_t *pos, int m, int layer, int n_layers, int max_seq, int n_heads, int n_kv_heads, int hd,
                        int dtype, cudaStream_t stream);

#endif
