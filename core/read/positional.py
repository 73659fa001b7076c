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


@dataclass(frozen=True)
class ShapeRule:
    """How a positional neuron's firing-rate profile is typed (the `shape_*` analysis parameters)."""

    smooth: int | None = None  # moving-average window over positions (None: T // 128, at least 1)
    extreme_tol: float = 0.05  # the rate *reaches* 0 (1) where it is at most tol (at least 1 - tol)
    strong_tol: float = 0.01  # ... and *equals* it, for a strong pattern, within this
    min_periods: int = 3  # oscillatory: at least this many evenly spaced rises
    max_gap_cv: float = 0.25  # ... whose spacing varies by at most this coefficient of variation
    thin_roughness: float = 0.1  # "other" is strong (a thin graph) when neighbours predict it this well


def classify(pos_count: np.ndarray, tokens_at_pos: np.ndarray, positional: np.ndarray,
             rule: ShapeRule = ShapeRule()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The paper's positional types (section 5) of the neurons marked `positional`:
    (codes [F] uint8 into schema.POS_SHAPES, strong [F] uint8, range [F, 2] int32).

    The profile fr(t) (positions with tokens only, smoothed over `rule.smooth` positions) is read as
    the paper describes its four types (docs/design.md, "Positional types"):
    - oscillatory: fr rises above the midpoint of its range at least `min_periods` times, at evenly
      spaced positions (coefficient of variation of the spacing at most `max_gap_cv`); strong when
      it also reaches both 0 and 1 exactly, i.e. it is an indicator function of position ranges (the
      ten neurons of OPT-125m's second layer);
    - both-extremes: not oscillatory; fr reaches both 0 and 1 (within `extreme_tol`) somewhere,
      mostly "fires before (or after) position p"; strong when both are reached within `strong_tol`;
    - one-extreme: fr reaches only one of 0 and 1 (e.g. fires at rate 0.8 on the first five
      positions and never after); strong when that extreme is reached within `strong_tol`;
    - other: depends on position but reaches neither; strong when the graph is "thin": the rate at
      a position is predicted by its neighbours to within `thin_roughness` of the profile's range.
    `range` is the longest run of positions where fr is above its midpoint (indices into the positions
    given), the finer "fires on t = a..b" label; -1 where not positional.
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
    cols = np.flatnonzero(positional)
    for lo in range(0, cols.size, CHUNK):
        idx = cols[lo : lo + CHUNK]
        raw = np.asarray(pos_count[used][:, idx], dtype=np.float64) / n_t[used][:, None]
        rate = _smooth(raw, window)
        low, high = rate.min(0), rate.max(0)
        reach0, reach1 = low <= rule.extreme_tol, high >= 1.0 - rule.extreme_tol
        exact0, exact1 = low <= rule.strong_tol, high >= 1.0 - rule.strong_tol
        on = rate > ((low + high) / 2.0)[None, :]
        oscillatory = _evenly_spaced_rises(on, rule.min_periods, rule.max_gap_cv)
        code = np.full(idx.size, SHAPE_CODE["other"], dtype=np.uint8)
        code[reach0 ^ reach1] = SHAPE_CODE["one-extreme"]
        code[reach0 & reach1] = SHAPE_CODE["both-extremes"]
        code[oscillatory] = SHAPE_CODE["oscillatory"]
        span = np.maximum(high - low, 1e-12)
        rough = np.abs(raw[1:-1] - (raw[:-2] + raw[2:]) / 2).mean(0) / span if T >= 3 else np.zeros(idx.size)
        is_strong = np.where(reach0 & reach1, exact0 & exact1, (reach0 & exact0) | (reach1 & exact1))
        is_strong = np.where(oscillatory, exact0 & exact1, is_strong)
        is_strong = np.where(code == SHAPE_CODE["other"], rough <= rule.thin_roughness, is_strong)
        codes[idx], strong[idx] = code, is_strong.astype(np.uint8)
        first, last = _longest_run(on)
        ranges[idx, 0], ranges[idx, 1] = where[first], where[last]
    return codes, strong, ranges


def _evenly_spaced_rises(on: np.ndarray, min_periods: int, max_gap_cv: float) -> np.ndarray:
    """[f] bool: the "on" mask [T, f] switches on at least `min_periods` times (a run at t = 0 counts)
    and the rises inside the profile are evenly spaced (at least two gaps, their CV <= max_gap_cv)."""
    rising = on[1:] & ~on[:-1]  # run starts inside the profile, at t >= 1
    n_runs = on[0].astype(np.int64) + rising.sum(0)
    f_of, t_of = np.nonzero(rising.T)  # ordered by neuron, then position
    same = f_of[1:] == f_of[:-1]
    gap_f, gap = f_of[1:][same], np.diff(t_of)[same].astype(np.float64)
    f = on.shape[1]
    n_gaps = np.bincount(gap_f, minlength=f)
    s1 = np.bincount(gap_f, weights=gap, minlength=f)
    s2 = np.bincount(gap_f, weights=gap * gap, minlength=f)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s1 / n_gaps
        cv = np.sqrt(np.maximum(s2 / n_gaps - mean * mean, 0.0)) / mean
    return (n_runs >= min_periods) & (n_gaps >= 2) & (cv <= max_gap_cv)


def _longest_run(on: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([f] first, [f] last) index of the longest run of True in each column of `on` [T, f] (the
    earliest of equally long ones; 0, 0 for a column with none)."""
    T, f = on.shape
    padded = np.zeros((T + 2, f), dtype=np.int8)
    padded[1:-1] = on
    edges = np.diff(padded, axis=0)  # +1 where a run starts, -1 one past where it ends
    sf, st = np.nonzero(edges.T == 1)
    ef, et = np.nonzero(edges.T == -1)
    first, last = np.zeros(f, dtype=np.int64), np.zeros(f, dtype=np.int64)
    if sf.size:
        length = et - st
        order = np.lexsort((st, -length, sf))  # per neuron: longest first, then earliest
        pick = order[np.concatenate([[True], sf[order][1:] != sf[order][:-1]])]
        first[sf[pick]], last[sf[pick]] = st[pick], et[pick] - 1
    return first, last
