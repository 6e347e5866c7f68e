/*
 * errors.h — the part of the C ABI that is the same code in both backends:
 * status strings, the thread-local last-error message, the ABI version and the
 * backend's name. It defines functions, so exactly one file per library
 * includes it — cuda/cpu/errors.c and cuda/gpu/errors.cu — after defining
 * SKD_BACKEND_NAME ("cpu", "cuda"). C11 and C++ (nvcc) alike.
 */
#ifndef SKD_COMMON_ERRORS_H
#define SKD_COMMON_ERRORS_H

#ifndef SKD_BACKEND_NAME
#error "define SKD_BACKEND_NAME before including errors.h"
#endif

#include <stdarg.h>
#include <stdio.h>

#include "plan.h"
#include "skipdecode.h"

#ifdef __cplusplus
#define SKD_THREAD_LOCAL thread_local
#else
#define SKD_THREAD_LOCAL _Thread_local
#endif

static SKD_THREAD_LOCAL char skd_last_error_text[1024];

int skd_fail(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(skd_last_error_text, sizeof skd_last_error_text, fmt, ap);
    va_end(ap);
    return status;
}

SKD_API const char *skd_last_error(void) { return skd_last_error_text; }

SKD_API const char *skd_status_str(int status) { return skd_status_name(status); }

SKD_API int skd_abi_version(void) { return SKD_ABI_VERSION; }
SKD_API const char *skd_backend_name(void) { return SKD_BACKEND_NAME; }

#endif
