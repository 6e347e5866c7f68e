/* gemm.cu (dev) — the GEMM kernels of cuda/gpu/ on real model shapes: every
 * variant checked against a float64 host reference, then timed.
 *
 *   nvcc -O2 -std=c++17 -Werror all-warnings -gencode arch=compute_90,code=sm_90 -I cuda/include -I cuda/common \
 *        cuda/dev/gemm.cu cuda/gpu/gemm.cu cuda/gpu/gemm_tc.cu cuda/gpu/errors.cu -o build/gemm_check
 *   build/gemm_check [--quick]
 *
 * Variants (gemm.cu / gemm_tc.cu headers):
 *   simt   gemv_kernel for m <= 16, else the 64×64 fp32 tiled kernel (the first verified path)
 *   tc     tensor cores: skinny_kernel for m <= 32 (split K over blocks when the grid is small),
 *          tile_kernel (128×128, cp.async, ldmatrix, mma.sync) above
 * Shapes: the OPT-1.3B (d 2048, ffn 8192) and 6.7B (d 4096, ffn 16384) layer
 * matrices and the LM head (vocab 50272) at decode m = 1, 8, 32 and prefill
 * m = 1024, 2048, plus awkward ones (odd m/n, k % 32 != 0, k % 8 != 0).
 *
 * Check: X, W, bias random fp16 (N(0,1)-ish), Y = X·Wᵀ + b in fp32 (yf). The
 * output is poisoned (NaN) first; every element must be written and finite.
 * 2048 sampled outputs (all when fewer) against a float64 reference on the
 * same fp16 values: max |err| <= 1e-3 · max |ref| + 1e-3 (fp32 accumulation of
 * exact fp16 products: errors ~1e-6 relative; a wrong fragment mapping is O(1)).
 *
 * Timing: cudaEvents, 3 warm-ups, 15 timed reps, median. W rotates over
 * enough copies (> 256 MB) that no rep finds its W in the 50 MB L2.
 * Napkin math per row: bytes = n·k·2 (W) + m·k·2 (X) + m·n·4 (Y), FLOPs = 2·m·n·k;
 * decode shapes are bandwidth-bound (compare GB/s with skd_membw's read
 * ~4360 GB/s on an H200), prefill shapes compute-bound (TFLOP/s; cuBLAS fp16
 * ~650-720 at these shapes there, TOOLCHAIN.md).
 * Exit status: 0 all pass, 1 a mismatch or CUDA failure, 2 no GPU.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "../gpu/gemm.cuh"
#include "halfs.h"
#include "ck.h"


static uint64_t rng = 0x2545F4914F6CDD1Dull;
static double urand(void) { /* [-1, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}
static float h2f(uint16_t h) { /* fp16 bits -> float */
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    uint32_t x;
    if (exp == 0) {
        if (!man) x = sign;
        else {
            float f = ldexpf((float)man, -24);
            memcpy(&x, &f, 4);
            x |= sign;
        }
    } else if (exp == 31) x = sign | 0x7f800000u | (man << 13);
    else x = sign | ((exp + 112) << 23) | (man << 13);
    float f;
    memcpy(&f, &x, 4);
    return f;
}

typedef struct {
    const char *label;
    int m, n, k;
} shape;

static const shape SHAPES[] = {
    { "1.3b qkv", 1, 6144, 2048 },       { "1.3b o", 1, 2048, 2048 },          { "1.3b fc1", 1, 8192, 2048 },
    { "1.3b fc2", 1, 2048, 8192 },       { "1.3b head", 1, 50272, 2048 },      { "1.3b qkv", 8, 6144, 2048 },
    { "1.3b fc2", 8, 2048, 8192 },       { "1.3b qkv", 32, 6144, 2048 },       { "1.3b o", 32, 2048, 2048 },
    { "1.3b fc1", 32, 8192, 2048 },      { "1.3b fc2", 32, 2048, 8192 },       { "1.3b head", 32, 50272, 2048 },
    { "6.7b qkv", 1, 12288, 4096 },      { "6.7b fc2", 1, 4096, 16384 },       { "6.7b fc1", 32, 16384, 4096 },
    { "6.7b fc2", 32, 4096, 16384 },     { "125m qkv", 1, 2304, 768 },         { "125m fc2", 1, 768, 3072 },
    { "1.3b qkv prefill", 1024, 6144, 2048 }, { "1.3b o prefill", 1024, 2048, 2048 },
    { "1.3b fc1 prefill", 1024, 8192, 2048 }, { "1.3b fc2 prefill", 1024, 2048, 8192 },
    { "1.3b fc1 prefill", 2048, 8192, 2048 }, { "6.7b fc1 prefill", 1024, 16384, 4096 },
    { "odd: k%32", 5, 300, 200 },        { "odd: k%32", 17, 300, 200 },        { "odd: tails", 40, 77, 136 },
    { "odd: k%8 (simt)", 3, 100, 52 },   { "odd: m 33", 33, 64, 64 },          { "odd: m 200", 200, 1000, 520 },
};

int main(int argc, char **argv) {
    const bool quick = argc > 1 && !strcmp(argv[1], "--quick");
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1) {
        fprintf(stderr, "no CUDA device — gemm_check needs a GPU\n");
        return 2;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("# gemm_check: %s, %d SMs\n\n", prop.name, prop.multiProcessorCount);
    if (skd_gemm_tc_init()) {
        fprintf(stderr, "skd_gemm_tc_init: %s\n", skd_last_error());
        return 1;
    }
    skd_gemm_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.tensor_cores = 1;
    ctx.tile_from = SKD_TC_SKINNY_M + 1;
    ctx.target_blocks = 2 * prop.multiProcessorCount;
    CK(cudaMalloc(&ctx.part, sizeof(float) * SKD_TC_MAX_SPLITS * SKD_TC_SKINNY_M * SKD_TC_SPLIT_MAX_N));
    CK(cudaMalloc(&ctx.count, sizeof(int) * SKD_TC_MAX_COUNTERS));
    CK(cudaMemset(ctx.count, 0, sizeof(int) * SKD_TC_MAX_COUNTERS));
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));

    int fails = 0;
    printf("| shape | m | n | k | variant | max err / max|ref| | ms | TFLOP/s | GB/s | tc vs simt |\n");
    printf("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|\n");
    for (size_t si = 0; si < sizeof SHAPES / sizeof *SHAPES; si++) {
        const shape sh = SHAPES[si];
        if (quick && sh.m >= 1024 && sh.n > 8192) continue;
        const size_t xk = (size_t)sh.m * sh.k, wk = (size_t)sh.n * sh.k, yk = (size_t)sh.m * sh.n;
        std::vector<uint16_t> hx(xk), hw(wk), hb(sh.n);
        for (auto &v : hx) v = f32_to_f16((float)urand());
        const float ws = 1.7320508f / sqrtf((float)sh.k);
        for (auto &v : hw) v = f32_to_f16((float)urand() * ws);
        for (auto &v : hb) v = f32_to_f16((float)urand() * 0.1f);
        /* enough W copies that the timed reps miss L2 */
        const size_t wbytes = wk * 2;
        int copies = (int)std::min<size_t>(16, (256ull << 20) / wbytes + 1);
        void *dx, *db;
        float *dy;
        std::vector<void *> dw(copies);
        CK(cudaMalloc(&dx, xk * 2));
        CK(cudaMalloc(&db, (size_t)sh.n * 2));
        CK(cudaMalloc(&dy, yk * 4));
        for (int c = 0; c < copies; c++) {
            CK(cudaMalloc(&dw[c], wbytes));
            CK(cudaMemcpy(dw[c], hw.data(), wbytes, cudaMemcpyHostToDevice));
        }
        CK(cudaMemcpy(dx, hx.data(), xk * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(db, hb.data(), (size_t)sh.n * 2, cudaMemcpyHostToDevice));
        /* reference on sampled outputs */
        const int ns = yk < 2048 ? (int)yk : 2048;
        std::vector<size_t> pick(ns);
        std::vector<double> ref(ns);
        double ref_max = 0;
        for (int s = 0; s < ns; s++) {
            pick[s] = yk < 2048 ? (size_t)s : (size_t)((urand() * 0.5 + 0.5) * (double)yk) % yk;
            const size_t i = pick[s] / sh.n, n = pick[s] % sh.n;
            double acc = h2f(hb[n]);
            for (int k = 0; k < sh.k; k++) acc += (double)h2f(hx[i * sh.k + k]) * h2f(hw[n * sh.k + k]);
            ref[s] = acc;
            ref_max = fmax(ref_max, fabs(acc));
        }
        std::vector<float> hy(yk);
        double simt_ms = 0;
        for (int var = 0; var < 2; var++) {
            skd_gemm_args a;
            memset(&a, 0, sizeof a);
            a.x = dx;
            a.ldx = sh.k;
            a.w = dw[0];
            a.bias = db;
            a.m = sh.m;
            a.n = sh.n;
            a.k = sh.k;
            a.yf = dy;
            a.ldyf = sh.n;
            a.ctx = var ? &ctx : NULL;
            CK(cudaMemset(dy, 0xff, yk * 4)); /* NaN */
            if (skd_gemm(&a, SKD_DTYPE_F16, st)) {
                printf("%s m %d: skd_gemm failed: %s\n", sh.label, sh.m, skd_last_error());
                fails++;
                continue;
            }
            CK(cudaStreamSynchronize(st));
            CK(cudaGetLastError());
            CK(cudaMemcpy(hy.data(), dy, yk * 4, cudaMemcpyDeviceToHost));
            size_t unwritten = 0;
            for (size_t j = 0; j < yk; j++) unwritten += !isfinite(hy[j]);
            double err = 0;
            for (int s = 0; s < ns; s++) err = fmax(err, fabs(hy[pick[s]] - ref[s]));
            const bool ok = !unwritten && err <= 1e-3 * ref_max + 1e-3;
            if (!ok) fails++;
            /* time */
            const int reps = 15;
            std::vector<float> t(reps);
            for (int r = -3; r < reps; r++) {
                a.w = dw[(r + 3) % copies];
                CK(cudaEventRecord(e0, st));
                if (skd_gemm(&a, SKD_DTYPE_F16, st)) {
                    fails++;
                    break;
                }
                CK(cudaEventRecord(e1, st));
                CK(cudaEventSynchronize(e1));
                if (r >= 0) CK(cudaEventElapsedTime(&t[r], e0, e1));
            }
            std::sort(t.begin(), t.end());
            const double ms = t[reps / 2];
            if (!var) simt_ms = ms;
            const double flops = 2.0 * sh.m * sh.n * sh.k, bytes = (double)wbytes + xk * 2 + yk * 4;
            char speed[32] = "";
            if (var) snprintf(speed, sizeof speed, "%.2fx", simt_ms / ms);
            printf("| %s | %d | %d | %d | %s | %.1e%s%s | %.4f | %.1f | %.0f | %s |\n", sh.label, sh.m, sh.n, sh.k,
                   var ? "tc" : "simt", err / (ref_max > 0 ? ref_max : 1), ok ? "" : " FAIL",
                   unwritten ? " (unwritten outputs)" : "", ms, flops / ms / 1e9, bytes / ms / 1e6, speed);
            fflush(stdout);
        }
        cudaFree(dx);
        cudaFree(db);
        cudaFree(dy);
        for (int c = 0; c < copies; c++) cudaFree(dw[c]);
    }
    printf("\n%s: %d failed checks\n", fails ? "FAIL" : "OK", fails);
    return fails ? 1 : 0;
}
