"""Accumulators against answers computed by hand and against a plain-numpy reference."""

import numpy as np
import pytest
import torch

from neuron_tui.core.model import accumulators
from neuron_tui.core.model.accumulators import BatchIndex, LayerAccumulator
from neuron_tui.core.read.sampling import MAX_LEVEL, token_levels

# device, sync-free, CPU sparse-batch threshold (accumulators.SPARSE_BATCH: 0 = always the pairs path,
# huge = never)
PATHS = {"cpu-sparse-pairs": ("cpu", False, 0), "cpu-dense": ("cpu", False, 10**12),
         "cpu-sync-free": ("cpu", True, 0), "cuda": ("cuda", True, 0)}
_path = {}


@pytest.fixture(params=list(PATHS), autouse=True)
def update_path(request, monkeypatch):
    """Every test runs each update path: the CPU's sparse-pairs and dense ones, the accelerators'
    sync-free one on the CPU, and on CUDA where a GPU is present."""
    device, sync_free, sparse_batch = PATHS[request.param]
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    monkeypatch.setattr(accumulators, "SPARSE_BATCH", sparse_batch)
    _path.update(device=torch.device(device), sync_free=sync_free)


def make(F, T, cap, top_k, rule, tau) -> LayerAccumulator:
    return LayerAccumulator(F, T, cap, top_k, _path["device"], rule, tau, sync_free=_path["sync_free"])


def run(h: np.ndarray, batch: int, rule="relu", tau=0.0, cap=8, top_k=2, resume_at=None) -> LayerAccumulator:
    """Feed activations [S, T, F] in batches of `batch` sequences; optionally via a host round trip."""
    S, T, F = h.shape
    acc = make(F, T, cap, top_k, rule, tau)
    for start in range(0, S, batch):
        if resume_at is not None and start == resume_at:
            state = acc.state()
            acc = make(F, T, cap, top_k, rule, tau)
            acc.load(state)
        stop = min(S, start + batch)
        positions = np.arange(start * T, stop * T).reshape(stop - start, T)
        acc.update(torch.as_tensor(h[start:stop]).to(_path["device"]), BatchIndex(positions, _path["device"]))
    return acc


def test_counts_sums_and_maxima_by_hand():
    # 2 sequences x 3 positions x 2 neurons; neuron 0 fires at (0,0), (0,2), (1,2); neuron 1 never
    h = np.array(
        [[[1.0, -1.0], [-2.0, 0.0], [3.0, -0.5]],
         [[-1.0, -3.0], [0.0, -2.0], [0.5, -0.1]]], dtype=np.float32)
    st = run(h, batch=1).state()
    assert st.act_count.tolist() == [3, 0]
    assert st.pos_count.tolist() == [[1, 0], [0, 0], [2, 0]]
    assert st.act_sum.tolist() == pytest.approx([4.5, 0.0])
    assert st.act_count_pos.tolist() == [3, 0] and st.act_sum_pos.tolist() == pytest.approx([4.5, 0.0])  # ReLU
    assert st.act_max.tolist() == pytest.approx([3.0, 0.0])  # neuron 1's largest h is 0.0 at (0,1)
    # top contexts: one per sequence, best first: seq 0 at t=2 (g=2), seq 1 at t=2 (g=5)
    assert st.top_val[:, 0].tolist() == pytest.approx([3.0, 0.5])
    assert st.top_pos[:, 0].tolist() == [2, 5]
    assert [e.tolist() for e in st.events] == [[0, 2, 5], []]  # cap 8 > 3: the sample is complete
    assert st.level.tolist() == [0, 0]


def test_abs_rule_uses_magnitude_and_threshold():
    h = np.array([[[0.5, -2.0], [-0.7, 0.1], [2.0, 0.6]]], dtype=np.float32)
    st = run(h, batch=1, rule="abs", tau=0.6).state()
    assert st.act_count.tolist() == [2, 1]  # |h| > 0.6: neuron 0 at t=1,2; neuron 1 at t=0 (0.6 is not > 0.6)
    assert st.act_sum.tolist() == pytest.approx([1.3, -2.0])  # signed: -0.7 + 2.0, and -2.0
    assert st.act_max.tolist() == pytest.approx([2.0, 2.0])  # of |h|
    # the sign split: neuron 0 fired once positive (2.0) and once negative; neuron 1 once negative
    assert st.act_count_pos.tolist() == [1, 0]
    assert st.act_sum_pos.tolist() == pytest.approx([2.0, 0.0])


def reference_sample(fired: np.ndarray, cap: int) -> tuple[list[list[int]], list[int]]:
    """The level sample defined on the whole corpus: smallest L with #{fired g: z(g) >= L} <= cap."""
    S, T, F = fired.shape
    g = np.arange(S * T)
    z = token_levels(g)
    events, levels = [], []
    for i in range(F):
        fired_g = g[fired.reshape(S * T, F)[:, i]]
        level = next(L for L in range(MAX_LEVEL) if (z[fired_g] >= L).sum() <= cap)
        events.append(sorted(fired_g[z[fired_g] >= level].tolist()))
        levels.append(level)
    return events, levels


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_level_sample_is_the_whole_corpus_rule_for_any_batch_size(batch):
    rng = np.random.default_rng(0)
    S, T, F = 16, 32, 6
    rates = np.array([0.0, 0.002, 0.01, 0.1, 0.5, 0.95])  # dead ... nearly always on
    h = (rng.random((S, T, F)) < rates).astype(np.float32) * 2 - 1
    cap = 20
    st = run(h, batch=batch, cap=cap).state()
    events, levels = reference_sample(h > 0, cap)
    assert st.level.tolist() == levels
    assert [e.tolist() for e in st.events] == events
    assert levels[0] == 0 and events[0] == []  # dead neuron
    assert levels[-1] >= 4  # 486 firings need 2**4 and more to fit in 20
    assert all(len(e) <= cap for e in events)


def test_resume_through_host_state_equals_uninterrupted():
    rng = np.random.default_rng(1)
    h = rng.standard_normal((12, 16, 5)).astype(np.float32)
    a = run(h, batch=4, cap=10).state()
    b = run(h, batch=4, cap=10, resume_at=8).state()
    for name in ("act_count", "pos_count", "act_sum", "act_count_pos", "act_sum_pos", "act_max", "top_val", "top_pos",
                 "level"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert [e.tolist() for e in a.events] == [e.tolist() for e in b.events]


def test_sampled_counts_estimate_firing_counts():
    """Each kept event stands for 2**level firings: the estimate is close to the exact count."""
    rng = np.random.default_rng(2)
    S, T, F = 64, 64, 4
    h = (rng.random((S, T, F)) < 0.3).astype(np.float32)
    st = run(h, batch=8, cap=64).state()
    estimate = np.array([len(e) * 2.0 ** lv for e, lv in zip(st.events, st.level)])
    assert (st.level > 0).all()
    np.testing.assert_allclose(estimate, st.act_count, rtol=0.35)


def test_token_levels_are_fixed_and_geometric():
    z = token_levels(np.arange(1 << 16))
    assert token_levels(np.array([0, 1, 2, 12345])).tolist() == token_levels(np.array([0, 1, 2, 12345])).tolist()
    for level in range(1, 6):
        assert (z >= level).mean() == pytest.approx(2.0 ** -level, rel=0.1)
    assert z.max() < MAX_LEVEL
