/* halfs.h — fp32 → fp16 / bf16 rounding (round to nearest even) for the dev
 * harnesses, which build their random weights on the host: the library's own
 * conversions (cuda/common/quant_ref.h), under the harnesses' short names. */
#ifndef SKD_DEV_HALFS_H
#define SKD_DEV_HALFS_H

#include <stdint.h>

#include "quant_ref.h"

static inline uint16_t f32_to_f16(float f) { return skd_f32_to_half(f); }
static inline uint16_t f32_to_bf16(float f) { return skd_f32_to_bfloat(f); }

#endif
