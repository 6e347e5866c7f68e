/* kv.c — the CPU engine's paged KV cache; see kv.h. The portable attention
 * here is the reference that kv_avx2.c is checked against. */
#include "kv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

int skd_kv_init(skd_kv_cache *c, const skd_shape *s, int dtype) {
    memset(c, 0, sizeof *c);
    c->dtype = dtype;
    c->esize = dtype == SKD_DTYPE_F32 ? 4 : 2;
    c->block_size = s->kv_block_size;
    c->kd = s->kv_dim;
    c->hd = s->head_dim;
    c->n_layers = s->n_layers;
    c->max_slots = s->max_slots;
    c->per_table = (int32_t)skd_kv_blocks_for(s->max_seq, s->kv_block_size);
    const double pool_bytes = 2.0 * s->kv_block_size * s->kv_dim * (double)c->esize * (double)s->kv_blocks;
    if (pool_bytes > 0x1p50) /* no machine has a petabyte: refuse before any arithmetic can overflow */
        return skd_fail(SKD_ERR_OUT_OF_MEMORY, "the KV pool would take %.3g bytes (%lld blocks of %d positions × %d × 2)",
                        pool_bytes, (long long)s->kv_blocks, s->kv_block_size, s->kv_dim);
    const int64_t block_bytes = 2 * (int64_t)s->kv_block_size * s->kv_dim * (int64_t)c->esize;
    int st = skd_kv_ledger_init(&c->ledger, s, block_bytes);
    if (st) return st;
    const size_t n_tables = (size_t)s->max_slots * s->n_layers * (size_t)c->per_table;
    /* calloc of a large pool maps zero pages: memory is committed only as blocks are first written */
    c->data = calloc((size_t)s->kv_blocks, (size_t)block_bytes);
    c->tables = malloc(sizeof(int32_t) * n_tables);
    c->free_ids = malloc(sizeof(int32_t) * (size_t)s->kv_blocks);
    if (!c->data || !c->tables || !c->free_ids)
        return skd_fail(SKD_ERR_OUT_OF_MEMORY,
                        "engine: out of memory allocating the KV pool (%lld blocks × %lld bytes = %lld MiB) and its tables",
                        (long long)s->kv_blocks, (long long)block_bytes, (long long)(s->kv_blocks * block_bytes >> 20));
    memset(c->tables, 0xff, sizeof(int32_t) * n_tables); /* −1: no block */
    /* stack top = block 0, so a fresh engine fills the pool from its start */
    c->n_free = s->kv_blocks;
    for (int64_t i = 0; i < c->n_free; i++) c->free_ids[i] = (int32_t)(c->n_free - 1 - i);
    return SKD_OK;
}

void skd_kv_destroy(skd_kv_cache *c) {
    skd_kv_ledger_free(&c->ledger);
    free(c->data);
    free(c->tables);
    free(c->free_ids);
    memset(c, 0, sizeof *c);
}

static int32_t *table_of(const skd_kv_cache *c, int slot, int layer) {
    return c->tables + ((size_t)slot * c->n_layers + layer) * c->per_table;
}

int skd_kv_step(skd_kv_cache *c, const skd_shape *s, const skd_slot *slots, const int32_t *scratch) {
    int st = skd_kv_ledger_check_step(&c->ledger, s, scratch);
    if (st) return st;
    const int B = c->block_size;
    /* give back first (rewinds), then take: the check counted the step's net effect */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < s->max_slots; i++) {
            const int32_t *sh = skd_plan_shadow(s, scratch, i);
            if (!sh) continue;
            for (int l = 0; l < s->n_layers; l++) {
                int32_t *t = table_of(c, i, l);
                int64_t have = skd_kv_blocks_for(slots[i].kv_len[l], B);
                const int64_t want = skd_kv_blocks_for(sh[1 + l], B);
                if (pass == 0) {
                    while (have > want) {
                        c->free_ids[c->n_free++] = t[--have];
                        t[have] = -1;
                    }
                } else {
                    while (have < want) t[have++] = c->free_ids[--c->n_free]; /* n_free > 0: promised <= pool */
                }
            }
        }
    }
    skd_kv_ledger_apply_step(&c->ledger, s, scratch);
    return SKD_OK;
}

void skd_kv_reset(skd_kv_cache *c, const skd_shape *s, int slot, const int32_t *kv_len) {
    for (int l = 0; l < s->n_layers; l++) {
        int32_t *t = table_of(c, slot, l);
        for (int64_t j = skd_kv_blocks_for(kv_len[l], c->block_size); j-- > 0;) {
            c->free_ids[c->n_free++] = t[j];
            t[j] = -1;
        }
    }
    skd_kv_ledger_reset(&c->ledger, slot);
}

/* fp32 → fp16, round to nearest even (what F16C's vcvtps2ph does), with
 * values beyond ±65504 saturated instead of becoming infinite; NaN stays NaN. */
static uint16_t f32_to_f16(float x) {
    if (x > 65504.0f) x = 65504.0f;
    else if (x < -65504.0f) x = -65504.0f;
    uint32_t u;
    memcpy(&u, &x, 4);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) return sign | 0x7e00u;   /* NaN */
    if (u < 0x38800000u) {                        /* below 2^-14: an fp16 subnormal or zero */
        /* adding 0.5 (2^-1) leaves the value's multiple of 2^-24 in the low mantissa
         * bits, rounded to nearest even by the fp32 addition itself */
        float f, magic = 0.5f;
        memcpy(&f, &u, 4);
        f += magic;
        uint32_t r;
        memcpy(&r, &f, 4);
        return sign | (uint16_t)(r - 0x3f000000u);
    }
    /* normal: rebias the exponent (127 → 15) and round the 13 dropped bits to nearest even */
    u += 0xc8000fffu + ((u >> 13) & 1u); /* 0xc8000000 = −112 << 23 (mod 2^32) */
    return sign | (uint16_t)(u >> 13);
}

/* fp32 → bf16, round to nearest even; NaN stays NaN. */
static uint16_t f32_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static void store_row(void *dst, int dtype, const float *src, int n) {
    if (dtype == SKD_DTYPE_F32) {
        memcpy(dst, src, sizeof(float) * (size_t)n);
    } else if (dtype == SKD_DTYPE_F16) {
        uint16_t *h = dst;
        for (int i = 0; i < n; i++) h[i] = f32_to_f16(src[i]);
    } else {
        uint16_t *h = dst;
        for (int i = 0; i < n; i++) h[i] = f32_to_bf16(src[i]);
    }
}

void skd_kv_write(const skd_kv_cache *c, int slot, int layer, int pos, const float *k, const float *v) {
    const int B = c->block_size, hd = c->hd;
    const size_t at = (size_t)(pos % B) * hd * c->esize; /* the position's row within each head's run */
    for (int h = 0; h < c->kd / hd; h++) {
        store_row((unsigned char *)skd_kv_keys(c, slot, layer, pos / B, h) + at, c->dtype, k + (size_t)h * hd, hd);
        store_row((unsigned char *)skd_kv_values(c, slot, layer, pos / B, h) + at, c->dtype, v + (size_t)h * hd, hd);
    }
}

/* dst[0..n) = n stored 16-bit elements as fp32. float16: the bits of exponent and
 * mantissa placed in a float32 and scaled by 2^112 rebias normals and
 * subnormals exactly; exponent 31 is infinity or NaN. Branch-free, so the
 * compiler vectorises it. */
static void widen_row(float *dst, const void *src, int dtype, int n) {
    const uint16_t *h = src;
    for (int i = 0; i < n; i++) {
        uint32_t u;
        if (dtype == SKD_DTYPE_BF16) {
            u = (uint32_t)h[i] << 16;
        } else {
            const uint32_t em = (uint32_t)(h[i] & 0x7fffu) << 13;
            float f;
            memcpy(&f, &em, 4);
            f *= 0x1p112f;
            memcpy(&u, &f, 4);
            u = (h[i] & 0x7c00u) == 0x7c00u ? em | 0x7f800000u : u;
            u |= (uint32_t)(h[i] & 0x8000u) << 16;
        }
        memcpy(dst + i, &u, 4);
    }
}

/* n stored elements at src as fp32: src itself for float32, else widened into buf. */
static const float *row_f32(float *buf, const void *src, int dtype, int n) {
    if (dtype == SKD_DTYPE_F32) return src;
    widen_row(buf, src, dtype, n);
    return buf;
}

/* The reference, one head at a time: scores, max-subtracted softmax,
 * weighted sum of values, in fp32, block by block in position order. */
static void attend_portable(const skd_kv_cache *c, int slot, int layer, int kvh, int g, int hd, int n, const float *q,
                            float *sc, float *out) {
    const int B = c->block_size, dt = c->dtype;
    const size_t row = (size_t)hd * c->esize;
    float kv[512]; /* one widened row of a head: head_dim <= 512 here, else in pieces */
    for (int i = 0; i < g; i++) {
        const float *qi = q + (size_t)i * hd;
        float *o = out + (size_t)i * hd;
        float mx = -INFINITY;
        for (int p0 = 0; p0 < n; p0 += B) {
            const unsigned char *kb = skd_kv_keys(c, slot, layer, p0 / B, kvh);
            const int m = n - p0 < B ? n - p0 : B;
            for (int t = 0; t < m; t++) {
                float dotv = 0.f;
                for (int j0 = 0; j0 < hd; j0 += 512) {
                    const int w = hd - j0 < 512 ? hd - j0 : 512;
                    const float *k = row_f32(kv, kb + (size_t)t * row + (size_t)j0 * c->esize, dt, w);
#pragma omp simd reduction(+ : dotv)
                    for (int j = 0; j < w; j++) dotv += qi[j0 + j] * k[j];
                }
                sc[p0 + t] = dotv;
                if (dotv > mx) mx = dotv;
            }
        }
        float sum = 0.f;
        for (int p = 0; p < n; p++) {
            sc[p] = expf(sc[p] - mx);
            sum += sc[p];
        }
        const float inv = 1.0f / sum;
        for (int j = 0; j < hd; j++) o[j] = 0.f;
        for (int p0 = 0; p0 < n; p0 += B) {
            const unsigned char *vb = skd_kv_values(c, slot, layer, p0 / B, kvh);
            const int m = n - p0 < B ? n - p0 : B;
            for (int t = 0; t < m; t++) {
                const float pw = sc[p0 + t] * inv;
                for (int j0 = 0; j0 < hd; j0 += 512) {
                    const int w = hd - j0 < 512 ? hd - j0 : 512;
                    const float *v = row_f32(kv, vb + (size_t)t * row + (size_t)j0 * c->esize, dt, w);
#pragma omp simd
                    for (int j = 0; j < w; j++) o[j0 + j] += pw * v[j];
                }
            }
        }
    }
}

void skd_kv_attend(const skd_kv_cache *c, int kernel, int slot, int layer, int kvh, int g, int hd, int n, const float *q,
                   float *sc, float *out) {
    if (kernel == SKD_KERNEL_AVX2 || kernel == SKD_KERNEL_AVX512)
        skd_kv_attend_avx2(c, slot, layer, kvh, g, hd, n, q, sc, out);
    else
        attend_portable(c, slot, layer, kvh, g, hd, n, q, sc, out);
}

int skd_kv_verify(const skd_kv_cache *c, const skd_shape *s, const skd_slot *slots) {
    const int64_t nb = c->ledger.blocks;
    /* seen[b]: 0 unseen, 1 on the free stack, 2 + slot·L + layer owned */
    int64_t *seen = calloc((size_t)nb, sizeof(int64_t));
    if (!seen) return skd_fail(SKD_ERR_OUT_OF_MEMORY, "kv_check: out of memory");
    int st = SKD_OK;
    if (c->n_free < 0 || c->n_free > nb) {
        st = skd_fail(SKD_ERR_STATE, "KV pool: %lld free blocks counted in a pool of %lld", (long long)c->n_free, (long long)nb);
        goto done;
    }
    for (int64_t i = 0; i < c->n_free; i++) {
        const int32_t b = c->free_ids[i];
        if (b < 0 || b >= nb) {
            st = skd_fail(SKD_ERR_STATE, "KV pool: free stack entry %lld is block %d, outside 0..%lld", (long long)i, b, (long long)nb - 1);
            goto done;
        }
        if (seen[b]) {
            st = skd_fail(SKD_ERR_STATE, "KV pool: block %d is on the free stack twice", b);
            goto done;
        }
        seen[b] = 1;
    }
    int64_t owned = 0;
    for (int i = 0; i < s->max_slots; i++) {
        for (int l = 0; l < s->n_layers; l++) {
            const int32_t *t = table_of(c, i, l);
            const int64_t want = skd_kv_blocks_for(slots[i].kv_len[l], c->block_size);
            for (int64_t j = 0; j < c->per_table; j++) {
                const int32_t b = t[j];
                if (j >= want) {
                    if (b != -1) {
                        st = skd_fail(SKD_ERR_STATE, "KV pool: slot %d layer %d keeps block %d in entry %lld past its kv_len %d",
                                      i, l, b, (long long)j, slots[i].kv_len[l]);
                        goto done;
                    }
                    continue;
                }
                if (b < 0 || b >= nb) {
                    st = skd_fail(SKD_ERR_STATE, "KV pool: slot %d layer %d entry %lld is block %d, outside 0..%lld", i, l,
                                  (long long)j, b, (long long)nb - 1);
                    goto done;
                }
                if (seen[b] == 1) {
                    st = skd_fail(SKD_ERR_STATE, "KV pool: block %d is free and owned by slot %d layer %d", b, i, l);
                    goto done;
                }
                if (seen[b]) {
                    const int64_t o = seen[b] - 2;
                    st = skd_fail(SKD_ERR_STATE, "KV pool: block %d is owned by slot %lld layer %lld and by slot %d layer %d", b,
                                  (long long)(o / s->n_layers), (long long)(o % s->n_layers), i, l);
                    goto done;
                }
                seen[b] = 2 + (int64_t)i * s->n_layers + l;
                owned++;
            }
        }
    }
    for (int64_t b = 0; b < nb; b++) {
        if (!seen[b]) {
            st = skd_fail(SKD_ERR_STATE, "KV pool: block %lld is neither free nor owned (leaked)", (long long)b);
            goto done;
        }
    }
    if (owned != c->ledger.used || owned + c->n_free != nb) {
        st = skd_fail(SKD_ERR_STATE, "KV pool: %lld blocks owned and %lld free in a pool of %lld; the ledger counts %lld used",
                      (long long)owned, (long long)c->n_free, (long long)nb, (long long)c->ledger.used);
        goto done;
    }
    st = skd_kv_ledger_verify(&c->ledger, s, slots);
done:
    free(seen);
    return st;
}
