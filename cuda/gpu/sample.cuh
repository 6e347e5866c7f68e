/* sample.cuh — next-token sampling on the device: one token id per sampled row
 * from its fp32 logits, with the semantics of skipdecode.h ("Sampling"); the
 * reference is cuda/cpu/sample.c. */
#ifndef SKD_GPU_SAMPLE_CUH
#define SKD_GPU_SAMPLE_CUH
#include "common.cuh"

/* One sampled row, filled on the host from the step's rows and params. */
typedef struct {
    int32_t head;            /* its logits are row (head - head0) of `logits` */
    int32_t out;             /* tokens[out] receives the sampled id */
    int32_t top_k;           /* 0 = no limit */
    uint32_t seq, step;      /* RNG key (skd_uniform) */
    uint32_t seed_lo, seed_hi;
    float temperature, top_p;
} skd_sample_row;

/* For each j in 0..n_rows (rows: device array):
 *   tokens[rows[j].out] = sample(logits[(rows[j].head - head0) * vocab .. + vocab))
 * logits fp32 [*, vocab], tokens device int32. Every rows[j].head - head0 must
 * name a row of `logits`. One block per row; runs on `stream`. */
int skd_sample(const float *logits, int vocab, const skd_sample_row *rows, int n_rows, int head0, int32_t *tokens,
               cudaStream_t stream);

#endif
