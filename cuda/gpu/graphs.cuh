/* graphs.cuh — a cache of CUDA graphs keyed by a step's launch shape
 * (SKIPDECODE_CUDA_GRAPHS, engine.cu). Experimental: compiled everywhere, never
 * run on a GPU yet, off by default (docs/cuda.md).
 *
 * A small step launches ~8 kernels a layer, and on a small model the
 * launches, not the bytes, set the pace. When every kernel of a step reads its
 * per-step data from buffers whose device addresses never change, the launches
 * depend only on the step's "shape", a short int32 key the caller fills in.
 * A key met for the second time (mode 1; mode 2 = at first sight, a test knob)
 * is captured into a graph by stream capture of the same launch code, and
 * later runs of that key replay it with one launch. Up to SKD_GRAPH_CACHE
 * graphs are kept, the least recently used evicted. The cache knows nothing of
 * the engine: it runs a callback. */
#ifndef SKD_GPU_GRAPHS_CUH
#define SKD_GPU_GRAPHS_CUH
#include "common.cuh"

/* One captured launch sequence, and the key it was captured for. */
typedef struct {
    int32_t *key; /* [key_len], NULL when the entry is empty */
    cudaGraphExec_t exec;
    uint64_t last_use;
} skd_graph_entry;

#define SKD_GRAPH_CACHE 32 /* captured steps kept (least recently used one evicted) */
#define SKD_GRAPH_SEEN 64  /* keys remembered as seen once: a key is captured the second time it comes */

typedef struct {
    int mode;      /* 0 off; 1 capture a key the second time it comes; 2 capture at first sight */
    int key_len;
    int32_t *key;  /* [key_len]: the key of the launches about to run, filled by the caller */
    int32_t *seen; /* [SKD_GRAPH_SEEN][key_len]: keys met once, a ring */
    int seen_next;
    uint64_t n_runs;
    skd_graph_entry entries[SKD_GRAPH_CACHE];
} skd_graph_cache;

/* Sets the cache up (mode 0 allocates nothing). Safe to free after a failure. */
int skd_graph_cache_init(skd_graph_cache *g, int mode, int key_len);

/* Releases every graph and buffer; safe on a zeroed or half-made cache. */
void skd_graph_cache_free(skd_graph_cache *g);

/* The launches of one step: enqueues them on the stream given to skd_graph_run. */
typedef int (*skd_launch_fn)(void *ctx, const void *arg);

/* Runs launch(ctx, arg) on `stream`: replayed from the graph cached for
 * g->key, captured now when the key qualifies (see the mode), else directly. */
int skd_graph_run(skd_graph_cache *g, cudaStream_t stream, skd_launch_fn launch, void *ctx, const void *arg);

#endif
