/*
 * kv_ledger.h — the KV pool's accounting, shared by both engines (header-only,
 * C and C++; skipdecode.h, "the KV cache"): how many blocks each slot owns,
 * its reservation and its peak, and the pool-wide totals a step's capacity
 * check and a reservation read. It owns no KV memory: the CPU engine maps
 * blocks to memory (cuda/cpu/kv.c); the CUDA engine's contiguous cache has room
 * for every block the ledger can count.
 *
 *   owned(slot)    = Σ over layers of ceil(kv_len[l] / B)   (B = block size)
 *   claim(slot)    = max(reserved(slot), owned(slot))
 *   used           = Σ owned         <= promised
 *   promised       = Σ claim         <= blocks (the pool)
 *
 * A step may raise owned(slot) for its slots only while `promised` stays
 * within the pool; a slot below its reservation grows into its own claim and
 * never moves `promised`, which is why a reserved sequence cannot be refused.
 */
#ifndef SKD_KV_LEDGER_H
#define SKD_KV_LEDGER_H

#include <stdint.h>
#include <stdlib.h>

#include "plan.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int32_t block_size;
    int64_t blocks;       /* in the pool */
    int64_t block_bytes;  /* keys and values of block_size positions at one layer */
    int64_t used;         /* Σ owned */
    int64_t promised;     /* Σ claim */
    int64_t *owned, *peak, *reserved; /* [max_slots] */
} skd_kv_ledger;

/* Blocks a (slot, layer) owns when kv_len positions have keys/values there. */
static inline int64_t skd_kv_blocks_for(int32_t kv_len, int32_t block_size) {
    return ((int64_t)kv_len + block_size - 1) / block_size;
}

/* Blocks a slot owns with kv_len[0..L). */
static inline int64_t skd_kv_slot_blocks(const skd_shape *s, const int32_t *kv_len) {
    int64_t n = 0;
    for (int l = 0; l < s->n_layers; l++) n += skd_kv_blocks_for(kv_len[l], s->kv_block_size);
    return n;
}

static inline int64_t skd_kv_claim(const skd_kv_ledger *g, int slot) {
    return g->reserved[slot] > g->owned[slot] ? g->reserved[slot] : g->owned[slot];
}

/* An empty ledger for the shape's pool; block_bytes as the engine stores them. */
static inline int skd_kv_ledger_init(skd_kv_ledger *g, const skd_shape *s, int64_t block_bytes) {
    g->block_size = s->kv_block_size;
    g->blocks = s->kv_blocks;
    g->block_bytes = block_bytes;
    g->used = g->promised = 0;
    g->owned = (int64_t *)calloc((size_t)s->max_slots * 3, sizeof(int64_t));
    if (!g->owned) return skd_fail(SKD_ERR_OUT_OF_MEMORY, "engine: out of memory for the KV accounting");
    g->peak = g->owned + s->max_slots;
    g->reserved = g->peak + s->max_slots;
    return SKD_OK;
}

static inline void skd_kv_ledger_free(skd_kv_ledger *g) {
    free(g->owned);
    g->owned = g->peak = g->reserved = NULL;
}

/* Records that `slot` owns n blocks now. */
static inline void skd_kv_ledger_set_owned(skd_kv_ledger *g, int slot, int64_t n) {
    g->promised -= skd_kv_claim(g, slot);
    g->used += n - g->owned[slot];
    g->owned[slot] = n;
    if (n > g->peak[slot]) g->peak[slot] = n;
    g->promised += skd_kv_claim(g, slot);
}

/* The step's capacity check, between skd_plan_check and skd_plan_apply:
 * with every touched slot at its planned kv_len, is `promised` still within
 * the pool? SKD_ERR_KV_FULL (naming the first slot that grows past its
 * reservation) otherwise. Changes nothing. */
static inline int skd_kv_ledger_check_step(const skd_kv_ledger *g, const skd_shape *s, const int32_t *scratch) {
    int64_t promised = g->promised;
    int first = -1;
    int64_t first_owned = 0;
    for (int i = 0; i < s->max_slots; i++) {
        const int32_t *sh = skd_plan_shadow(s, scratch, i);
        if (!sh) continue;
        const int64_t n = skd_kv_slot_blocks(s, sh + 1), r = g->reserved[i];
        const int64_t claim = r > n ? r : n;
        promised += claim - skd_kv_claim(g, i);
        if (n > r && n > g->owned[i] && first < 0) {
            first = i;
            first_owned = n;
        }
    }
    if (promised <= g->blocks) return SKD_OK;
    return skd_fail(SKD_ERR_KV_FULL,
                    "the KV pool is short: slot %d would own %lld blocks (reservation %lld) and the step needs %lld more "
                    "blocks than the pool's %lld can promise; reserve each sequence's need with skd_engine_kv_reserve "
                    "before stepping it, or give the pool more blocks (KV_BLOCKS)",
                    first, (long long)first_owned, (long long)(first >= 0 ? g->reserved[first] : 0),
                    (long long)(promised - g->blocks), (long long)g->blocks);
}

/* After a checked step: every touched slot owns what its planned kv_len needs. */
static inline void skd_kv_ledger_apply_step(skd_kv_ledger *g, const skd_shape *s, const int32_t *scratch) {
    for (int i = 0; i < s->max_slots; i++) {
        const int32_t *sh = skd_plan_shadow(s, scratch, i);
        if (sh) skd_kv_ledger_set_owned(g, i, skd_kv_slot_blocks(s, sh + 1));
    }
}

/* skd_engine_kv_reserve's work. */
static inline int skd_kv_ledger_reserve(skd_kv_ledger *g, const skd_shape *s, int32_t slot, int64_t blocks) {
    if (slot < 0 || slot >= s->max_slots)
        return skd_fail(SKD_ERR_INVALID_ARG, "slot %d out of range 0..%d", slot, s->max_slots - 1);
    if (blocks < 0) return skd_fail(SKD_ERR_INVALID_ARG, "slot %d: reservation of %lld blocks must be >= 0", slot, (long long)blocks);
    const int64_t claim = blocks > g->owned[slot] ? blocks : g->owned[slot];
    const int64_t promised = g->promised - skd_kv_claim(g, slot) + claim;
    if (blocks > g->reserved[slot] && promised > g->blocks)
        return skd_fail(SKD_ERR_KV_FULL,
                        "slot %d: cannot reserve %lld KV blocks: %lld of the pool's %lld are promised to other slots "
                        "(it owns %lld)",
                        slot, (long long)blocks, (long long)(g->promised - skd_kv_claim(g, slot)), (long long)g->blocks,
                        (long long)g->owned[slot]);
    g->promised = promised;
    g->reserved[slot] = blocks;
    return SKD_OK;
}

/* The slot forgot its sequence: it owns nothing, reserves nothing, peak 0. */
static inline void skd_kv_ledger_reset(skd_kv_ledger *g, int slot) {
    skd_kv_ledger_set_owned(g, slot, 0);
    g->promised -= skd_kv_claim(g, slot);
    g->reserved[slot] = 0;
    g->peak[slot] = 0;
}

/* skd_engine_kv_stats's work; `free_blocks` as the engine counts them. */
static inline int skd_kv_ledger_stats(const skd_kv_ledger *g, int dtype, int paged, int64_t free_blocks, int64_t *out,
                                      int32_t n) {
    if (!out) return skd_fail(SKD_ERR_INVALID_ARG, "out pointer is NULL");
    if (n < 0) return skd_fail(SKD_ERR_INVALID_ARG, "n = %d must be >= 0", (int)n);
    const int64_t v[SKD_KV_STATS_COUNT] = {
        g->blocks * g->block_bytes, g->used * g->block_bytes, g->promised * g->block_bytes, g->block_size,
        g->block_bytes,             g->blocks,               free_blocks,                   g->blocks - g->promised,
        dtype,                      paged,
    };
    for (int i = 0; i < n && i < SKD_KV_STATS_COUNT; i++) out[i] = v[i];
    return SKD_OK;
}

/* skd_engine_kv_slot_stats's work. */
static inline int skd_kv_ledger_slot_stats(const skd_kv_ledger *g, const skd_shape *s, int32_t slot, int64_t *out,
                                           int32_t n) {
    if (!out) return skd_fail(SKD_ERR_INVALID_ARG, "out pointer is NULL");
    if (n < 0) return skd_fail(SKD_ERR_INVALID_ARG, "n = %d must be >= 0", (int)n);
    if (slot < 0 || slot >= s->max_slots)
        return skd_fail(SKD_ERR_INVALID_ARG, "slot %d out of range 0..%d", slot, s->max_slots - 1);
    const int64_t v[SKD_KV_SLOT_STATS_COUNT] = { g->owned[slot], g->peak[slot], g->reserved[slot] };
    for (int i = 0; i < n && i < SKD_KV_SLOT_STATS_COUNT; i++) out[i] = v[i];
    return SKD_OK;
}

/* The accounting half of skd_engine_kv_check: owned(slot) matches the
 * slots' kv_len, the totals match the per-slot numbers, promised fits. */
static inline int skd_kv_ledger_verify(const skd_kv_ledger *g, const skd_shape *s, const skd_slot *slots) {
    int64_t used = 0, promised = 0;
    for (int i = 0; i < s->max_slots; i++) {
        const int64_t want = skd_kv_slot_blocks(s, slots[i].kv_len);
        if (g->owned[i] != want)
            return skd_fail(SKD_ERR_STATE, "KV accounting: slot %d is counted as owning %lld blocks, its kv_len needs %lld",
                            i, (long long)g->owned[i], (long long)want);
        if (g->peak[i] < g->owned[i])
            return skd_fail(SKD_ERR_STATE, "KV accounting: slot %d's peak %lld is below what it owns (%lld)", i,
                            (long long)g->peak[i], (long long)g->owned[i]);
        used += g->owned[i];
        promised += skd_kv_claim(g, i);
    }
    if (used != g->used || promised != g->promised)
        return skd_fail(SKD_ERR_STATE, "KV accounting: totals used %lld / promised %lld, per-slot sums %lld / %lld",
                        (long long)g->used, (long long)g->promised, (long long)used, (long long)promised);
    if (promised > g->blocks)
        return skd_fail(SKD_ERR_STATE, "KV accounting: %lld blocks promised, the pool has %lld", (long long)promised,
                        (long long)g->blocks);
    return SKD_OK;
}

#ifdef __cplusplus
}
#endif
#endif /* SKD_KV_LEDGER_H */
