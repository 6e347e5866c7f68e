/* ops.c — reference-grade CPU kernels; see ops.h. */
#include "ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant_ref.h"
#include "skipdecode.h"

float skd_f16_to_f32(uint16_t h) { return skd_half_to_f32(h); }

static inline float widen(const void *data, int dtype, int64_t i) {
    if (dtype == SKD_DTYPE_F32) return ((const float *)data)[i];
    if (dtype == SKD_DTYPE_BF16) return skd_bf16_to_f32(((const uint16_t *)data)[i]);
    return skd_f16_to_f32(((const uint16_t *)data)[i]);
}

int64_t skd_mat_bytes(const skd_mat *m) { return m->data ? m->rows * skd_row_bytes(m->dtype, m->cols) : 0; }

void skd_mat_row_f32(const skd_mat *m, int64_t r, float *dst) {
    const int64_t k = m->cols;
    if (skd_dtype_is_quant(m->dtype)) {
        skd_qmat_row_f32(m, r, dst);
    } else if (m->packed) {
        const int64_t base = (r / SKD_PANEL) * k * SKD_PANEL + r % SKD_PANEL;
        for (int64_t i = 0; i < k; i++) dst[i] = widen(m->data, m->dtype, base + i * SKD_PANEL);
    } else if (m->dtype == SKD_DTYPE_F32) {
        memcpy(dst, (const float *)m->data + r * k, sizeof(float) * (size_t)k);
    } else if (m->dtype == SKD_DTYPE_BF16) {
        const uint16_t *s = (const uint16_t *)m->data + r * k;
        for (int64_t i = 0; i < k; i++) dst[i] = skd_bf16_to_f32(s[i]);
    } else {
        const uint16_t *s = (const uint16_t *)m->data + r * k;
        for (int64_t i = 0; i < k; i++) dst[i] = skd_f16_to_f32(s[i]);
    }
}

int skd_mat_set(skd_mat *m, int dtype, const void *src, int64_t rows, int64_t cols, int packed) {
    if (skd_dtype_is_quant(dtype)) return skd_qmat_set(m, dtype, src, rows, cols, packed);
    const size_t es = skd_dtype_size(dtype);
    const int64_t padded = packed ? (rows + SKD_PANEL - 1) / SKD_PANEL * SKD_PANEL : rows;
    const size_t bytes = (size_t)(padded * cols) * es;
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) return -1;
    if (!packed) {
        memcpy(p, src, bytes);
    } else {
        memset(p, 0, bytes);
        const char *s = src;
        char *d = p;
        for (int64_t r = 0; r < rows; r++) {
            const int64_t base = (r / SKD_PANEL) * cols * SKD_PANEL + r % SKD_PANEL;
            for (int64_t c = 0; c < cols; c++)
                memcpy(d + (size_t)(base + c * SKD_PANEL) * es, s + (size_t)(r * cols + c) * es, es);
        }
    }
    free(m->data);
    *m = (skd_mat){ p, dtype, packed, rows, cols };
    return 0;
}

int skd_kernel_supported(int kernel) {
    if (kernel == SKD_KERNEL_PORTABLE) return 1;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (kernel == SKD_KERNEL_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (kernel == SKD_KERNEL_AVX512) return __builtin_cpu_supports("avx512f");
#endif
    return 0;
}

int skd_kernel_best(void) {
    if (skd_kernel_supported(SKD_KERNEL_AVX512)) return SKD_KERNEL_AVX512;
    if (skd_kernel_supported(SKD_KERNEL_AVX2)) return SKD_KERNEL_AVX2;
    return SKD_KERNEL_PORTABLE;
}

const char *skd_kernel_name(int kernel) {
    return kernel == SKD_KERNEL_AVX512 ? "avx512" : kernel == SKD_KERNEL_AVX2 ? "avx2" : "portable";
}

typedef struct {
    int kernel;
    float *out;
    const float *x;
    int m;
    const skd_mat *w;
    const float *bias;
    int relu;
} matmul_args;

/* dst[0..n) = the 16-bit or fp32 values data[start..start+n) as fp32; one
 * loop per dtype so each is a tight (vectorisable) loop. */
static void widen_run(const void *data, int dtype, int64_t start, int64_t n, float *dst) {
    if (dtype == SKD_DTYPE_F32) {
        memcpy(dst, (const float *)data + start, sizeof(float) * (size_t)n);
    } else if (dtype == SKD_DTYPE_BF16) {
        const uint16_t *s = (const uint16_t *)data + start;
        for (int64_t i = 0; i < n; i++) dst[i] = skd_bf16_to_f32(s[i]);
    } else {
        const uint16_t *s = (const uint16_t *)data + start;
        for (int64_t i = 0; i < n; i++) dst[i] = skd_f16_to_f32(s[i]);
    }
}

#define REF_COLS 256 /* panel columns widened at a time: 16 KiB of fp32 */
#define REF_ROWS 32  /* x rows sharing one widened chunk */

/* The reference kernel: panel by panel, a chunk of columns widened once and
 * used for up to 32 x rows, 16 accumulators per row; every output is one
 * sum over kk in order (so rows are batch-invariant here too). */
static void matmul_task(void *ctx, int ith, int nth) {
    const matmul_args *a = ctx;
    const skd_mat *w = a->w;
    const int64_t n = w->rows, k = w->cols;
    long p0, p1;
    skd_split((long)skd_panels(w), ith, nth, &p0, &p1);
#if defined(__x86_64__) || defined(__i386__)
    if (a->kernel == SKD_KERNEL_AVX512) {
        skd_matmul_panels_avx512(w, p0, p1, a->x, a->m, a->out, a->bias, a->relu);
        return;
    }
    if (a->kernel == SKD_KERNEL_AVX2) {
        skd_matmul_panels_avx2(w, p0, p1, a->x, a->m, a->out, a->bias, a->relu);
        return;
    }
#endif
    float cols[REF_COLS * SKD_PANEL], acc[REF_ROWS][SKD_PANEL];
    for (long p = p0; p < p1; p++) {
        const int64_t j0 = p * SKD_PANEL, nj = n - j0 < SKD_PANEL ? n - j0 : SKD_PANEL;
        const int64_t base = p * k * SKD_PANEL;
        for (int i0 = 0; i0 < a->m; i0 += REF_ROWS) {
            const int mr = a->m - i0 < REF_ROWS ? a->m - i0 : REF_ROWS;
            memset(acc, 0, sizeof acc);
            for (int64_t c0 = 0; c0 < k; c0 += REF_COLS) {
                const int64_t nc = k - c0 < REF_COLS ? k - c0 : REF_COLS;
                widen_run(w->data, w->dtype, base + c0 * SKD_PANEL, nc * SKD_PANEL, cols);
                for (int r = 0; r < mr; r++) {
                    const float *x = a->x + (size_t)(i0 + r) * k + c0;
                    float *ac = acc[r];
                    for (int64_t kk = 0; kk < nc; kk++) {
                        const float xv = x[kk];
                        const float *col = cols + kk * SKD_PANEL;
#pragma omp simd
                        for (int c = 0; c < SKD_PANEL; c++) ac[c] += col[c] * xv;
                    }
                }
            }
            for (int r = 0; r < mr; r++) {
                for (int64_t c = 0; c < nj; c++) {
                    const float v = acc[r][c] + (a->bias ? a->bias[j0 + c] : 0.f);
                    a->out[(size_t)(i0 + r) * n + j0 + c] = a->relu && v < 0.f ? 0.f : v;
                }
            }
        }
    }
}

void skd_matmul(skd_pool *pool, int kernel, float *out, const float *x, int m, const skd_mat *w, const float *bias,
                int relu) {
    if (m <= 0) return;
    matmul_args a = { kernel, out, x, m, w, bias, relu };
    skd_pool_run(pool, matmul_task, &a);
}

void skd_layernorm(float *y, const float *x, int m, int d, const float *g, const float *b, float eps) {
    for (int i = 0; i < m; i++) {
        const float *xi = x + (size_t)i * d;
        float *yi = y + (size_t)i * d;
        float mean = 0.f;
        for (int j = 0; j < d; j++) mean += xi[j];
        mean /= (float)d;
        float var = 0.f;
        for (int j = 0; j < d; j++) {
            float t = xi[j] - mean;
            var += t * t;
        }
        var /= (float)d;
        const float inv = 1.0f / sqrtf(var + eps);
        for (int j = 0; j < d; j++) yi[j] = (xi[j] - mean) * inv * g[j] + (b ? b[j] : 0.f);
    }
}

void skd_rmsnorm(float *y, const float *x, int m, int d, const float *g, float eps) {
    for (int i = 0; i < m; i++) {
        const float *xi = x + (size_t)i * d;
        float *yi = y + (size_t)i * d;
        float ss = 0.f;
        for (int j = 0; j < d; j++) ss += xi[j] * xi[j];
        const float inv = 1.0f / sqrtf(ss / (float)d + eps);
        for (int j = 0; j < d; j++) yi[j] = xi[j] * inv * g[j];
    }
}
