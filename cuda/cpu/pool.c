/* pool.c — see pool.h. */
#define _GNU_SOURCE
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"

#define SPIN_ROUNDS 20000 /* ~tens of microseconds of polling before sleeping */

/* One thread's unclaimed items of a skd_pool_run_range pass: [lo, hi) as lo | hi << 32, alone on its cache line. */
typedef struct {
    _Alignas(64) _Atomic uint64_t left;
} share;

struct skd_pool {
    int n;
    share *shares; /* n of them */
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake;     /* workers wait here for a new generation */
    pthread_cond_t done_cv;  /* the caller waits here for pending == 0 */
    atomic_uint generation;  /* bumped once per task */
    atomic_int pending;      /* workers still running the current task */
    atomic_int sleeping_caller;
    skd_task_fn fn;
    void *ctx;
    int quit;
};

typedef struct { skd_pool *p; int ith; } worker_arg;

static void *worker_main(void *argp) {
    worker_arg a = *(worker_arg *)argp;
    free(argp);
    skd_pool *p = a.p;
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen && spins < SPIN_ROUNDS) {
            spins++;
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen && !p->quit)
                pthread_cond_wait(&p->wake, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (p->quit) return NULL;
        seen = g;
        p->fn(p->ctx, a.ith, p->n);
        if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->sleeping_caller)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

skd_pool *skd_pool_create(int n) {
    if (n < 1) n = 1;
    skd_pool *p = calloc(1, sizeof *p);
    if (!p) { skd_fail(SKD_ERR_OUT_OF_MEMORY, "thread pool: out of memory"); return NULL; }
    p->n = n;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    p->threads = calloc((size_t)n, sizeof(pthread_t));
    p->shares = aligned_alloc(64, sizeof(share) * (size_t)n);
    if (!p->threads || !p->shares) { free(p->threads); free(p->shares); free(p); skd_fail(SKD_ERR_OUT_OF_MEMORY, "thread pool: out of memory"); return NULL; }
    for (int i = 1; i < n; i++) {
        worker_arg *a = malloc(sizeof *a);
        if (!a || pthread_create(&p->threads[i], NULL, worker_main, a ? (a->p = p, a->ith = i, a) : NULL) != 0) {
            free(a);
            p->n = i; /* threads 1..i-1 exist */
            skd_pool_free(p);
            skd_fail(SKD_ERR_OUT_OF_MEMORY, "thread pool: could not start thread %d of %d", i, n);
            return NULL;
        }
    }
    return p;
}

int skd_pool_size(const skd_pool *p) { return p->n; }

void skd_pool_run(skd_pool *p, skd_task_fn fn, void *ctx) {
    if (p->n == 1) { fn(ctx, 0, 1); return; }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    fn(ctx, 0, p->n);
    int spins = 0;
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0 && spins < SPIN_ROUNDS) {
        spins++;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    if (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) {
        pthread_mutex_lock(&p->mu);
        /* seq_cst store then load, against the worker's seq_cst decrement then load:
         * either the worker sees the flag and signals, or we see pending == 0. */
        atomic_store(&p->sleeping_caller, 1);
        while (atomic_load(&p->pending) > 0) pthread_cond_wait(&p->done_cv, &p->mu);
        atomic_store(&p->sleeping_caller, 0);
        pthread_mutex_unlock(&p->mu);
    }
}

void skd_pool_free(skd_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done_cv);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p->shares);
    free(p);
}

typedef struct {
    skd_pool *p;
    long n, chunk;
    skd_range_fn fn;
    void *ctx;
} range_args;

/* Claims up to `chunk` items of share s: from its front (its owner) or its back (another thread). */
static int claim(share *s, long chunk, int front, long *begin, long *end) {
    uint64_t v = atomic_load_explicit(&s->left, memory_order_relaxed);
    for (;;) {
        const long lo = (long)(v & 0xffffffffu), hi = (long)(v >> 32);
        if (lo >= hi) return 0;
        const long take = hi - lo < chunk ? hi - lo : chunk;
        const uint64_t nv = front ? (uint64_t)(lo + take) | (uint64_t)hi << 32 : (uint64_t)lo | (uint64_t)(hi - take) << 32;
        if (atomic_compare_exchange_weak_explicit(&s->left, &v, nv, memory_order_relaxed, memory_order_relaxed)) {
            *begin = front ? lo : hi - take;
            *end = front ? lo + take : hi;
            return 1;
        }
    }
}

static void split_task(void *ctx, int ith, int nth) {
    const range_args *a = ctx;
    long b, e;
    skd_split(a->n, ith, nth, &b, &e);
    if (b < e) a->fn(a->ctx, b, e);
}

static void range_task(void *ctx, int ith, int nth) {
    const range_args *a = ctx;
    share *sh = a->p->shares;
    long b, e;
    while (claim(&sh[ith], a->chunk, 1, &b, &e)) a->fn(a->ctx, b, e);
    for (;;) { /* own share done: help the one with the most left */
        int victim = -1;
        long most = 0;
        for (int j = 0; j < nth; j++) {
            const uint64_t v = atomic_load_explicit(&sh[j].left, memory_order_relaxed);
            const long left = (long)(v >> 32) - (long)(v & 0xffffffffu);
            if (left > most) most = left, victim = j;
        }
        if (victim < 0) return;
        if (claim(&sh[victim], a->chunk, 0, &b, &e)) a->fn(a->ctx, b, e);
    }
}

void skd_pool_run_range(skd_pool *p, long n, long chunk, skd_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (chunk < 1) chunk = 1;
    range_args a = { p, n, chunk, fn, ctx };
    if (p->n == 1) {
        fn(ctx, 0, n);
        return;
    }
    if (n > 0x7fffffffL) { /* more items than a share's 32-bit ends hold: one piece a thread */
        skd_pool_run(p, split_task, &a);
        return;
    }
    for (int i = 0; i < p->n; i++) {
        long b, e;
        skd_split(n, i, p->n, &b, &e);
        atomic_store_explicit(&p->shares[i].left, (uint64_t)b | (uint64_t)e << 32, memory_order_relaxed);
    }
    skd_pool_run(p, range_task, &a); /* its release/acquire of the generation publishes the shares */
}
