/*
 * plan.h — host-side logic shared by both backends (header-only, C and C++):
 * configuration checks, the layer-membership rule, tensor shapes, and the KV
 * bookkeeping that decides whether a step is legal. Everything here runs on
 * the host before any arithmetic, so a refused step changes nothing.
 */
#ifndef SKD_PLAN_H
#define SKD_PLAN_H

#include <float.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "skipdecode.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Thread-local last error, one definition per backend (errors.c / errors.cu). */
int skd_fail(int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* skd_status_str's text, shared by both backends. */
static inline const char *skd_status_name(int status) {
    switch (status) {
    case SKD_OK: return "SKD_OK";
    case SKD_ERR_INVALID_ARG: return "SKD_ERR_INVALID_ARG";
    case SKD_ERR_OUT_OF_MEMORY: return "SKD_ERR_OUT_OF_MEMORY";
    case SKD_ERR_NO_DEVICE: return "SKD_ERR_NO_DEVICE";
    case SKD_ERR_KV_MISSING: return "SKD_ERR_KV_MISSING";
    case SKD_ERR_STATE: return "SKD_ERR_STATE";
    case SKD_ERR_DEVICE: return "SKD_ERR_DEVICE";
    case SKD_ERR_UNSUPPORTED: return "SKD_ERR_UNSUPPORTED";
    case SKD_ERR_KV_FULL: return "SKD_ERR_KV_FULL";
    default: return "unknown status";
    }
}

/* The ABI's family labels (skd_arch) by value, and their count + 1: data,
 * not a switch — the engines run one generic block and use the label only in
 * messages. A family that fits the descriptor adds its label here and in
 * skipdecode.h. */
static inline const char *skd_arch_name(int arch, int *count) {
    static const char *const names[] = { NULL, "SKD_ARCH_OPT", "SKD_ARCH_LLAMA" };
    const int n = (int)(sizeof names / sizeof *names);
    if (count) *count = n;
    return arch >= 1 && arch < n ? names[arch] : NULL;
}

/* Role ids are below this (skipdecode.h: SKD_T_GATE_B = 33). */
#define SKD_N_ROLES 34

/* The model shape, decoded from the int64 config array. */
typedef struct {
    int arch, n_layers, d, n_heads, head_dim, ffn, vocab, max_pos, embed_dim;
    int pre_ln, final_ln, pos_offset, max_slots, max_seq, max_rows, threads, compute_dtype;
    int norm, positions, mlp, n_kv_heads, no_bias; /* the family descriptor, 0s resolved to OPT's */
    int q_dim, kv_dim;                             /* n_heads·head_dim, n_kv_heads·head_dim */
    float norm_eps;
    int kv_dtype;                                  /* SKD_CFG_KV_DTYPE as given (0 = the backend's default) */
    int kv_block_size;                             /* positions per KV block, resolved */
    int64_t kv_blocks;                             /* blocks in the KV pool, resolved */
    int64_t kv_blocks_full;                        /* blocks of every slot at full depth and length */
} skd_shape;

/* Does the model have the biases of group `bit` (SKD_BIAS_*)? */
static inline int skd_has_bias(const skd_shape *s, int bit) {
    if (bit == SKD_BIAS_NORM && s->norm == SKD_NORM_RMS) return 0;
    return !(s->no_bias & bit);
}

/* The name of config slot i (SKD_CFG_<name>), for messages. */
static inline const char *skd_cfg_name(int i) {
    static const char *const names[SKD_CFG_COUNT] = {
        "ARCH", "NUM_LAYERS", "HIDDEN", "NUM_HEADS", "FFN", "VOCAB", "MAX_POSITIONS", "EMBED_DIM",
        "PRE_LN", "FINAL_LN", "POS_OFFSET", "MAX_SLOTS", "MAX_SEQ", "MAX_ROWS", "THREADS", "COMPUTE_DTYPE",
        "NORM", "POSITIONS", "MLP", "NUM_KV_HEADS", "HEAD_DIM", "NO_BIAS", "NORM_EPS_E12"};
    return i >= 0 && i < SKD_CFG_COUNT ? names[i] : "?";
}

static inline int skd_shape_from_cfg(const int64_t *cfg, int32_t n_cfg, skd_shape *s) {
    if (!cfg) return skd_fail(SKD_ERR_INVALID_ARG, "config pointer is NULL");
    if (n_cfg != SKD_CFG_COUNT)
        return skd_fail(SKD_ERR_INVALID_ARG, "config has %d slots, this library (ABI %d) expects %d",
                        (int)n_cfg, SKD_ABI_VERSION, SKD_CFG_COUNT);
    for (int i = 0; i < SKD_CFG_COUNT; i++)
        if (cfg[i] < 0 || cfg[i] > (int64_t)1 << 30)
            return skd_fail(SKD_ERR_INVALID_ARG, "config SKD_CFG_%s = %lld is out of range 0..2^30", skd_cfg_name(i),
                            (long long)cfg[i]);
    memset(s, 0, sizeof *s);
    s->arch = (int)cfg[SKD_CFG_ARCH];
    s->n_layers = (int)cfg[SKD_CFG_NUM_LAYERS];
    s->d = (int)cfg[SKD_CFG_HIDDEN];
    s->n_heads = (int)cfg[SKD_CFG_NUM_HEADS];
    s->ffn = (int)cfg[SKD_CFG_FFN];
    s->vocab = (int)cfg[SKD_CFG_VOCAB];
    s->max_pos = (int)cfg[SKD_CFG_MAX_POSITIONS];
    s->embed_dim = (int)cfg[SKD_CFG_EMBED_DIM];
    s->pre_ln = (int)cfg[SKD_CFG_PRE_LN];
    s->final_ln = (int)cfg[SKD_CFG_FINAL_LN];
    s->pos_offset = (int)cfg[SKD_CFG_POS_OFFSET];
    s->max_slots = (int)cfg[SKD_CFG_MAX_SLOTS];
    s->max_seq = (int)cfg[SKD_CFG_MAX_SEQ];
    s->max_rows = (int)cfg[SKD_CFG_MAX_ROWS];
    s->threads = (int)cfg[SKD_CFG_THREADS];
    s->compute_dtype = (int)cfg[SKD_CFG_COMPUTE_DTYPE];
    s->norm = cfg[SKD_CFG_NORM] ? (int)cfg[SKD_CFG_NORM] : SKD_NORM_LAYER;
    s->positions = cfg[SKD_CFG_POSITIONS] ? (int)cfg[SKD_CFG_POSITIONS] : SKD_POS_LEARNED;
    s->mlp = cfg[SKD_CFG_MLP] ? (int)cfg[SKD_CFG_MLP] : SKD_MLP_RELU;
    s->no_bias = (int)cfg[SKD_CFG_NO_BIAS];
    s->norm_eps = cfg[SKD_CFG_NORM_EPS_E12] ? (float)((double)cfg[SKD_CFG_NORM_EPS_E12] * 1e-12) : 1e-5f;
    if (!skd_arch_name(s->arch, NULL)) {
        char known[160] = "";
        int n = 0;
        skd_arch_name(0, &n);
        for (int a = 1, at = 0; a < n && at < (int)sizeof known; a++)
            at += snprintf(known + at, sizeof known - (size_t)at, "%s%s = %d", a > 1 ? ", " : "", skd_arch_name(a, NULL), a);
        return skd_fail(SKD_ERR_INVALID_ARG, "unknown architecture %d (%s)", s->arch, known);
    }
    if (s->n_layers < 1) return skd_fail(SKD_ERR_INVALID_ARG, "NUM_LAYERS must be >= 1, got %d", s->n_layers);
    if (s->norm != SKD_NORM_LAYER && s->norm != SKD_NORM_RMS)
        return skd_fail(SKD_ERR_INVALID_ARG, "NORM must be SKD_NORM_LAYER (1) or SKD_NORM_RMS (2), got %d", s->norm);
    if (s->positions != SKD_POS_LEARNED && s->positions != SKD_POS_ROTARY)
        return skd_fail(SKD_ERR_INVALID_ARG, "POSITIONS must be SKD_POS_LEARNED (1) or SKD_POS_ROTARY (2), got %d", s->positions);
    if (s->mlp != SKD_MLP_RELU && s->mlp != SKD_MLP_SWIGLU)
        return skd_fail(SKD_ERR_INVALID_ARG, "MLP must be SKD_MLP_RELU (1) or SKD_MLP_SWIGLU (2), got %d", s->mlp);
    if (s->no_bias > 15) return skd_fail(SKD_ERR_INVALID_ARG, "NO_BIAS must be a mask of SKD_BIAS_* bits (0..15), got %d", s->no_bias);
    if (s->n_heads < 1) return skd_fail(SKD_ERR_INVALID_ARG, "NUM_HEADS must be >= 1, got %d", s->n_heads);
    if (cfg[SKD_CFG_HEAD_DIM]) {
        s->head_dim = (int)cfg[SKD_CFG_HEAD_DIM];
    } else {
        if (s->d < 1 || s->d % s->n_heads)
            return skd_fail(SKD_ERR_INVALID_ARG, "HIDDEN (%d) must be a positive multiple of NUM_HEADS (%d) when HEAD_DIM is 0",
                            s->d, s->n_heads);
        s->head_dim = s->d / s->n_heads;
    }
    if (s->d < 1) return skd_fail(SKD_ERR_INVALID_ARG, "HIDDEN must be >= 1, got %d", s->d);
    if (s->positions == SKD_POS_ROTARY && s->head_dim % 2)
        return skd_fail(SKD_ERR_INVALID_ARG, "rotary positions need an even HEAD_DIM, got %d", s->head_dim);
    s->n_kv_heads = cfg[SKD_CFG_NUM_KV_HEADS] ? (int)cfg[SKD_CFG_NUM_KV_HEADS] : s->n_heads;
    if (s->n_heads % s->n_kv_heads)
        return skd_fail(SKD_ERR_INVALID_ARG, "NUM_KV_HEADS (%d) must divide NUM_HEADS (%d)", s->n_kv_heads, s->n_heads);
    s->q_dim = s->n_heads * s->head_dim;
    s->kv_dim = s->n_kv_heads * s->head_dim;
    if (s->ffn < 1) return skd_fail(SKD_ERR_INVALID_ARG, "FFN must be >= 1, got %d", s->ffn);
    if (s->vocab < 1) return skd_fail(SKD_ERR_INVALID_ARG, "VOCAB must be >= 1, got %d", s->vocab);
    if (s->embed_dim < 1) return skd_fail(SKD_ERR_INVALID_ARG, "EMBED_DIM must be >= 1, got %d", s->embed_dim);
    if (s->pre_ln > 1 || s->final_ln > 1) return skd_fail(SKD_ERR_INVALID_ARG, "PRE_LN and FINAL_LN must be 0 or 1");
    if (s->max_pos < 1) return skd_fail(SKD_ERR_INVALID_ARG, "MAX_POSITIONS must be >= 1, got %d", s->max_pos);
    if (s->max_slots < 1) return skd_fail(SKD_ERR_INVALID_ARG, "MAX_SLOTS must be >= 1, got %d", s->max_slots);
    if (s->max_seq < 1 || s->max_seq > s->max_pos)
        return skd_fail(SKD_ERR_INVALID_ARG, "MAX_SEQ (%d) must be in 1..MAX_POSITIONS (%d)", s->max_seq, s->max_pos);
    if (s->max_rows < 1) return skd_fail(SKD_ERR_INVALID_ARG, "MAX_ROWS must be >= 1, got %d", s->max_rows);
    if (s->compute_dtype != 0 && s->compute_dtype != SKD_DTYPE_F16 && s->compute_dtype != SKD_DTYPE_BF16)
        return skd_fail(SKD_ERR_INVALID_ARG, "COMPUTE_DTYPE must be 0, SKD_DTYPE_F16 or SKD_DTYPE_BF16, got %d", s->compute_dtype);
    /* the KV pool (skipdecode.h, "the KV cache") */
    s->kv_dtype = (int)cfg[SKD_CFG_KV_DTYPE];
    if (s->kv_dtype != 0 && s->kv_dtype != SKD_DTYPE_F32 && s->kv_dtype != SKD_DTYPE_F16 && s->kv_dtype != SKD_DTYPE_BF16)
        return skd_fail(SKD_ERR_INVALID_ARG, "KV_DTYPE must be 0, SKD_DTYPE_F32, SKD_DTYPE_F16 or SKD_DTYPE_BF16, got %d", s->kv_dtype);
    s->kv_block_size = cfg[SKD_CFG_KV_BLOCK_SIZE] ? (int)cfg[SKD_CFG_KV_BLOCK_SIZE] : (s->max_seq < 16 ? s->max_seq : 16);
    if (s->kv_block_size > s->max_seq)
        return skd_fail(SKD_ERR_INVALID_ARG, "KV_BLOCK_SIZE (%d) must be in 1..MAX_SEQ (%d)", s->kv_block_size, s->max_seq);
    const int64_t per_table = (s->max_seq + s->kv_block_size - 1) / s->kv_block_size;
    if ((double)s->max_slots * s->n_layers * per_table > 2147483647.0) /* block ids and tables are int32 */
        return skd_fail(SKD_ERR_INVALID_ARG, "MAX_SLOTS × NUM_LAYERS × ceil(MAX_SEQ / KV_BLOCK_SIZE) = %.0f blocks exceeds 2^31 - 1",
                        (double)s->max_slots * s->n_layers * per_table);
    s->kv_blocks_full = (int64_t)s->max_slots * s->n_layers * per_table;
    s->kv_blocks = cfg[SKD_CFG_KV_BLOCKS] ? cfg[SKD_CFG_KV_BLOCKS] : s->kv_blocks_full;
    return SKD_OK;
}

#ifdef __CUDACC__
#define SKD_HD __host__ __device__
#else
#define SKD_HD
#endif

/* splitmix64's finaliser: a bijective 64-bit mix. */
static inline SKD_HD uint64_t skd_mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The sampling draw for (seed, seq, step): uniform in [0, 1) with 24 bits,
 * exactly representable as a float. Counter-based: no state, so a draw never
 * depends on what else ran in the batch. */
static inline SKD_HD float skd_uniform(uint64_t seed, uint32_t seq, uint32_t step) {
    uint64_t x = skd_mix64(skd_mix64(skd_mix64(seed) ^ (uint64_t)seq) ^ (uint64_t)step);
    return (float)(x >> 40) * (1.0f / 16777216.0f);
}

/* Does a row with budget b and warm-up w compute layer l of L? (docs/DESIGN.md, "The method") */
static inline int skd_layer_active(int l, int L, int b, int w) {
    return b >= L || l < w || l >= L - (b - w);
}

static inline const char *skd_tensor_name(int role) {
    switch (role) {
    case SKD_T_EMBED_TOKENS: return "embed_tokens";
    case SKD_T_EMBED_POSITIONS: return "embed_positions";
    case SKD_T_PROJECT_IN: return "project_in";
    case SKD_T_PROJECT_OUT: return "project_out";
    case SKD_T_FINAL_LN_W: return "final_layer_norm.weight";
    case SKD_T_FINAL_LN_B: return "final_layer_norm.bias";
    case SKD_T_LM_HEAD: return "lm_head";
    case SKD_T_ROPE_INV_FREQ: return "rope inv_freq";
    case SKD_T_ATTN_LN_W: return "self_attn_layer_norm.weight";
    case SKD_T_ATTN_LN_B: return "self_attn_layer_norm.bias";
    case SKD_T_Q_W: return "q_proj.weight";
    case SKD_T_Q_B: return "q_proj.bias";
    case SKD_T_K_W: return "k_proj.weight";
    case SKD_T_K_B: return "k_proj.bias";
    case SKD_T_V_W: return "v_proj.weight";
    case SKD_T_V_B: return "v_proj.bias";
    case SKD_T_O_W: return "out_proj.weight";
    case SKD_T_O_B: return "out_proj.bias";
    case SKD_T_MLP_LN_W: return "final_layer_norm.weight (layer)";
    case SKD_T_MLP_LN_B: return "final_layer_norm.bias (layer)";
    case SKD_T_FC1_W: return "fc1.weight";
    case SKD_T_FC1_B: return "fc1.bias";
    case SKD_T_FC2_W: return "fc2.weight";
    case SKD_T_FC2_B: return "fc2.bias";
    case SKD_T_GATE_W: return "gate_proj.weight";
    case SKD_T_GATE_B: return "gate_proj.bias";
    default: return NULL;
    }
}

/* Shape of a tensor role: rows × cols (cols = 1 for vectors). Returns 0 for an
 * unknown role or one this model does not have (project_in without a
 * projection, final LN on a post-LN model). */
static inline int skd_tensor_shape(const skd_shape *s, int role, int64_t *rows, int64_t *cols) {
    const int proj = s->embed_dim != s->d, swiglu = s->mlp == SKD_MLP_SWIGLU;
    const int b_qkv = skd_has_bias(s, SKD_BIAS_QKV), b_o = skd_has_bias(s, SKD_BIAS_O);
    const int b_mlp = skd_has_bias(s, SKD_BIAS_MLP), b_norm = skd_has_bias(s, SKD_BIAS_NORM);
    *cols = 1;
    switch (role) {
    case SKD_T_EMBED_TOKENS: case SKD_T_LM_HEAD: *rows = s->vocab; *cols = s->embed_dim; return 1;
    case SKD_T_EMBED_POSITIONS: *rows = (int64_t)s->max_pos + s->pos_offset; *cols = s->d; return s->positions == SKD_POS_LEARNED;
    case SKD_T_ROPE_INV_FREQ: *rows = s->head_dim / 2; return s->positions == SKD_POS_ROTARY;
    case SKD_T_PROJECT_IN: *rows = s->d; *cols = s->embed_dim; return proj;
    case SKD_T_PROJECT_OUT: *rows = s->embed_dim; *cols = s->d; return proj;
    case SKD_T_FINAL_LN_W: *rows = s->d; return s->final_ln;
    case SKD_T_FINAL_LN_B: *rows = s->d; return s->final_ln && b_norm;
    case SKD_T_ATTN_LN_W: case SKD_T_MLP_LN_W: *rows = s->d; return 1;
    case SKD_T_ATTN_LN_B: case SKD_T_MLP_LN_B: *rows = s->d; return b_norm;
    case SKD_T_Q_W: *rows = s->q_dim; *cols = s->d; return 1;
    case SKD_T_K_W: case SKD_T_V_W: *rows = s->kv_dim; *cols = s->d; return 1;
    case SKD_T_Q_B: *rows = s->q_dim; return b_qkv;
    case SKD_T_K_B: case SKD_T_V_B: *rows = s->kv_dim; return b_qkv;
    case SKD_T_O_W: *rows = s->d; *cols = s->q_dim; return 1;
    case SKD_T_O_B: *rows = s->d; return b_o;
    case SKD_T_FC1_W: *rows = s->ffn; *cols = s->d; return 1;
    case SKD_T_FC1_B: *rows = s->ffn; return b_mlp;
    case SKD_T_FC2_W: *rows = s->d; *cols = s->ffn; return 1;
    case SKD_T_FC2_B: *rows = s->d; return b_mlp;
    case SKD_T_GATE_W: *rows = s->ffn; *cols = s->d; return swiglu;
    case SKD_T_GATE_B: *rows = s->ffn; return swiglu && b_mlp;
    default: return 0;
    }
}

static inline int skd_role_is_layer(int role) { return role >= SKD_T_ATTN_LN_W && role <= SKD_T_GATE_B; }

static inline int skd_dtype_is_quant(int dtype) { return dtype >= SKD_DTYPE_Q8_0 && dtype <= SKD_DTYPE_Q5_0; }

/* Elements per block of a dtype (1 for the float types), 0 for an unknown one. */
static inline int64_t skd_dtype_block(int dtype) {
    switch (dtype) {
    case SKD_DTYPE_F32: case SKD_DTYPE_F16: case SKD_DTYPE_BF16: return 1;
    case SKD_DTYPE_Q8_0: case SKD_DTYPE_Q4_0: case SKD_DTYPE_Q5_0: return 32;
    case SKD_DTYPE_Q4_K: case SKD_DTYPE_Q6_K: return 256;
    default: return 0;
    }
}

static inline const char *skd_dtype_name(int dtype) {
    switch (dtype) {
    case SKD_DTYPE_F32: return "F32";
    case SKD_DTYPE_F16: return "F16";
    case SKD_DTYPE_BF16: return "BF16";
    case SKD_DTYPE_Q8_0: return "Q8_0";
    case SKD_DTYPE_Q4_0: return "Q4_0";
    case SKD_DTYPE_Q4_K: return "Q4_K";
    case SKD_DTYPE_Q6_K: return "Q6_K";
    case SKD_DTYPE_Q5_0: return "Q5_0";
    default: return "unknown dtype";
    }
}

/* Roles that may hold a quantized dtype: the matrices and the token embedding. */
static inline int skd_role_quantizable(int role) {
    switch (role) {
    case SKD_T_EMBED_TOKENS: case SKD_T_PROJECT_IN: case SKD_T_PROJECT_OUT: case SKD_T_LM_HEAD:
    case SKD_T_Q_W: case SKD_T_K_W: case SKD_T_V_W: case SKD_T_O_W:
    case SKD_T_FC1_W: case SKD_T_FC2_W: case SKD_T_GATE_W: return 1;
    default: return 0;
    }
}

/* Checks a set_tensor call's role/layer/dtype/numel against the shape. */
static inline int skd_check_tensor(const skd_shape *s, int role, int layer, int dtype, const void *data, int64_t numel) {
    int64_t r, c;
    const char *name = skd_tensor_name(role);
    if (!name) return skd_fail(SKD_ERR_INVALID_ARG, "unknown tensor role %d", role);
    if (!skd_tensor_shape(s, role, &r, &c))
        return skd_fail(SKD_ERR_INVALID_ARG, "this model has no tensor %s (check EMBED_DIM, FINAL_LN and the family slots)",
                        name);
    if (skd_role_is_layer(role)) {
        if (layer < 0 || layer >= s->n_layers)
            return skd_fail(SKD_ERR_INVALID_ARG, "%s: layer %d out of range 0..%d", name, layer, s->n_layers - 1);
    } else if (layer != -1) {
        return skd_fail(SKD_ERR_INVALID_ARG, "%s is not a per-layer tensor: pass layer -1, got %d", name, layer);
    }
    if (!skd_dtype_block(dtype)) return skd_fail(SKD_ERR_INVALID_ARG, "%s: unknown dtype %d", name, dtype);
    if (!data) return skd_fail(SKD_ERR_INVALID_ARG, "%s: data pointer is NULL", name);
    if (numel != r * c)
        return skd_fail(SKD_ERR_INVALID_ARG, "%s (layer %d): expected %lld x %lld = %lld elements, got %lld", name, layer,
                        (long long)r, (long long)c, (long long)(r * c), (long long)numel);
    if (skd_dtype_is_quant(dtype) && !skd_role_quantizable(role))
        return skd_fail(SKD_ERR_INVALID_ARG, "%s (layer %d, shape [%lld, %lld]): %s is a vector or position table, which "
                        "stays F32/F16/BF16 (only matrices and the token embedding may be quantized)",
                        name, layer, (long long)r, (long long)c, skd_dtype_name(dtype));
    if (c % skd_dtype_block(dtype))
        return skd_fail(SKD_ERR_INVALID_ARG, "%s (layer %d, shape [%lld, %lld]): %s needs a row length (cols) that is a "
                        "multiple of %lld", name, layer, (long long)r, (long long)c, skd_dtype_name(dtype),
                        (long long)skd_dtype_block(dtype));
    return SKD_OK;
}

/* skd_engine_finalize's check, for both engines: every tensor this model has
 * was set. have[(layer + 1) × SKD_N_ROLES + role] marks a set tensor (row 0:
 * the global ones). SKD_ERR_STATE names the first one missing. */
static inline int skd_check_all_set(const skd_shape *s, const uint8_t *have) {
    for (int layer = -1; layer < s->n_layers; layer++) {
        for (int role = 0; role < SKD_N_ROLES; role++) {
            int64_t r, c;
            if (!skd_tensor_name(role) || skd_role_is_layer(role) != (layer >= 0)) continue;
            if (!skd_tensor_shape(s, role, &r, &c)) continue;
            if (have[(size_t)(layer + 1) * SKD_N_ROLES + role]) continue;
            if (layer < 0) return skd_fail(SKD_ERR_STATE, "tensor %s was never set", skd_tensor_name(role));
            return skd_fail(SKD_ERR_STATE, "tensor %s of layer %d was never set", skd_tensor_name(role), layer);
        }
    }
    return SKD_OK;
}

/* Per-slot KV bookkeeping, kept on the host by both backends. */
typedef struct {
    int32_t len;      /* positions processed */
    int32_t *kv_len;  /* [n_layers]: leading positions with KV written at that layer */
} skd_slot;

/* skd_engine_reset_slot's work: the slot forgets its sequence. */
static inline int skd_slot_reset(const skd_shape *s, skd_slot *slots, int32_t slot) {
    if (slot < 0 || slot >= s->max_slots) return skd_fail(SKD_ERR_INVALID_ARG, "slot %d out of range 0..%d", slot, s->max_slots - 1);
    slots[slot].len = 0;
    memset(slots[slot].kv_len, 0, sizeof(int32_t) * (size_t)s->n_layers);
    return SKD_OK;
}

/* skd_engine_slot_info's work. */
static inline int skd_slot_query(const skd_shape *s, const skd_slot *slots, int32_t slot, int32_t layer, int32_t *out_len,
                                 int32_t *out_kv_len) {
    if (!out_len || !out_kv_len) return skd_fail(SKD_ERR_INVALID_ARG, "out pointer is NULL");
    if (slot < 0 || slot >= s->max_slots) return skd_fail(SKD_ERR_INVALID_ARG, "slot %d out of range 0..%d", slot, s->max_slots - 1);
    if (layer < 0 || layer >= s->n_layers) return skd_fail(SKD_ERR_INVALID_ARG, "layer %d out of range 0..%d", layer, s->n_layers - 1);
    *out_len = slots[slot].len;
    *out_kv_len = slots[slot].kv_len[layer];
    return SKD_OK;
}

/* Validates a step's rows against the shape and the slots' KV state (and
 * that the step's output buffers exist where rows ask for them: have_logits /
 * have_tokens), and on success applies the bookkeeping (advances
 * len/kv_len). `scratch` must hold max_slots × (n_layers + 2) int32. Counts
 * the rows wanting logits and the rows sampling. On failure nothing is
 * changed. */
/* Checks the logprobs request of skd_engine_step_logprobs before anything is
 * planned (so a refusal changes nothing); *n_lp = rows flagged SKD_ROW_LOGPROBS. */
static inline int skd_plan_logprobs(const int32_t *rows, int32_t n_rows, int32_t n_top, int have_values, int have_ids,
                                    int32_t *n_lp) {
    if (n_top < 0 || n_top > SKD_MAX_TOP_LOGPROBS)
        return skd_fail(SKD_ERR_INVALID_ARG, "n_top %d out of range 0..%d", (int)n_top, SKD_MAX_TOP_LOGPROBS);
    int32_t k = 0;
    for (int i = 0; rows && i < n_rows; i++) {
        const int flags = rows[(size_t)i * SKD_ROW_FIELDS + SKD_ROW_FLAGS];
        if (!(flags & SKD_ROW_LOGPROBS)) continue;
        if (!(flags & SKD_ROW_SAMPLE))
            return skd_fail(SKD_ERR_INVALID_ARG, "row %d asks for logprobs but does not sample (SKD_ROW_LOGPROBS needs SKD_ROW_SAMPLE)", i);
        if (!have_values) return skd_fail(SKD_ERR_INVALID_ARG, "row %d asks for logprobs but the lp_values buffer is NULL", i);
        if (n_top > 0 && !have_ids) return skd_fail(SKD_ERR_INVALID_ARG, "row %d asks for %d alternatives but the lp_ids buffer is NULL", i, (int)n_top);
        k++;
    }
    *n_lp = k;
    return SKD_OK;
}

/* skd_plan_rows, with SKD_ROW_LOGPROBS allowed or not (flag bits outside
 * the allowed set are refused). */
static inline int skd_plan_rows_ex(const skd_shape *s, skd_slot *slots, const int32_t *rows, int32_t n_rows,
                                   const float *params, int have_logits, int have_tokens, int allow_logprobs,
                                   int32_t *scratch, int32_t *n_logits, int32_t *n_sample);

/* skd_plan_rows_ex in two halves, so an engine can check more (the KV pool)
 * between them: skd_plan_check validates and leaves, in `scratch`, each
 * touched slot's state after the step (skd_plan_shadow) without changing
 * `slots`; skd_plan_apply then writes that state into `slots`. */
static inline int skd_plan_check(const skd_shape *s, const skd_slot *slots, const int32_t *rows, int32_t n_rows,
                                  const float *params, int have_logits, int have_tokens, int allow_logprobs,
                                  int32_t *scratch, int32_t *n_logits, int32_t *n_sample);

/* A slot's state after the planned step: [len, kv_len[0..L-1]], or NULL
 * when no row of the step touches the slot. */
static inline const int32_t *skd_plan_shadow(const skd_shape *s, const int32_t *scratch, int slot) {
    const int32_t *sh = scratch + (size_t)slot * (s->n_layers + 2);
    return sh[0] ? sh + 1 : NULL;
}

static inline void skd_plan_apply(const skd_shape *s, skd_slot *slots, const int32_t *scratch) {
    for (int i = 0; i < s->max_slots; i++) {
        const int32_t *sh = skd_plan_shadow(s, scratch, i);
        if (!sh) continue;
        slots[i].len = sh[0];
        memcpy(slots[i].kv_len, sh + 1, sizeof(int32_t) * (size_t)s->n_layers);
    }
}

static inline int skd_plan_rows(const skd_shape *s, skd_slot *slots, const int32_t *rows, int32_t n_rows,
                                const float *params, int have_logits, int have_tokens, int32_t *scratch,
                                int32_t *n_logits, int32_t *n_sample) {
    return skd_plan_rows_ex(s, slots, rows, n_rows, params, have_logits, have_tokens, 0, scratch, n_logits, n_sample);
}

static inline int skd_plan_rows_ex(const skd_shape *s, skd_slot *slots, const int32_t *rows, int32_t n_rows,
                                   const float *params, int have_logits, int have_tokens, int allow_logprobs,
                                   int32_t *scratch, int32_t *n_logits, int32_t *n_sample) {
    int st = skd_plan_check(s, slots, rows, n_rows, params, have_logits, have_tokens, allow_logprobs, scratch, n_logits,
                            n_sample);
    if (st) return st;
    skd_plan_apply(s, slots, scratch);
    return SKD_OK;
}

static inline int skd_plan_check(const skd_shape *s, const skd_slot *slots, const int32_t *rows, int32_t n_rows,
                                  const float *params, int have_logits, int have_tokens, int allow_logprobs,
                                  int32_t *scratch, int32_t *n_logits, int32_t *n_sample) {
    const int L = s->n_layers;
    if (n_rows < 0 || n_rows > s->max_rows)
        return skd_fail(SKD_ERR_INVALID_ARG, "step has %d rows; the engine was created for at most %d", (int)n_rows, s->max_rows);
    if (n_rows > 0 && !rows) return skd_fail(SKD_ERR_INVALID_ARG, "rows pointer is NULL");
    /* scratch layout: per slot [touched, len, kv_len[0..L-1]] — a shadow copy. */
    const int stride = L + 2;
    for (int i = 0; i < s->max_slots; i++) scratch[i * stride] = 0;
    int32_t want = 0, sample = 0;
    for (int i = 0; i < n_rows; i++) {
        const int32_t *r = rows + (size_t)i * SKD_ROW_FIELDS;
        int tok = r[SKD_ROW_TOKEN], pos = r[SKD_ROW_POS], slot = r[SKD_ROW_SLOT];
        int b = r[SKD_ROW_BUDGET], w = r[SKD_ROW_WARMUP], flags = r[SKD_ROW_FLAGS];
        const int known = SKD_ROW_WANT_LOGITS | SKD_ROW_SAMPLE | (allow_logprobs ? SKD_ROW_LOGPROBS : 0);
        if (tok < 0 || tok >= s->vocab) return skd_fail(SKD_ERR_INVALID_ARG, "row %d: token %d out of range 0..%d", i, tok, s->vocab - 1);
        if (slot < 0 || slot >= s->max_slots) return skd_fail(SKD_ERR_INVALID_ARG, "row %d: slot %d out of range 0..%d", i, slot, s->max_slots - 1);
        if (pos < 0 || pos >= s->max_seq) return skd_fail(SKD_ERR_INVALID_ARG, "row %d: position %d out of range 0..%d (KV capacity)", i, pos, s->max_seq - 1);
        if (w < 0 || w > L) return skd_fail(SKD_ERR_INVALID_ARG, "row %d: warm-up %d out of range 0..%d", i, w, L);
        if (b < 1 || b > L || b < w) return skd_fail(SKD_ERR_INVALID_ARG, "row %d: budget %d out of range %d..%d (budget >= max(1, warm-up %d))", i, b, w > 1 ? w : 1, L, w);
        if (flags & ~known) return skd_fail(SKD_ERR_INVALID_ARG, "row %d: unknown flag bits 0x%x", i, flags & ~known);
        if ((flags & SKD_ROW_WANT_LOGITS) && !have_logits)
            return skd_fail(SKD_ERR_INVALID_ARG, "row %d wants logits but the logits buffer is NULL", i);
        if ((flags & SKD_ROW_SAMPLE) && !have_tokens)
            return skd_fail(SKD_ERR_INVALID_ARG, "row %d samples but the tokens buffer is NULL", i);
        if (flags & SKD_ROW_SAMPLE) {
            if (!params) return skd_fail(SKD_ERR_INVALID_ARG, "row %d samples but the params pointer is NULL", i);
            const float t = params[(size_t)i * SKD_PARAM_FIELDS + SKD_PARAM_TEMPERATURE];
            const float tp = params[(size_t)i * SKD_PARAM_FIELDS + SKD_PARAM_TOP_P];
            if (!(t >= 0.0f && t < 1e30f)) return skd_fail(SKD_ERR_INVALID_ARG, "row %d: temperature %g must be finite and >= 0", i, (double)t);
            if (t != 0.0f && t < FLT_MIN)
                return skd_fail(SKD_ERR_INVALID_ARG,
                                "row %d: temperature %g is below FLT_MIN, so 1/temperature overflows float32 (0 samples greedily)",
                                i, (double)t);
            if (!(tp > 0.0f && tp <= 1.0f)) return skd_fail(SKD_ERR_INVALID_ARG, "row %d: top_p %g must be in (0, 1]", i, (double)tp);
            if (r[SKD_ROW_TOP_K] < 0) return skd_fail(SKD_ERR_INVALID_ARG, "row %d: top_k %d must be >= 0", i, r[SKD_ROW_TOP_K]);
            if (r[SKD_ROW_SEQ] < 0 || r[SKD_ROW_STEP] < 0)
                return skd_fail(SKD_ERR_INVALID_ARG, "row %d: RNG seq %d and step %d must be >= 0", i, r[SKD_ROW_SEQ], r[SKD_ROW_STEP]);
            sample++;
        }
        int32_t *sh = scratch + (size_t)slot * stride;
        if (!sh[0]) {  /* first row of this slot in the step: load its state */
            sh[0] = 1;
            sh[1] = slots[slot].len;
            memcpy(sh + 2, slots[slot].kv_len, sizeof(int32_t) * L);
            if (pos > sh[1])
                return skd_fail(SKD_ERR_INVALID_ARG, "row %d: position %d skips ahead of slot %d's length %d", i, pos, slot, sh[1]);
        } else if (pos != sh[1]) {
            return skd_fail(SKD_ERR_INVALID_ARG, "row %d: slot %d's rows must have consecutive positions; expected %d, got %d", i, slot, sh[1], pos);
        }
        for (int l = 0; l < L; l++) {
            int32_t *kv = sh + 2 + l;
            if (*kv > pos) *kv = pos;  /* forget positions >= pos */
            if (skd_layer_active(l, L, b, w)) {
                if (*kv < pos)
                    return skd_fail(SKD_ERR_KV_MISSING,
                                    "row %d (slot %d, position %d, budget %d, warm-up %d) computes layer %d, but positions %d..%d "
                                    "skipped it and wrote no keys/values there; budgets of a sequence must not increase",
                                    i, slot, pos, b, w, l, *kv, pos - 1);
                *kv = pos + 1;
            }
        }
        sh[1] = pos + 1;
        if (flags & SKD_ROW_WANT_LOGITS) want++;
    }
    *n_logits = want;
    *n_sample = sample;
    return SKD_OK;
}

#ifdef __cplusplus
}
#endif
#endif /* SKD_PLAN_H */
