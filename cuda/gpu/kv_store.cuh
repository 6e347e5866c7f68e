/* kv_store.cuh — write the active rows' keys and values into the KV cache. */
#ifndef SKD_GPU_KV_STORE_CUH
#define SKD_GPU_KV_STORE_CUH
#include "common.cuh"

/* Cache layout (compute dtype): kc, vc [max_slots][n_layers][max_seq][d].
 * For i in 0..m, with r = idx[i]:
 *   kc[slot[r]][layer][pos[r]][0..d) = qkv[i, d..2d)
 *   vc[slot[r]][layer][pos[r]][0..d) = qkv[i, 2d..3d)
 * qkv is the compact [m, 3d] output of the fused Q/K/V projection. */
int skd_kv_store(void *kc, void *vc, const void *qkv, const int32_t *idx, const int32_t *slot, const int32_t *pos, int m,
                 int layer, int n_layers, int max_seq, int d, cudaStream_t stream);

#endif
