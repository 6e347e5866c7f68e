/* errors.c — status strings and the thread-local last-error message (CPU backend). */
#include <stdarg.h>
#include <stdio.h>

#include "plan.h"
#include "skipdecode.h"

static _Thread_local char last_error[1024];

int skd_fail(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

SKD_API const char *skd_last_error(void) { return last_error; }

SKD_API const char *skd_status_str(int status) { return skd_status_name(status); }

SKD_API int skd_abi_version(void) { return SKD_ABI_VERSION; }
SKD_API const char *skd_backend_name(void) { return "cpu"; }
