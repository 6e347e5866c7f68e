/* panel_loop.h — the loop nest both SIMD matmul kernels share (a macro, so
 * each kernel file instantiates it with its own micro-kernel, store and
 * accumulator type under its own target attribute).
 *
 * x is tiled so a tile (tile × k × 4 bytes ≤ 256 KiB) stays in L2 while each
 * of the thread's panels passes over it once; inside a tile, x rows go to the
 * micro-kernel in blocks of up to 6 (R is a constant in each call, so the
 * micro-kernel's loops over rows unroll).
 *
 *   MICRO(W, base, k, x, ldx, R, acc)   acc = panel · x rows, R rows
 *   STORE(acc, R, out, n, j0, nj, bias, relu)
 * Expects w, p0, p1, x, m, out, bias, relu in scope and `acc` declared. */
#ifndef SKD_PANEL_LOOP_H
#define SKD_PANEL_LOOP_H

#define SKD_PANEL_ROWS 6

#define SKD_PANEL_LOOP(MICRO, STORE, acc)                                                                  \
    do {                                                                                                   \
        const long k_ = w->cols, n_ = w->rows;                                                             \
        long tile = (256 * 1024) / (k_ * 4) / SKD_PANEL_ROWS * SKD_PANEL_ROWS;                             \
        if (tile < SKD_PANEL_ROWS) tile = SKD_PANEL_ROWS;                                                  \
        for (long t0 = 0; t0 < m; t0 += tile) {                                                            \
            const long t1 = m - t0 < tile ? m : t0 + tile;                                                 \
            for (long p = p0; p < p1; p++) {                                                               \
                const long j0 = p * SKD_PANEL, base = p * k_ * SKD_PANEL;                                  \
                const int nj = n_ - j0 < SKD_PANEL ? (int)(n_ - j0) : SKD_PANEL;                           \
                for (long i = t0; i < t1;) {                                                               \
                    const int R = t1 - i < SKD_PANEL_ROWS ? (int)(t1 - i) : SKD_PANEL_ROWS;                \
                    const float *xi = x + (size_t)i * k_;                                                  \
                    switch (R) {                                                                           \
                    case 6: MICRO(w->data, base, k_, xi, k_, 6, acc); break;                               \
                    case 5: MICRO(w->data, base, k_, xi, k_, 5, acc); break;                               \
                    case 4: MICRO(w->data, base, k_, xi, k_, 4, acc); break;                               \
                    case 3: MICRO(w->data, base, k_, xi, k_, 3, acc); break;                               \
                    case 2: MICRO(w->data, base, k_, xi, k_, 2, acc); break;                               \
                    default: MICRO(w->data, base, k_, xi, k_, 1, acc); break;                              \
                    }                                                                                      \
                    STORE(acc, R, out + (size_t)i * n_, n_, j0, nj, bias, relu);                           \
                    i += R;                                                                                \
                }                                                                                          \
            }                                                                                              \
        }                                                                                                  \
    } while (0)

#endif
