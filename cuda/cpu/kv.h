/* kv.h — the CPU engine's paged KV cache (skipdecode.h, "the KV cache";
 * docs/kv-cache.md).
 *
 * Memory
 *   data     one pool of `blocks` blocks, each [2][H][B][hd] in the storage
 *            dtype (H = kd / hd KV heads): the keys of B consecutive positions
 *            of one layer, head by head, then their values; a head's B
 *            positions are one contiguous run, so the attention of one KV head
 *            streams its keys and values instead of picking hd of every kd
 *            elements (at 2048 positions, past the caches, that read ran at
 *            ~3 GB/s a thread)
 *   tables   int32 [max_slots][L][per_table]: block ids of each (slot, layer);
 *            entry j holds positions j·B .. j·B + B − 1; entries past
 *            ceil(kv_len[l] / B) are −1
 *   free     a stack of the free block ids; the block freed last is taken
 *            first, so the pages a workload touches stay near its peak
 *
 * Ownership follows the plan (plan.h): skd_kv_step moves blocks between the
 * free stack and the tables so that every touched (slot, layer) owns
 * ceil(kv_len / B) blocks for its planned kv_len, after the ledger has
 * checked that the pool can hold them. */
#ifndef SKD_CPU_KV_H
#define SKD_CPU_KV_H

#include <stddef.h>
#include <stdint.h>

#include "kv_ledger.h"
#include "plan.h"

typedef struct {
    skd_kv_ledger ledger;
    int dtype;            /* SKD_DTYPE_F32, F16 or BF16 */
    int block_size, kd, hd, n_layers, max_slots; /* hd: a KV head's elements */
    int32_t per_table;    /* ceil(max_seq / B): entries of one table */
    size_t esize;         /* bytes of one stored element */
    unsigned char *data;  /* blocks × block_bytes */
    int32_t *tables;      /* [max_slots × L × per_table] */
    int32_t *free_ids;    /* [blocks]: free_ids[0..n_free) */
    int64_t n_free;
} skd_kv_cache;

/* Allocates the pool for the shape (s->kv_blocks blocks, s->kv_block_size
 * positions each) storing `dtype`. Pages are touched only when written. */
int skd_kv_init(skd_kv_cache *c, const skd_shape *s, int dtype);
void skd_kv_destroy(skd_kv_cache *c);

/* Between skd_plan_check and skd_plan_apply: refuses with SKD_ERR_KV_FULL
 * (changing nothing) when the pool cannot hold the planned kv_len of every
 * touched slot; else frees and takes blocks so each touched (slot, layer)
 * owns exactly what its planned kv_len needs. `slots` still hold the state
 * before the step. */
int skd_kv_step(skd_kv_cache *c, const skd_shape *s, const skd_slot *slots, const int32_t *scratch);

/* Returns every block of `slot` (whose kv_len[] is `kv_len`) to the pool and
 * clears its reservation and peak. */
void skd_kv_reset(skd_kv_cache *c, const skd_shape *s, int slot, const int32_t *kv_len);

/* Stores the keys k[kd] and values v[kd] of (slot, layer, pos), a position
 * the step owns a block for. */
void skd_kv_write(const skd_kv_cache *c, int slot, int layer, int pos, const float *k, const float *v);

/* For the g query heads i = 0..g-1 that read KV head `kvh` of (slot, layer):
 *   out[i·hd ..] = softmax(q_i · K[0..n)ᵀ) · V[0..n)   over its first n positions,
 * q [g, hd] already scaled, out [g, hd]; sc: g × n floats of scratch. fp32
 * arithmetic whatever the storage; every head's numbers are the same whether
 * it comes alone (g = 1) or in a group. `kernel`: SKD_KERNEL_* (ops.h); AVX2
 * and AVX-512 CPUs take kv_avx2.c's path, which reads each key and value
 * once for the whole group. */
void skd_kv_attend(const skd_kv_cache *c, int kernel, int slot, int layer, int kvh, int g, int hd, int n, const float *q,
                   float *sc, float *out);

/* skd_engine_kv_check's work: every block free or owned by exactly one
 * (slot, layer), tables matching kv_len, and the ledger's numbers. */
int skd_kv_verify(const skd_kv_cache *c, const skd_shape *s, const skd_slot *slots);

/* ---- internals shared with kv_avx2.c ---- */

/* The first keys of block j of (slot, layer); its values follow B·kd elements later. */
static inline const unsigned char *skd_kv_block(const skd_kv_cache *c, int slot, int layer, int j) {
    const int32_t id = c->tables[((size_t)slot * c->n_layers + layer) * c->per_table + j];
    return c->data + (size_t)id * (size_t)c->ledger.block_bytes;
}

/* KV head kvh's keys of block j of (slot, layer): B positions, hd elements apart. */
static inline const unsigned char *skd_kv_keys(const skd_kv_cache *c, int slot, int layer, int j, int kvh) {
    return skd_kv_block(c, slot, layer, j) + (size_t)kvh * (size_t)c->block_size * (size_t)c->hd * c->esize;
}

/* Its values, laid out the same way: B·kd elements after its keys. */
static inline const unsigned char *skd_kv_values(const skd_kv_cache *c, int slot, int layer, int j, int kvh) {
    return skd_kv_keys(c, slot, layer, j, kvh) + (size_t)c->block_size * (size_t)c->kd * c->esize;
}

void skd_kv_attend_avx2(const skd_kv_cache *c, int slot, int layer, int kvh, int g, int hd, int n, const float *q,
                        float *sc, float *out);

#endif
