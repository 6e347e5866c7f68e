/* sample.cu — one token per sampled row, on the device: one block (512
 * threads) per row.
 *
 * Semantics (skipdecode.h "Sampling"; the reference is cuda/cpu/sample.c):
 *   temperature 0 or top_k 1: the argmax, lowest id among ties
 *   else p_i = exp((x_i - max x) / T); top_k keeps the k largest, top_p then the
 *   shortest prefix by (p desc, id asc) holding top_p of the kept mass;
 *   u = skd_uniform(seed, seq, step); the token is the first kept id, walking
 *   ids upwards, at which the running kept mass exceeds u × (kept mass).
 *
 * Approach. Every pass streams the row's V logits (L2-resident: 200 KB for
 * OPT's 50272) and recomputes p_i, so nothing else is stored and the logits of
 * a row that also goes to the host are never modified.
 *   order   each id gets a unique 64-bit key K_i = bits(p_i) << 32 | (2^32-1-i):
 *           p >= 0, so its float bits order like p, and the low word puts the
 *           lower id first among equal p. The top-k set and every prefix of the
 *           (p desc, id asc) order are then {i : K_i >= threshold}.
 *   top-k   radix select of the k-th largest key, 8 bits a pass from the top
 *           byte: a 256-bin histogram of the keys that match the bytes chosen
 *           so far, then (one warp, a scan) the bin where the count from the
 *           top reaches k. It stops as soon as the chosen bin is exactly the
 *           ids still needed: at most 8 passes, 2-4 for ordinary logits.
 *   top-p   the same descent over the top-k survivors with bins holding mass:
 *           the bin where the mass from the top reaches top_p × (kept mass),
 *           down to the bin holding a single id, the nucleus's last one.
 *   draw    each warp sums the kept mass of its contiguous id range; the 16
 *           warp sums, in order, tell which warp's range holds the crossing of
 *           u × mass; that warp walks its range 32 ids at a time (warp scan +
 *           ballot) in increasing id order.
 * Work: O(V) per pass, at most 1 + 8 + 1 + 8 + 2 passes; no sorting.
 *
 * Masses are 64-bit fixed point: w_i = round(p_i · 2^s), s = 63 - ceil(log2 V),
 * so no sum over the vocabulary overflows and every sum is exact whatever
 * order it is taken in: the token is deterministic and depends on nothing but
 * the row's logits and key. The CPU sums the float p_i in double, sequentially
 * in increasing id order; the two masses differ by at most V · 2^-(s+1) (under
 * 1e-8 of the kept mass for V <= 2^18), so the backends can pick different
 * tokens from equal logits only when u × mass (or top_p × mass) lands within
 * that rounding of a boundary between two ids.
 * TODO(perf): fuse the argmax and the first histogram into the LM-head GEMM's
 * epilogue; several rows per block for small vocabularies.
 */
#include "sample.cuh"

#define SAMPLE_THREADS 512
#define SAMPLE_WARPS (SAMPLE_THREADS / 32)
#define FULL_MASK 0xffffffffu

typedef unsigned long long u64;

struct sample_smem {
    u64 warp[SAMPLE_WARPS]; /* per-warp partial results */
    unsigned hcnt[256];     /* radix histogram: ids per bin */
    u64 hmass[256];         /* radix histogram: mass per bin */
    u64 sel_prefix, sel_acc;/* result of a radix step, for the whole block */
    int sel_done;
    int token;
};

/* One row: p_i = exp((x_i - mx) · inv_t) exactly as the CPU computes it, and its
 * fixed-point weight w_i = round(p_i · scale). */
struct row_view {
    const float *x;
    int V;
    float mx, inv_t, scale;
    __device__ __forceinline__ float prob(int i) const { return expf((x[i] - mx) * inv_t); }
    __device__ __forceinline__ u64 weight(float p) const { return __float2ull_rn(p * scale); }
};

/* Argmax order as one integer (larger = better): logit descending, id ascending.
 * -0 is made +0 first so that equal logits tie on the id, as on the CPU. */
static __device__ __forceinline__ u64 logit_key(float x, int i) {
    unsigned b = __float_as_uint(x + 0.0f);
    b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return ((u64)b << 32) | (u64)(~(unsigned)i);
}
/* Sampling order (p >= 0): p descending, id ascending. */
static __device__ __forceinline__ u64 prob_key(float p, int i) {
    return ((u64)__float_as_uint(p) << 32) | (u64)(~(unsigned)i);
}
static __device__ __forceinline__ int key_id(u64 k) { return (int)~(unsigned)k; }

static __device__ __forceinline__ u64 warp_max_u64(u64 v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const u64 t = __shfl_xor_sync(FULL_MASK, v, o);
        v = t > v ? t : v;
    }
    return v;
}
static __device__ __forceinline__ u64 warp_sum_u64(u64 v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}
static __device__ __forceinline__ u64 warp_incl_scan_u64(u64 v, int lane) {
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const u64 t = __shfl_up_sync(FULL_MASK, v, o);
        if (lane >= o) v += t;
    }
    return v;
}

/* Max over the block; every thread gets it. */
static __device__ u64 block_max_u64(u64 v, sample_smem &S) {
    v = warp_max_u64(v);
    __syncthreads(); /* S.warp may still be read by a previous step */
    if ((threadIdx.x & 31) == 0) S.warp[threadIdx.x >> 5] = v;
    __syncthreads();
    u64 m = 0;
    for (int w = 0; w < SAMPLE_WARPS; w++) m = S.warp[w] > m ? S.warp[w] : m;
    return m;
}

/* Radix histogram of the keys K_i that match `prefix` on the bits of `mask`
 * and are >= lo: bin (K >> sh) & 255 gets their count and, with MASS, their
 * weight. With MASS, ids of weight 0 are left out: they can never be drawn, so
 * the nucleus search need not see them. Lanes of a warp hitting the same bin
 * add once (the leading bins of a pass hold most ids). */
template <bool MASS>
static __device__ void histogram(const row_view &r, u64 prefix, u64 mask, int sh, u64 lo, sample_smem &S) {
    for (int b = threadIdx.x; b < 256; b += SAMPLE_THREADS) {
        S.hcnt[b] = 0;
        if (MASS) S.hmass[b] = 0;
    }
    __syncthreads();
    const int lane = threadIdx.x & 31;
    for (int base = 0; base < r.V; base += SAMPLE_THREADS) { /* the same trip count in every thread */
        const int i = base + threadIdx.x;
        int bin = -1;
        u64 w = 0;
        if (i < r.V) {
            const float p = r.prob(i);
            const u64 k = prob_key(p, i);
            if (MASS) w = r.weight(p);
            if ((k & mask) == prefix && k >= lo && (!MASS || w)) bin = (int)((k >> sh) & 255);
        }
        unsigned todo = __ballot_sync(FULL_MASK, bin >= 0);
        while (todo) { /* one bin at a time; todo is the same in every lane */
            const int src = __ffs(todo) - 1;
            const int b = __shfl_sync(FULL_MASK, bin, src);
            const unsigned same = __ballot_sync(FULL_MASK, bin == b);
            if (MASS) {
                const u64 m = warp_sum_u64(bin == b ? w : 0);
                if (lane == src) atomicAdd(&S.hmass[b], m);
            }
            if (lane == src) atomicAdd(&S.hcnt[b], (unsigned)__popc(same));
            todo &= ~same;
        }
    }
    __syncthreads();
}

/* Warp 0, after histogram(): walking the bins from 255 down, finds the first
 * bin b with acc + (all bins above b) + v[b] >= target, v = the mass (MASS) or
 * the count of a bin. Publishes the prefix extended by b, acc + (bins above b),
 * and whether the search ends here: the whole bin is kept (count: it holds
 * exactly the ids still needed; mass: it holds one id) or this was the last byte.
 * Lane l holds bins 255 - 8l .. 248 - 8l. */
template <bool MASS>
static __device__ void pick_bin(sample_smem &S, u64 prefix, u64 acc, u64 target, int sh) {
    const int lane = threadIdx.x;
    u64 v[8], s = 0;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        const int b = 255 - 8 * lane - j;
        v[j] = MASS ? S.hmass[b] : (u64)S.hcnt[b];
        s += v[j];
    }
    const u64 incl = warp_incl_scan_u64(s, lane);
    const unsigned hit = __ballot_sync(FULL_MASK, acc + incl >= target);
    if (!hit) { /* cannot happen (target <= what the bins hold); keep the whole range */
        if (lane == 0) {
            S.sel_prefix = prefix;
            S.sel_acc = acc;
            S.sel_done = 1;
        }
        return;
    }
    if (lane != __ffs(hit) - 1) return;
    u64 c = acc + incl - s;
    int b = 255 - 8 * lane - 7;
    bool found = false;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        if (found) continue;
        if (c + v[j] >= target) {
            found = true;
            b = 255 - 8 * lane - j;
        } else {
            c += v[j];
        }
    }
    const unsigned cnt = S.hcnt[b];
    S.sel_prefix = prefix | ((u64)b << sh);
    S.sel_acc = c;
    S.sel_done = sh == 0 || (MASS ? cnt == 1 : c + cnt == target);
}

/* Radix descent over the keys >= lo: the smallest key K* such that the keys
 * >= K* hold `target` ids (count) or at least `target` weight (MASS). Returns a
 * threshold t with {K >= t, K >= lo} = {K >= K*} — up to ids of weight 0 with
 * MASS. */
template <bool MASS>
static __device__ u64 radix_select(const row_view &r, u64 lo, u64 target, sample_smem &S) {
    u64 prefix = 0, mask = 0, acc = 0;
    for (int sh = 56; sh >= 0; sh -= 8) {
        histogram<MASS>(r, prefix, mask, sh, lo, S);
        if (threadIdx.x < 32) pick_bin<MASS>(S, prefix, acc, target, sh);
        __syncthreads();
        prefix = S.sel_prefix;
        acc = S.sel_acc;
        mask |= (u64)255 << sh;
        if (S.sel_done) break; /* the same in every thread */
    }
    return prefix;
}

/* Contiguous id range of each warp, a multiple of 32 long. */
static __device__ __forceinline__ int warp_span(int V) { return ((V + SAMPLE_WARPS - 1) / SAMPLE_WARPS + 31) & ~31; }

/* Kept weight (ids with K >= thr): of this warp's range (*mine), of the ranges
 * of the warps before it (*before), and of the row (returned). */
static __device__ u64 kept_mass(const row_view &r, u64 thr, sample_smem &S, u64 *mine, u64 *before) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, span = warp_span(r.V);
    const int i0 = warp * span, i1 = min(r.V, i0 + span);
    u64 s = 0;
    for (int i = i0 + lane; i < i1; i += 32) {
        const float p = r.prob(i);
        if (prob_key(p, i) >= thr) s += r.weight(p);
    }
    s = warp_sum_u64(s);
    __syncthreads(); /* S.warp may still be read by a previous step */
    if (lane == 0) S.warp[warp] = s;
    __syncthreads();
    u64 pre = 0, tot = 0;
    for (int w = 0; w < SAMPLE_WARPS; w++) {
        if (w < warp) pre += S.warp[w];
        tot += S.warp[w];
    }
    *mine = s;
    *before = pre;
    return tot;
}

/* The draw: the first id (increasing) with K >= thr at which the running kept
 * weight exceeds u × (kept weight); -1 if none (cannot happen: the argmax is
 * kept and has weight 2^s). */
static __device__ int draw(const row_view &r, u64 thr, float u, sample_smem &S) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, span = warp_span(r.V);
    const int i0 = warp * span, i1 = min(r.V, i0 + span);
    u64 mine, pre;
    const u64 mass = kept_mass(r, thr, S, &mine, &pre);
    const double x = (double)u * (double)mass;
    if (threadIdx.x == 0) S.token = -1;
    __syncthreads();
    /* (double)c > x is monotone in c, so exactly one warp sees its running sum cross */
    if (!((double)pre > x) && (double)(pre + mine) > x) { /* warp-uniform */
        u64 run = pre;
        for (int t = i0; t < i1; t += 32) {
            const int i = t + lane;
            u64 w = 0;
            if (i < i1) {
                const float p = r.prob(i);
                if (prob_key(p, i) >= thr) w = r.weight(p);
            }
            const u64 incl = warp_incl_scan_u64(w, lane);
            const unsigned hit = __ballot_sync(FULL_MASK, (double)(run + incl) > x);
            if (hit) {
                if (lane == __ffs(hit) - 1) S.token = i;
                break;
            }
            run += __shfl_sync(FULL_MASK, incl, 31);
        }
    }
    __syncthreads();
    return S.token;
}

static __global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_kernel(const float *__restrict__ logits, int V, const skd_sample_row *__restrict__ rows, int head0, float scale,
                  int32_t *__restrict__ tokens) {
    __shared__ sample_smem S;
    const skd_sample_row row = rows[blockIdx.x];
    const float *x = logits + (size_t)(row.head - head0) * V;

    u64 best = 0;
    for (int i = threadIdx.x; i < V; i += SAMPLE_THREADS) {
        const u64 k = logit_key(x[i], i);
        best = k > best ? k : best;
    }
    const int amax = key_id(block_max_u64(best, S));
    int token = amax;
    if (!(row.temperature == 0.0f || row.top_k == 1)) { /* the same in every thread */
        const row_view r = { x, V, x[amax], 1.0f / row.temperature, scale };
        u64 thr = 0; /* kept: K_i >= thr */
        if (row.top_k > 0 && row.top_k < V) thr = radix_select<false>(r, 0, (u64)row.top_k, S);
        if (row.top_p < 1.0f) {
            u64 mine, pre;
            const u64 kept = kept_mass(r, thr, S, &mine, &pre);
            /* a prefix of integer weight c reaches top_p × kept iff c >= ceil(top_p × kept) */
            const double t = ceil((double)row.top_p * (double)kept);
            const u64 target = t >= (double)kept ? kept : (u64)t;
            const u64 tp = radix_select<true>(r, thr, target, S);
            thr = tp > thr ? tp : thr;
        }
        const uint64_t seed = (uint64_t)row.seed_lo | ((uint64_t)row.seed_hi << 32);
        const int t = draw(r, thr, skd_uniform(seed, row.seq, row.step), S);
        if (t >= 0) token = t;
    }
    if (threadIdx.x == 0) tokens[row.out] = token;
}

int skd_sample(const float *logits, int vocab, const skd_sample_row *rows, int n_rows, int head0, int32_t *tokens,
               cudaStream_t stream) {
    if (n_rows <= 0) return SKD_OK;
    if (vocab < 1) return skd_fail(SKD_ERR_INVALID_ARG, "sample: vocab must be >= 1, got %d", vocab);
    int bits = 0; /* ceil(log2 vocab): V · 2^(63 - bits) <= 2^63 */
    while (((int64_t)1 << bits) < vocab) bits++;
    const float scale = ldexpf(1.0f, 63 - bits);
    sample_kernel<<<n_rows, SAMPLE_THREADS, 0, stream>>>(logits, vocab, rows, head0, scale, tokens);
    SKD_CUDA_CHECK_LAUNCH("sample_kernel");
    return SKD_OK;
}
