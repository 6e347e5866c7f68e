/* kv_store.cu — scatter this layer's K/V rows into the per-slot cache.
 * One block per active row; 2·d elements moved. The dtype does not matter
 * (a 16-bit copy), so there is one kernel for F16 and BF16.
 * TODO(perf): fold into the QKV GEMM's epilogue. */
#include "kv_store.cuh"

static __global__ void kv_store_kernel(uint16_t *__restrict__ kc, uint16_t *__restrict__ vc, const uint16_t *__restrict__ qkv,
                                       const int32_t *__restrict__ idx, const int32_t *__restrict__ slot,
                                       const int32_t *__restrict__ pos, int layer, int n_layers, int max_seq, int qd, int kd) {
    const int i = blockIdx.x;
    const int r = idx[i];
    const size_t off = (((size_t)slot[r] * n_layers + layer) * max_seq + pos[r]) * kd;
    const uint16_t *src = qkv + (size_t)i * (qd + 2 * kd);
    for (int j = threadIdx.x; j < kd; j += blockDim.x) {
        kc[off + j] = src[qd + j];
        vc[off + j] = src[qd + kd + j];
    }
}

int skd_kv_store(void *kc, void *vc, const void *qkv, const int32_t *idx, const int32_t *slot, const int32_t *pos, int m,
                 int layer, int n_layers, int max_seq, int qd, int kd, cudaStream_t stream) {
    if (m <= 0) return SKD_OK;
    const int threads = kd >= 256 ? 256 : ((kd + 31) / 32) * 32;
    kv_store_kernel<<<m, threads, 0, stream>>>((uint16_t *)kc, (uint16_t *)vc, (const uint16_t *)qkv, idx, slot, pos, layer,
                                               n_layers, max_seq, qd, kd);
    SKD_CUDA_CHECK_LAUNCH("kv_store_kernel");
    return SKD_OK;
}
