"""Positional neurons: mutual information between firing and position, and the paper's type of the profile.

Everything is computed exactly from `pos_count[t, i]` (firings of neuron i at position t) and
`tokens_at_pos[t]` (tokens seen at position t), vectorised over neurons in chunks so that a layer of
36,864 neurons with T = 2048 never needs more than a few tens of MB of float64 at once.

Mutual information (paper, section 5 "Positional neurons"; docs/design.md). With fr = overall
firing rate and fr(t) = firing rate at position t, natural log,

    I(act; pos) = sum_t p(t) [ fr(t) log(fr(t)/fr) + (1-fr(t)) log((1-fr(t))/(1-fr)) ],

p(t) = tokens_at_pos[t] / N, which is the paper's (1/T) sum_t when every position has as many tokens
(packed full-length sequences). Terms with fr(t) = 0 or 1 are kept with 0 log 0 = 0: a position where
a neuron never fires carries the most information, and skipping it (as one public implementation
does) underestimates exactly the range-indicator neurons the paper is about.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from neuron_tui.cache import schema

CHUNK = 4096  # neurons per vectorised block: T x CHUNK float64 is 64 MB at T = 2048

SHAPE_CODE = {name: code for code, name in enumerate(schema.POS_SHAPES)}
# what each type means along the position axis (docs/design.md, "Positional types"): `?`, README
TYPE_MEANINGS = {
    "oscillatory": "fires in several separate ranges of positions, repeatedly on and off (OPT-125m layer 2)",
    "both-extremes": "fires at the start and at the end of the sequence, not in between",
    "one-extreme": "fires at the start only, or at the end only (a ramp or a step)",
    "other": "depends on position otherwise: one range in the middle, or no rise or fall beyond the noise",
}


def _xlogx_ratio(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """p * log(p / q) with 0 log 0 = 0 (p, q broadcastable; q > 0 wherever p > 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = p * np.log(p / q)
    return np.where(p > 0, out, 0.0)


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


def _moving_sum(x: np.ndarray, window: int) -> np.ndarray:
    """Centered moving sum along positions (axis 0), over fewer positions at the edges; window 1 = x."""
    if window <= 1:
        return np.asarray(x, dtype=np.float64)
    T = x.shape[0]
    half = window // 2
    cs = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, axis=0, dtype=np.float64)])
    lo = np.clip(np.arange(T) - half, 0, T)
    hi = np.clip(np.arange(T) + half + 1, 0, T)
    return cs[hi] - cs[lo]


@dataclass(frozen=True)
class ShapeRule:
    """How a positional neuron's firing-rate profile is typed (the `shape_*` analysis parameters)."""

    smooth: int | None = None  # window of the moving sums over positions (None: T // 128, at least 1)
    band: float = 0.25  # a rise ends above mid + band x range, a fall below mid - band x range ...
    noise_alpha: float = 0.01  # ... and so far from mid that noise alone crosses one with at most this chance
    strong_tol: float = 0.01  # strong: the rate reaches 0 (or 1) within this


def classify(pos_count: np.ndarray, tokens_at_pos: np.ndarray, positional: np.ndarray,
             rule: ShapeRule = ShapeRule()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The paper's positional types (section 5) of the neurons marked `positional`, read along the
    position axis: (codes [F] uint8 into schema.POS_SHAPES, strong [F] uint8, range [F, 2] int32).

    The profile is the firing rate by position r(t) = (firings / tokens) summed over a window of
    `rule.smooth` positions (positions with tokens only). It is *on* from where it rises above
    mid + d(t) until it falls below mid - d(t), and *off* from there until the next rise, where mid is
    the middle of the profile's range and d(t) = max(band x range, z x SE(t)), SE(t) the binomial
    standard error of the rate at t from the tokens seen there and z the normal quantile that noise
    exceeds at one of the profile's positions with chance at most `noise_alpha` (`noise_z`). So a
    monotone profile, however noisy, reads as one rise or one fall; the state before the first
    crossing is the one that crossing leaves. Along the position axis (docs/design.md,
    "Positional types"):
    - oscillatory: at least two ranges on and two off, repeatedly on and off (two rises and two falls,
      a range at either end of the profile rising or falling there);
    - both-extremes: on at the start and at the end, off in between;
    - one-extreme: on at the start only, or at the end only (a ramp or a step);
    - other: depends on position otherwise (one range in the middle, or no rise or fall beyond the
      noise band).
    A pattern is strong when its rate reaches 0 or 1 (within `strong_tol`), weak otherwise. `range` is
    the longest run of positions on (indices into the positions given), the finer "fires most on
    t = a..b" label; -1 where not positional or never on.
    """
    pos_count = np.asarray(pos_count)
    n_t = np.asarray(tokens_at_pos, dtype=np.float64)
    used = n_t > 0
    positional = np.asarray(positional, dtype=bool)
    F = pos_count.shape[1]
    codes = np.full(F, SHAPE_CODE["none"], dtype=np.uint8)
    strong = np.zeros(F, dtype=np.uint8)
    ranges = np.full((F, 2), -1, dtype=np.int32)
    T = int(used.sum())
    if T == 0 or not positional.any():
        return codes, strong, ranges
    window = max(1, T // 128) if rule.smooth is None else max(1, int(rule.smooth))
    where = np.flatnonzero(used)
    n_sum = _moving_sum(n_t[used][:, None], window)  # [T, 1] tokens behind each smoothed rate
    cols = np.flatnonzero(positional)
    for lo in range(0, cols.size, CHUNK):
        idx = cols[lo : lo + CHUNK]
        c_sum = _moving_sum(np.asarray(pos_count[used][:, idx], dtype=np.float64), window)
        rate = c_sum / n_sum
        p = (c_sum + 0.5) / (n_sum + 1.0)  # never 0 or 1: a rate seen as 0 still has a standard error
        se = np.sqrt(p * (1.0 - p) / n_sum)
        low, high = rate.min(0), rate.max(0)
        mid = (low + high) / 2.0
        half = np.maximum(rule.band * (high - low), noise_z(T, rule.noise_alpha) * se)
        runs = _runs(rate > mid + half, rate < mid - half, rate > mid)
        code = np.full(idx.size, SHAPE_CODE["other"], dtype=np.uint8)
        code[(runs.n_on == 1) & (runs.n_off == 1)] = SHAPE_CODE["one-extreme"]
        code[(runs.n_on == 2) & (runs.n_off == 1)] = SHAPE_CODE["both-extremes"]
        code[(runs.n_on >= 2) & (runs.n_off >= 2)] = SHAPE_CODE["oscillatory"]
        codes[idx] = code
        strong[idx] = ((low <= rule.strong_tol) | (high >= 1.0 - rule.strong_tol)).astype(np.uint8)
        on = runs.best_first >= 0
        ranges[idx[on], 0], ranges[idx[on], 1] = where[runs.best_first[on]], where[runs.best_last[on]]
    return codes, strong, ranges


def noise_z(n_positions: int, alpha: float) -> float:
    """The z with P(|N(0, 1)| > z) <= alpha / n_positions: a level z standard errors from a profile's
    middle is crossed by sampling noise alone, at any of its positions, with chance at most alpha."""
    return NormalDist().inv_cdf(1.0 - alpha / (2.0 * max(n_positions, 1)))


@dataclass
class Runs:
    """The on and off runs of profiles read with hysteresis: per neuron, how many of each, and the
    first and last position of the longest on run (-1: never on)."""

    n_on: np.ndarray
    n_off: np.ndarray
    best_first: np.ndarray
    best_last: np.ndarray


def _runs(above: np.ndarray, below: np.ndarray, over_mid: np.ndarray) -> Runs:
    """Runs of each column of [T, f] profiles: a column switches on where `above`, off where `below`,
    and keeps its state in between; before its first switch it is in the state that switch leaves.
    An on run's extent is where the profile is over its middle (`over_mid`) around it: from just after
    it was last at or under the middle before rising, to where it was last over it before falling."""
    T, f = above.shape
    state = np.full(f, -1, dtype=np.int8)  # -1 undecided, 0 off, 1 on
    start = np.zeros(f, dtype=np.int64)  # where the current on run began
    last_under, last_over = np.full(f, -1, np.int64), np.full(f, -1, np.int64)
    n_on, n_off = np.zeros(f, np.int64), np.zeros(f, np.int64)
    best_first, best_last = np.full(f, -1, np.int64), np.full(f, -1, np.int64)

    def close(ending: np.ndarray, last: np.ndarray) -> None:  # on runs ending at `last`: keep the longest
        longer = ending & (state == 1) & (last - start + 1 > np.where(best_first >= 0, best_last - best_first + 1, 0))
        best_first[longer], best_last[longer] = start[longer], last[longer]

    for t in range(T):
        new = np.where(above[t], 1, np.where(below[t], 0, state)).astype(np.int8)
        first = (state < 0) & (new >= 0)  # decided now: the run began at the profile's start
        switch = (state >= 0) & (new != state)
        close(switch, last_over)
        rise = switch & (new == 1)
        start[rise] = last_under[rise] + 1
        n_on += (first | switch) & (new == 1)
        n_off += (first | switch) & (new == 0)
        state = new
        last_over[over_mid[t]] = t
        last_under[~over_mid[t]] = t
    close(state >= 0, np.full(f, T - 1, np.int64))
    return Runs(n_on, n_off, best_first, best_last)
