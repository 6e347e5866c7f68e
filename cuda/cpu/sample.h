/* sample.h — next-token sampling from one row of logits, with the semantics
 * skipdecode.h documents for skd_engine_step (greedy, temperature, top-k,
 * top-p, counter-based draw, kept ids walked in increasing order). */
#ifndef SKD_SAMPLE_H
#define SKD_SAMPLE_H

#include <stdint.h>

/* Scratch skd_sample needs: floats and int32 for a vocabulary of V. */
#define SKD_SAMPLE_SCRATCH_F(V) ((size_t)(V))
#define SKD_SAMPLE_SCRATCH_I(V) ((size_t)(V) * 2)

/* Returns the sampled id of logits[0..V). */
int32_t skd_sample(const float *logits, int32_t V, float temperature, int32_t top_k, float top_p, uint64_t seed,
                   uint32_t seq, uint32_t step, float *scratch_f, int32_t *scratch_i);

/* Log-probabilities of one row of logits x[0..V) (skipdecode.h,
 * skd_engine_step_logprobs): values[0] = log p(token), values[1..n_top] and
 * ids[0..n_top) = the n_top largest, decreasing, ties to the lower id. */
void skd_logprobs(const float *x, int32_t V, int32_t token, int32_t n_top, float *values, int32_t *ids);

#endif
