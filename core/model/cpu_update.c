/* One layer's per-batch update on the CPU in one pass over the activations (core/model/native.py builds
 * and calls it; docs/design.md, "The CPU's one-pass update").
 *
 * For h [R = B * T, F] (float32 or bfloat16), row r = (sequence b = r / T, position t = r % T), it adds
 * what the eager steps of core/model/accumulators.py add, in the same order of summation (over the
 * sequences in float32, then over the positions in float64):
 *   - per neuron, its firings (value > tau, value = |h| or h) per position and in all, the firings with
 *     h > tau, the signed sums of h over the firings and over h > tau, and the sum of h over every row;
 *   - each sequence's largest value and its first position, merged into each neuron's running top-K
 *     of sequences with the neuron's signed h around it as float16 (TopContexts, `merge_top`);
 *   - per firing: its histogram bin (in a row where many fire and the CPU has AVX-512, 16 at a time from
 *     log2 |h| and one comparison with an edge: `bins16`; else one load from a table indexed by a
 *     float32's top 16 bits, whose entry says at which low 16 bits the bin steps: histograms.step_table,
 *     `bin_of`); its place in the event
 *     sample (kept if its row's sampling level is at or above the neuron's level, which rises as
 *     EventSample's does: `add_event`); and for a gated FFN its sign case (sign(act(gate)) = sign(h) *
 *     sign(up)), counted, with the batch's strongest |h| per case and its earliest row (SignCases).
 * The neurons are split among threads in ranges of whole cache lines, so no two threads write the same
 * line. Each thread walks its range in blocks of BLOCK neurons, position by position and, within a
 * position, sequence by sequence: the block's counts for that position and its running sums stay in L1
 * while the B rows that add to them go by, so each row is read once, from memory (prefetched: rows lie F
 * apart, beyond the hardware prefetcher), and each count per position is read and written once a batch.
 * A row's firings are handled while the row is in cache; the up projection, read only at firings, is
 * prefetched a row ahead of the sign cases that read it. */

#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#define BLOCK_BITS 8
#define BLOCK (1 << BLOCK_BITS)
#define LINE 64 /* neurons per range step: 64 mask bytes, four lines of int32 counts */
#define N_CASES 4
#define MAX_THREADS 64
#define MAX_BINS 64
#define MAX_LEVEL 32

typedef struct {
    const void *h, *up;           /* [R, F]; up: gated FFNs only, else NULL */
    int64_t R, T, F;
    int bf16, abs_rule;
    float tau;
    int32_t *pos_count;           /* [>= T, F] += */
    int64_t *act_count, *count_pos;          /* [F] += */
    double *sum_fired, *sum_pos, *h_sum;     /* [F] += */
    float *seq_max;               /* [B, F] out */
    int64_t *seq_arg;             /* [B, F] out */
    const int32_t *bin_steps;     /* [65536]: histograms.step_table */
    const float *bin_upper;       /* [bins]: FiringHistogram.upper, each bin's upper edge (NaN for the last) */
    int32_t *hist;                /* [bins, F] += */
    int64_t bins;                 /* at most MAX_BINS; 0: no histogram (bench/collect.py's lean mode) */
    const int64_t *levels;        /* [R]: each row's sampling level z */
    const int64_t *positions;     /* [R]: each row's global position */
    int64_t cap;                  /* the event sample's: EventSample's tensors, changed in place */
    int64_t *level, *fill;        /* [F] */
    int32_t *ev_pos;              /* [cap + 1, F], element (slot, f) at slot * pos_step[0] + f * pos_step[1] */
    int8_t *ev_z;                 /* [cap + 1, F], strides z_step */
    int64_t *level_hist;          /* [MAX_LEVEL, F], strides lh_step: the buffered events per z, 0 below
                                   * the level. These three are strided: EventSample keeps them
                                   * neuron-major on the CPU, so a neuron's events share cache lines */
    int64_t *sign_count;          /* [4, F] += (gated) */
    float *sign_val;              /* [4, F] out: the batch's strongest |h| per case, -inf for none (written
                                   * where given, even without up: then every case has none) */
    int64_t *sign_row;            /* [4, F] out: its first row, -1 for none */
    float *top_val;               /* [K, F]: TopContexts', changed in place (NULL: no merge) */
    int64_t *top_pos;             /* [K, F] */
    uint16_t *ctx_val;            /* [K, W, F] float16, strides ctx_step (neuron-major on the CPU) */
    int64_t top_k, width, left;   /* K, W (0: no windows, bench/collect.py's lean mode), the centre's offset */
    int64_t pos_step[2], z_step[2], lh_step[2], ctx_step[3];
    int64_t lo, hi;               /* this thread's neurons */
} Args;

static inline float load(const void *p, int64_t i, const int bf16) {
    if (bf16) {
        uint32_t bits = (uint32_t)((const uint16_t *)p)[i] << 16;
        float x;
        memcpy(&x, &bits, 4);
        return x;
    }
    return ((const float *)p)[i];
}

static inline const void *load_row(const void *p, int64_t at, const int bf16) {
    return bf16 ? (const void *)((const uint16_t *)p + at) : (const void *)((const float *)p + at);
}

static inline void prefetch_block(const void *p, int64_t bytes, int write) {
    for (int64_t at = 0; at < bytes; at += 64)
        if (write)
            __builtin_prefetch((const char *)p + at, 1);
        else
            __builtin_prefetch((const char *)p + at, 0);
}

typedef struct {
    int64_t row, j; /* a gated firing waiting for its up projection: row, neuron in the block, h */
    float x;
} Pending;

/* One load, no dependent second one (the bin's upper edge). The choice stays a branch, taken only near
 * an edge: branch-free, the count's address would wait on the comparison (20% slower measured). */
static inline int32_t bin_of(const int32_t *restrict steps, float x) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    const uint32_t entry = (uint32_t)steps[bits >> 16];
    return (int32_t)((bits & 0xFFFF) >= (entry & 0x1FFFF) ? entry >> 24 : (entry >> 17) & 0x7F);
}

/* A firing of neuron f in row r, whose level z is at or above the neuron's: into the event sample. Where
 * that makes cap + 1 events, the level rises to the smallest L at which the events with z >= L fit (one
 * step usually), the events below it go and the rest close up, as EventSample's batch update does: the
 * level after a batch is the smallest that fits everything seen, whatever the order of the events (the
 * count of events at or above a level only grows), so the sample is the same. */
static void add_event(Args *a, int64_t f, int64_t r, int64_t z) {
    const int64_t C = a->cap;
    int64_t *lh = a->level_hist + f * a->lh_step[1], fill = a->fill[f];
    int32_t *pos = a->ev_pos + f * a->pos_step[1];
    int8_t *zs = a->ev_z + f * a->z_step[1];
    const int64_t lstep = a->lh_step[0], pstep = a->pos_step[0], zstep = a->z_step[0];
    lh[z * lstep] += 1;
    if (fill == C) {
        int64_t level = a->level[f], above = C + 1;
        while (above > C && level < MAX_LEVEL) {
            above -= lh[level * lstep];
            lh[level * lstep] = 0;
            level++;
        }
        a->level[f] = level;
        fill = 0;
        for (int64_t slot = 0; slot < C; slot++)
            if (zs[slot * zstep] >= level) {
                pos[fill * pstep] = pos[slot * pstep];
                zs[fill * zstep] = zs[slot * zstep];
                fill++;
            }
        for (int64_t slot = fill; slot < C; slot++) {
            pos[slot * pstep] = -1;
            zs[slot * zstep] = 0;
        }
        if (z < level) {
            a->fill[f] = fill;
            return;
        }
    }
    pos[fill * pstep] = (int32_t)a->positions[r];
    zs[fill * zstep] = (int8_t)z;
    a->fill[f] = fill + 1;
}

/* The histogram's bins 16 values at a time (AVX-512), for a row where many fire. The edges are
 * log-spaced on each side of zero (histograms.histogram_edges), so a bin is nearly an affine function of
 * log2 |x|: the candidate floor(clamp(a * L(|x|) + c, pmin, top)), with L the exponent plus a cubic of
 * the mantissa (error under 0.001) and c lowered by half a bin, is the bin or the one below; one
 * comparison with the candidate's upper edge (from registers: a lookup among 64 lanes, no gather) makes
 * it exact, the bin whose edges satisfy edges[k] <= x < edges[k + 1], as FiringHistogram.bins. A negative
 * x (the abs rule's symmetric edges) takes the mirror of |x|'s bin, its edge comparison strict, since
 * the bin of -y holds y's upper edge, not its lower. `vector_bins` sets this up from a layer's upper edges
 * and uses it only where a and c put every edge within a quarter bin of where the candidate must place it;
 * then every x lands within one bin (L is monotone to far less than that), which the correction closes.
 * Other edges, or a CPU without AVX-512, keep the step table. On a random OPT-125m batch, where every
 * other value fires, the histogram's share of a layer-batch fell from 3.3-4 to 2.0 ms (docs/design.md);
 * Zen 4's gathers, which the table would need, are no faster than the scalar loop. */
typedef struct {
    int ok; /* the vector path serves this layer */
#ifdef __AVX512F__
    __m512 upper[4]; /* lane k of the 64: bin k's upper edge (`bin_upper`), inf past the last bin */
    __m512 a, c, pmin, top;
    int mirror; /* abs rule: negative values take the mirrored bin */
#endif
} VectorBins;

#ifdef __AVX512F__
/* a * L(y) + c, L(y) ~ log2 y: the exponent plus a cubic of the mantissa m - 1 in [0, 1) (fitted with
 * L exact at 1 and 2, monotone; at most 8.8e-4 off) */
static inline __m512 scaled_log(const VectorBins *vb, __m512 y) {
    const __m512 u = _mm512_sub_ps(_mm512_getmant_ps(y, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_zero), _mm512_set1_ps(1.0f));
    __m512 p = _mm512_fmadd_ps(u, _mm512_set1_ps(0.15922002f), _mm512_set1_ps(-0.58208531f));
    p = _mm512_fmadd_ps(u, p, _mm512_set1_ps(1.42286527f));
    return _mm512_fmadd_ps(vb->a, _mm512_fmadd_ps(u, p, _mm512_getexp_ps(y)), vb->c);
}

/* The bins of 16 values (any, NaN included: its candidate is pmin, uncorrected). */
static inline __m512i bins16(const VectorBins *vb, __m512 x) {
    const __m512 y = _mm512_abs_ps(x);
    /* max and min return their second operand for NaN; +-inf and 0 give +-inf, then clamped */
    __m512i k = _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(scaled_log(vb, y), vb->pmin), vb->top));
    const __mmask16 high = _mm512_test_epi32_mask(k, _mm512_set1_epi32(32));
    const __m512 edge = _mm512_mask_blend_ps(high, _mm512_permutex2var_ps(vb->upper[0], k, vb->upper[1]),
                                             _mm512_permutex2var_ps(vb->upper[2], k, vb->upper[3]));
    const __m512i one = _mm512_set1_epi32(1);
    if (!vb->mirror) return _mm512_mask_add_epi32(k, _mm512_cmp_ps_mask(y, edge, _CMP_GE_OQ), k, one);
    const __mmask16 neg = _mm512_cmplt_epi32_mask(_mm512_castps_si512(x), _mm512_setzero_si512());
    k = _mm512_mask_add_epi32(k, _mm512_mask_cmp_ps_mask(~neg, y, edge, _CMP_GE_OQ) |
                                     _mm512_mask_cmp_ps_mask(neg, y, edge, _CMP_GT_OQ), k, one);
    return _mm512_mask_sub_epi32(k, neg, _mm512_cvttps_epi32(vb->top), k);
}
#endif

/* The vector binning of a layer whose `bins` bins have these upper edges (see above); ok = 0 where it
 * cannot serve. The positive edges, edges[p + 1] on, are geometric: bin k >= p + 1 runs from edges[k],
 * so a = (its count of steps) / log2(their ratio) and the candidate of edges[k] is about k - 1/2. */
static void vector_bins(VectorBins *vb, const float *upper, int64_t bins, int abs_rule) {
    vb->ok = 0;
#ifdef __AVX512F__
    if (bins < 3 || bins > 64) return;
    int64_t p = 0; /* upper[p] = edges[p + 1], the first positive edge; bins below it are clamped to p */
    while (p < bins - 1 && !(upper[p] > 0.0f)) p++;
    if (p + 2 > bins - 1 || !(upper[bins - 2] > upper[p]) || !isfinite(upper[bins - 2])) return;
    const double a = (double)(bins - 2 - p) / (log2(upper[bins - 2]) - log2(upper[p]));
    float lanes[64];
    for (int64_t k = 0; k < 64; k++) lanes[k] = k < bins ? upper[k] : INFINITY;
    for (int i = 0; i < 4; i++) vb->upper[i] = _mm512_loadu_ps(lanes + 16 * i);
    vb->a = _mm512_set1_ps((float)a);
    vb->c = _mm512_set1_ps((float)((double)p + 0.5 - a * log2(upper[p])));
    vb->pmin = _mm512_set1_ps((float)p);
    vb->top = _mm512_set1_ps((float)(bins - 1));
    vb->mirror = abs_rule;
    if (abs_rule) /* edges[k] = -edges[bins - k] */
        for (int64_t k = 1; k < bins; k++)
            if (upper[k - 1] != -upper[bins - 1 - k]) return;
    for (int64_t k = p + 1; k < bins; k++)
        if (fabsf(_mm512_cvtss_f32(scaled_log(vb, _mm512_set1_ps(upper[k - 1]))) - ((float)k - 0.5f)) > 0.25f) return;
    vb->ok = 1;
#endif
}

/* Whether the vector binning serves a layer with these upper edges (for the tests and the benchmarks). */
int neuron_tui_vector_bins(const float *upper, int64_t bins, int abs_rule) {
    VectorBins vb;
    vector_bins(&vb, upper, bins, abs_rule);
    return vb.ok;
}

/* The bins of a row where many fire, for every neuron of the block. Vectorized (see above), the firings'
 * places in the block's histogram are packed, then counted; the table's loop adds 0 where none fired
 * (a branch per firing would be mispredicted half the time). Out of line: inlined into run_block, its
 * pointers and bound spill to the stack and it runs ~15% slower. */
static __attribute__((noinline)) void count_bins(const VectorBins *vb, const int32_t *restrict steps,
                                                 const void *restrict row, const uint8_t *restrict m,
                                                 int32_t *restrict counts, const int64_t n, const int bf16) {
    int64_t j = 0;
#ifdef __AVX512F__
    if (vb->ok) {
        uint32_t at[BLOCK]; /* the firings' places: `fired` <= j, so each store of 16 fits */
        int64_t fired = 0;
        const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
        for (; j + 16 <= n; j += 16) {
            const __m512 x = bf16 ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(
                                        _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + j))), 16))
                                  : _mm512_loadu_ps((const float *)row + j);
            const __mmask16 hit = _mm512_test_epi32_mask(
                _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(m + j))), _mm512_set1_epi32(1));
            const __m512i place = _mm512_add_epi32(_mm512_slli_epi32(bins16(vb, x), BLOCK_BITS),
                                                   _mm512_add_epi32(lane, _mm512_set1_epi32((int32_t)j)));
            _mm512_storeu_si512(at + fired, _mm512_maskz_compress_epi32(hit, place));
            fired += __builtin_popcount(hit);
        }
        for (int64_t i = 0; i < fired; i++) counts[at[i]]++;
    }
#endif
    for (; j < n; j++) counts[bin_of(steps, load(row, j, bf16)) * BLOCK + j] += m[j];
}

/* The firings of one row's block (the row is in cache, its firing flags in m): their histogram bins and
 * events now; the gated ones are queued in `queue` (returned: how many), their up prefetched. A row
 * where few fire is scanned by its flags 8 at a time (a word without firings costs one test); one where
 * many fire has its bins counted for the whole block by `count_bins`, its sign cases queued without a
 * branch, and its events, rare there once the levels have risen, looked for only if the row's level
 * reaches the lowest of the block, then 8 at a time among the flags of the firings at or above their
 * neuron's level (a branch per firing there, mispredicted half the time, cost a real OPT-125m pass more
 * than the events). */
static inline int64_t per_firing(Args *a, int64_t r, int64_t f0, int64_t n, const uint8_t *restrict m,
                                 const void *restrict row, int32_t fired, int32_t *restrict counts,
                                 int64_t lowest_level, Pending *restrict queue, const VectorBins *vb,
                                 const int bf16) {
    const int64_t base = r * a->F + f0, z = a->levels[r];
    const int64_t *level = a->level + f0;
    const int32_t *restrict steps = a->bin_steps;
    int64_t queued = 0;
    const int gated = a->up != NULL, binned = a->bins > 0;
    if (fired * 8 > n) {
        if (binned)
            count_bins(vb, steps, row, m, counts, n, bf16);
        if (gated) {
            prefetch_block(load_row(a->up, base, bf16), n * (bf16 ? 2 : 4), 0);
            for (int64_t j = 0; j < n; j++) { /* branch-free: each slot written, kept where j fired */
                queue[queued] = (Pending){r, j, load(row, j, bf16)};
                queued += m[j];
            }
        }
        if (z >= lowest_level) { /* the firings at or above their neuron's level, found 8 at a time */
            uint8_t due[BLOCK + 8];
            for (int64_t j = 0; j < n; j++) due[j] = m[j] & (z >= level[j]);
            memset(due + n, 0, 8);
            for (int64_t j0 = 0; j0 < n; j0 += 8) {
                uint64_t word;
                memcpy(&word, due + j0, 8);
                for (; word; word &= word - 1) add_event(a, f0 + j0 + (__builtin_ctzll(word) >> 3), r, z);
            }
        }
    } else {
        for (int64_t j0 = 0; j0 < n; j0 += 8) {
            uint64_t word;
            memcpy(&word, m + j0, 8);
            for (; word; word &= word - 1) {
                const int64_t j = j0 + (__builtin_ctzll(word) >> 3);
                const float x = load(row, j, bf16);
                if (binned) counts[bin_of(steps, x) * BLOCK + j] += 1;
                if (z >= level[j]) add_event(a, f0 + j, r, z);
                if (gated) {
                    __builtin_prefetch((const char *)load_row(a->up, base + j, bf16));
                    queue[queued++] = (Pending){r, j, x};
                }
            }
        }
    }
    return queued;
}

/* The sign cases of queued gated firings: the case's count, and its strongest |h| (the earliest row
 * among equals, whatever order the rows come in). */
static inline void sign_cases(Args *a, int64_t f0, const Pending *queue, int64_t queued, const int bf16) {
    const int64_t F = a->F;
    for (int64_t k = 0; k < queued; k++) {
        const Pending p = queue[k];
        const int up_neg = load(a->up, p.row * F + f0 + p.j, bf16) < 0.0f;
        const int gate_neg = (p.x > 0.0f) == up_neg;
        const int64_t at = (int64_t)(gate_neg * 2 + up_neg) * F + f0 + p.j;
        const float strength = fabsf(p.x);
        a->sign_count[at] += 1;
        if (strength > a->sign_val[at] || (strength == a->sign_val[at] && p.row < a->sign_row[at])) {
            a->sign_val[at] = strength;
            a->sign_row[at] = p.row;
        }
    }
}

/* One row's block: the firing test and every running statistic, in one loop the compiler vectorizes
 * (restrict: the outputs alias neither each other nor h). Returns the row's firings in the block. */
static inline int32_t row_stats(const void *restrict row, uint8_t *restrict m, int32_t *restrict pc,
                                int32_t *restrict cnt, int32_t *restrict cntp, float *restrict sp, float *restrict sf,
                                float *restrict hs, float *restrict smax, int64_t *restrict sarg, int64_t n,
                                float tau, int64_t t, const int bf16, const int abs_rule) {
    int32_t fired = 0;
    for (int64_t j = 0; j < n; j++) {
        const float x = load(row, j, bf16);
        const float v = abs_rule ? fabsf(x) : x;
        const int32_t fi = v > tau, po = x > tau;
        m[j] = (uint8_t)fi;
        pc[j] += fi;
        cnt[j] += fi;
        cntp[j] += po;
        fired += fi;
        sp[j] += po ? x : 0.0f;
        if (abs_rule) sf[j] += fi ? x : 0.0f;
        hs[j] += x;
        const int better = v > smax[j];
        smax[j] = better ? v : smax[j];
        sarg[j] = better ? t : sarg[j];
    }
    return fired;
}

/* float32 -> IEEE float16, rounded to nearest even, as torch's .to(torch.float16) (c10's
 * fp16_ieee_from_fp32_value): the scaling by 2^112 then 2^-110 rounds the mantissa in the FPU; any NaN
 * becomes 0x7E00, overflow goes to infinity, small values to subnormals or zero. */
static inline uint16_t to_half(float x) {
    uint32_t w, bits;
    memcpy(&w, &x, 4);
    const uint32_t twice = w + w, sign = w & 0x80000000u;
    uint32_t bias = twice & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    const uint32_t offset_bits = (bias >> 1) + 0x07800000u;
    float offset;
    memcpy(&offset, &offset_bits, 4);
    const float base = (fabsf(x) * 0x1.0p+112f) * 0x1.0p-110f + offset;
    memcpy(&bits, &base, 4);
    const uint32_t nonsign = ((bits >> 13) & 0x7C00u) + (bits & 0x0FFFu);
    return (uint16_t)((sign >> 16) | (twice > 0xFF000000u ? 0x7E00u : nonsign));
}

/* The block's running top-K of sequences (TopContexts._merge on the CPU), its result exactly: the first K
 * of the kept slots followed by the batch's sequences, in a stable descending sort (an equal value that
 * comes later, in that order, stays behind). Per neuron, the sequences that beat the K-th are sorted
 * (stably, a few at most once a run is warm), counted into the merge from the front, then written from
 * the back, each slot once: a kept one moves down with its window, an entering one gets its value, its
 * position and its window, the neuron's h at the W positions around it (float16, NaN past the
 * sequence's ends). An empty slot (-inf, position -1, NaN window: no entering value is -inf) is not moved
 * onto another. Sequences go in chunks of SEQ_CHUNK, merged in order, which gives the same slots. */
#define SEQ_CHUNK 64
static void merge_top(Args *a, int64_t f0, int64_t n, const int bf16) {
    const int64_t F = a->F, T = a->T, B = a->R / T, K = a->top_k, W = a->width;
    float *val = a->top_val;
    int64_t *pos = a->top_pos;
    uint16_t *ctx = a->ctx_val;
    const int64_t CS0 = a->ctx_step[0], CS1 = a->ctx_step[1], CS2 = a->ctx_step[2];
    float cv[SEQ_CHUNK];
    int64_t cb[SEQ_CHUNK];
    for (int64_t f = f0; f < f0 + n; f++)
        for (int64_t b0 = 0; b0 < B; b0 += SEQ_CHUNK) {
            const float last = val[(K - 1) * F + f];
            int64_t m = 0;
            for (int64_t b = b0; b < B && b < b0 + SEQ_CHUNK; b++) {
                const float v = a->seq_max[b * F + f];
                if (!(v > last)) continue;
                int64_t at = m++;
                for (; at > 0 && cv[at - 1] < v; at--) {
                    cv[at] = cv[at - 1];
                    cb[at] = cb[at - 1];
                }
                cv[at] = v;
                cb[at] = b;
            }
            if (!m) continue;
            int64_t kept = 0, entering = 0; /* how many of each the first K of the merge take */
            while (kept + entering < K && entering < m) {
                if (val[kept * F + f] >= cv[entering]) kept++;
                else entering++;
            }
            int64_t i = K - entering - 1, c = entering - 1;
            for (int64_t dest = K - 1; c >= 0; dest--) {
                if (i >= 0 && val[i * F + f] < cv[c]) { /* the kept slot i comes after candidate c */
                    if (val[i * F + f] == -INFINITY && val[dest * F + f] == -INFINITY) { /* empty onto empty */
                        i--;
                        continue;
                    }
                    val[dest * F + f] = val[i * F + f];
                    pos[dest * F + f] = pos[i * F + f];
                    for (int64_t w = 0; w < W; w++)
                        ctx[dest * CS0 + w * CS1 + f * CS2] = ctx[i * CS0 + w * CS1 + f * CS2];
                    i--;
                    continue;
                }
                const int64_t b = cb[c--], at = a->seq_arg[b * F + f];
                val[dest * F + f] = cv[c + 1];
                pos[dest * F + f] = a->positions[b * T + at];
                for (int64_t w = 0; w < W; w++) {
                    const int64_t t = at + w - a->left;
                    ctx[dest * CS0 + w * CS1 + f * CS2] =
                        0 <= t && t < T ? to_half(load(a->h, (b * T + t) * F + f, bf16)) : 0x7E00u;
                }
            }
        }
}

static inline void run_block(Args *a, const VectorBins *vb, int64_t f0, int64_t n, const int bf16,
                             const int abs_rule) {
    int32_t cnt[BLOCK], cntp[BLOCK];
    float sp[BLOCK], sf[BLOCK], hs[BLOCK]; /* over the sequences, for one position */
    double sp_all[BLOCK], sf_all[BLOCK], hs_all[BLOCK];
    uint8_t m[BLOCK + 8];
    Pending queues[2][BLOCK];
    /* the block's histogram, bin-major: the rows of `hist` lie a multiple of 4 KiB apart for many F,
     * so a bin per row there would thrash a few L1 sets */
    int32_t counts[MAX_BINS * BLOCK];
    int64_t queued[2] = {0, 0}, now = 0;
    const int64_t F = a->F, T = a->T, B = a->R / T, size = bf16 ? 2 : 4;
    const float tau = a->tau;
    memset(m, 0, sizeof m);
    memset(counts, 0, sizeof(int32_t) * a->bins * BLOCK);
    int64_t lowest = INT64_MAX; /* the lowest level of the block's neurons (levels only rise) */
    for (int64_t j = 0; j < n; j++) lowest = a->level[f0 + j] < lowest ? a->level[f0 + j] : lowest;
    for (int64_t j = 0; j < n; j++) {
        cnt[j] = cntp[j] = 0;
        sp_all[j] = sf_all[j] = hs_all[j] = 0.0;
    }
    for (int64_t t = 0; t < T; t++) {
        int32_t *pc = a->pos_count + t * F + f0;
        if (t + 1 < T) prefetch_block(pc + F, 4 * n, 1);
        for (int64_t j = 0; j < n; j++) sp[j] = sf[j] = hs[j] = 0.0f;
        for (int64_t b = 0; b < B; b++) {
            const int64_t r = b * T + t, base = r * F + f0;
            const int64_t next = b + 1 < B ? r + T : r + 1 - (B - 1) * T; /* the row after this one */
            if (next < a->R) prefetch_block(load_row(a->h, next * F + f0, bf16), size * n, 0);
            const void *row = load_row(a->h, base, bf16);
            int32_t fired = row_stats(row, m, pc, cnt, cntp, sp, sf, hs, a->seq_max + b * F + f0,
                                      a->seq_arg + b * F + f0, n, tau, t, bf16, abs_rule);
            int64_t ahead = 0;
            if (fired) ahead = per_firing(a, r, f0, n, m, row, fired, counts, lowest, queues[1 - now], vb, bf16);
            sign_cases(a, f0, queues[now], queued[now], bf16); /* the row before's: its up has arrived */
            queued[now] = 0;
            now = 1 - now;
            queued[now] = ahead;
        }
        for (int64_t j = 0; j < n; j++) {
            sp_all[j] += sp[j];
            sf_all[j] += sf[j];
            hs_all[j] += hs[j];
        }
    }
    sign_cases(a, f0, queues[now], queued[now], bf16);
    if (a->top_val && a->top_k > 0) merge_top(a, f0, n, bf16);
    for (int64_t bin = 0; bin < a->bins; bin++)
        for (int64_t j = 0; j < n; j++) a->hist[bin * F + f0 + j] += counts[bin * BLOCK + j];
    for (int64_t j = 0; j < n; j++) {
        a->act_count[f0 + j] += cnt[j];
        a->count_pos[f0 + j] += cntp[j];
        a->sum_pos[f0 + j] += sp_all[j];
        a->sum_fired[f0 + j] += abs_rule ? sf_all[j] : sp_all[j];
        a->h_sum[f0 + j] += hs_all[j];
    }
}

/* the four specialisations, so the inner loops are compiled without a branch on the dtype or rule */
static void run_f32_relu(Args *a, const VectorBins *vb, int64_t f0, int64_t n) { run_block(a, vb, f0, n, 0, 0); }
static void run_f32_abs(Args *a, const VectorBins *vb, int64_t f0, int64_t n) { run_block(a, vb, f0, n, 0, 1); }
static void run_bf16_relu(Args *a, const VectorBins *vb, int64_t f0, int64_t n) { run_block(a, vb, f0, n, 1, 0); }
static void run_bf16_abs(Args *a, const VectorBins *vb, int64_t f0, int64_t n) { run_block(a, vb, f0, n, 1, 1); }

static void run_range(Args *a, const VectorBins *vb) {
    void (*run)(Args *, const VectorBins *, int64_t, int64_t) =
        a->bf16 ? (a->abs_rule ? run_bf16_abs : run_bf16_relu) : (a->abs_rule ? run_f32_abs : run_f32_relu);
    for (int64_t f0 = a->lo; f0 < a->hi; f0 += BLOCK) run(a, vb, f0, a->hi - f0 < BLOCK ? a->hi - f0 : BLOCK);
}

/* The entry point: `a`'s outputs that are written (not added to) are filled here first; the neurons go
 * to up to `threads` threads. They are OpenMP's: built with -fopenmp in a process that has torch's
 * OpenMP runtime loaded (it is libgomp.so.1 in torch's wheels), they are torch's own intra-op workers,
 * already awake after the forward pass (threads of our own would compete with them for the cores while
 * they spin); built without OpenMP, the calling thread does it all. */
void neuron_tui_update(const Args *a, int threads) {
    const int64_t F = a->F, B = a->R / a->T;
    for (int64_t i = 0; i < B * F; i++) {
        a->seq_max[i] = -INFINITY;
        a->seq_arg[i] = 0;
    }
    if (a->sign_val)
        for (int64_t i = 0; i < N_CASES * F; i++) {
            a->sign_val[i] = -INFINITY;
            a->sign_row[i] = -1;
        }
    int64_t lines = (F + LINE - 1) / LINE;
    if (threads > lines) threads = (int)lines;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads < 1) threads = 1;
    Args parts[MAX_THREADS];
    VectorBins vb;
    vector_bins(&vb, a->bin_upper, a->bins, a->abs_rule);
    for (int k = 0; k < threads; k++) {
        parts[k] = *a;
        parts[k].lo = lines * k / threads * LINE;
        int64_t hi = lines * (k + 1) / threads * LINE;
        parts[k].hi = hi < F ? hi : F;
    }
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static, 1)
#endif
    for (int k = 0; k < threads; k++) run_range(&parts[k], &vb);
}
