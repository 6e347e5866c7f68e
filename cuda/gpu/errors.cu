/* errors.cu — the CUDA library's status strings, last-error message and ABI
 * version (the code both backends share: cuda/common/errors.h), and the
 * mapping of CUDA runtime errors onto skipdecode statuses. */
#define SKD_BACKEND_NAME "cuda"
#include "errors.h"

#include "common.cuh"

int skd_cuda_fail(cudaError_t err, const char *what, const char *file, int line) {
    /* Clear a non-sticky error so the next call starts clean; a sticky one
     * (an illegal address in a kernel) stays and fails every later call. */
    (void)cudaGetLastError();
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    const int status = err == cudaErrorMemoryAllocation ? SKD_ERR_OUT_OF_MEMORY : SKD_ERR_DEVICE;
    return skd_fail(status, "%s failed (%s:%d): %s: %s", what, base, line, cudaGetErrorName(err), cudaGetErrorString(err));
}

