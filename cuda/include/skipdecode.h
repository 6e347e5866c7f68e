/*
 * skipdecode.h — the one C ABI that both skipdecode backends implement.
 *
 *   build/libskipdecode_cpu.so   cuda/cpu/  (gcc, fp32 arithmetic, threads)
 *   build/libskipdecode_cuda.so  cuda/gpu/  (nvcc, fp16/bf16, fp32 accumulation)
 *
 * Callers (lib/engine/native.ts through bun:ffi) pass only integers, floats and
 * pointers: no struct is passed by value. Every function that can fail returns
 * an `int` status (SKD_OK = 0) and leaves a message for skd_last_error(). The
 * library never calls exit() or abort().
 *
 * Life of an engine:
 *
 *   int64_t cfg[SKD_CFG_COUNT] = {...};        // model shape and limits
 *   skd_engine *e;  skd_engine_create(cfg, SKD_CFG_COUNT, &e);
 *   skd_engine_set_tensor(e, SKD_T_..., layer, SKD_DTYPE_..., data, numel);  // every tensor once
 *   skd_engine_finalize(e);                     // checks nothing is missing
 *   skd_engine_step(e, rows, n_rows, params, logits, tokens);  // as often as you like
 *   skd_engine_free(e);
 *
 * Threading: one engine is used by one caller thread at a time. The engine
 * runs its own worker threads inside a call and none outside one.
 */
#ifndef SKIPDECODE_H
#define SKIPDECODE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define SKD_API __declspec(dllexport)
#else
#define SKD_API __attribute__((visibility("default")))
#endif

/* ABI version: bumped on any change to a signature, a row field or a config slot
 * (3: the model-family descriptor slots and roles; skd_engine_step_logprobs and SKD_ROW_LOGPROBS;
 *  4: a sampling row's temperature must be 0 or at least FLT_MIN; the quantized element types
 *     SKD_DTYPE_Q8_0..Q6_K, skd_dtype_row_bytes, skd_quantize, skd_dequantize; the paged KV cache:
 *     SKD_CFG_KV_DTYPE/KV_BLOCKS/KV_BLOCK_SIZE, SKD_ERR_KV_FULL, skd_engine_kv_reserve,
 *     skd_engine_kv_stats, skd_engine_kv_slot_stats, skd_engine_kv_check;
 *  5: skd_file_map, skd_file_drop, skd_file_unmap;
 *  6: skd_membw_passes;
 *  7: SKD_DTYPE_Q5_0). */
#define SKD_ABI_VERSION 7

/* ---- status codes ------------------------------------------------------- */
typedef enum {
    SKD_OK = 0,               /* success */
    SKD_ERR_INVALID_ARG = 1,  /* an argument is out of range or inconsistent; the message names it */
    SKD_ERR_OUT_OF_MEMORY = 2,/* host or device allocation failed */
    SKD_ERR_NO_DEVICE = 3,    /* CUDA backend: no usable CUDA device or driver on this machine */
    SKD_ERR_KV_MISSING = 4,   /* a row would attend to a KV entry that was never written
                                 (its budget computes a layer that an earlier position skipped) */
    SKD_ERR_STATE = 5,        /* call out of order: tensor set after finalize, step before it, ... */
    SKD_ERR_DEVICE = 6,       /* a CUDA runtime call or kernel launch failed; the message says which */
    SKD_ERR_UNSUPPORTED = 7,  /* valid request that this backend does not implement (yet) */
    SKD_ERR_KV_FULL = 8       /* the KV pool cannot hold or promise the blocks asked for (a step's new
                                 positions, or a reservation); nothing was changed */
} skd_status;

/* Static string naming a status ("SKD_ERR_KV_MISSING", ...); "unknown status" otherwise. */
SKD_API const char *skd_status_str(int status);

/* Message of the last failed call on this thread (thread-local, static storage,
 * valid until the next failing call on the same thread). "" if none. */
SKD_API const char *skd_last_error(void);

/* SKD_ABI_VERSION of the library actually loaded. */
SKD_API int skd_abi_version(void);

/* "cpu" or "cuda". */
SKD_API const char *skd_backend_name(void);

/* Number of usable devices: 1 for the CPU backend (the host); for the CUDA
 * backend the CUDA device count, or SKD_ERR_NO_DEVICE (with the driver's
 * reason in skd_last_error) when there is none. */
SKD_API int skd_device_count(int32_t *out_count);

/* Human-readable description of device `index` ("AMD EPYC, 2 threads",
 * "NVIDIA H200, sm_90, 139 GiB") written NUL-terminated into buf[0..cap). */
SKD_API int skd_device_name(int32_t index, char *buf, int32_t cap);

/* Measures the memory bandwidth every roofline is compared with, STREAM
 * style: best of `reps` passes over `bytes`-sized buffers. CPU: host memory
 * with `threads` threads (0 = all cores), read = a summing pass over one
 * buffer, copy = bytes read + bytes written by memcpy. CUDA: device memory
 * (threads ignored), read = a summing kernel, copy = cudaMemcpy device to
 * device. Results in GB/s (1e9 bytes per second). */
SKD_API int skd_membw(int64_t bytes, int32_t threads, int32_t reps, double *out_read_gbs, double *out_copy_gbs);

/* The read rate of each of `passes` summing passes in a row over one
 * `bytes`-sized buffer (after one untimed pass), in GB/s, into
 * out_read_gbs[0 .. passes-1]; passes in 1..100000. On a machine shared with
 * others the passes spread widely (a cloud VM's: 12-22 GB/s), and a long
 * run of reads, such as a decode, gets the sustained rate, bytes × passes
 * over their total time, not the best pass. CPU: host memory, `threads`
 * threads (0 = all cores); CUDA: device memory, threads ignored. */
SKD_API int skd_membw_passes(int64_t bytes, int32_t threads, int32_t passes, double *out_read_gbs);

/* A read-only map of a whole file, for loading weights from it (a GGUF file):
 * views of the map go to skd_engine_set_tensor, so each tensor's bytes are
 * copied once, from the page cache into the engine. skd_file_map gives the
 * address and the size; skd_file_drop(addr, size, offset, bytes) says a range
 * will not be read again (its whole pages leave the process's resident set;
 * reading it later reads the file again); skd_file_unmap ends the map, after
 * which no view of it may be read. Host memory, the same in both backends. */
SKD_API int skd_file_map(const char *path, void **out_addr, int64_t *out_size);
SKD_API int skd_file_drop(void *addr, int64_t size, int64_t offset, int64_t bytes);
SKD_API int skd_file_unmap(void *addr, int64_t size);

/* ---- engine configuration ----------------------------------------------- */
/* skd_engine_create takes an int64 array indexed by these slots. */
/* A model family is data: the slots from SKD_CFG_NORM on describe the block
 * (norm kind, positions, MLP kind, KV heads, head size, which biases exist);
 * both engines run one generic decoder block driven by them. 0 in any of
 * those slots means OPT's choice, so an OPT config needs none of them.
 *
 * The generic block (pre-norm; PRE_LN = 0 puts each norm after its residual add):
 *   a = norm1(h);  q, k, v = a·Qᵀ (+bq), a·Kᵀ (+bk), a·Vᵀ (+bv)
 *   rotary (POSITIONS = ROTARY): q, k rotated by position (rotate-half convention)
 *   h += O(attn(q, K_cache, V_cache)) (+bo)        query head j reads KV head j / (NUM_HEADS / NUM_KV_HEADS)
 *   a = norm2(h);  h += down(act(a))
 *     MLP_RELU:   act(a) = relu(a·Upᵀ (+b))                   Up = FC1, Down = FC2
 *     MLP_SWIGLU: act(a) = silu(a·Gateᵀ (+b)) ⊙ (a·Upᵀ (+b))
 *   norm: LayerNorm (x - mean)/sqrt(var + eps)·w (+b), or RMSNorm x/sqrt(mean(x²) + eps)·w
 *   positions: LEARNED adds EMBED_POSITIONS[pos + POS_OFFSET] to the token embedding */
typedef enum {
    SKD_CFG_ARCH = 0,             /* family label for messages: SKD_ARCH_OPT, SKD_ARCH_LLAMA */
    SKD_CFG_NUM_LAYERS = 1,       /* L >= 1 */
    SKD_CFG_HIDDEN = 2,           /* hidden size d, a multiple of NUM_HEADS */
    SKD_CFG_NUM_HEADS = 3,
    SKD_CFG_FFN = 4,              /* MLP inner size */
    SKD_CFG_VOCAB = 5,            /* rows of the embedding / LM head (may exceed the tokenizer's) */
    SKD_CFG_MAX_POSITIONS = 6,    /* positions the model knows (learned table has MAX_POSITIONS + POS_OFFSET rows) */
    SKD_CFG_EMBED_DIM = 7,        /* word_embed_proj_dim; != HIDDEN means project_in / project_out exist */
    SKD_CFG_PRE_LN = 8,           /* 1: layer norm before attention/MLP (opt-125m); 0: after (opt-350m) */
    SKD_CFG_FINAL_LN = 9,         /* 1: a final layer norm after the last layer */
    SKD_CFG_POS_OFFSET = 10,      /* learned-position row of position p is p + POS_OFFSET (OPT: 2) */
    SKD_CFG_MAX_SLOTS = 11,       /* sequences the KV cache holds at once */
    SKD_CFG_MAX_SEQ = 12,         /* KV capacity per sequence, <= MAX_POSITIONS */
    SKD_CFG_MAX_ROWS = 13,        /* most rows one skd_engine_step may carry */
    SKD_CFG_THREADS = 14,         /* CPU worker threads (0 = all cores); ignored by CUDA */
    SKD_CFG_COMPUTE_DTYPE = 15,   /* CUDA: SKD_DTYPE_F16 or SKD_DTYPE_BF16 (0 = pick from weights); CPU: ignored */
    SKD_CFG_NORM = 16,            /* SKD_NORM_LAYER (0 = it) or SKD_NORM_RMS */
    SKD_CFG_POSITIONS = 17,       /* SKD_POS_LEARNED (0 = it) or SKD_POS_ROTARY */
    SKD_CFG_MLP = 18,             /* SKD_MLP_RELU (0 = it) or SKD_MLP_SWIGLU */
    SKD_CFG_NUM_KV_HEADS = 19,    /* key/value heads, dividing NUM_HEADS (0 = NUM_HEADS) */
    SKD_CFG_HEAD_DIM = 20,        /* size of a head (0 = HIDDEN / NUM_HEADS); q has NUM_HEADS·HEAD_DIM outputs */
    SKD_CFG_NO_BIAS = 21,         /* SKD_BIAS_* bits of the biases the model does NOT have (0 = all present) */
    SKD_CFG_NORM_EPS_E12 = 22,    /* norm epsilon × 1e12, rounded (0 = 1e-5) */
    /* The KV cache ("the KV cache" below): */
    SKD_CFG_KV_DTYPE = 23,        /* storage of keys/values: SKD_DTYPE_F16, SKD_DTYPE_BF16 or SKD_DTYPE_F32;
                                     0 = the backend's default (CPU: F16; CUDA: its compute dtype, the only one it stores) */
    SKD_CFG_KV_BLOCKS = 24,       /* blocks in the pool (0 = MAX_SLOTS × L × ceil(MAX_SEQ / KV_BLOCK_SIZE):
                                     every slot at full depth and full length, never short) */
    SKD_CFG_KV_BLOCK_SIZE = 25,   /* positions per block, 1..MAX_SEQ (0 = min(16, MAX_SEQ)) */
    SKD_CFG_COUNT = 26
} skd_cfg_slot;

typedef enum { SKD_ARCH_OPT = 1, SKD_ARCH_LLAMA = 2 } skd_arch;
typedef enum { SKD_NORM_LAYER = 1, SKD_NORM_RMS = 2 } skd_norm_kind;
typedef enum { SKD_POS_LEARNED = 1, SKD_POS_ROTARY = 2 } skd_pos_kind;
typedef enum { SKD_MLP_RELU = 1, SKD_MLP_SWIGLU = 2 } skd_mlp_kind;
/* Bias groups, for SKD_CFG_NO_BIAS */
#define SKD_BIAS_QKV 1  /* Q_B, K_B, V_B */
#define SKD_BIAS_O 2    /* O_B */
#define SKD_BIAS_MLP 4  /* GATE_B, FC1_B, FC2_B */
#define SKD_BIAS_NORM 8 /* the *_LN_B of LayerNorm (RMSNorm never has one) */

/* Element types of tensors handed to skd_engine_set_tensor. The quantized
 * ones are ggml's block formats bit for bit (ggml-common.h; cuda/common/quant_ref.h
 * documents each): a [rows, cols] tensor is rows × (cols / block) blocks,
 * row-major, each row's blocks contiguous; cols must be a multiple of the block.
 *
 *   type   elements/block  bytes/block
 *   Q8_0        32             34       x = d·q, d fp16, q int8
 *   Q4_0        32             18       x = d·(q − 8), q 4 bits
 *   Q5_0        32             22       x = d·(q − 16), q 5 bits (4 in qs, 1 in qh)
 *   Q4_K       256            144       8 sub-blocks of 32, 6-bit scale and min each
 *   Q6_K       256            210       16 sub-blocks of 16, int8 scale each, q 6 bits
 *
 * Matrices (SKD_T_*_W of linear layers, LM_HEAD, PROJECT_IN/OUT) and
 * EMBED_TOKENS may be quantized; vectors (norms, biases, ROPE_INV_FREQ) and
 * EMBED_POSITIONS may not. */
typedef enum {
    SKD_DTYPE_F32 = 1,
    SKD_DTYPE_F16 = 2,
    SKD_DTYPE_BF16 = 3,
    SKD_DTYPE_Q8_0 = 4,
    SKD_DTYPE_Q4_0 = 5,
    SKD_DTYPE_Q4_K = 6,
    SKD_DTYPE_Q6_K = 7,
    SKD_DTYPE_Q5_0 = 8
} skd_dtype;

/* Bytes of one row of `cols` elements of `dtype` (any skd_dtype) into *out.
 * SKD_ERR_INVALID_ARG for an unknown dtype or a cols that is not a positive
 * multiple of the dtype's block (the message names both). */
SKD_API int skd_dtype_row_bytes(int32_t dtype, int64_t cols, int64_t *out_bytes);

/* Encodes src, fp32 [rows, cols] row-major, as `dtype` into dst, which holds
 * at least rows × skd_dtype_row_bytes(dtype, cols) bytes (dst_bytes says how
 * many). Quantized types: per block, round to nearest against the scale as
 * stored (Q4_K and Q6_K choose their sub-block scales by a small least-squares
 * search); F16 and BF16 round to nearest even; F32 copies. Deterministic: the
 * same input gives the same bytes on every backend and thread count.
 * SKD_ERR_INVALID_ARG names the first value that is not finite, or a block whose
 * fp16 scale (the value itself for F16) would overflow. */
SKD_API int skd_quantize(int32_t dtype, const float *src, int64_t rows, int64_t cols, void *dst, int64_t dst_bytes);

/* Decodes rows × skd_dtype_row_bytes(dtype, cols) bytes of `dtype` at src into
 * fp32 dst [rows, cols]: exactly ggml's dequantization (the same fp32 value for
 * every element). */
SKD_API int skd_dequantize(int32_t dtype, const void *src, int64_t rows, int64_t cols, float *dst);

/* Tensors, by role. Shapes are row-major, [out, in] for linear weights
 * (PyTorch's nn.Linear layout), with d = HIDDEN, e = EMBED_DIM, f = FFN,
 * V = VOCAB, P = MAX_POSITIONS + POS_OFFSET, hd = HEAD_DIM, qd = NUM_HEADS·hd,
 * kd = NUM_KV_HEADS·hd. Global tensors take layer = -1, per-layer tensors
 * take layer in 0..L-1. A role the model does not have (a bias it lacks, the
 * gate of a ReLU MLP, positions of a rotary model) is refused. */
typedef enum {
    SKD_T_EMBED_TOKENS = 0,   /* [V, e] */
    SKD_T_EMBED_POSITIONS = 1,/* [P, d] */
    SKD_T_PROJECT_IN = 2,     /* [d, e]  only when e != d */
    SKD_T_PROJECT_OUT = 3,    /* [e, d]  only when e != d */
    SKD_T_FINAL_LN_W = 4,     /* [d]     only when FINAL_LN */
    SKD_T_FINAL_LN_B = 5,     /* [d] */
    SKD_T_LM_HEAD = 6,        /* [V, e]  (a copy of EMBED_TOKENS when tied) */
    SKD_T_ROPE_INV_FREQ = 7,  /* [hd/2]  rotary only: angle of pair i at position p = p · inv_freq[i]
                                 (pairs are dims i and i + hd/2; scaling such as llama3's is folded in) */
    SKD_T_ATTN_LN_W = 16,     /* per layer: [d]  self_attn_layer_norm */
    SKD_T_ATTN_LN_B = 17,     /* [d] */
    SKD_T_Q_W = 18,           /* [qd, d] */
    SKD_T_Q_B = 19,           /* [qd] */
    SKD_T_K_W = 20,           /* [kd, d] */
    SKD_T_K_B = 21,           /* [kd] */
    SKD_T_V_W = 22,           /* [kd, d] */
    SKD_T_V_B = 23,           /* [kd] */
    SKD_T_O_W = 24,           /* [d, qd] out_proj / o_proj */
    SKD_T_O_B = 25,
    SKD_T_MLP_LN_W = 26,      /* [d]  the norm before (after) the MLP: OPT's final_layer_norm, LLaMA's post_attention_layernorm */
    SKD_T_MLP_LN_B = 27,
    SKD_T_FC1_W = 28,         /* [f, d]  MLP up (OPT fc1, LLaMA up_proj) */
    SKD_T_FC1_B = 29,         /* [f] */
    SKD_T_FC2_W = 30,         /* [d, f]  MLP down (OPT fc2, LLaMA down_proj) */
    SKD_T_FC2_B = 31,         /* [d] */
    SKD_T_GATE_W = 32,        /* [f, d]  SwiGLU only: LLaMA gate_proj */
    SKD_T_GATE_B = 33         /* [f] */
} skd_tensor;

typedef struct skd_engine skd_engine;

/* Creates an engine for the model shape in cfg[0..n_cfg). Allocates the KV
 * pool (KV_BLOCKS blocks; "the KV cache" below) and scratch for MAX_ROWS rows.
 * On success *out owns the engine; free it with skd_engine_free. */
SKD_API int skd_engine_create(const int64_t *cfg, int32_t n_cfg, skd_engine **out);

/* Frees the engine and everything it owns. NULL is a no-op. */
SKD_API void skd_engine_free(skd_engine *e);

/* Copies one tensor into engine memory (the pointer is not kept). numel must
 * equal the role's element count for this model (rows × cols, also for the
 * quantized types, whose `data` then holds rows × skd_dtype_row_bytes(dtype,
 * cols) bytes); dtype is the element type of `data`. A quantized dtype on a
 * role that may not be quantized, or a cols that is not a multiple of its
 * block, is SKD_ERR_INVALID_ARG naming the tensor and its shape.
 * The engine keeps weights in a form of its own choosing: the CPU keeps the
 * given dtype (16-bit weights widened to fp32 while multiplying; quantized
 * matrices stay quantized and multiply quantized activations, cuda/cpu/quant.h);
 * CUDA converts everything to its compute dtype, dequantizing quantized
 * tensors to fp16/bf16 in host code on load. */
SKD_API int skd_engine_set_tensor(skd_engine *e, int32_t role, int32_t layer, int32_t dtype,
                                  const void *data, int64_t numel);

/* Checks that every tensor the model needs was set (the message names the
 * first missing one). Required before the first step. */
SKD_API int skd_engine_finalize(skd_engine *e);

/* Bytes of weights the engine holds (what one full decode step reads). */
SKD_API int skd_engine_weight_bytes(const skd_engine *e, int64_t *out_bytes);

/* ---- stepping ------------------------------------------------------------ */
/* A step is a list of rows; each row is SKD_ROW_FIELDS int32 values: */
typedef enum {
    SKD_ROW_TOKEN = 0,   /* token id, 0 <= id < VOCAB */
    SKD_ROW_POS = 1,     /* position in its sequence, 0 <= pos < MAX_SEQ */
    SKD_ROW_SLOT = 2,    /* KV slot of the sequence, 0 <= slot < MAX_SLOTS */
    SKD_ROW_BUDGET = 3,  /* layers this token computes, WARMUP <= budget <= L, budget >= 1 */
    SKD_ROW_WARMUP = 4,  /* warm-up layers w, 0 <= w <= L */
    SKD_ROW_FLAGS = 5,   /* SKD_ROW_WANT_LOGITS | SKD_ROW_SAMPLE */
    /* sampling (read only for rows flagged SKD_ROW_SAMPLE) */
    SKD_ROW_TOP_K = 6,   /* keep the k most likely tokens; 0 = no limit */
    SKD_ROW_SEQ = 7,     /* RNG key: sequence index within its request, >= 0 */
    SKD_ROW_STEP = 8,    /* RNG key: index of the token being sampled, >= 0 */
    SKD_ROW_SEED_LO = 9, /* RNG key: seed, low 32 bits (as int32 bit pattern) */
    SKD_ROW_SEED_HI = 10,/* RNG key: seed, high 32 bits */
    SKD_ROW_FIELDS = 11
} skd_row_field;

/* Per-row float parameters, SKD_PARAM_FIELDS floats a row (read only for
 * rows flagged SKD_ROW_SAMPLE; the array may be NULL when no row samples). */
typedef enum {
    SKD_PARAM_TEMPERATURE = 0, /* 0 = greedy, or in [FLT_MIN, 1e30): a positive temperature below
                                  FLT_MIN has no finite float32 reciprocal and is refused */
    SKD_PARAM_TOP_P = 1,       /* in (0, 1]; 1 = no nucleus cut */
    SKD_PARAM_FIELDS = 2
} skd_param_field;

#define SKD_ROW_WANT_LOGITS 1  /* write this row's logits to `logits` */
#define SKD_ROW_SAMPLE 2       /* sample the next token from this row's logits into `tokens` */
#define SKD_ROW_LOGPROBS 4     /* with SKD_ROW_SAMPLE, in skd_engine_step_logprobs only: report the
                                  sampled token's log-probability and the top alternatives */

/* Most alternatives skd_engine_step_logprobs reports per row. */
#define SKD_MAX_TOP_LOGPROBS 20

/* Layer l is computed by a row with budget b and warm-up w iff
 *     b == L  ||  l < w  ||  l >= L - (b - w)
 * (skip the bottom, keep the top; docs/DESIGN.md). A skipped layer leaves the hidden
 * state unchanged and writes no key/value.
 *
 * KV bookkeeping, per slot: the slot remembers, for each layer, how many
 * leading positions have keys/values written (`kv_len[l]`), and its length
 * (positions processed). Rows of one slot in one step must have consecutive
 * increasing positions, the first of which is <= the slot's length; a row at
 * position p forgets positions >= p first (so pos 0 starts a fresh sequence and
 * a smaller pos rewinds). A row at position p that computes layer l needs
 * kv_len[l] >= p — every earlier position wrote its KV there — and then sets
 * kv_len[l] = p + 1. A step in which any row fails this check is refused
 * whole with SKD_ERR_KV_MISSING before anything is computed or changed.
 *
 * Within a step, rows attend to the KV of earlier rows of the same slot
 * (causal prefill).
 *
 * Outputs, in row order:
 *   logits  one row of VOCAB floats per row flagged SKD_ROW_WANT_LOGITS
 *           (may be NULL if no row wants logits)
 *   tokens  one int32 per row flagged SKD_ROW_SAMPLE (may be NULL if none samples)
 *
 * Sampling (identical semantics on every backend), from a row's logits x:
 *   - temperature == 0 or top_k == 1: the argmax (lowest id among ties);
 *   - else p_i ∝ exp(x_i / temperature) over all VOCAB ids; top_k > 0 keeps the
 *     k largest (ties: lower id first); top_p < 1 then keeps the shortest prefix
 *     of the kept ids, by decreasing p (ties: lower id first), whose share of the
 *     kept mass reaches top_p; u = skd_uniform(seed, seq, step) (plan.h: a
 *     counter-based splitmix64 hash, so a draw depends on nothing but its key);
 *     the token is the first kept id, walking ids in increasing order, at which
 *     the running sum of kept p exceeds u × (sum of kept p).
 */
SKD_API int skd_engine_step(skd_engine *e, const int32_t *rows, int32_t n_rows, const float *params, float *logits,
                            int32_t *tokens);

/* skd_engine_step, plus log-probabilities for the rows flagged
 * SKD_ROW_SAMPLE | SKD_ROW_LOGPROBS, computed where the logits are, so only
 * 1 + 2 × n_top numbers per row come back. For each such row, in row order:
 *
 *   lp_values  1 + n_top floats: log p(sampled token), then the n_top largest
 *              log-probabilities in decreasing order (ties: lower id first)
 *   lp_ids     n_top int32: the ids of those n_top alternatives
 *
 * where log p(i) = x_i − log Σ_j exp(x_j) over all VOCAB logits x of the row:
 * the model's own distribution, before temperature, top-k and top-p (OpenAI's
 * and vLLM's "raw" logprobs). 0 <= n_top <= SKD_MAX_TOP_LOGPROBS; lp_ids may be
 * NULL when n_top is 0, both may be NULL when no row is flagged. A flagged
 * row that does not sample is refused (SKD_ERR_INVALID_ARG). A backend that
 * cannot compute them refuses flagged rows with SKD_ERR_UNSUPPORTED and runs
 * steps without them unchanged. skd_engine_step refuses SKD_ROW_LOGPROBS. */
SKD_API int skd_engine_step_logprobs(skd_engine *e, const int32_t *rows, int32_t n_rows, const float *params,
                                     float *logits, int32_t *tokens, int32_t n_top, float *lp_values,
                                     int32_t *lp_ids);

/* Forgets the sequence in `slot` (length 0, no KV written): its blocks return
 * to the pool at once, and its reservation and peak drop to 0. */
SKD_API int skd_engine_reset_slot(skd_engine *e, int32_t slot);

/* Length of the sequence in `slot` and the KV length of `layer` there. */
SKD_API int skd_engine_slot_info(const skd_engine *e, int32_t slot, int32_t layer,
                                 int32_t *out_len, int32_t *out_kv_len);

/* ---- the KV cache ---------------------------------------------------------
 *
 * Keys and values live in fixed-size blocks from one pool. A block holds the
 * keys and the values of KV_BLOCK_SIZE consecutive positions of one layer of
 * one sequence (block bytes = 2 × KV_BLOCK_SIZE × kd × the size of KV_DTYPE).
 * Each (slot, layer) has its own block table: block j of the table holds
 * positions j·B .. j·B + B − 1 (B = KV_BLOCK_SIZE). Because budgets never
 * increase along a sequence, the positions that computed a layer are always
 * a prefix of the sequence, kv_len[l] long (see skd_engine_step), so
 *
 *   (slot, layer) owns exactly ceil(kv_len[l] / B) blocks, and no others.
 *
 * A layer that a position skips holds no memory for it. A step takes the
 * blocks its new positions need; a row that forgets positions (a rewind)
 * and skd_engine_reset_slot give back the blocks no longer needed at once.
 *
 * Invariants, after every call:
 *   - every block is free or owned by exactly one (slot, layer), never both;
 *   - used ≤ promised ≤ pool, where used = Σ owned blocks and
 *     promised = Σ over slots of max(reserved(slot), owned(slot)).
 *
 * Reservation. skd_engine_kv_reserve(slot, n) promises slot `n` blocks in
 * total over all its layers: while the slot owns at most n blocks, no step
 * fails for lack of KV because of its rows, whatever other slots do. A
 * caller that knows a sequence's need before it starts (its prompt length,
 * its most new tokens, its budgets: SkipDecode makes it exact) reserves it
 * and never sees SKD_ERR_KV_FULL for that sequence. A slot that grows past
 * its reservation (or never reserved) takes blocks nobody was promised.
 *
 * Short pool. A step whose new blocks cannot be taken (the slot's
 * reservation is used up and the unpromised blocks are too few) is refused
 * whole with SKD_ERR_KV_FULL before anything is computed or changed, as a
 * KV_MISSING step is; a reservation that cannot be promised is refused the
 * same way. Running sequences are never evicted.
 *
 * Positions, rewinds and SKD_ERR_KV_MISSING are exactly as skd_engine_step
 * states; the pool changes only which memory holds a position.
 *
 * Storage: KV_DTYPE (CPU default F16: keys/values rounded to float16 when
 * written, values beyond ±65504 saturated; attention widens them and computes
 * scores, softmax and the weighted sum in fp32). The CUDA engine keeps its
 * contiguous cache [MAX_SLOTS][L][MAX_SEQ][kd] in its compute dtype,
 * allocated at create; it keeps the same accounting (owned/reserved blocks of
 * KV_BLOCK_SIZE positions) so callers see one model of memory, reports
 * SKD_KV_PAGED = 0, refuses a KV_BLOCKS below its full size and a KV_DTYPE
 * other than its compute dtype (SKD_ERR_UNSUPPORTED).
 */

/* Sets `slot`'s reservation to `blocks` (>= 0, the total over its layers).
 * Growing fails with SKD_ERR_KV_FULL, changing nothing, when
 * promised − max(reserved, owned)(slot) + max(blocks, owned(slot)) > pool;
 * shrinking always succeeds (a sequence that stopped early gives its
 * promise back). skd_engine_reset_slot sets it to 0. */
SKD_API int skd_engine_kv_reserve(skd_engine *e, int32_t slot, int64_t blocks);

/* Fields of skd_engine_kv_stats (int64 each). */
typedef enum {
    SKD_KV_POOL_BYTES = 0,      /* bytes of the pool: BLOCKS × BLOCK_BYTES */
    SKD_KV_USED_BYTES = 1,      /* bytes of the blocks (slot, layer) tables own */
    SKD_KV_RESERVED_BYTES = 2,  /* bytes promised: Σ over slots of max(reserved, owned) × BLOCK_BYTES */
    SKD_KV_BLOCK_SIZE = 3,      /* positions per block */
    SKD_KV_BLOCK_BYTES = 4,     /* bytes of one block (keys and values) */
    SKD_KV_BLOCKS = 5,          /* blocks in the pool */
    SKD_KV_BLOCKS_FREE = 6,     /* blocks no table owns */
    SKD_KV_BLOCKS_AVAILABLE = 7,/* blocks neither owned nor promised: the most a new reservation gets */
    SKD_KV_DTYPE = 8,           /* SKD_DTYPE_* of stored keys/values */
    SKD_KV_PAGED = 9,           /* 1: blocks are taken as positions need them (CPU); 0: contiguous, allocated at create (CUDA) */
    SKD_KV_STATS_COUNT = 10
} skd_kv_stat;

/* Writes min(n, SKD_KV_STATS_COUNT) fields of skd_kv_stat into out[]. */
SKD_API int skd_engine_kv_stats(const skd_engine *e, int64_t *out, int32_t n);

/* Fields of skd_engine_kv_slot_stats (int64 each, in blocks). */
typedef enum {
    SKD_KV_SLOT_OWNED = 0,      /* blocks the slot's tables own now */
    SKD_KV_SLOT_PEAK = 1,       /* most blocks owned at once since the slot's last reset */
    SKD_KV_SLOT_RESERVED = 2,   /* its reservation */
    SKD_KV_SLOT_STATS_COUNT = 3
} skd_kv_slot_stat;

/* Writes min(n, SKD_KV_SLOT_STATS_COUNT) fields of skd_kv_slot_stat for `slot` into out[]. */
SKD_API int skd_engine_kv_slot_stats(const skd_engine *e, int32_t slot, int64_t *out, int32_t n);

/* Verifies the invariants above by walking every block table, the free list
 * and the accounting (O(pool + tables); for tests). SKD_OK, or SKD_ERR_STATE
 * with the first violation in skd_last_error. */
SKD_API int skd_engine_kv_check(const skd_engine *e);

#ifdef __cplusplus
}
#endif
#endif /* SKIPDECODE_H */
