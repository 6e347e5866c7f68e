/* ops.c — reference-grade CPU kernels; see ops.h. */
#include "ops.h"

#include <math.h>
#include <string.h>

#include "skipdecode.h"

float skd_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* inf / nan */
    } else if (exp == 0) {
        if (man == 0) {
            bits = sign; /* ±0 */
        } else {         /* subnormal: renormalise */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    union { uint32_t u; float f; } v = { bits };
    return v.f;
}

void skd_mat_row_f32(const skd_mat *m, int64_t r, float *dst) {
    const int64_t k = m->cols;
    if (m->dtype == SKD_DTYPE_F32) {
        memcpy(dst, (const float *)m->data + r * k, sizeof(float) * (size_t)k);
    } else if (m->dtype == SKD_DTYPE_BF16) {
        const uint16_t *s = (const uint16_t *)m->data + r * k;
        for (int64_t i = 0; i < k; i++) dst[i] = skd_bf16_to_f32(s[i]);
    } else {
        const uint16_t *s = (const uint16_t *)m->data + r * k;
        for (int64_t i = 0; i < k; i++) dst[i] = skd_f16_to_f32(s[i]);
    }
}

static inline float dot(const float *a, const float *b, int64_t k) {
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < k; i++) s += a[i] * b[i];
    return s;
}

int skd_kernel_best(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        return SKD_KERNEL_AVX2;
#endif
    return SKD_KERNEL_PORTABLE;
}

const char *skd_kernel_name(int kernel) { return kernel == SKD_KERNEL_AVX2 ? "avx2" : "portable"; }

typedef struct {
    int kernel;
    float *out;
    const float *x;
    int m;
    const skd_mat *w;
    const float *bias;
    int relu;
    float *scratch;
} matmul_args;

static void matmul_task(void *ctx, int ith, int nth) {
    const matmul_args *a = ctx;
    const int64_t n = a->w->rows, k = a->w->cols;
    long j0, j1;
    skd_split(n, ith, nth, &j0, &j1);
#if defined(__x86_64__) || defined(__i386__)
    if (a->kernel == SKD_KERNEL_AVX2) {
        skd_matmul_rows_avx2(a->w, j0, j1, a->x, a->m, a->out, a->bias, a->relu);
        return;
    }
#endif
    float *row = a->scratch + (size_t)ith * SKD_MATMUL_SCRATCH(k);
    for (long j = j0; j < j1; j++) {
        const float *wr;
        if (a->w->dtype == SKD_DTYPE_F32) {
            wr = (const float *)a->w->data + j * k;
        } else {
            skd_mat_row_f32(a->w, j, row);
            wr = row;
        }
        const float bj = a->bias ? a->bias[j] : 0.f;
        for (int i = 0; i < a->m; i++) {
            float v = dot(a->x + (size_t)i * k, wr, k) + bj;
            a->out[(size_t)i * n + j] = a->relu && v < 0.f ? 0.f : v;
        }
    }
}

void skd_matmul(skd_pool *pool, int kernel, float *out, const float *x, int m, const skd_mat *w, const float *bias,
                int relu, float *scratch) {
    if (m <= 0) return;
    matmul_args a = { kernel, out, x, m, w, bias, relu, scratch };
    skd_pool_run(pool, matmul_task, &a);
}

void skd_layernorm(float *y, const float *x, int m, int d, const float *g, const float *b) {
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
        const float inv = 1.0f / sqrtf(var + 1e-5f);
        for (int j = 0; j < d; j++) yi[j] = (xi[j] - mean) * inv * g[j] + b[j];
    }
}
