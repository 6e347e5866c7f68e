/* timing.h — what the CPU timing harnesses share (decode_bw.c, kernel_ab.c):
 * a seeded random stream, a monotonic clock and a comparator for qsort. */
#ifndef SKD_DEV_TIMING_H
#define SKD_DEV_TIMING_H
#include <stdint.h>
#include <time.h>

static uint64_t rng = 88172645463325252ull;
static inline float urand(void) { /* xorshift64 → [-0.5, 0.5) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) * (1.0 / 9007199254740992.0) - 0.5);
}

static inline double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static inline int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#endif
