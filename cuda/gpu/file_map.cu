/* file_map.cu — the CUDA library's copy of cuda/common/file_map.h. */
#include "file_map.h"
