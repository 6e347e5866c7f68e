/*
 * file_map.h — skd_file_map, skd_file_drop and skd_file_unmap (skipdecode.h),
 * the same code in both backends: the loader maps a GGUF file read-only and
 * hands set_tensor views of it, so a tensor's bytes are copied once, from the
 * page cache into the engine, with no buffer in between. It defines
 * functions, so exactly one file per library includes it
 * (cuda/cpu/file_map.c, cuda/gpu/file_map.cu). C11 and C++ (nvcc) alike.
 */
#ifndef SKD_COMMON_FILE_MAP_H
#define SKD_COMMON_FILE_MAP_H

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "plan.h"
#include "skipdecode.h"

SKD_API int skd_file_map(const char *path, void **out_addr, int64_t *out_size) {
    if (!path || !out_addr || !out_size) return skd_fail(SKD_ERR_INVALID_ARG, "file map: NULL argument");
    *out_addr = NULL;
    *out_size = 0;
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return skd_fail(SKD_ERR_INVALID_ARG, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
        close(fd);
        return skd_fail(SKD_ERR_INVALID_ARG, "%s is not a non-empty regular file", path);
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    close(fd); /* the mapping keeps the file */
    if (p == MAP_FAILED) return skd_fail(SKD_ERR_OUT_OF_MEMORY, "cannot map %s: %s", path, strerror(err));
    madvise(p, (size_t)st.st_size, MADV_SEQUENTIAL); /* advice only: read ahead, drop behind */
    *out_addr = p;
    *out_size = (int64_t)st.st_size;
    return SKD_OK;
}

SKD_API int skd_file_drop(void *addr, int64_t size, int64_t offset, int64_t bytes) {
    if (!addr || offset < 0 || bytes < 0 || offset > size || bytes > size - offset)
        return skd_fail(SKD_ERR_INVALID_ARG, "file drop: range [%lld, +%lld) outside a map of %lld bytes",
                        (long long)offset, (long long)bytes, (long long)size);
    const long page = sysconf(_SC_PAGESIZE);
    const int64_t begin = (offset + page - 1) / page * page, end = (offset + bytes) / page * page; /* whole pages only */
    if (end > begin) madvise((char *)addr + begin, (size_t)(end - begin), MADV_DONTNEED);
    return SKD_OK;
}

SKD_API int skd_file_unmap(void *addr, int64_t size) {
    if (!addr || size <= 0) return skd_fail(SKD_ERR_INVALID_ARG, "file unmap: no map");
    if (munmap(addr, (size_t)size) != 0) return skd_fail(SKD_ERR_INVALID_ARG, "file unmap: %s", strerror(errno));
    return SKD_OK;
}

#endif
