/* graphs.cu — the CUDA graph cache (graphs.cuh): find, capture (evicting the
 * least recently used entry), replay. */
#include <stdlib.h>
#include <string.h>

#include "graphs.cuh"

static bool key_eq(const int32_t *a, const int32_t *b, int len) { return !memcmp(a, b, sizeof(int32_t) * (size_t)len); }

int skd_graph_cache_init(skd_graph_cache *g, int mode, int key_len) {
    memset(g, 0, sizeof *g);
    g->mode = mode;
    g->key_len = key_len;
    if (!mode) return SKD_OK;
    g->key = (int32_t *)calloc((size_t)key_len, sizeof(int32_t));
    g->seen = (int32_t *)calloc((size_t)SKD_GRAPH_SEEN * key_len, sizeof(int32_t));
    if (!g->key || !g->seen) return skd_fail(SKD_ERR_OUT_OF_MEMORY, "engine: out of host memory");
    for (int i = 0; i < SKD_GRAPH_SEEN; i++) g->seen[(size_t)i * key_len] = -1; /* no key starts with -1 */
    return SKD_OK;
}

void skd_graph_cache_free(skd_graph_cache *g) {
    for (int i = 0; i < SKD_GRAPH_CACHE; i++)
        if (g->entries[i].key) {
            (void)cudaGraphExecDestroy(g->entries[i].exec);
            free(g->entries[i].key);
            g->entries[i].key = NULL;
        }
    free(g->key);
    free(g->seen);
    g->key = NULL;
    g->seen = NULL;
}

/* The cached graph for g->key, or NULL. */
static skd_graph_entry *graph_find(skd_graph_cache *g) {
    for (int i = 0; i < SKD_GRAPH_CACHE; i++)
        if (g->entries[i].key && key_eq(g->entries[i].key, g->key, g->key_len)) return &g->entries[i];
    return NULL;
}

/* True if g->key was seen before (and forgets it); else remembers it. */
static bool graph_seen_before(skd_graph_cache *g) {
    for (int i = 0; i < SKD_GRAPH_SEEN; i++) {
        int32_t *k = g->seen + (size_t)i * g->key_len;
        if (key_eq(k, g->key, g->key_len)) {
            k[0] = -1;
            return true;
        }
    }
    memcpy(g->seen + (size_t)g->seen_next * g->key_len, g->key, sizeof(int32_t) * (size_t)g->key_len);
    g->seen_next = (g->seen_next + 1) % SKD_GRAPH_SEEN;
    return false;
}

/* Captures the launches into a graph and caches it (evicting the least
 * recently used entry); *out is the new entry. */
static int graph_capture(skd_graph_cache *g, cudaStream_t st, skd_launch_fn launch, void *ctx, const void *arg,
                         skd_graph_entry **out) {
    SKD_CUDA_TRY(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    int rc = launch(ctx, arg);
    cudaGraph_t graph = NULL;
    const cudaError_t end = cudaStreamEndCapture(st, &graph); /* always: the stream must leave capture mode */
    if (rc) {
        if (graph) (void)cudaGraphDestroy(graph);
        return rc;
    }
    if (end != cudaSuccess) return skd_cuda_fail(end, "cudaStreamEndCapture", __FILE__, __LINE__);
    cudaGraphExec_t exec;
    const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
    (void)cudaGraphDestroy(graph);
    if (inst != cudaSuccess) return skd_cuda_fail(inst, "cudaGraphInstantiate", __FILE__, __LINE__);
    skd_graph_entry *slot = &g->entries[0];
    for (int i = 0; i < SKD_GRAPH_CACHE; i++) {
        if (!g->entries[i].key) {
            slot = &g->entries[i];
            break;
        }
        if (g->entries[i].last_use < slot->last_use) slot = &g->entries[i];
    }
    if (slot->key) {
        (void)cudaGraphExecDestroy(slot->exec);
    } else {
        slot->key = (int32_t *)malloc(sizeof(int32_t) * (size_t)g->key_len);
        if (!slot->key) {
            (void)cudaGraphExecDestroy(exec);
            return skd_fail(SKD_ERR_OUT_OF_MEMORY, "engine: out of host memory");
        }
    }
    memcpy(slot->key, g->key, sizeof(int32_t) * (size_t)g->key_len);
    slot->exec = exec;
    *out = slot;
    return SKD_OK;
}

int skd_graph_run(skd_graph_cache *g, cudaStream_t stream, skd_launch_fn launch, void *ctx, const void *arg) {
    if (!g->mode) return launch(ctx, arg);
    skd_graph_entry *e = graph_find(g);
    if (!e) {
        if (g->mode == 1 && !graph_seen_before(g)) return launch(ctx, arg);
        const int st = graph_capture(g, stream, launch, ctx, arg, &e);
        if (st) return st;
    }
    e->last_use = ++g->n_runs;
    SKD_CUDA_TRY(cudaGraphLaunch(e->exec, stream));
    return SKD_OK;
}
