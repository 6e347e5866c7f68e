/* kernel_ab.c — two builds of one CPU kernel file, alternating step by step.
 *
 * A change to a kernel is worth a few percent; this VM's bandwidth drifts by
 * more than that between runs minutes apart. So both builds go into one
 * program: A is the file as the engine has it, B a changed copy compiled with
 * its entry point renamed, and they run a llama-400m decode's matmuls (24
 * layers of q/k/v as one [1536, 1024] matrix, o, gate/up as one [7168, 1024],
 * down [1024, 3584], and the [32000, 1024] LM head; random weights; m = 1; 2
 * threads through skd_pool_run_range, as the engine splits them) one step
 * each, in ABBA order, for `steps` pairs. It prints both medians as GB/s of
 * weights and the median and quartiles of A's step time over B's (> 1: B is
 * faster). Two copies of the same file give 1.000 with quartiles about ±1.5%
 * on the 2-vCPU VMs.
 *
 * The matrices are distinct, as a decode's are: a benchmark that repeats one
 * matrix lets the branch predictor learn its outputs, which hid a branch on
 * every output's sign from `build/quant_check compute` (docs/quantization.md).
 *
 * Quantized kernels (quant_avx2.c; B is any copy of it):
 *   F="-O3 -std=c11 -pthread -fopenmp-simd -fno-math-errno -fno-trapping-math -I cuda/include -I cuda/common -I cuda/cpu"
 *   gcc $F -c B.c -Dskd_qrows_avx2=skd_qrows_avx2_B -Dskd_quantize_act_avx2=skd_quantize_act_avx2_B -o build/B.o
 *   gcc $F cuda/dev/kernel_ab.c build/B.o cuda/cpu/quant.c cuda/cpu/quant_avx2.c cuda/cpu/quant_avx512.c \
 *       cuda/cpu/ops.c cuda/cpu/matmul_avx2.c cuda/cpu/matmul_avx512.c cuda/cpu/pool.c cuda/cpu/errors.c \
 *       cuda/cpu/membw.c -lm -o build/kernel_ab
 *   build/kernel_ab q4_k [steps] [vnni 1|0]   (q8_0, q4_0, q5_0, q4_k, q6_k, or q4_k_m: llama.cpp's mix; the AVX-VNNI
 *                                             kernels where the CPU has them, unless 0)
 * The AVX-512 16-bit kernel (matmul_avx512.c; F16 weights):
 *   gcc $F -c B.c -Dskd_matmul_panels_avx512=skd_matmul_panels_avx512_B -o build/B.o   (then link as above)
 *   build/kernel_ab f16 [steps]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../cpu/ops.h"
#include "../cpu/pool.h"
#include "../cpu/quant.h"
#include "quant_ref.h"
#include "skipdecode.h"
#include "timing.h"

/* B's entry points: whichever the B object defines (the other stays NULL). */
__attribute__((weak)) skd_qrows_fn *skd_qrows_avx2_B(int dtype, int vnni);
__attribute__((weak)) void skd_matmul_panels_avx512_B(const skd_mat *w, long p0, long p1, const float *x, int m,
                                                      float *out, const float *bias, int relu);

static skd_mat make(int dtype, long n, long k) {
    skd_mat m = { 0 };
    if (dtype == SKD_DTYPE_F16) {
        uint16_t *h = malloc(2 * (size_t)(n * k));
        for (long i = 0; i < n * k; i++) h[i] = skd_f32_to_half(urand() * 0.1f);
        skd_mat_set(&m, dtype, h, n, k, 1, NULL);
        free(h);
    } else {
        float *f = malloc(sizeof(float) * (size_t)(n * k));
        void *q = malloc((size_t)(n * skd_row_bytes(dtype, k)));
        for (long i = 0; i < n * k; i++) f[i] = urand();
        if (skd_quantize_rows(dtype, f, k, q, 0, n)) fprintf(stderr, "quantize failed\n"), exit(2);
        skd_mat_set(&m, dtype, q, n, k, 1, NULL);
        free(f), free(q);
    }
    if (!m.data) fprintf(stderr, "out of memory\n"), exit(2);
    return m;
}

typedef struct {
    int b, vnni;
    const skd_mat *w;
    const skd_qact *act;
    const float *x;
    float *out;
} job;

static void run(void *ctx, long r0, long r1) {
    const job *j = ctx;
    if (j->w->dtype == SKD_DTYPE_F16) {
        (j->b ? skd_matmul_panels_avx512_B : skd_matmul_panels_avx512)(j->w, r0, r1, j->x, 1, j->out, NULL, 0);
    } else {
        skd_qrows_fn *fn = (j->b ? skd_qrows_avx2_B : skd_qrows_avx2)(j->w->dtype, j->vnni);
        fn(j->w, r0, r1, j->act, 1, j->out, j->w->rows, NULL, 0);
    }
}

enum { L = 24, D = 1024, FFN = 3584, VOCAB = 32000, NM = L * 4 + 1 };

int main(int argc, char **argv) {
    const char *type = argc > 1 ? argv[1] : "q4_k";
    const int steps = argc > 2 && atoi(argv[2]) > 0 ? atoi(argv[2]) : 200;
    const int vnni = (argc > 3 ? atoi(argv[3]) : 1) && skd_qkernel_supported(SKD_QKERNEL_AVX2_VNNI);
    static const struct { const char *name; int dtype; } types[] = {
        { "f16", SKD_DTYPE_F16 }, { "q8_0", SKD_DTYPE_Q8_0 }, { "q4_0", SKD_DTYPE_Q4_0 }, { "q5_0", SKD_DTYPE_Q5_0 },
        { "q4_k", SKD_DTYPE_Q4_K }, { "q6_k", SKD_DTYPE_Q6_K }, { "q4_k_m", -1 },
    };
    int dtype = -2;
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (!strcmp(type, types[i].name)) dtype = types[i].dtype;
    if (dtype == -2) fprintf(stderr, "unknown type %s (f16, q8_0, q4_0, q5_0, q4_k, q6_k, q4_k_m)\n", type), exit(2);
    if (dtype == SKD_DTYPE_F16 ? !skd_matmul_panels_avx512_B : !skd_qrows_avx2_B)
        fprintf(stderr, "%s: the B object defines no %s\n", type, dtype == SKD_DTYPE_F16 ? "skd_matmul_panels_avx512_B" : "skd_qrows_avx2_B"), exit(2);
    if (dtype == SKD_DTYPE_F16 ? !__builtin_cpu_supports("avx512f") : !skd_qkernel_supported(SKD_QKERNEL_AVX2))
        fprintf(stderr, "%s: this CPU lacks the kernel's instructions\n", type), exit(2);
    const long rows[4] = { 1536, 1024, 7168, 1024 }, cols[4] = { D, D, D, FFN };
    static skd_mat w[NM];
    double bytes = 0;
    for (int i = 0; i < NM; i++) {
        int dt = dtype;
        if (dtype == -1) { /* llama.cpp's Q4_K_M: Q6_K for the LM head and ffn_down of its use_more_bits layers */
            const int l = i / 4;
            dt = i == L * 4 || (i % 4 == 3 && (l < L / 8 || l >= 7 * L / 8 || (l - L / 8) % 3 == 2)) ? SKD_DTYPE_Q6_K : SKD_DTYPE_Q4_K;
        }
        w[i] = i < L * 4 ? make(dt, rows[i % 4], cols[i % 4]) : make(dt, VOCAB, D);
        bytes += (double)skd_mat_bytes(&w[i]);
    }
    float *x = malloc(sizeof(float) * FFN), *out = malloc(sizeof(float) * VOCAB);
    for (int i = 0; i < FFN; i++) x[i] = urand();
    /* the activations of both lengths, in the form the weights read (SKD_ACT_K_WORDS for the K-quants) */
    const int form = dtype == SKD_DTYPE_Q4_K || dtype == SKD_DTYPE_Q6_K || dtype == -1 ? SKD_ACT_K_WORDS : SKD_ACT_32_WORDS;
    skd_qact act[2];
    for (int a = 0; a < 2; a++) {
        const long k = a ? FFN : D;
        act[a] = (skd_qact){ aligned_alloc(64, (size_t)k), malloc(sizeof(float) * (size_t)(k / 32)), malloc(sizeof(int16_t) * (size_t)(k / 16)) };
        if (dtype != SKD_DTYPE_F16) skd_quantize_act_avx2(x, k, form, act[a].qs, act[a].d, act[a].bsums);
    }
    skd_pool *pool = skd_pool_create(2);
    double *ta = malloc(sizeof(double) * (size_t)steps), *tb = malloc(sizeof(double) * (size_t)steps),
           *ratio = malloc(sizeof(double) * (size_t)steps);
    for (int s = 0; s < steps; s++) {
        for (int v = 0; v < 2; v++) {
            const int b = (s & 1) ^ v; /* ABBA */
            const double t0 = now();
            for (int i = 0; i < NM; i++) {
                const job j = { b, vnni, &w[i], &act[w[i].cols == FFN], x, out };
                const long unit = w[i].dtype == SKD_DTYPE_F16 ? w[i].cols * SKD_PANEL * 2 : skd_row_bytes(w[i].dtype, w[i].cols);
                const long items = w[i].dtype == SKD_DTYPE_F16 ? skd_panels(&w[i]) : w[i].rows;
                skd_pool_run_range(pool, items, SKD_CHUNK_BYTES / unit > 0 ? SKD_CHUNK_BYTES / unit : 1, run, (void *)&j);
            }
            (b ? tb : ta)[s] = now() - t0;
        }
        ratio[s] = ta[s] / tb[s];
    }
    qsort(ta, (size_t)steps, sizeof(double), cmp_double);
    qsort(tb, (size_t)steps, sizeof(double), cmp_double);
    qsort(ratio, (size_t)steps, sizeof(double), cmp_double);
    double rd = 0, cp = 0;
    skd_membw((int64_t)256 << 20, 2, 3, &rd, &cp);
    printf("%s: A %.1f GB/s, B %.1f GB/s (median steps, %.0f MB each); B's speed over A's %.3f (quartiles %.3f-%.3f); membw %.1f GB/s\n",
           type, bytes / ta[steps / 2] / 1e9, bytes / tb[steps / 2] / 1e9, bytes / 1e6, ratio[steps / 2], ratio[steps / 4],
           ratio[3 * steps / 4], rd);
    skd_pool_free(pool);
    for (int i = 0; i < NM; i++) skd_weight_free(w[i].data);
    for (int a = 0; a < 2; a++) free(act[a].qs), free(act[a].d), free(act[a].bsums);
    free(x), free(out), free(ta), free(tb), free(ratio);
    return 0;
}
