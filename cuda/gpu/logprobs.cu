/* logprobs.cu — skd_engine_step_logprobs for the CUDA backend: a separate
 * addition that touches no other file of the engine. Log-probabilities are
 * not computed on the GPU yet, so a row flagged SKD_ROW_LOGPROBS is refused
 * with SKD_ERR_UNSUPPORTED (as skipdecode.h allows) and any other step runs
 * unchanged through skd_engine_step. The CPU engine computes them (cuda/cpu/
 * sample.c, skd_logprobs); a GPU version belongs after the LM head and the
 * sampler in step.cu, writing 1 + 2 × n_top numbers per flagged row. */
#include "common.cuh"

SKD_API int skd_engine_step_logprobs(skd_engine *e, const int32_t *rows, int32_t n_rows, const float *params,
                                     float *logits, int32_t *tokens, int32_t n_top, float *lp_values,
                                     int32_t *lp_ids) {
    if (!e) return skd_fail(SKD_ERR_INVALID_ARG, "engine is NULL");
    if (n_rows < 0) return skd_fail(SKD_ERR_INVALID_ARG, "step has %d rows", (int)n_rows);
    int32_t n_lp = 0;
    int st = skd_plan_logprobs(rows, n_rows, n_top, lp_values != NULL, lp_ids != NULL, &n_lp);
    if (st) return st;
    if (n_lp > 0) {
        for (int i = 0; i < n_rows; i++)
            if (rows[(size_t)i * SKD_ROW_FIELDS + SKD_ROW_FLAGS] & SKD_ROW_LOGPROBS)
                return skd_fail(SKD_ERR_UNSUPPORTED, "row %d asks for logprobs, which the CUDA backend does not compute yet", i);
    }
    return skd_engine_step(e, rows, n_rows, params, logits, tokens);
}
