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


def test_the_papers_types_strong_and_weak():
    """One planted profile of every type of the paper's section 5, strong and weak."""
    T = 64
    t = np.arange(T)
    rng = np.random.default_rng(3)
    profiles = {  # name: (rate by position, expected type, strong)
        "oscillatory strong": (np.where(t % 16 < 8, 1.0, 0.0), "oscillatory", True),  # tiles the positions
        "oscillatory weak": (np.where(t % 16 < 8, 0.8, 0.1), "oscillatory", False),
        "both strong": (np.where(t < 20, 1.0, 0.0), "both-extremes", True),  # fires before t = 20, never after
        "both weak": (np.where(t >= 40, 0.97, 0.03), "both-extremes", False),  # near 1 and near 0
        "range strong": (np.where((t >= 10) & (t <= 20), 1.0, 0.0), "both-extremes", True),  # an indicator
        "one strong": (np.where(t < 5, 0.85, 0.0), "one-extreme", True),  # SmolLM2 L2 N1292's shape
        "one weak": (np.where(t < 5, 0.85, 0.02), "one-extreme", False),  # close to 0, not at it
        "one at 1": (np.where(t > 50, 1.0, 0.5), "one-extreme", True),  # always fires late, half early
        "other thin": (0.2 + 0.4 * t / (T - 1), "other", True),  # a smooth ramp
        "other thick": (np.clip(0.2 + 0.4 * t / (T - 1) + rng.normal(0, 0.08, T), 0.1, 0.9), "other", False),
        "not positional": (np.full(T, 0.3), "none", False),
    }
    pos_count, tap = profile_counts([p for p, _, _ in profiles.values()])
    mask = np.array([name != "not positional" for name in profiles])
    codes, strong, ranges = classify(pos_count, tap, mask, ShapeRule(smooth=1))
    got = {name: (schema.POS_SHAPES[c], bool(s)) for name, c, s in zip(profiles, codes, strong)}
    assert got == {name: (kind, is_strong) for name, (_, kind, is_strong) in profiles.items()}
    by_name = dict(zip(profiles, ranges.tolist()))
    assert by_name["range strong"] == [10, 20] and by_name["one strong"] == [0, 4] and by_name["both strong"] == [0, 19]
    assert by_name["not positional"] == [-1, -1]


def test_irregular_rises_are_not_oscillatory():
    T = 64
    irregular = np.zeros(T)
    irregular[[5, 6, 9, 30, 31, 44, 60]] = 0.9  # rises at 5, 9, 30, 44, 60: gaps 4, 21, 14, 16
    pos_count, tap = profile_counts([irregular])
    codes, _, _ = classify(pos_count, tap, np.array([True]), ShapeRule(smooth=1))
    assert schema.POS_SHAPES[codes[0]] == "one-extreme"  # reaches 0 between its spikes, never 1


def test_default_smoothing_keeps_a_long_range_indicator():
    T = 2048
    t = np.arange(T)
    rng = np.random.default_rng(4)
    rate = np.where((t >= 300) & (t < 700), 1.0, 0.0)
    counts = rng.binomial(40, rate)[:, None]  # 40 sequences per position
    codes, strong, ranges = classify(counts, np.full(T, 40), np.array([True]))
    assert schema.POS_SHAPES[codes[0]] == "both-extremes" and strong[0] == 1
    assert ranges[0].tolist() == [300, 699]
    mi = mutual_information(counts, np.full(T, 40))
    assert mi[0] > 0.05
