/* sample.c — see sample.h and skipdecode.h ("Sampling"). */
#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"

static int32_t argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Sort key: probability descending, then id ascending. */
static _Thread_local const float *g_p; /* qsort has no context argument */
static int by_prob_desc(const void *a, const void *b) {
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (g_p[i] > g_p[j]) return -1;
    if (g_p[i] < g_p[j]) return 1;
    return (i > j) - (i < j);
}
static int by_id(const void *a, const void *b) {
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    return (i > j) - (i < j);
}

/* Moves the k best ids (by_prob_desc order) of ids[0..n) to the front, sorted. */
static void top_k_select(int32_t *ids, int32_t n, int32_t k) {
    /* quickselect on the comparator, then sort the front */
    int32_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int32_t pivot = ids[lo + (hi - lo) / 2], i = lo, j = hi;
        while (i <= j) {
            while (by_prob_desc(&ids[i], &pivot) < 0) i++;
            while (by_prob_desc(&ids[j], &pivot) > 0) j--;
            if (i <= j) {
                int32_t t = ids[i];
                ids[i] = ids[j];
                ids[j] = t;
                i++;
                j--;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
    qsort(ids, (size_t)k, sizeof(int32_t), by_prob_desc);
}

int32_t skd_sample(const float *logits, int32_t V, float temperature, int32_t top_k, float top_p, uint64_t seed,
                   uint32_t seq, uint32_t step, float *p, int32_t *ids) {
    if (temperature == 0.0f || top_k == 1) return argmax(logits, V);
    /* p_i = exp((x_i - max) / T), unnormalised */
    const float mx = logits[argmax(logits, V)];
    const float inv_t = 1.0f / temperature;
    double total = 0.0;
    for (int32_t i = 0; i < V; i++) {
        p[i] = expf((logits[i] - mx) * inv_t);
        total += p[i];
    }
    const float u = skd_uniform(seed, seq, step);
    int32_t n = V; /* kept ids: ids[0..n), or all ids when `all` */
    int all = 1;
    g_p = p;
    if (top_k > 0 && top_k < V) {
        for (int32_t i = 0; i < V; i++) ids[i] = i;
        top_k_select(ids, V, top_k);
        n = top_k;
        all = 0;
    }
    if (top_p < 1.0f) {
        double kept = 0.0;
        if (all) {
            /* Sort only the ids that can be in the nucleus: halve a threshold t
             * until {p >= t} holds top_p of the mass; that set is a prefix of
             * the sorted order, so the nucleus lies inside it. */
            float t = 0.5f; /* p of the argmax is 1 */
            for (;;) {
                double m = 0.0;
                n = 0;
                for (int32_t i = 0; i < V; i++)
                    if (p[i] >= t) {
                        ids[n++] = i;
                        m += p[i];
                    }
                if (m >= (double)top_p * total || t == 0.0f) break;
                t *= 0.25f;
                if (t < 1e-30f) t = 0.0f;
            }
            qsort(ids, (size_t)n, sizeof(int32_t), by_prob_desc);
            kept = total;
            all = 0;
        } else {
            for (int32_t i = 0; i < n; i++) kept += p[ids[i]];
        }
        double c = 0.0;
        int32_t m = 0;
        while (m < n) {
            c += p[ids[m++]];
            if (c >= (double)top_p * kept) break;
        }
        n = m;
    }
    /* draw: walk kept ids in increasing order */
    double mass = 0.0;
    if (all) {
        mass = total;
        const double r = (double)u * mass;
        double c = 0.0;
        for (int32_t i = 0; i < V; i++) {
            c += p[i];
            if (c > r) return i;
        }
        for (int32_t i = V - 1; i >= 0; i--)
            if (p[i] > 0.0f) return i;
        return 0;
    }
    qsort(ids, (size_t)n, sizeof(int32_t), by_id);
    for (int32_t i = 0; i < n; i++) mass += p[ids[i]];
    const double r = (double)u * mass;
    double c = 0.0;
    for (int32_t i = 0; i < n; i++) {
        c += p[ids[i]];
        if (c > r) return ids[i];
    }
    return ids[n - 1];
}

void skd_logprobs(const float *x, int32_t V, int32_t token, int32_t n_top, float *values, int32_t *ids) {
    /* log p(i) = x_i - (max + log Σ exp(x_j - max)), the sum in double */
    float mx = x[0];
    for (int32_t i = 1; i < V; i++)
        if (x[i] > mx) mx = x[i];
    double sum = 0.0;
    for (int32_t i = 0; i < V; i++) sum += exp((double)x[i] - (double)mx);
    const double lse = (double)mx + log(sum);
    values[0] = (float)((double)x[token] - lse);
    /* the n_top best by insertion into a sorted list: V × n_top at worst, and
     * most x fall below the current last entry after the first few hundred */
    int32_t k = 0;
    for (int32_t i = 0; i < V && n_top > 0; i++) {
        if (k == n_top && !(x[i] > x[ids[k - 1]])) continue; /* ties keep the lower id already in */
        int32_t j = k < n_top ? k++ : k - 1;
        while (j > 0 && x[i] > x[ids[j - 1]]) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = i;
    }
    for (int32_t j = 0; j < n_top; j++) values[1 + j] = (float)((double)x[ids[j]] - lse);
}
