/* quant.cu — the CUDA backend's quantization entry points (skd_dtype_row_bytes,
 * skd_quantize, skd_dequantize): host code, the shared reference in
 * cuda/common/quant_ref.h, on one thread. The engine dequantizes quantized
 * tensors with the same reference on load (engine.cu). */
#include "common.cuh"
#include "quant_ref.h"

SKD_API int skd_dtype_row_bytes(int32_t dtype, int64_t cols, int64_t *out) {
    return skd_dtype_row_bytes_impl(dtype, cols, out);
}

SKD_API int skd_quantize(int32_t dtype, const float *src, int64_t rows, int64_t cols, void *dst, int64_t dst_bytes) {
    const int st = skd_quantize_check(dtype, src, rows, cols, dst, dst_bytes);
    return st ? st : skd_quantize_rows(dtype, src, cols, dst, 0, rows);
}

SKD_API int skd_dequantize(int32_t dtype, const void *src, int64_t rows, int64_t cols, float *dst) {
    return skd_dequantize_impl(dtype, src, rows, cols, dst);
}
