/* ops.h — the CPU engine's numerical kernels. fp32 arithmetic throughout;
 * weights stay in the dtype they were loaded in (F32, F16 or BF16) and are
 * widened to fp32 row by row while multiplying, so 16-bit checkpoints take
 * half the memory and half the memory traffic of fp32 ones. */
#ifndef SKD_OPS_H
#define SKD_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "pool.h"

/* A row-major [rows, cols] matrix in one of SKD_DTYPE_{F32,F16,BF16}. */
typedef struct {
    void *data;
    int dtype;
    int64_t rows, cols;
} skd_mat;

static inline size_t skd_dtype_size(int dtype) { return dtype == 1 ? 4 : 2; }

/* Widen one 16-bit value. */
float skd_f16_to_f32(uint16_t h);
static inline float skd_bf16_to_f32(uint16_t b) {
    union { uint32_t u; float f; } v = { (uint32_t)b << 16 };
    return v.f;
}
/* dst[0..n) = row r of m as fp32. */
void skd_mat_row_f32(const skd_mat *m, int64_t r, float *dst);

/* Matmul kernels. The portable one is the reference; AVX2 is chosen at run
 * time where the CPU has AVX2 + FMA + F16C (never on an older CPU). */
enum { SKD_KERNEL_AUTO = 0, SKD_KERNEL_PORTABLE = 1, SKD_KERNEL_AVX2 = 2 };
/* The best kernel this CPU runs. */
int skd_kernel_best(void);
/* "portable" or "avx2". */
const char *skd_kernel_name(int kernel);
/* AVX2 rows j0..j1 of out[m, n] (matmul_avx2.c). */
void skd_matmul_rows_avx2(const skd_mat *w, long j0, long j1, const float *x, int m, float *out, const float *bias,
                          int relu);

/* Scratch each thread needs for skd_matmul: floats. */
#define SKD_MATMUL_SCRATCH(k) ((size_t)(k) * 4)

/* out[m, n] = x[m, k] · W[n, k]^T (+ bias[n]); W's rows are split across the
 * pool's threads. scratch: nth × SKD_MATMUL_SCRATCH(k) floats.
 * relu != 0 applies max(0, ·) to the result. */
void skd_matmul(skd_pool *pool, int kernel, float *out, const float *x, int m, const skd_mat *w, const float *bias,
                int relu, float *scratch);

/* y[i] = LN(x[i]) · g + b over rows of width d, eps 1e-5; y may alias x. */
void skd_layernorm(float *y, const float *x, int m, int d, const float *g, const float *b);

#endif
