/* membw.c — skd_membw and skd_membw_passes for the host: STREAM-style read
 * and copy bandwidth, and the read rate of each pass of a sustained stream. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ops.h"
#include "plan.h"
#include "pool.h"
#include "skipdecode.h"

typedef struct {
    const float *src;
    float *dst;
    size_t n; /* floats */
    float sink[64];
    int copy;
} bw_args;

static void bw_task(void *ctx, int ith, int nth) {
    bw_args *a = ctx;
    long b, e;
    skd_split((long)(a->n / 16), ith, nth, &b, &e); /* 64-byte lines */
    if (a->copy) {
        memcpy(a->dst + b * 16, a->src + b * 16, (size_t)(e - b) * 64);
        return;
    }
    float acc[16] = { 0 };
    for (long i = b * 16; i < e * 16; i += 16) {
#pragma omp simd
        for (int j = 0; j < 16; j++) acc[j] += a->src[i + j];
    }
    float s = 0.f;
    for (int j = 0; j < 16; j++) s += acc[j];
    if (ith < 64) a->sink[ith] = s; /* keep the reads alive */
}

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* The checks both entry points share: the buffer size, `count` (reps or passes) in 1..max, threads;
 * threads 0 becomes the core count. */
static int check_args(int64_t bytes, int32_t *threads, const char *what, int32_t count, int32_t max) {
    if (bytes < (1 << 20) || bytes > ((int64_t)1 << 36))
        return skd_fail(SKD_ERR_INVALID_ARG, "bytes must be in 1 MiB .. 64 GiB, got %lld", (long long)bytes);
    if (count < 1 || count > max) return skd_fail(SKD_ERR_INVALID_ARG, "%s must be in 1..%d, got %d", what, max, count);
    if (*threads < 0) return skd_fail(SKD_ERR_INVALID_ARG, "threads must be >= 0, got %d", *threads);
    if (*threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        *threads = n > 0 ? (int)n : 1;
    }
    return SKD_OK;
}

SKD_API int skd_membw(int64_t bytes, int32_t threads, int32_t reps, double *out_read, double *out_copy) {
    if (!out_read || !out_copy) return skd_fail(SKD_ERR_INVALID_ARG, "output pointers are NULL");
    int st = check_args(bytes, &threads, "reps", reps, 1000);
    if (st) return st;
    const size_t n = (size_t)bytes / 64 * 16;
    /* the engine's weight allocator: the bandwidth the weights can be read at */
    float *src = skd_weight_alloc(n * sizeof(float)), *dst = skd_weight_alloc(n * sizeof(float));
    skd_pool *pool = skd_pool_create(threads);
    if (!src || !dst || !pool) {
        skd_weight_free(src);
        skd_weight_free(dst);
        if (pool) skd_pool_free(pool);
        return skd_fail(SKD_ERR_OUT_OF_MEMORY, "membw: cannot allocate 2 x %lld bytes", (long long)bytes);
    }
    memset(src, 0, n * sizeof(float)); /* touch every page before timing */
    memset(dst, 0, n * sizeof(float));
    bw_args a = { src, dst, n, { 0 }, 0 };
    double best_read = 1e30, best_copy = 1e30;
    for (int r = 0; r < reps; r++) {
        a.copy = 0;
        double t = seconds();
        skd_pool_run(pool, bw_task, &a);
        t = seconds() - t;
        if (t < best_read) best_read = t;
        a.copy = 1;
        t = seconds();
        skd_pool_run(pool, bw_task, &a);
        t = seconds() - t;
        if (t < best_copy) best_copy = t;
    }
    const double moved = (double)n * sizeof(float);
    *out_read = moved / best_read / 1e9;
    *out_copy = 2.0 * moved / best_copy / 1e9;
    skd_pool_free(pool);
    skd_weight_free(src);
    skd_weight_free(dst);
    return SKD_OK;
}

SKD_API int skd_membw_passes(int64_t bytes, int32_t threads, int32_t passes, double *out_read) {
    if (!out_read) return skd_fail(SKD_ERR_INVALID_ARG, "output pointer is NULL");
    int st = check_args(bytes, &threads, "passes", passes, 100000);
    if (st) return st;
    const size_t n = (size_t)bytes / 64 * 16;
    float *src = skd_weight_alloc(n * sizeof(float));
    skd_pool *pool = skd_pool_create(threads);
    if (!src || !pool) {
        skd_weight_free(src);
        if (pool) skd_pool_free(pool);
        return skd_fail(SKD_ERR_OUT_OF_MEMORY, "membw: cannot allocate %lld bytes", (long long)bytes);
    }
    memset(src, 0, n * sizeof(float));
    bw_args a = { src, NULL, n, { 0 }, 0 };
    skd_pool_run(pool, bw_task, &a); /* untimed: the first pass after the memset */
    for (int r = 0; r < passes; r++) {
        double t = seconds();
        skd_pool_run(pool, bw_task, &a);
        out_read[r] = (double)n * sizeof(float) / (seconds() - t) / 1e9;
    }
    skd_pool_free(pool);
    skd_weight_free(src);
    return SKD_OK;
}
