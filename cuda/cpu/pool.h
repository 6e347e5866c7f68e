/* pool.h — a fixed pool of worker threads that run one task at a time.
 * The caller is thread 0 and works too; skd_pool_run returns when every
 * thread has finished its share. Workers spin briefly between tasks (decode
 * steps issue many short tasks back to back), then sleep on a condvar.
 * skd_pool_run_range splits a run of items with stealing (the matmuls). */
#ifndef SKD_POOL_H
#define SKD_POOL_H

typedef void (*skd_task_fn)(void *ctx, int ith, int nth);
typedef struct skd_pool skd_pool;

/* n_threads >= 1 (including the caller). NULL on failure (skd_fail set). */
skd_pool *skd_pool_create(int n_threads);
void skd_pool_free(skd_pool *p);
int skd_pool_size(const skd_pool *p);
/* Runs fn(ctx, ith, nth) for ith = 0..nth-1, in parallel, and waits. */
void skd_pool_run(skd_pool *p, skd_task_fn fn, void *ctx);

/* Runs fn(ctx, begin, end) over [0, n) in pieces, in parallel, and waits.
 * Thread ith starts on its skd_split share and works through it front to
 * back, `chunk` items at a time, so each thread reads one forward stream;
 * a thread whose share is done takes `chunk` items at a time from the back
 * of the share with the most left. A thread slowed by anything else on its
 * core (the JS threads, an interrupt, the VM) then costs the pass its lost
 * time shared among all, not all of it. Which thread runs an item, and in
 * how many pieces, must not change the item's result (every caller computes
 * each output of an item alone). */
typedef void (*skd_range_fn)(void *ctx, long begin, long end);
/* The matmuls' pieces: about this many bytes of weights (at least one row or panel). */
#define SKD_CHUNK_BYTES (32L * 1024)
void skd_pool_run_range(skd_pool *p, long n, long chunk, skd_range_fn fn, void *ctx);

/* [begin, end) of n items for thread ith of nth, in contiguous chunks. */
static inline void skd_split(long n, int ith, int nth, long *begin, long *end) {
    long per = n / nth, extra = n % nth;
    *begin = ith * per + (ith < extra ? ith : extra);
    *end = *begin + per + (ith < extra ? 1 : 0);
}

#endif
