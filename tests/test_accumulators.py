"""Accumulators against answers computed by hand and against a plain-numpy reference."""

import numpy as np
import pytest
import torch

from neuron_tui.core.model import accumulators, histograms
from neuron_tui.core.model.accumulators import LayerAccumulator
from neuron_tui.core.model.batches import BatchIndex
from neuron_tui.core.model.contexts import CONTEXT_WIDTH
from neuron_tui.core.model.histograms import histogram_edges
from neuron_tui.core.read.queries import CONTEXT_LEFT, CONTEXT_RIGHT
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


def make(F, T, cap, top_k, rule, tau, edges, gated) -> LayerAccumulator:
    return LayerAccumulator(F, T, cap, top_k, _path["device"], rule, tau, edges, gated, sync_free=_path["sync_free"])


def run(h: np.ndarray, batch: int, rule="relu", tau=0.0, cap=8, top_k=2, resume_at=None, up=None,
        edges=None) -> LayerAccumulator:
    """Feed activations [S, T, F] (and, for a gated FFN, `up` [S, T, F]) in batches of `batch` sequences;
    optionally via a host round trip. `edges`: the histogram bins (default: from tau and the largest |h|)."""
    S, T, F = h.shape
    edges = histogram_edges(tau, float(np.abs(h).max()), rule) if edges is None else edges
    acc = make(F, T, cap, top_k, rule, tau, edges, up is not None)
    device = _path["device"]
    for start in range(0, S, batch):
        if resume_at is not None and start == resume_at:
            state = acc.state()
            acc = make(F, T, cap, top_k, rule, tau, edges, up is not None)
            acc.load(state)
        stop = min(S, start + batch)
        positions = np.arange(start * T, stop * T).reshape(stop - start, T)
        gated = None if up is None else torch.as_tensor(up[start:stop]).to(device)
        acc.update(torch.as_tensor(h[start:stop]).to(device), BatchIndex(positions, device), gated)
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


def test_a_layer_whose_every_neuron_has_a_level_samples_from_the_rows_at_or_above_it(monkeypatch):
    """Once every neuron's level is above 0, the CPU's dense path reads only the rows at or above the
    lowest level (EventSample._new_events); the sample is still the whole-corpus rule's."""
    rng = np.random.default_rng(1)
    S, T, F = 24, 32, 3
    h = (rng.random((S, T, F)) < np.array([0.3, 0.6, 0.95])).astype(np.float32) * 2 - 1
    floors = []
    real = BatchIndex.rows_at_or_above
    monkeypatch.setattr(BatchIndex, "rows_at_or_above", lambda self, floor: floors.append(floor) or real(self, floor))
    st = run(h, batch=2, cap=4).state()
    events, levels = reference_sample(h > 0, 4)
    assert st.level.tolist() == levels and [e.tolist() for e in st.events] == events
    assert min(levels) >= 4
    if not _path["sync_free"] and accumulators.SPARSE_BATCH > S * T * F:  # the CPU's dense path
        assert max(floors) >= 3


@pytest.mark.parametrize("rule", ["relu", "abs"])
def test_resume_through_host_state_equals_uninterrupted(rule):
    rng = np.random.default_rng(1)
    gate, up = rng.standard_normal((2, 12, 16, 5)).astype(np.float32)
    h = (gate * up).astype(np.float32)
    gated = up if rule == "abs" else None
    a = run(h, batch=4, cap=10, rule=rule, tau=0.5, up=gated).state()
    b = run(h, batch=4, cap=10, rule=rule, tau=0.5, up=gated, resume_at=8).state()
    for name in ("act_count", "pos_count", "act_sum", "act_count_pos", "act_sum_pos", "act_max", "h_sum", "top_val",
                 "top_pos", "ctx_val", "level", "hist_count", "sign_count", "sign_top_val", "sign_top_pos"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert [e.tolist() for e in a.events] == [e.tolist() for e in b.events]
    assert (a.sign_count is None) == (rule == "relu")


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


def test_h_sum_and_the_signed_windows_of_the_top_contexts_by_hand():
    """h_sum adds h over every token; each top context keeps the neuron's signed h around it (12 before,
    4 after), NaN off the sequence; under the abs rule top_val is |h| and the window's centre is h."""
    T = 20
    h = np.zeros((2, T, 2), np.float32)
    h[0, :, 0] = np.arange(T) / 10  # neuron 0: its peak at t = 19, the window's end runs off the sequence
    h[1, 3, 0] = -5.0  # ... and a stronger negative one at t = 3: the window's start runs off
    h[1, 10, 1] = 0.7  # neuron 1: fires once, at g = T + 10
    st = run(h, batch=1, rule="abs", tau=0.6).state()
    np.testing.assert_allclose(st.h_sum, [h[..., 0].sum(), 0.7], rtol=1e-6)
    assert st.top_val[:, 0].tolist() == pytest.approx([5.0, 1.9]) and st.top_pos[:, 0].tolist() == [T + 3, 19]
    assert st.ctx_val.shape == (2, CONTEXT_WIDTH, 2) and st.ctx_val.dtype == np.float16
    expected = np.full((2, CONTEXT_WIDTH), np.nan, np.float32)
    expected[0, CONTEXT_LEFT - 3 :] = h[1, : 3 + CONTEXT_RIGHT + 1, 0]  # t = 3: 9 positions before the sequence
    expected[1, : CONTEXT_LEFT + 1] = h[0, 19 - CONTEXT_LEFT :, 0]  # t = 19: the 4 after it are past the end
    np.testing.assert_array_equal(st.ctx_val[:, :, 0], expected.astype(np.float16))
    assert st.ctx_val[0, CONTEXT_LEFT, 0] == -5.0  # the sign of the strongest context
    window = np.where(np.arange(CONTEXT_WIDTH) == CONTEXT_LEFT, 0.7, 0.0)  # around t = 10: 2 before the sequence
    np.testing.assert_array_equal(st.ctx_val[0, :, 1], np.where(np.arange(CONTEXT_WIDTH) < 2, np.nan, window)
                                  .astype(np.float16))
    # its second context is sequence 0's strongest activation, 0 at t = 0 (contexts need not fire)
    assert st.top_pos[:, 1].tolist() == [T + 10, 0] and st.top_val[1, 1] == 0.0
    assert np.isnan(st.ctx_val[1, :CONTEXT_LEFT, 1]).all() and (st.ctx_val[1, CONTEXT_LEFT:, 1] == 0).all()


def reference_contexts(h: np.ndarray, top_pos: np.ndarray) -> np.ndarray:
    """[K, W, F] float16: h around each top position of h [S, T, F], NaN off the sequence or slot."""
    T = h.shape[1]
    out = np.full(top_pos.shape[:1] + (CONTEXT_WIDTH,) + top_pos.shape[1:], np.nan, np.float32)
    for k, i in zip(*np.nonzero(top_pos >= 0)):
        seq, t = divmod(int(top_pos[k, i]), T)
        for j, u in enumerate(range(t - CONTEXT_LEFT, t + CONTEXT_RIGHT + 1)):
            if 0 <= u < T:
                out[k, j, i] = h[seq, u, i]
    return out.astype(np.float16)


def reference_histogram(h: np.ndarray, fired: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """[B, F]: firings per bin, edges[b] <= h < edges[b + 1], values beyond the outer edges in the outer bins."""
    F = h.shape[-1]
    bins = np.clip(np.searchsorted(edges, h, side="right") - 1, 0, len(edges) - 2)
    counts = np.zeros((len(edges) - 1, F), np.int64)
    for i in range(F):
        np.add.at(counts[:, i], bins[..., i][fired[..., i]], 1)
    return counts


@pytest.mark.parametrize("batch", [1, 3, 16])
@pytest.mark.parametrize("rule", ["relu", "abs"])
def test_histogram_windows_and_h_sum_against_a_dense_reference_for_any_batch_size(rule, batch, monkeypatch):
    """Every firing in its bin (the histogram sums to act_count), including values beyond the outer
    edges, whatever the batch size; the sync-free path bins a few rows at a time (a small DENSE_CHUNK)."""
    monkeypatch.setattr(histograms, "DENSE_CHUNK", 50)
    rng = np.random.default_rng(3)
    S, T, F, tau = 16, 20, 7, 0.3
    h = (rng.standard_normal((S, T, F)) * np.geomspace(0.2, 3, F)).astype(np.float32)
    edges = histogram_edges(tau, 1.0, rule)  # calibrated on a quieter slice: some values lie beyond hi = 2
    assert (np.abs(h) > edges[-1]).any()
    h[0, 0, :5], h[0, 1, :5] = edges[-6:-1], edges[1:6]  # values on edges: each opens its bin
    st = run(h, batch=batch, rule=rule, tau=tau, top_k=3, edges=edges).state()
    fired = (np.abs(h) if rule == "abs" else h) > tau
    np.testing.assert_array_equal(st.hist_count, reference_histogram(h, fired, edges))
    np.testing.assert_array_equal(st.hist_count.sum(0), st.act_count)
    np.testing.assert_allclose(st.h_sum, h.sum((0, 1)), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(st.ctx_val, reference_contexts(h, st.top_pos))
    centre = st.ctx_val[:, CONTEXT_LEFT].astype(np.float32)
    np.testing.assert_array_equal(np.abs(centre) if rule == "abs" else centre, st.top_val.astype(np.float16))


@pytest.mark.parametrize("tau, peak, rule", [(0.0, 5.0, "relu"), (0.3, 7.0, "relu"), (0.1, 3.0, "abs"),
                                            (0.0, 2.0, "abs")])
def test_the_kernels_step_table_bins_every_float_as_the_two_lookups_do(tau, peak, rule):
    """histograms.step_table, what the CPU kernel reads: decoded as cpu_update.c's bin_of decodes it, it
    gives `FiringHistogram.bins` (and the edges' own searchsorted) for every float32 of every interval
    that holds an edge or lies next to one (all 65,536 low bits of each), for +-0, +-inf (in the outer
    bins) and NaN, and for a million random bit patterns."""
    edges = histogram_edges(tau, peak, rule)
    hist = histograms.FiringHistogram(3, edges, torch.device("cpu"))
    steps = hist.steps.numpy().view(np.uint32)
    near = np.unique(np.concatenate([(edges.view(np.uint32) >> 16).astype(np.int64) + d for d in (-1, 0, 1)]))
    low = np.arange(1 << 16, dtype=np.uint32)
    special = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001], np.uint32)
    bits = np.concatenate([((near.astype(np.uint32)[:, None] << 16) | low).ravel(), special,
                           np.random.default_rng(0).integers(0, 1 << 32, 1_000_000, dtype=np.uint64).astype(np.uint32)])
    entry = steps[bits >> 16]
    decoded = np.where((bits & 0xFFFF) >= (entry & 0x1FFFF), entry >> 24, (entry >> 17) & 0x7F)
    x = bits.view(np.float32)
    np.testing.assert_array_equal(decoded, hist.bins(torch.from_numpy(x.copy())).numpy())
    number = ~np.isnan(x)  # -inf and inf in the outer bins, as any value beyond the outer edges
    expected = np.clip(np.searchsorted(edges, x[number], side="right") - 1, 0, len(edges) - 2)
    np.testing.assert_array_equal(decoded[number], expected)
    assert len(np.unique(decoded[: len(near) << 16])) > len(edges) - 3  # the intervals cover (nearly) every bin


def reference_sign_cases(h, act_gate, up, fired):
    """Counts [4, F] and the strongest |h| [4, F] with its earliest position of each case of
    (act(gate), up) = (+,+), (+,-), (-,+), (-,-) ([S, T, F] each)."""
    S, T, F = h.shape
    case = np.where(act_gate > 0, 0, 2) + np.where(up > 0, 0, 1)
    count = np.zeros((4, F), np.int64)
    val, pos = np.full((4, F), -np.inf, np.float32), np.full((4, F), -1, np.int64)
    g = np.arange(S * T)
    for c in range(4):
        for i in range(F):
            sel = (fired[..., i] & (case[..., i] == c)).ravel()
            count[c, i] = sel.sum()
            if sel.any():
                strength = np.abs(h[..., i]).ravel()[sel]
                val[c, i] = strength.max()
                pos[c, i] = g[sel][np.flatnonzero(strength == strength.max())[0]]
    return count, val, pos


@pytest.mark.parametrize("batch", [1, 4, 16])
def test_sign_cases_against_a_dense_reference_for_any_batch_size(batch):
    """h = silu(gate) * up: each firing counted in its sign case (the four sum to act_count), the
    strongest of each case kept with its position. Sequences 8-15 repeat 0-7, so every maximum is
    tied with a later copy: the earlier position is kept, whatever the batch size."""
    rng = np.random.default_rng(4)
    gate, up = rng.standard_normal((2, 8, 12, 6)).astype(np.float32)
    gate[..., 0] = np.abs(gate[..., 0]) + 3  # neuron 0: act(gate) always positive, so no (-, .) case
    gate, up = np.concatenate([gate, gate]), np.concatenate([up, up])
    act_gate = torch.nn.functional.silu(torch.as_tensor(gate)).numpy()
    h = act_gate * up
    tau = 0.2
    st = run(h, batch=batch, rule="abs", tau=tau, up=up).state()
    count, val, pos = reference_sign_cases(h, act_gate, up, np.abs(h) > tau)
    np.testing.assert_array_equal(st.sign_count, count)
    np.testing.assert_array_equal(st.sign_count.sum(0), st.act_count)
    np.testing.assert_array_equal(st.sign_top_val, val)
    np.testing.assert_array_equal(st.sign_top_pos, pos)
    assert (pos[pos >= 0] < 8 * 12).all()  # the first copy of each tie
    assert (count[:, 1:] > 0).all() and count[2:, 0].tolist() == [0, 0] and (pos[2:, 0] == -1).all()
