/* engine.cuh — the CUDA engine's state, shared by engine.cu (life cycle,
 * weights, slots) and step.cu (the forward pass). */
#ifndef SKD_GPU_ENGINE_CUH
#define SKD_GPU_ENGINE_CUH
#include "attention.cuh"
#include "common.cuh"
#include "gemm.cuh"
#include "graphs.cuh"
#include "sample.cuh"

/* Device pointers to one layer's weights (compute dtype; NULL where the model
 * has no such tensor). Q, K and V are stored fused: qkv_w [qd + 2kd, d] =
 * [q_proj; k_proj; v_proj], qkv_b likewise. The MLP's up projection: ReLU
 * fc1_w [f, d]; SwiGLU fc1_w [2f, d] = [gate_proj; up_proj], one GEMM. */
typedef struct {
    void *attn_ln_w, *attn_ln_b, *qkv_w, *qkv_b, *o_w, *o_b;
    void *mlp_ln_w, *mlp_ln_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} skd_gpu_layer;

/* Bytes of a step's host-to-device upload for n rows (layout in step.cu): the
 * int32 index lists, then one skd_sample_row per sampling row. */
static inline size_t skd_gpu_upload_bytes(int n_layers, size_t n) {
    return (size_t)(4 + n_layers) * n * sizeof(int32_t) + n * sizeof(skd_sample_row);
}

#define SKD_GPU_N_ROLES SKD_N_ROLES /* role ids are below it (plan.h) */

struct skd_engine {
    skd_shape s;
    int device;        /* CUDA device the engine lives on (the current one at create) */
    int dtype;         /* compute dtype: SKD_DTYPE_F16 or SKD_DTYPE_BF16 */
    cudaStream_t stream;

    /* kernel variants (engine.cu: SKIPDECODE_CUDA_GEMM / _ATTN / _GRAPHS) */
    skd_gemm_ctx gemm;    /* tensor cores on/off and the split-K workspace */
    skd_attn_ctx attn;    /* split-K attention workspace; attn.splits = 1 when off */
    skd_graph_cache graphs; /* captured steps (graphs.cu); graphs.mode = 0 when off */

    /* weights: one device arena */
    void *warena;
    size_t warena_bytes;
    void *embed_tokens, *embed_positions, *project_in, *project_out, *final_ln_w, *final_ln_b, *lm_head;
    float *rope_inv_freq;  /* [head_dim / 2] fp32, rotary models */
    skd_gpu_layer *layers; /* host array [L] of device pointers */
    uint8_t *have;         /* [(L + 1) × SKD_GPU_N_ROLES]: row 0 global, row l+1 layer l */
    int finalized;
    int64_t weight_bytes;
    void *stage;           /* device staging for dtype conversion at load; freed at finalize */
    size_t stage_bytes;

    /* KV cache, compute dtype, [max_slots][L][max_seq][d] each */
    void *k_cache, *v_cache;

    /* scratch for max_rows rows: one device arena */
    void *sarena;
    float *h;           /* fp32 [R, d]: the residual stream, row i = step row i */
    void *xn;           /* [R, d] LN / gather output (GEMM input) */
    void *qkv;          /* [R, qd + 2kd] */
    void *att;          /* [R, qd] */
    void *ff;           /* [R, ffn] */
    void *gu;           /* [R, 2 ffn] SwiGLU: gate and up outputs */
    float *rope;        /* [R, head_dim] fp32: cos, sin of each step row's position (rotary) */
    void *xe;           /* [R, e] project_out output */
    float *logits_dev;  /* fp32 [logit_chunk, V]: LM-head output, for the host and the sampler */
    int logit_chunk;
    int32_t *idx_dev;   /* per-step upload (layout in step.cu): (4 + L) × R int32, then R skd_sample_row */
    int32_t *idx_host;  /* pinned mirror of idx_dev, then R int32 for the sampled tokens */
    int32_t *tok_dev;   /* [R] sampled token ids, in row order of the sampling rows */
    int32_t *tok_host;  /* [R] pinned, inside the idx_host allocation */
    int32_t *layer_m;   /* host [L]: active rows per layer in the current step */

    /* host KV bookkeeping (plan.h) */
    skd_slot *slots;
    int32_t *kv_len;       /* [max_slots × L] */
    int32_t *plan_scratch; /* [max_slots × (L + 2)] */
};

#endif
