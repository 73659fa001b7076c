"""Mutual information between firing and position, against values computed by hand, and the paper's
positional types on planted profiles of each."""

from __future__ import annotations

import math

import numpy as np
import pytest

from neuron_tui.cache import schema
from neuron_tui.core.read import positional
from neuron_tui.core.read.positional import (
    ShapeRule,
    classify,
    mi_bias,
    mutual_information,
)

SHAPE = {name: code for code, name in enumerate(schema.POS_SHAPES)}


def test_two_positions_by_hand():
    """T = 2, 4 tokens at each position (N = 8).

    Neuron A fires 0 times at position 0 and 2 times at position 1: fr(0) = 0, fr(1) = 1/2, fr = 1/4.
      I = 1/2 [0 log(0/(1/4)) + 1 log(1/(3/4))] + 1/2 [1/2 log((1/2)/(1/4)) + 1/2 log((1/2)/(3/4))]
        = 1/2 log(4/3) + 1/4 log 2 + 1/4 log(2/3)
        = 0.143841 + 0.173287 - 0.101366 = 0.215762 nats.
      Skipping the fr(t) = 0 position (the public implementation's bug) would give 0.071921.
    Neuron B fires on everything, C never: I = 0. D fires exactly at position 0: I = log 2.
    """
    tap = np.array([4, 4])
    pos_count = np.array([[0, 4, 0, 4], [2, 4, 0, 0]])
    mi = mutual_information(pos_count, tap)
    hand_a = 0.5 * math.log(4 / 3) + 0.25 * math.log(2) + 0.25 * math.log(2 / 3)
    assert hand_a == pytest.approx(0.2157615543, abs=1e-9)
    assert mi[0] == pytest.approx(hand_a, abs=1e-12)
    assert abs(mi[0] - 0.0719205181) > 0.1  # not the skip-zero-positions value
    assert mi[1] == 0.0 and mi[2] == 0.0
    assert mi[3] == pytest.approx(math.log(2), abs=1e-12)


def test_unequal_tokens_per_position_weights_positions_by_their_tokens():
    """6 tokens at position 0, 2 at position 1; fires on both tokens of position 1 only.

    p = (3/4, 1/4), fr = 2/8 = 1/4, fr(0) = 0, fr(1) = 1: I = H(1/4) = -(1/4 log 1/4 + 3/4 log 3/4)
    = 0.562335 (the whole entropy: position determines firing). The 1/T form would give 0.836988.
    """
    mi = mutual_information(np.array([[0], [2]]), np.array([6, 2]))
    assert mi[0] == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), abs=1e-12)
    assert mi[0] == pytest.approx(0.5623351446, abs=1e-9)


def test_positions_without_tokens_are_ignored():
    with_empty = mutual_information(np.array([[0, 4], [0, 0], [2, 4]]), np.array([4, 0, 4]))
    without = mutual_information(np.array([[0, 4], [2, 4]]), np.array([4, 4]))
    np.testing.assert_allclose(with_empty, without, atol=1e-15)


def slow_mi(pos_count, tap):
    """Plain Python, the formula of docs/design.md (positional neurons) with p(t) weights and 0 log 0 = 0."""
    T, F = pos_count.shape
    N = sum(tap)
    out = []
    for i in range(F):
        fr = sum(pos_count[t][i] for t in range(T)) / N
        total = 0.0
        for t in range(T):
            if tap[t] == 0:
                continue
            f = pos_count[t][i] / tap[t]
            term = 0.0
            if f > 0:
                term += f * math.log(f / fr)
            if f < 1:
                term += (1 - f) * math.log((1 - f) / (1 - fr))
            total += tap[t] / N * term
        out.append(total)
    return np.array(out)


def test_matches_slow_path_across_chunks(monkeypatch):
    monkeypatch.setattr(positional, "CHUNK", 7)  # several vectorised blocks
    rng = np.random.default_rng(0)
    T, F = 13, 30
    tap = rng.integers(0, 9, T)
    tap[3] = 0
    pos_count = (rng.random((T, F)) * (tap[:, None] + 1)).astype(np.int64)
    pos_count = np.minimum(pos_count, tap[:, None])
    pos_count[:, 0] = tap  # always fires
    pos_count[:, 1] = 0  # never fires
    np.testing.assert_allclose(mutual_information(pos_count, tap), slow_mi(pos_count, tap), atol=1e-12)


def test_mi_bias_is_miller_madow():
    assert mi_bias(2048, 2048 * 10) == pytest.approx(2047 / (2 * 20480))


def profile_counts(rates: list[np.ndarray], n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    rate = np.stack(rates, axis=1)
    return np.round(rate * n).astype(np.int64), np.full(rate.shape[0], n)


def test_the_papers_types_along_the_position_axis_strong_and_weak():
    """One planted profile of every type of the paper's section 5, named by where on the position axis
    the neuron fires (docs/design.md, "Positional types"), strong (the rate reaches 0 or 1) or weak."""
    T = 64
    t = np.arange(T)
    profiles = {  # name: (rate by position, expected type, strong, longest range on)
        "oscillatory strong": (np.where(t % 16 < 8, 1.0, 0.0), "oscillatory", True, [0, 7]),  # tiles the positions
        "oscillatory weak": (np.where(t % 16 < 8, 0.8, 0.1), "oscillatory", False, [0, 7]),
        "two periods from on": (np.where(t % 32 < 16, 0.9, 0.0), "oscillatory", True, [0, 15]),  # on off on off
        "both ends strong": (np.where((t < 10) | (t >= 55), 1.0, 0.0), "both-extremes", True, [0, 9]),
        "both ends weak": (np.where((t < 20) | (t >= 44), 0.9, 0.05), "both-extremes", False, [0, 19]),
        "start step": (np.where(t < 20, 1.0, 0.0), "one-extreme", True, [0, 19]),  # fires before t = 20
        "start, weak": (np.where(t < 5, 0.85, 0.02), "one-extreme", False, [0, 4]),  # SmolLM2 L2 N1292's shape
        "end ramp": (0.1 + 0.8 * t / (T - 1), "one-extreme", False, [32, 63]),  # on from where it passes the middle
        "end, half before": (np.where(t > 50, 1.0, 0.5), "one-extreme", True, [51, 63]),
        "middle range": (np.where((t >= 10) & (t <= 20), 1.0, 0.0), "other", True, [10, 20]),  # a range indicator
        "within the noise": (0.30 + 0.06 * t / (T - 1), "other", False, [-1, -1]),  # no rise beyond 3 SE
        "not positional": (np.full(T, 0.3), "none", False, [-1, -1]),
    }
    pos_count, tap = profile_counts([p for p, _, _, _ in profiles.values()])
    mask = np.array([name != "not positional" for name in profiles])
    codes, strong, ranges = classify(pos_count, tap, mask, ShapeRule(smooth=1))
    got = {name: (schema.POS_SHAPES[c], bool(s), r) for name, c, s, r in zip(profiles, codes, strong, ranges.tolist())}
    assert got == {name: (kind, is_strong, r) for name, (_, kind, is_strong, r) in profiles.items()}


def noisy(rate: np.ndarray, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Binomial firing counts of profiles `rate` [T, F] over n sequences per position."""
    return rng.binomial(n, np.clip(rate, 0.0, 1.0)), np.full(rate.shape[0], n)


def monotone_profiles(T: int, rng) -> np.ndarray:
    """[T, 3 x 150] rising ramps, steps and sigmoids of every slope, position and range, and their mirror
    images (falling)."""
    t = np.arange(T)[:, None] / (T - 1)
    k = 150
    lo, hi = rng.uniform(0.0, 0.5, k), rng.uniform(0.5, 1.0, k)
    at, span = rng.uniform(0.05, 0.95, k), rng.uniform(0.0, 1.0, k)
    ramp = lo + (hi - lo) * np.clip((t - at + span / 2) / np.maximum(span, 1e-3), 0, 1)
    step = np.where(t >= at, hi, lo)
    slope = 10 ** rng.uniform(0, 3, k)
    sigmoid = lo + (hi - lo) / (1 + np.exp(np.clip(-slope * (t - at), -50, 50)))
    rising = np.concatenate([ramp, step, sigmoid], axis=1)
    return np.concatenate([rising, rising[::-1]], axis=1)


@pytest.mark.parametrize("n", [20, 60, 230, 2000])
@pytest.mark.parametrize("T", [64, 255, 1024])
def test_monotone_profiles_never_oscillate_whatever_the_noise(T, n):
    """Ramps, steps and sigmoids with binomial noise at 20 to 2,000 sequences per position: never
    oscillatory, never on at both ends (a trained OPT's ramps read as oscillatory before the band)."""
    rng = np.random.default_rng(T * 7 + n)
    rates = monotone_profiles(T, rng)
    counts, tap = noisy(rates, n, rng)
    codes, _, _ = classify(counts, tap, np.ones(rates.shape[1], bool))
    names = np.array(schema.POS_SHAPES)[codes]
    assert not np.isin(names, ["oscillatory", "both-extremes"]).any(), np.unique(names, return_counts=True)
    window = max(1, T // 128)
    band = positional.noise_z(T, ShapeRule().noise_alpha) * np.sqrt(0.25 / (n * window))  # its widest
    clear = np.abs(rates[0] - rates[-1]) > 2.5 * band  # a step well beyond the noise band: one rise or fall
    assert (names[clear] == "one-extreme").all()
    if n >= 60:  # at n = 20 the band is most of the range: few steps are that clear
        assert clear.sum() > 100


@pytest.mark.parametrize("n", [20, 60, 230, 2000])
@pytest.mark.parametrize("T", [256, 1024, 2048])
def test_square_and_sine_waves_oscillate_at_the_same_noise(T, n):
    rng = np.random.default_rng(T * 11 + n)
    t = np.arange(T)[:, None] / T
    periods = np.arange(2, 17)[None, :]
    phase = rng.uniform(0, 1, periods.shape)
    sine = 0.5 + 0.45 * np.sin(2 * np.pi * (periods * t + phase))
    square = np.where(((periods * t + phase) % 1.0) < 0.5, 0.95, 0.05)
    rates = np.concatenate([sine, square], axis=1)
    counts, tap = noisy(rates, n, rng)
    codes, _, _ = classify(counts, tap, np.ones(rates.shape[1], bool))
    names = np.array(schema.POS_SHAPES)[codes]
    assert (names == "oscillatory").all(), list(zip(np.tile(periods[0], 2), names))


def test_default_smoothing_keeps_a_long_range_indicator():
    T = 2048
    t = np.arange(T)
    rng = np.random.default_rng(4)
    rate = np.where((t >= 300) & (t < 700), 1.0, 0.0)
    counts = rng.binomial(40, rate)[:, None]  # 40 sequences per position
    codes, strong, ranges = classify(counts, np.full(T, 40), np.array([True]))
    assert schema.POS_SHAPES[codes[0]] == "other" and strong[0] == 1  # one range in the middle
    assert ranges[0].tolist() == [300, 699]
    mi = mutual_information(counts, np.full(T, 40))
    assert mi[0] > 0.05
