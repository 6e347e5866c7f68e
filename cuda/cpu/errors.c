/* errors.c — the CPU library's status strings, last-error message and ABI
 * version: the code both backends share (cuda/common/errors.h). */
#define SKD_BACKEND_NAME "cpu"
#include "errors.h"
