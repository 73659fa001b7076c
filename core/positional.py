"""Positional neurons: mutual information between firing and position, and the shape of the profile.

Everything is computed exactly from `pos_count[t, i]` (firings of neuron i at position t) and
`tokens_at_pos[t]` (tokens seen at position t), vectorised over neurons in chunks so that a layer of
36,864 neurons with T = 2048 never needs more than a few tens of MB of float64 at once.

Mutual information (paper, section 5 "Positional neurons"; DESIGN section 7). With fr = overall
firing rate and fr(t) = firing rate at position t, natural log,

    I(act; pos) = sum_t p(t) [ fr(t) log(fr(t)/fr) + (1-fr(t)) log((1-fr(t))/(1-fr)) ],

p(t) = tokens_at_pos[t] / N, which is the paper's (1/T) sum_t when every position has as many tokens
(packed full-length sequences). Terms with fr(t) = 0 or 1 are kept with 0 log 0 = 0: a position where
a neuron never fires carries the most information, and skipping it (as one public implementation
does) underestimates exactly the range-indicator neurons the paper is about.
"""

from __future__ import annotations

import numpy as np

from neuron_tui.cache import schema

CHUNK = 4096  # neurons per vectorised block: T x CHUNK float64 is 64 MB at T = 2048

SHAPE_CODE = {name: code for code, name in enumerate(schema.POS_SHAPES)}


def _xlogx_ratio(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """p * log(p / q) with 0 log 0 = 0 (p, q broadcastable; q > 0 wherever p > 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = p * np.log(p / q)
    return np.where(p > 0, out, 0.0)


def firing_rates(pos_count: np.ndarray, tokens_at_pos: np.ndarray) -> np.ndarray:
    """[T, F] float64 fr(t) = pos_count / tokens_at_pos; NaN at positions without tokens."""
    n = np.asarray(tokens_at_pos, dtype=np.float64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, np.asarray(pos_count, dtype=np.float64) / n, np.nan)


def mutual_information(pos_count: np.ndarray, tokens_at_pos: np.ndarray) -> np.ndarray:
    """[F] float64: I(fired; position) in nats, exact, from pos_count [T, F] and tokens_at_pos [T].

    Positions without tokens (p(t) = 0) contribute nothing. A neuron that never fires, or fires on
    every token, has I = 0.
    """
    pos_count = np.asarray(pos_count)
    n_t = np.asarray(tokens_at_pos, dtype=np.float64)
    used = n_t > 0
    n_t = n_t[used]
    N = n_t.sum()
    F = pos_count.shape[1]
    out = np.zeros(F, dtype=np.float64)
    if N == 0:
        return out
    p_t = (n_t / N)[:, None]
    for lo in range(0, F, CHUNK):
        c = np.asarray(pos_count[used, lo : lo + CHUNK], dtype=np.float64)
        fr = c.sum(0) / N  # [f]
        fr_t = c / n_t[:, None]
        on = _xlogx_ratio(fr_t, fr[None, :])
        off = _xlogx_ratio(1.0 - fr_t, 1.0 - fr[None, :])
        out[lo : lo + CHUNK] = (p_t * (on + off)).sum(0)
    return np.maximum(out, 0.0)  # float rounding can give -1e-17 for position-independent neurons


def mi_bias(n_positions: int, n_tokens: int) -> float:
    """Expected I of a position-independent neuron from finite data (Miller-Madow, nats).

    The plug-in estimate of I(fired; pos) over n_positions positions and N tokens is biased upwards
    by about (n_positions - 1) / (2 N): with T = 2048 and few sequences per position this approaches
    the 0.05 threshold, which is why the paper's positional analysis needs many sequences.
    """
    return (max(n_positions, 1) - 1) / (2.0 * max(n_tokens, 1))


def _smooth(rate: np.ndarray, window: int) -> np.ndarray:
    """Centered moving average along positions (axis 0), shrinking at the edges; window 1 = none."""
    if window <= 1:
        return rate
    T = rate.shape[0]
    half = window // 2
    cs = np.concatenate([np.zeros((1,) + rate.shape[1:]), np.cumsum(rate, axis=0)])
    lo = np.clip(np.arange(T) - half, 0, T)
    hi = np.clip(np.arange(T) + half + 1, 0, T)
    return (cs[hi] - cs[lo]) / (hi - lo)[:, None]


def classify_shapes(
    pos_count: np.ndarray,
    tokens_at_pos: np.ndarray,
    positional: np.ndarray,
    *,
    smooth: int | None = None,
    range_share: float = 0.9,
    max_gap_cv: float = 0.25,
) -> np.ndarray:
    """[F] uint8 codes into schema.POS_SHAPES for the profile fr(t), "none" where not `positional`.

    The profile (positions with tokens only) is smoothed over `smooth` positions (default T // 128,
    at least 1) and cut at the midpoint between its minimum and maximum; the "on" positions form runs.
    - range: one run holding at least `range_share` of the firings (fires only in an interval;
      an interval at the start or the end is the paper's "one extreme" indicator);
    - both-extremes: two runs, one touching the first and one the last position, holding at least
      `range_share` of the firings;
    - periodic: at least three runs whose starts are evenly spaced (coefficient of variation of the
      gaps between run starts inside the profile at most `max_gap_cv`; at least two such gaps):
      the paper's oscillatory neurons of OPT-125m layer 2;
    - other: positional, but none of those.
    """
    pos_count = np.asarray(pos_count)
    n_t = np.asarray(tokens_at_pos, dtype=np.float64)
    used = n_t > 0
    positional = np.asarray(positional, dtype=bool)
    F = pos_count.shape[1]
    codes = np.full(F, SHAPE_CODE["none"], dtype=np.uint8)
    T = int(used.sum())
    if T == 0 or not positional.any():
        return codes
    window = max(1, T // 128) if smooth is None else max(1, int(smooth))
    cols = np.flatnonzero(positional)
    for lo in range(0, cols.size, CHUNK):
        idx = cols[lo : lo + CHUNK]
        c = np.asarray(pos_count[used][:, idx], dtype=np.float64)
        rate = _smooth(c / n_t[used][:, None], window)
        mid = (rate.min(0) + rate.max(0)) / 2.0
        on = rate > mid[None, :]
        rising = on[1:] & ~on[:-1]  # run starts inside the profile, at t >= 1
        n_runs = on[0].astype(np.int64) + rising.sum(0)
        total = c.sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            share_in = np.where(total > 0, (c * on).sum(0) / total, 0.0)
        concentrated = share_in >= range_share
        is_range = (n_runs == 1) & concentrated
        is_ends = (n_runs == 2) & on[0] & on[-1] & concentrated
        # regularity of run starts: gaps between consecutive rising edges, per neuron
        f_of, t_of = np.nonzero(rising.T)  # ordered by neuron, then position
        same = f_of[1:] == f_of[:-1]
        gap_f, gap = f_of[1:][same], np.diff(t_of)[same].astype(np.float64)
        n_gaps = np.bincount(gap_f, minlength=idx.size)
        s1 = np.bincount(gap_f, weights=gap, minlength=idx.size)
        s2 = np.bincount(gap_f, weights=gap * gap, minlength=idx.size)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = s1 / n_gaps
            cv = np.sqrt(np.maximum(s2 / n_gaps - mean * mean, 0.0)) / mean
        is_periodic = (n_runs >= 3) & (n_gaps >= 2) & (cv <= max_gap_cv)
        code = np.full(idx.size, SHAPE_CODE["other"], dtype=np.uint8)
        code[is_periodic] = SHAPE_CODE["periodic"]
        code[is_ends] = SHAPE_CODE["both-extremes"]
        code[is_range] = SHAPE_CODE["range"]
        codes[idx] = code
    return codes
