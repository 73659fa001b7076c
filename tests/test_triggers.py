"""Trigger counting: hand-made cases and an independent plain-Python slow path."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from neuron_tui.core.read.triggers import candidate_triggers, count_pairs


def slow_top(offsets, tokens, k, drop=lambda e, t: False):
    """Plain Python: per neuron, tokens sorted by count descending, then id ascending."""
    out = np.full((len(offsets) - 1, k), -1, dtype=np.int32)
    for i in range(len(offsets) - 1):
        c = Counter(int(tokens[e]) for e in range(offsets[i], offsets[i + 1]) if not drop(e, int(tokens[e])))
        ranked = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        out[i, : len(ranked)] = [t for t, _ in ranked]
    return out


def test_hand_made_counts_ties_and_padding():
    # neuron 0: 3 x3, 1 x2, 2 x1; neuron 1: 5 and 4 tie (x2) -> 4 first; neuron 2: no events
    tokens = np.array([3, 1, 3, 2, 1, 3, 5, 4, 5, 4])
    offsets = np.array([0, 6, 10, 10])
    got = candidate_triggers(offsets, tokens, 3)
    assert got.dtype == np.int32
    assert got.tolist() == [[3, 1, 2], [4, 5, -1], [-1, -1, -1]]


def test_exclude_by_event_mask_and_by_token_id():
    tokens = np.array([3, 1, 3, 2, 1, 3, 5, 4, 5, 4])
    offsets = np.array([0, 6, 10, 10])
    mask = np.zeros(10, bool)
    mask[[0, 2]] = True  # two of neuron 0's three 3s are BOS events
    assert candidate_triggers(offsets, tokens, 3, exclude=mask).tolist() == [[1, 2, 3], [4, 5, -1], [-1, -1, -1]]
    assert candidate_triggers(offsets, tokens, 2, exclude=np.array([3, 4])).tolist() == [[1, 2], [5, -1], [-1, -1]]


def test_global_offsets_of_a_later_layer_are_accepted():
    tokens = np.array([7, 7, 8])
    assert candidate_triggers(np.array([100, 101, 103]), tokens, 2).tolist() == [[7, -1], [7, 8]]


def test_matches_slow_path_on_a_random_zipf_layer():
    rng = np.random.default_rng(0)
    F = 700
    sizes = rng.integers(0, 60, F)
    sizes[::50] = 0
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    tokens = np.minimum(rng.zipf(1.3, offsets[-1]), 5000) - 1  # many ties among rare tokens
    exclude = rng.random(offsets[-1]) < 0.1
    for k in (1, 4, 10):
        fast = candidate_triggers(offsets, tokens, k, exclude=exclude)
        slow = slow_top(offsets, tokens, k, drop=lambda e, t: bool(exclude[e]))
        np.testing.assert_array_equal(fast, slow)


def test_count_pairs_counts_ranks_and_segment_cumsum():
    tokens = np.array([3, 1, 3, 2, 1, 3, 5, 4, 5, 4, 9])
    offsets = np.array([0, 6, 6, 11])
    pc = count_pairs(offsets, tokens)
    assert pc.neuron.tolist() == [0, 0, 0, 2, 2, 2]
    assert pc.item.tolist() == [3, 1, 2, 4, 5, 9]
    assert pc.count.tolist() == [3, 2, 1, 2, 2, 1]
    assert pc.rank.tolist() == [0, 1, 2, 0, 1, 2]
    assert pc.n_distinct().tolist() == [3, 0, 3]
    assert pc.segment_cumsum(pc.count).tolist() == [3, 5, 6, 2, 4, 5]
    # reorder by another value: ties keep the item order
    re = pc.reorder(np.array([1.0, 5.0, 5.0, 0.5, 2.0, 2.0]))
    assert re.item.tolist() == [1, 2, 3, 5, 9, 4]
    sub = re.subset(re.item != 2)
    assert sub.item.tolist() == [1, 3, 5, 9, 4] and sub.rank.tolist() == [0, 1, 0, 1, 2]
    assert sub.start.tolist() == [0, 2, 2, 5]


def test_large_layer_shape():
    """36,864 neurons x 64 events: the vectorised path handles a big layer in one call."""
    rng = np.random.default_rng(1)
    F, n = 36_864, 64
    offsets = np.arange(F + 1) * n
    tokens = rng.integers(0, 50_000, F * n)
    tokens[::3] = 17  # every neuron's most frequent token is 17
    got = candidate_triggers(offsets, tokens, 10)
    assert got.shape == (F, 10)
    assert (got[:, 0] == 17).all()
    np.testing.assert_array_equal(got[:300], slow_top(offsets[:301], tokens, 10))


@pytest.mark.parametrize("k", [0, 1])
def test_degenerate_k(k):
    got = candidate_triggers(np.array([0, 2]), np.array([4, 4]), k)
    assert got.shape == (1, k)
