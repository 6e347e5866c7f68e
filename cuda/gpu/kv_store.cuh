/* kv_store.cuh — write the active rows' keys and values into the KV cache. */
#ifndef SKD_GPU_KV_STORE_CUH
#define SKD_GPU_KV_STORE_CUH
#include "common.cuh"

/* Cache layout (compute dtype): kc, vc [max_slots][n_layers][max_seq][kd].
 * For i in 0..m, with r = idx[i]:
 *   kc[slot[r]][layer][pos[r]][0..kd) = qkv[i, qd..qd+kd)
 *   vc[slot[r]][layer][pos[r]][0..kd) = qkv[i, qd+kd..qd+2kd)
 * qkv is the compact [m, qd + 2kd] output of the fused Q/K/V projection
 * (qd = heads × head_dim, kd = KV heads × head_dim). */
int skd_kv_store(void *kc, void *vc, const void *qkv, const int32_t *idx, const int32_t *slot, const int32_t *pos, int m,
                 int layer, int n_layers, int max_seq, int qd, int kd, cudaStream_t stream);

#endif
