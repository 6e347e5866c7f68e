/* ops.c — reference-grade CPU kernels; see ops.h. */
#define _DEFAULT_SOURCE /* madvise, MAP_ANONYMOUS */
#include "ops.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "quant.h"
#include "quant_ref.h"
#include "skipdecode.h"

static inline float widen(const void *data, int dtype, int64_t i) {
    if (dtype == SKD_DTYPE_F32) return ((const float *)data)[i];
    if (dtype == SKD_DTYPE_BF16) return skd_bfloat_to_f32(((const uint16_t *)data)[i]);
    return skd_half_to_f32(((const uint16_t *)data)[i]);
}

/* Weight memory (ops.h). Linux: blocks mapped straight from the kernel (so a
 * freed one is unmapped at once, whatever malloc's thresholds), 2 MiB-aligned
 * and advised as huge pages. A request under SLAB_OWN is carved from the open
 * 32 MiB slab, front to back; a block counts its live pieces and is unmapped
 * with the last one. A request from SLAB_OWN up is a block of its own. */
#define HUGE_PAGE ((size_t)2 << 20)
#define SLAB_BYTES ((size_t)32 << 20)
#define SLAB_OWN ((size_t)8 << 20)

typedef struct block {
    struct block *next;
    char *base;
    size_t size, used; /* mapped bytes; bytes handed out (a slab's) */
    long live;         /* pieces not yet freed */
} block;

static pthread_mutex_t blocks_mu = PTHREAD_MUTEX_INITIALIZER;
static block *blocks;     /* every block with live pieces */
static block *open_slab;  /* the slab new small pieces come from, or NULL */

#if defined(__linux__) && defined(MADV_HUGEPAGE)
/* A block of `size` bytes (a multiple of 4 KiB) at a 2 MiB boundary, its first `advise` bytes' whole 2 MiB pages
 * advised as huge pages; NULL when out of memory. Called with blocks_mu held. */
static block *map_block(size_t size, size_t advise) {
    block *b = malloc(sizeof *b);
    char *p = b ? mmap(NULL, size + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) : MAP_FAILED;
    if (p == MAP_FAILED) {
        free(b);
        return NULL;
    }
    const size_t head = (HUGE_PAGE - (uintptr_t)p % HUGE_PAGE) % HUGE_PAGE; /* trim to the boundary */
    if (head) munmap(p, head);
    munmap(p + head + size, HUGE_PAGE - head);
    if (advise >= HUGE_PAGE) madvise(p + head, advise / HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE); /* advice only */
    *b = (block){ blocks, p + head, size, 0, 0 };
    blocks = b;
    return b;
}

static int hugepages_on(void) {
    const char *env = getenv("SKIPDECODE_CPU_HUGEPAGES");
    return !(env && strcmp(env, "0") == 0);
}
#endif

void *skd_weight_alloc(size_t bytes) {
    if (bytes > SIZE_MAX / 2) return NULL; /* no such memory; the roundings below cannot wrap */
    const size_t rounded = bytes ? (bytes + 63) / 64 * 64 : 64;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (hugepages_on()) {
        void *p = NULL;
        pthread_mutex_lock(&blocks_mu);
        if (rounded >= SLAB_OWN) {
            block *b = map_block((rounded + 4095) / 4096 * 4096, bytes);
            if (b) b->live = 1, p = b->base;
        } else {
            if (open_slab && open_slab->used + rounded > SLAB_BYTES) open_slab = NULL; /* its tail stays unused */
            if (!open_slab) open_slab = map_block(SLAB_BYTES, SLAB_BYTES);
            if (open_slab) {
                p = open_slab->base + open_slab->used;
                open_slab->used += rounded;
                open_slab->live++;
            }
        }
        pthread_mutex_unlock(&blocks_mu);
        return p;
    }
#endif
    return aligned_alloc(64, rounded);
}

void skd_weight_free(void *p) {
    if (!p) return;
    pthread_mutex_lock(&blocks_mu);
    for (block **at = &blocks; *at; at = &(*at)->next) {
        block *b = *at;
        if ((char *)p < b->base || (char *)p >= b->base + b->size) continue;
        if (--b->live == 0) {
            *at = b->next;
            if (b == open_slab) open_slab = NULL;
#if defined(__linux__)
            munmap(b->base, b->size);
#endif
            free(b);
        }
        pthread_mutex_unlock(&blocks_mu);
        return;
    }
    pthread_mutex_unlock(&blocks_mu);
    free(p); /* from aligned_alloc (huge pages off, or not Linux) */
}

int64_t skd_mat_bytes(const skd_mat *m) { return m->data ? m->rows * skd_row_bytes(m->dtype, m->cols) : 0; }

void skd_mat_row_f32(const skd_mat *m, int64_t r, float *dst) {
    const int64_t k = m->cols;
    if (skd_dtype_is_quant(m->dtype)) {
        skd_qmat_row_f32(m, r, dst);
    } else if (m->packed) {
        const int64_t base = (r / SKD_PANEL) * k * SKD_PANEL + r % SKD_PANEL;
        for (int64_t i = 0; i < k; i++) dst[i] = widen(m->data, m->dtype, base + i * SKD_PANEL);
    } else {
        skd_dequantize_row(m->dtype, (const char *)m->data + r * skd_row_bytes(m->dtype, k), dst, k);
    }
}

/* Panels [p0, p1) of a packed 16-bit or fp32 matrix from row-major src (rows past the end stay zero). */
static void pack_panels(char *dst, const char *src, int64_t rows, int64_t cols, size_t es, int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; p++) {
        const int64_t r0 = p * SKD_PANEL, nr = rows - r0 < SKD_PANEL ? rows - r0 : SKD_PANEL;
        if (es == 2) {
            uint16_t *d = (uint16_t *)dst + p * cols * SKD_PANEL;
            const uint16_t *s = (const uint16_t *)src + r0 * cols;
            if (nr < SKD_PANEL) memset(d, 0, sizeof(uint16_t) * (size_t)(cols * SKD_PANEL));
            for (int64_t c0 = 0; c0 < cols; c0 += 64) { /* 64 columns at a time: 16 source lines stay in L1 */
                const int64_t c1 = cols - c0 < 64 ? cols : c0 + 64;
                for (int64_t r = 0; r < nr; r++)
                    for (int64_t c = c0; c < c1; c++) d[c * SKD_PANEL + r] = s[r * cols + c];
            }
        } else {
            float *d = (float *)dst + p * cols * SKD_PANEL;
            const float *s = (const float *)src + r0 * cols;
            if (nr < SKD_PANEL) memset(d, 0, sizeof(float) * (size_t)(cols * SKD_PANEL));
            for (int64_t r = 0; r < nr; r++)
                for (int64_t c = 0; c < cols; c++) d[c * SKD_PANEL + r] = s[r * cols + c];
        }
    }
}

typedef struct {
    char *dst;
    const char *src;
    int dtype, packed;
    int64_t rows, cols;
} set_args;

/* A thread's share of a matrix copy: 16-bit or fp32 panels, or rows (quantized rows
 * packed one by one, quant.h; anything else copied as it is). */
static void set_task(void *ctx, int ith, int nth) {
    const set_args *a = ctx;
    long b, e;
    if (a->packed && !skd_dtype_is_quant(a->dtype)) {
        skd_split((long)((a->rows + SKD_PANEL - 1) / SKD_PANEL), ith, nth, &b, &e);
        pack_panels(a->dst, a->src, a->rows, a->cols, skd_dtype_size(a->dtype), b, e);
        return;
    }
    skd_split((long)a->rows, ith, nth, &b, &e);
    const int64_t rb = skd_row_bytes(a->dtype, a->cols);
    if (a->packed)
        for (long r = b; r < e; r++) skd_quant_pack_row(a->dtype, a->src + r * rb, a->dst + r * rb, a->cols);
    else
        memcpy(a->dst + b * rb, a->src + b * rb, (size_t)((e - b) * rb));
}

int skd_mat_set(skd_mat *m, int dtype, const void *src, int64_t rows, int64_t cols, int packed, skd_pool *pool) {
    const int quant = skd_dtype_is_quant(dtype);
    packed = packed && (!quant || skd_quant_packable(dtype));
    const int64_t padded = packed && !quant ? (rows + SKD_PANEL - 1) / SKD_PANEL * SKD_PANEL : rows;
    void *p = skd_weight_alloc((size_t)(padded * skd_row_bytes(dtype, cols)));
    if (!p) return -1;
    set_args a = { p, src, dtype, packed, rows, cols };
    if (pool) skd_pool_run(pool, set_task, &a);
    else set_task(&a, 0, 1);
    skd_weight_free(m->data);
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
    const float *x;
    int m;
    const skd_mm_job *jobs;
    int n;
} matmul_args;

#define REF_COLS 256 /* panel columns widened at a time: 16 KiB of fp32 */
#define REF_ROWS 32  /* x rows sharing one widened chunk */

/* The reference kernel: panel by panel, a chunk of columns widened once and
 * used for up to 32 x rows, 16 accumulators per row; every output is one
 * sum over kk in order (so rows are batch-invariant here too). */
static void panels_portable(const skd_mm_job *job, long p0, long p1, const float *xs, int m) {
    const skd_mat *w = job->w;
    const int64_t n = w->rows, k = w->cols;
    float cols[REF_COLS * SKD_PANEL], acc[REF_ROWS][SKD_PANEL];
    for (long p = p0; p < p1; p++) {
        const int64_t j0 = p * SKD_PANEL, nj = n - j0 < SKD_PANEL ? n - j0 : SKD_PANEL;
        const int64_t base = p * k * SKD_PANEL;
        for (int i0 = 0; i0 < m; i0 += REF_ROWS) {
            const int mr = m - i0 < REF_ROWS ? m - i0 : REF_ROWS;
            memset(acc, 0, sizeof acc);
            for (int64_t c0 = 0; c0 < k; c0 += REF_COLS) {
                const int64_t nc = k - c0 < REF_COLS ? k - c0 : REF_COLS;
                const char *chunk = (const char *)w->data + (size_t)(base + c0 * SKD_PANEL) * skd_dtype_size(w->dtype);
                skd_dequantize_row(w->dtype, chunk, cols, nc * SKD_PANEL);
                for (int r = 0; r < mr; r++) {
                    const float *x = xs + (size_t)(i0 + r) * k + c0;
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
                    const float v = acc[r][c] + (job->bias ? job->bias[j0 + c] : 0.f);
                    job->out[(size_t)(i0 + r) * n + j0 + c] = job->relu && v < 0.f ? 0.f : v;
                }
            }
        }
    }
}

/* Panels [g0, g1) of the jobs' panels counted as one run (job 0's, then job 1's, ...). */
static void panels_range(void *ctx, long g0, long g1) {
    const matmul_args *a = ctx;
    long off = 0;
    for (int j = 0; j < a->n && off < g1; j++) {
        const skd_mm_job *job = &a->jobs[j];
        const long np = (long)skd_panels(job->w), p0 = g0 > off ? g0 - off : 0, p1 = g1 - off < np ? g1 - off : np;
        off += np;
        if (p0 >= p1) continue;
#if defined(__x86_64__) || defined(__i386__)
        if (a->kernel == SKD_KERNEL_AVX512) {
            skd_matmul_panels_avx512(job->w, p0, p1, a->x, a->m, job->out, job->bias, job->relu);
            continue;
        }
        if (a->kernel == SKD_KERNEL_AVX2) {
            skd_matmul_panels_avx2(job->w, p0, p1, a->x, a->m, job->out, job->bias, job->relu);
            continue;
        }
#endif
        panels_portable(job, p0, p1, a->x, a->m);
    }
}

void skd_matmul_n(skd_pool *pool, int kernel, const float *x, int m, const skd_mm_job *jobs, int n) {
    if (m <= 0 || n <= 0) return;
    matmul_args a = { kernel, x, m, jobs, n };
    long total = 0;
    for (int j = 0; j < n; j++) total += (long)skd_panels(jobs[j].w);
    const long panel_bytes = (long)jobs[0].w->cols * SKD_PANEL * (long)skd_dtype_size(jobs[0].w->dtype);
    skd_pool_run_range(pool, total, SKD_CHUNK_BYTES / panel_bytes, panels_range, &a);
}

void skd_matmul(skd_pool *pool, int kernel, float *out, const float *x, int m, const skd_mat *w, const float *bias,
                int relu) {
    const skd_mm_job job = { out, w, bias, relu };
    skd_matmul_n(pool, kernel, x, m, &job, 1);
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
