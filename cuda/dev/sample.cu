/* sample.cu (dev) — the device sampler (cuda/gpu/sample.cu, skd_sample) against
 * the CPU reference (cuda/cpu/sample.c) on identical fp32 logits, then timed.
 *
 *   nvcc -O2 -std=c++17 -Werror all-warnings -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
 *        -I cuda/include -I cuda/common cuda/dev/sample.cu cuda/gpu/sample.cu cuda/gpu/errors.cu cuda/cpu/sample.c \
 *        -o build/sample_check && build/sample_check
 *
 * Validation: logit sets with no ties (N(0, 4²)), heavy ties (integers 0..5),
 * ties at p = 0 (half the ids at -1e4) and a peaked row (±30), for V = 1, 2, 33,
 * 300, 5003, 50272 and 256000, through every sampler in SAMPLERS (greedy, the
 * four of parity.c, and edge cases: top_k 1, k > V, tiny T, small top_p), 16
 * keys each, all rows of a (V, logit set) in one launch. Criterion: the token
 * equals the reference's, except where u lies within 1e-5 of the token's
 * share of the reference CDF — exp() on the device and in glibc differ by an
 * ulp and masses are fixed point (sample.cu), which can move a boundary that
 * far; those draws are counted and printed. Greedy must match exactly.
 *
 * Timing: 64 rows (one block each, 132 SMs on an H100/H200: one wave) of V =
 * 50272 and 256000, greedy and T 1.0 / top-k 40 / top-p 0.9. Napkin math: a pass
 * reads the row's 4V bytes, from L2 after the first (64 × 1 MB = 64 MB at V =
 * 256000 overflows H200's 50 MB L2, so the big case also shows HBM); sampling
 * takes 1 argmax + up to 8 + 1 + 8 radix/mass passes + 2 draw passes, usually
 * ~10, so ~10 × 4V bytes per row: GB/s below counts those bytes.
 * Exit status: 0 all pass, 1 a mismatch or CUDA failure, 2 no GPU.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

extern "C" {
#include "../cpu/sample.h" /* the reference, compiled as C */
}
#include "../gpu/sample.cuh"
#include "ck.h"


struct sampler {
    const char *name;
    float temperature;
    int top_k;
    float top_p;
};
static const sampler SAMPLERS[] = {
    { "greedy", 0.0f, 0, 1.0f },          { "T 0.8", 0.8f, 0, 1.0f },
    { "T 1 k 40", 1.0f, 40, 1.0f },       { "T 0.7 p 0.9", 0.7f, 0, 0.9f },
    { "T 1.3 k 20 p 0.95", 1.3f, 20, 0.95f }, { "k 1", 1.0f, 1, 1.0f },
    { "T 2 k 5 p 0.5", 2.0f, 5, 0.5f },   { "T 0.5 k 3", 0.5f, 3, 1.0f },
    { "p 0.3", 1.0f, 0, 0.3f },           { "T 5 p 0.99", 5.0f, 0, 0.99f },
    { "T 0.05 p 0.9", 0.05f, 0, 0.9f },   { "k > V p 0.9", 1.0f, 1 << 30, 0.9f },
    { "T 1 k 2", 1.0f, 2, 1.0f },
};
#define N_SAMPLERS (int)(sizeof SAMPLERS / sizeof *SAMPLERS)
#define KEYS 16

static uint64_t rng = 0x243f6a8885a308d3ull;
static double urand() { /* [0, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) * (1.0 / 9007199254740992.0);
}

/* The reference CDF over kept ids in id order (sorting, plainly). */
static void kept_cdf(const float *x, int V, const sampler &c, std::vector<double> &F) {
    float mx = x[0];
    for (int i = 1; i < V; i++) mx = std::max(mx, x[i]);
    std::vector<float> p(V);
    std::vector<int> ids(V);
    for (int i = 0; i < V; i++) p[i] = expf((x[i] - mx) * (1.0f / c.temperature)), ids[i] = i;
    std::sort(ids.begin(), ids.end(), [&](int a, int b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    int n = c.top_k > 0 && c.top_k < V ? c.top_k : V;
    if (c.top_p < 1.0f) {
        double kept = 0, run = 0;
        for (int j = 0; j < n; j++) kept += p[ids[j]];
        int m = 0;
        while (m < n) {
            run += p[ids[m++]];
            if (run >= (double)c.top_p * kept) break;
        }
        n = m;
    }
    F.assign(V, 0.0);
    for (int j = 0; j < n; j++) F[ids[j]] = p[ids[j]];
    double run = 0;
    for (int i = 0; i < V; i++) F[i] = run += F[i];
    for (int i = 0; i < V; i++) F[i] /= run;
}

static void fill(std::vector<float> &x, int kind) {
    for (auto &v : x) {
        const double g = urand() * 2 - 1;
        v = kind == 0 ? (float)(g * 8) : kind == 1 ? (float)(int)(urand() * 6) : kind == 2 ? (urand() < 0.5 ? -1e4f : (float)(g * 3))
                                                                                           : (float)(g * 30);
    }
}
static const char *KIND[] = { "random", "ties", "p=0 ties", "peaked" };

int main() {
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev < 1) {
        fprintf(stderr, "no GPU: %s\n", cudaGetErrorString(cudaGetLastError()));
        return 2;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, sm_%d%d, %d SMs\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
    const int Vs[] = { 1, 2, 33, 300, 5003, 50272, 256000 };
    const int rows = N_SAMPLERS * KEYS;
    long draws = 0, bad = 0, near = 0;
    for (int V : Vs) {
        for (int kind = 0; kind < 4; kind++) {
            std::vector<float> x((size_t)V);
            fill(x, kind);
            /* every row samples the same logits row (head 0) with its own sampler and key */
            std::vector<skd_sample_row> sr(rows);
            for (int s = 0; s < N_SAMPLERS; s++)
                for (int k = 0; k < KEYS; k++) {
                    skd_sample_row &r = sr[s * KEYS + k];
                    r.head = 0;
                    r.out = s * KEYS + k;
                    r.top_k = SAMPLERS[s].top_k;
                    r.seq = (uint32_t)kind;
                    r.step = (uint32_t)k;
                    r.seed_lo = (uint32_t)V;
                    r.seed_hi = 0x5eedu;
                    r.temperature = SAMPLERS[s].temperature;
                    r.top_p = SAMPLERS[s].top_p;
                }
            float *dx;
            skd_sample_row *dr;
            int32_t *dt;
            CK(cudaMalloc(&dx, sizeof(float) * V));
            CK(cudaMalloc(&dr, sizeof(skd_sample_row) * rows));
            CK(cudaMalloc(&dt, sizeof(int32_t) * rows));
            CK(cudaMemcpy(dx, x.data(), sizeof(float) * V, cudaMemcpyHostToDevice));
            CK(cudaMemcpy(dr, sr.data(), sizeof(skd_sample_row) * rows, cudaMemcpyHostToDevice));
            if (skd_sample(dx, V, dr, rows, 0, dt, 0)) {
                fprintf(stderr, "skd_sample failed\n");
                return 1;
            }
            std::vector<int32_t> tok(rows);
            CK(cudaMemcpy(tok.data(), dt, sizeof(int32_t) * rows, cudaMemcpyDeviceToHost));
            CK(cudaFree(dx));
            CK(cudaFree(dr));
            CK(cudaFree(dt));
            std::vector<float> sf(SKD_SAMPLE_SCRATCH_F(V));
            std::vector<int32_t> si(SKD_SAMPLE_SCRATCH_I(V));
            std::vector<double> F;
            for (int j = 0; j < rows; j++) {
                const skd_sample_row &r = sr[j];
                const sampler &c = SAMPLERS[j / KEYS];
                const uint64_t seed = (uint64_t)r.seed_lo | ((uint64_t)r.seed_hi << 32);
                const int ref = skd_sample(x.data(), V, r.temperature, r.top_k, r.top_p, seed, r.seq, r.step, sf.data(), si.data());
                draws++;
                if (tok[j] == ref) continue;
                const bool greedy = c.temperature == 0.0f || c.top_k == 1;
                if (!greedy && tok[j] >= 0 && tok[j] < V) {
                    kept_cdf(x.data(), V, c, F);
                    const double u = skd_uniform(seed, r.seq, r.step), lo = tok[j] ? F[tok[j] - 1] : 0.0, hi = F[tok[j]];
                    const double dist = u < lo ? lo - u : u > hi ? u - hi : 0.0;
                    if (dist <= 1e-5) {
                        near++;
                        printf("  near a boundary: V %d %s %s key %d: cuda %d ref %d (u %.9f, %.2e from the token's CDF share)\n", V,
                               KIND[kind], c.name, (int)r.step, tok[j], ref, u, dist);
                        continue;
                    }
                }
                if (bad++ < 20)
                    printf("  MISMATCH V %d %s %s key %d: cuda %d ref %d\n", V, KIND[kind], c.name, (int)r.step, tok[j], ref);
            }
        }
    }
    printf("validation: %ld draws, %ld mismatches, %ld within rounding of a boundary  %s\n", draws, bad, near, bad ? "FAIL" : "PASS");

    /* timing */
    const int R = 64;
    for (int V : { 50272, 256000 }) {
        std::vector<float> x((size_t)R * V);
        fill(x, 0);
        float *dx;
        skd_sample_row *dr;
        int32_t *dt;
        CK(cudaMalloc(&dx, sizeof(float) * x.size()));
        CK(cudaMalloc(&dr, sizeof(skd_sample_row) * R));
        CK(cudaMalloc(&dt, sizeof(int32_t) * R));
        CK(cudaMemcpy(dx, x.data(), sizeof(float) * x.size(), cudaMemcpyHostToDevice));
        for (int s = 0; s < 2; s++) { /* greedy, then T 1 / top-k 40 / top-p 0.9 */
            std::vector<skd_sample_row> sr(R);
            for (int j = 0; j < R; j++)
                sr[j] = { j, j, s ? 40 : 0, 0u, (uint32_t)j, 1u, 0u, s ? 1.0f : 0.0f, s ? 0.9f : 1.0f };
            CK(cudaMemcpy(dr, sr.data(), sizeof(skd_sample_row) * R, cudaMemcpyHostToDevice));
            cudaEvent_t a, b;
            CK(cudaEventCreate(&a));
            CK(cudaEventCreate(&b));
            for (int w = 0; w < 3; w++) skd_sample(dx, V, dr, R, 0, dt, 0);
            std::vector<double> ms;
            for (int rep = 0; rep < 10; rep++) {
                CK(cudaEventRecord(a));
                skd_sample(dx, V, dr, R, 0, dt, 0);
                CK(cudaEventRecord(b));
                CK(cudaEventSynchronize(b));
                float t;
                CK(cudaEventElapsedTime(&t, a, b));
                ms.push_back(t);
            }
            double mean = 0, var = 0;
            for (double t : ms) mean += t / ms.size();
            for (double t : ms) var += (t - mean) * (t - mean) / ms.size();
            const double passes = s ? 10.0 : 1.0; /* napkin: see the header */
            printf("%d rows x V %6d  %-26s %8.1f ± %5.1f us   ~%.0f GB/s at %.0f passes\n", R, V,
                   s ? "T 1 top-k 40 top-p 0.9" : "greedy", mean * 1e3, sqrt(var) * 1e3, passes * 4.0 * V * R / (mean * 1e-3) / 1e9,
                   passes);
            CK(cudaEventDestroy(a));
            CK(cudaEventDestroy(b));
        }
        CK(cudaFree(dx));
        CK(cudaFree(dr));
        CK(cudaFree(dt));
    }
    return bad ? 1 : 0;
}
