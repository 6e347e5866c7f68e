/*
 * engine_calls.h — the engine calls of the C ABI whose code is the same in
 * both backends because they only touch the host-side bookkeeping: the
 * weight bytes counted at finalize, and the KV slots of plan.h. It defines
 * functions, so each engine includes it once — cuda/cpu/engine.c and
 * cuda/gpu/engine.cu — where `struct skd_engine` is complete. That struct
 * must have the members `skd_shape s`, `skd_slot *slots`, `int finalized`
 * and `int64_t weight_bytes`.
 */
#ifndef SKD_COMMON_ENGINE_CALLS_H
#define SKD_COMMON_ENGINE_CALLS_H

#include "plan.h"
#include "skipdecode.h"

SKD_API int skd_engine_weight_bytes(const skd_engine *e, int64_t *out) {
    if (!e || !out) return skd_fail(SKD_ERR_INVALID_ARG, "engine or out pointer is NULL");
    if (!e->finalized) return skd_fail(SKD_ERR_STATE, "engine is not finalized");
    *out = e->weight_bytes;
    return SKD_OK;
}

SKD_API int skd_engine_reset_slot(skd_engine *e, int32_t slot) {
    if (!e) return skd_fail(SKD_ERR_INVALID_ARG, "engine is NULL");
    return skd_slot_reset(&e->s, e->slots, slot);
}

SKD_API int skd_engine_slot_info(const skd_engine *e, int32_t slot, int32_t layer, int32_t *out_len,
                                 int32_t *out_kv_len) {
    if (!e) return skd_fail(SKD_ERR_INVALID_ARG, "engine is NULL");
    return skd_slot_query(&e->s, e->slots, slot, layer, out_len, out_kv_len);
}

#endif
