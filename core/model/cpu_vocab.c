/* The projection step's per-neuron reductions over the vocabulary on the CPU (core/model/projections.py
 * calls them through core/model/native.py, which builds this file into one library with cpu_update.c;
 * docs/design.md, "The projection step"):
 *   - each neuron's k highest and k lowest scores and their items (promoted and suppressed tokens), in
 *     the order of a stable sort (of equal scores the earlier item first; NaN above every number, as
 *     torch.topk orders it);
 *   - the rank of each candidate trigger: how many of a neuron's V scores lie strictly below it, the
 *     comparison numpy's `<` makes (a NaN is below nothing and nothing is below a NaN);
 *   - the sums of x, x^2, x^3 and x^4 over a block of vocabulary items, x the centred cosines, each
 *     power in float64 from the same float32 x.
 * Both read a row while it is in cache and compare or multiply 16 values at a time where the compiler
 * vectorises for the CPU (-march=native), where numpy and torch make a temporary per operation (a bool
 * [rows, K, V] block, x^2, x^3) and read it again. Rows are split among `threads` >= 1 OpenMP threads
 * (torch's own, torch.get_num_threads(), as cpu_update.c explains); each row's result is the same
 * whatever the split. */

#include <math.h>
#include <stdint.h>

#define CHUNK 2048 /* items of a row compared with every candidate while they are in L1 (8 KB) */
#define LANES 16   /* independent float64 partial sums per power: a vector's worth, summed at the end */

/* The number of p[t] < x, t < m (m <= CHUNK). Not inlined: inlined, gcc vectorises the loop around it, over
 * the candidates, and runs scalar when there are fewer than 16 (measured 10x slower). */
__attribute__((noinline)) static uint32_t count_lt(const float *p, int64_t m, float x) {
    uint32_t c = 0;
    for (int64_t t = 0; t < m; t++) c += p[t] < x;
    return c;
}

/* out[r * k + j] = the number of t < n with s[r * stride + t] < values[r * k + j]. A count is at most n,
 * which fits the uint32 the vectorised loop adds the comparisons into (V < 2^32). */
void neuron_tui_count_below(const float *s, int64_t rows, int64_t n, int64_t stride, const float *values,
                            int64_t k, int64_t *out, int threads) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (int64_t r = 0; r < rows; r++) {
        const float *row = s + r * stride;
        const float *v = values + r * k;
        int64_t *o = out + r * k;
        for (int64_t j = 0; j < k; j++) o[j] = 0;
        for (int64_t t0 = 0; t0 < n; t0 += CHUNK) {
            const int64_t m = n - t0 < CHUNK ? n - t0 : CHUNK;
            const float *part = row + t0;
            for (int64_t j = 0; j < k; j++) o[j] += count_lt(part, m, v[j]);
        }
    }
}

/* Adds a, a^2, a^3, a^4 to lane l of the four running sums. */
static inline void add_powers(double acc[4][LANES], int l, double a) {
    const double a2 = a * a;
    acc[0][l] += a;
    acc[1][l] += a2;
    acc[2][l] += a2 * a;
    acc[3][l] += a2 * a2;
}

/* sums[p * rows + r] += the sum over t < n of x[r * n + t]^(p + 1), p = 0..3, in float64 (LANES running
 * sums per power, so the loop vectorises without reordering any one sum). */
void neuron_tui_power_sums(const float *x, int64_t rows, int64_t n, double *sums, int threads) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * n;
        double acc[4][LANES] = {{0}};
        int64_t t = 0;
        for (; t + LANES <= n; t += LANES)
            for (int l = 0; l < LANES; l++) add_powers(acc, l, row[t + l]);
        for (int l = 0; t < n; t++, l++) add_powers(acc, l, row[t]);
        for (int p = 0; p < 4; p++) {
            double total = 0;
            for (int l = 0; l < LANES; l++) total += acc[p][l];
            sums[p * rows + r] += total;
        }
    }
}

/* a before b in descending order (NaN first, as torch.topk's largest) */
static inline int above(float a, float b) { return a > b || (isnan(a) && !isnan(b)); }
/* a before b in ascending order (NaN last) */
static inline int below(float a, float b) { return a < b || (isnan(b) && !isnan(a)); }

/* Whether any of p[0..m) could enter either list: above the k-th highest `hi` or below the k-th lowest
 * `lo`. Not inlined, so it vectorises (16 at a time); a NaN (at either end, or among p) goes to the exact test. */
__attribute__((noinline)) static int any_outside(const float *p, int64_t m, float hi, float lo) {
    int any = 0;
    for (int64_t t = 0; t < m; t++) any |= !(p[t] <= hi) | !(p[t] >= lo);
    return any;
}

/* Insert (x, t) into the sorted list val/idx that holds `len` of its k entries: where it belongs, if the
 * list is not full or x comes before its last (`order`: above or below); an equal value stays behind
 * the ones already there (they have earlier items). */
static inline void enter(float *val, int64_t *idx, int64_t len, int64_t k, float x, int64_t t,
                         int (*order)(float, float)) {
    if (len == k && !order(x, val[k - 1])) return;
    int64_t at = len < k ? len : k - 1;
    for (; at > 0 && order(x, val[at - 1]); at--) {
        val[at] = val[at - 1];
        idx[at] = idx[at - 1];
    }
    val[at] = x;
    idx[at] = t;
}

/* Per row r of s (n >= k >= 1 items, row stride `stride`): top_val/top_idx [rows, k] its k highest,
 * descending, and bot_val/bot_idx its k lowest, ascending. Most items are neither, and are passed over
 * 16 at a time by `any_outside`. */
void neuron_tui_top_bottom(const float *s, int64_t rows, int64_t n, int64_t stride, int64_t k, float *top_val,
                           int64_t *top_idx, float *bot_val, int64_t *bot_idx, int threads) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (int64_t r = 0; r < rows; r++) {
        const float *row = s + r * stride;
        float *tv = top_val + r * k, *bv = bot_val + r * k;
        int64_t *ti = top_idx + r * k, *bi = bot_idx + r * k;
        for (int64_t t = 0; t < k; t++) { /* the first k fill both lists */
            enter(tv, ti, t, k, row[t], t, above);
            enter(bv, bi, t, k, row[t], t, below);
        }
        for (int64_t t0 = k; t0 < n; t0 += LANES) {
            const int64_t m = n - t0 < LANES ? n - t0 : LANES;
            if (!any_outside(row + t0, m, tv[k - 1], bv[k - 1])) continue;
            for (int64_t t = t0; t < t0 + m; t++) {
                enter(tv, ti, k, k, row[t], t, above);
                enter(bv, bi, k, k, row[t], t, below);
            }
        }
    }
}
