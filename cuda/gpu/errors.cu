/* errors.cu — status strings, the thread-local last-error message, and the
 * mapping of CUDA runtime errors onto skipdecode statuses (CUDA backend). */
#include <stdarg.h>
#include <stdio.h>

#include "common.cuh"

static thread_local char last_error[1024];

int skd_fail(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

int skd_cuda_fail(cudaError_t err, const char *what, const char *file, int line) {
    /* Clear a non-sticky error so the next call starts clean; a sticky one
     * (an illegal address in a kernel) stays and fails every later call. */
    (void)cudaGetLastError();
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    const int status = err == cudaErrorMemoryAllocation ? SKD_ERR_OUT_OF_MEMORY : SKD_ERR_DEVICE;
    return skd_fail(status, "%s failed (%s:%d): %s: %s", what, base, line, cudaGetErrorName(err), cudaGetErrorString(err));
}

SKD_API const char *skd_last_error(void) { return last_error; }

SKD_API const char *skd_status_str(int status) { return skd_status_name(status); }

SKD_API int skd_abi_version(void) { return SKD_ABI_VERSION; }
SKD_API const char *skd_backend_name(void) { return "cuda"; }
