/* attend_time.c — times the CPU engine's decode attention alone (kv_avx2.c).
 *
 * One sequence of llama-110m's attention shape (12 layers, 4 KV heads of 64,
 * 12 query heads: groups of 3; or --group 4 / 1) in a float16 paged cache of
 * blocks of 16, random keys and values; each context's line is the best of
 * 200 passes over every layer and KV head on one thread (what the engine
 * splits across its threads), as time per token.
 *
 *   gcc -O3 -std=c11 -I cuda/include -I cuda/common -I cuda/cpu cuda/dev/attend_time.c cuda/cpu/kv_avx2.c \
 *       -o build/attend_time -lm && build/attend_time [group] [contexts...]
 *   e.g. build/attend_time 3 128 2048
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv.h"
#include "skipdecode.h"

enum { LAYERS = 12, KV_HEADS = 4, HD = 64, B = 16, PASSES = 200 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double time_context(int n, int g) {
    skd_kv_cache c;
    memset(&c, 0, sizeof c);
    c.dtype = SKD_DTYPE_F16, c.block_size = B, c.kd = KV_HEADS * HD, c.hd = HD, c.n_layers = LAYERS, c.max_slots = 1;
    c.per_table = (n + B - 1) / B, c.esize = 2;
    c.ledger.block_bytes = 2 * B * c.kd * (int64_t)c.esize;
    const size_t blocks = (size_t)LAYERS * (size_t)c.per_table;
    c.data = malloc(blocks * (size_t)c.ledger.block_bytes);
    c.tables = malloc(sizeof(int32_t) * blocks);
    float *q = malloc(sizeof(float) * g * HD), *out = malloc(sizeof(float) * g * HD), *sc = malloc(sizeof(float) * g * n);
    if (!c.data || !c.tables || !q || !out || !sc) fprintf(stderr, "out of memory\n"), exit(2);
    for (size_t i = 0; i < blocks; i++) c.tables[i] = (int32_t)i; /* (slot 0, layer l) owns blocks l·per_table.. */
    uint16_t *h = (uint16_t *)c.data;
    for (size_t i = 0; i < blocks * (size_t)c.ledger.block_bytes / 2; i++) h[i] = (uint16_t)(0x3000 + rand() % 0x800) | (uint16_t)(rand() & 1) << 15;
    for (int i = 0; i < g * HD; i++) q[i] = (float)(rand() % 200 - 100) * 1e-3f;
    double best = 1e30;
    for (int pass = 0; pass < PASSES; pass++) {
        const double t0 = now();
        for (int l = 0; l < LAYERS; l++)
            for (int kvh = 0; kvh < KV_HEADS; kvh++) skd_kv_attend_avx2(&c, 0, l, kvh, g, HD, n, q, sc, out);
        const double dt = now() - t0;
        if (dt < best) best = dt;
    }
    free(c.data), free(c.tables), free(q), free(out), free(sc);
    return best;
}

int main(int argc, char **argv) {
    const int g = argc > 1 && atoi(argv[1]) >= 1 && atoi(argv[1]) <= 8 ? atoi(argv[1]) : 3;
    printf("| context | query heads a KV head | attention a token, one thread (%d layers × %d KV heads) |\n|---:|---:|---:|\n",
           LAYERS, KV_HEADS);
    const int defaults[] = { 128, 2048 };
    const int nc = argc > 2 ? argc - 2 : 2;
    for (int i = 0; i < nc; i++) {
        const int n = argc > 2 ? atoi(argv[i + 2]) : defaults[i];
        if (n < 1 || n > 1 << 20) {
            fprintf(stderr, "attend_time: context %s is not in 1..%d\n", argv[i + 2], 1 << 20);
            return 2;
        }
        printf("| %d | %d | %.3f ms |\n", n, g, 1e3 * time_context(n, g));
    }
    return 0;
}
