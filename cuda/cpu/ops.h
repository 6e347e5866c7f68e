/* ops.h — the CPU engine's numerical kernels. fp32 arithmetic throughout;
 * weights stay in the dtype they were loaded in (F32, F16 or BF16) and are
 * widened to fp32 in registers while multiplying, so 16-bit checkpoints take
 * half the memory and half the memory traffic of fp32 ones. Quantized
 * matrices (Q8_0, Q4_0, Q4_K, Q6_K) have their own matmul: quant.h. */
#ifndef SKD_OPS_H
#define SKD_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "pool.h"

/* Output rows per panel of a packed matrix. */
#define SKD_PANEL 16

/* A [rows, cols] matrix in one of SKD_DTYPE_{F32,F16,BF16}, either row-major
 * (embedding tables: gathered a row at a time) or packed in panels (matmul
 * weights): panel p holds rows 16p..16p+15 column by column, so element
 * (r, c) sits at ((r / 16) × cols + c) × 16 + r % 16 and rows past the end
 * are zero. A panel is read front to back by the kernels: one contiguous
 * stream per thread, and 16 outputs per loaded column.
 * A quantized matrix (SKD_DTYPE_Q8_0..Q5_0) holds ggml's blocks, row-major
 * (quant_ref.h); packed, each row's bytes are rearranged for the AVX2
 * kernels (quant.h), the same bytes in another order. */
typedef struct {
    void *data;
    int dtype;
    int packed;
    int64_t rows, cols;
} skd_mat;

/* Panels of a packed matrix. */
static inline int64_t skd_panels(const skd_mat *m) { return (m->rows + SKD_PANEL - 1) / SKD_PANEL; }

static inline size_t skd_dtype_size(int dtype) { return dtype == 1 ? 4 : 2; }

/* Memory for a weight matrix (or any large buffer streamed every step),
 * 64-byte-aligned, released with skd_weight_free. On Linux it is mapped from
 * the kernel in 2 MiB-aligned blocks advised as transparent huge pages
 * (madvise MADV_HUGEPAGE): one TLB entry per 2 MiB instead of per 4 KiB lets
 * two cores stream weights ~25% faster on the Zen 3 VM (bench membw: 22 → 28
 * GB/s). A piece under 8 MiB is carved from a shared 32 MiB slab, so the many
 * small matrices of a quantized model (a llama-400m Q4_K q is 0.6 MiB) sit in
 * huge pages too: before the slabs, 64 of a llama-400m Q4_K_M file's 230 MiB
 * of matrices did (smaps AnonHugePages), after, all; decode_bw's Q8_0, Q4_0
 * and Q4_K steps went from 72-89% to 82-94% of membw. A block is unmapped with
 * its last piece (so a slab that two engines loaded into at once lives as
 * long as both). From 8 MiB up a piece is a block of its own, advised in
 * whole 2 MiB pages only (its tail stays in 4 KiB pages; nothing past `bytes`
 * is touched). Elsewhere, or with SKIPDECODE_CPU_HUGEPAGES=0, aligned_alloc. */
void *skd_weight_alloc(size_t bytes);

/* Releases skd_weight_alloc's memory (or malloc's: anything outside a slab goes to free()); NULL is a no-op. */
void skd_weight_free(void *p);

/* Bytes the matrix holds (its rows, not the panel padding). */
int64_t skd_mat_bytes(const skd_mat *m);

/* dst[0..cols) = row r of m as fp32 (either layout). */
void skd_mat_row_f32(const skd_mat *m, int64_t r, float *dst);

/* Copies row-major src [rows, cols] of `dtype` into m, packed when `packed`
 * (a quantized dtype: quant.h's packed layout, every quantized type), split
 * across the pool's threads by rows or panels (pool NULL: this thread).
 * Returns 0, or -1 when out of memory. */
int skd_mat_set(skd_mat *m, int dtype, const void *src, int64_t rows, int64_t cols, int packed, skd_pool *pool);

/* The quantized case of skd_mat_row_f32 (quant.c). */
void skd_qmat_row_f32(const skd_mat *m, int64_t r, float *dst);

/* Matmul kernels. The portable one is the reference; at run time the engine
 * picks AVX-512 where the CPU has AVX-512F, else AVX2 where it has AVX2 + FMA
 * + F16C (never an instruction the CPU lacks). */
enum { SKD_KERNEL_AUTO = 0, SKD_KERNEL_PORTABLE = 1, SKD_KERNEL_AVX2 = 2, SKD_KERNEL_AVX512 = 3 };
/* The best kernel this CPU runs. */
int skd_kernel_best(void);
/* Whether this CPU runs `kernel`. */
int skd_kernel_supported(int kernel);
/* "portable", "avx2" or "avx512". */
const char *skd_kernel_name(int kernel);
/* AVX-512 panels p0..p1 (matmul_avx512.c). */
void skd_matmul_panels_avx512(const skd_mat *w, long p0, long p1, const float *x, int m, float *out, const float *bias,
                              int relu);
/* AVX2 panels p0..p1 of out[m, n] for a packed W (matmul_avx2.c). */
void skd_matmul_panels_avx2(const skd_mat *w, long p0, long p1, const float *x, int m, float *out, const float *bias,
                            int relu);

/* out[m, n] = x[m, k] · W[n, k]^T (+ bias[n]) for a packed W; the panels are
 * split across the pool's threads. relu != 0 applies max(0, ·) to the result. */
void skd_matmul(skd_pool *pool, int kernel, float *out, const float *x, int m, const skd_mat *w, const float *bias,
                int relu);

/* h[i] = silu(g[i]) · h[i] (SwiGLU's gate), i < n: expf per element for the
 * portable kernel (the reference), 8 lanes of a polynomial exp for the others
 * (act_avx2.c). */
void skd_swiglu(int kernel, float *h, const float *g, size_t n);
void skd_swiglu_avx2(float *h, const float *g, size_t n);

/* One matrix of a fused matmul: out[m, w->rows] = x[m, k] · W^T (+ bias, ReLU when relu). */
typedef struct {
    float *out;
    const skd_mat *w;
    const float *bias;
    int relu;
} skd_mm_job;

/* skd_matmul of n packed matrices with the same k that read the same x (q, k and
 * v; gate and up), in one pass of the pool: the threads split the matrices'
 * panels as if they were one matrix, so every output is computed exactly as
 * skd_matmul computes it, with one hand-off instead of n. */
void skd_matmul_n(skd_pool *pool, int kernel, const float *x, int m, const skd_mm_job *jobs, int n);

/* y[i] = LN(x[i]) · g + b over rows of width d (b may be NULL); y may alias x. */
void skd_layernorm(float *y, const float *x, int m, int d, const float *g, const float *b, float eps);
/* y[i] = x[i] / sqrt(mean(x[i]²) + eps) · g (RMSNorm); y may alias x. */
void skd_rmsnorm(float *y, const float *x, int m, int d, const float *g, float eps);

#endif
