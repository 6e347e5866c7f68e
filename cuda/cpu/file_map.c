/* file_map.c — the CPU library's copy of cuda/common/file_map.h. */
#define _DEFAULT_SOURCE
#include "file_map.h"
