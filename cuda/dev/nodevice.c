/* nodevice.c — on a machine without a GPU/driver, the CUDA library must load,
 * and skd_device_count / skd_device_name / skd_engine_create must return
 * SKD_ERR_NO_DEVICE (3) with a clear message, without crashing. On a GPU
 * machine it prints the device instead (and creates/frees an engine). Either
 * way the library must report the ABI version of this header (SKD_ABI_VERSION).
 *
 *   gcc -O1 -Wall -Wextra -I cuda/include cuda/dev/nodevice.c -o build/nodevice -ldl && build/nodevice
 * Exit status 0 when the library behaved (either way), 1 otherwise. */
#include <dlfcn.h>
#include <stdio.h>

#include "skipdecode.h"

#define SYM(name) name##_t name = (name##_t)dlsym(lib, #name); if (!name) { printf("missing symbol %s\n", #name); return 1; }
typedef int (*skd_device_count_t)(int32_t *);
typedef int (*skd_device_name_t)(int32_t, char *, int32_t);
typedef int (*skd_engine_create_t)(const int64_t *, int32_t, skd_engine **);
typedef void (*skd_engine_free_t)(skd_engine *);
typedef const char *(*skd_last_error_t)(void);
typedef const char *(*skd_status_str_t)(int);
typedef const char *(*skd_backend_name_t)(void);
typedef int (*skd_abi_version_t)(void);

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "build/libskipdecode_cuda.so";
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) { printf("dlopen %s: %s\n", path, dlerror()); return 1; }
    SYM(skd_device_count) SYM(skd_device_name) SYM(skd_engine_create) SYM(skd_engine_free)
    SYM(skd_last_error) SYM(skd_status_str) SYM(skd_backend_name) SYM(skd_abi_version)
    const int abi = skd_abi_version();
    printf("backend %s, ABI %d (header: %d)\n", skd_backend_name(), abi, SKD_ABI_VERSION);

    int32_t n = -1;
    int st = skd_device_count(&n);
    printf("skd_device_count -> %d %s, count %d, \"%s\"\n", st, skd_status_str(st), n, st ? skd_last_error() : "");
    char name[256] = "?";
    int st_name = skd_device_name(0, name, sizeof name);
    printf("skd_device_name(0) -> %d %s, \"%s\"\n", st_name, skd_status_str(st_name), st_name ? skd_last_error() : name);

    int64_t cfg[SKD_CFG_COUNT] = {0};
    cfg[SKD_CFG_ARCH] = SKD_ARCH_OPT; cfg[SKD_CFG_NUM_LAYERS] = 2; cfg[SKD_CFG_HIDDEN] = 64; cfg[SKD_CFG_NUM_HEADS] = 4;
    cfg[SKD_CFG_FFN] = 128; cfg[SKD_CFG_VOCAB] = 300; cfg[SKD_CFG_MAX_POSITIONS] = 64; cfg[SKD_CFG_EMBED_DIM] = 64;
    cfg[SKD_CFG_PRE_LN] = 1; cfg[SKD_CFG_FINAL_LN] = 1; cfg[SKD_CFG_POS_OFFSET] = 2; cfg[SKD_CFG_MAX_SLOTS] = 2;
    cfg[SKD_CFG_MAX_SEQ] = 64; cfg[SKD_CFG_MAX_ROWS] = 8;
    skd_engine *e = (skd_engine *)0x1;
    int st_create = skd_engine_create(cfg, SKD_CFG_COUNT, &e);
    printf("skd_engine_create -> %d %s, engine %p, \"%s\"\n", st_create, skd_status_str(st_create), (void *)e,
           st_create ? skd_last_error() : "");
    skd_engine_free(e);
    skd_engine_free(NULL);

    int ok;
    if (st == SKD_ERR_NO_DEVICE)
        ok = n == 0 && st_name == SKD_ERR_NO_DEVICE && st_create == SKD_ERR_NO_DEVICE && e == NULL;
    else
        ok = st == SKD_OK && n >= 1 && st_name == SKD_OK && st_create == SKD_OK && e != NULL;
    ok = ok && abi == SKD_ABI_VERSION;
    printf("%s\n", ok ? "OK" : "FAIL");
    return ok ? 0 : 1;
}
