/* pool.c — see pool.h. */
#define _GNU_SOURCE
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"

#define SPIN_ROUNDS 20000 /* ~tens of microseconds of polling before sleeping */

struct skd_pool {
    int n;
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
    if (!p->threads) { free(p); skd_fail(SKD_ERR_OUT_OF_MEMORY, "thread pool: out of memory"); return NULL; }
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
    free(p);
}
