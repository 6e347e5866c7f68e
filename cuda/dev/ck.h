/* ck.h — CK(call): a dev harness's CUDA runtime call, which must succeed; on
 * failure it prints the call, file, line and CUDA's message and exits 1.
 * (The library itself never exits: it returns SKD_ERR_DEVICE, common.cuh.) */
#ifndef SKD_DEV_CK_H
#define SKD_DEV_CK_H
#include <stdio.h>
#include <stdlib.h>

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#endif
