"""The statistics schema 3 added to a pass (h_sum, the top contexts' windows, the activation histogram,
the sign cases of gated FFNs) as readers see them: typed access, and summaries made before them."""

import json
from pathlib import Path

import numpy as np
import pytest
from test_collect import run_tiny
from tiny import interrupt_forward_at, tiny_opt

from neuron_tui.cache import Summary, SummaryWriter, schema
from neuron_tui.core.errors import NeuronTuiError
from neuron_tui.core.model.adapters import ADAPTERS
from neuron_tui.core.read.queries import CONTEXT_LEFT, CONTEXT_RIGHT
from neuron_tui.core.read.synthetic import make_summary
from neuron_tui.tui.cli import main


def without_schema_3_statistics(source: Path, path: Path) -> Path:
    """A copy of summary `source` as a collection made before schema.ADDED_IN_3 wrote it: without those
    datasets and the sign cases (still schema 3)."""
    with Summary.open(source) as s, SummaryWriter(path) as w:
        w.copy_from(s, skip=schema.ADDED_IN_3 + schema.SIGN_DATASETS)
    return path


@pytest.fixture(scope="module")
def gated(tmp_path_factory) -> Path:
    return make_summary(tmp_path_factory.mktemp("gated") / "llama.h5", 3, 96, architecture="llama")


def test_typed_access_reads_each_neurons_statistics(gated):
    with Summary.open(gated) as s:
        assert s.attrs["rule"] == "abs" and s.context_window == (CONTEXT_LEFT, CONTEXT_RIGHT)
        np.testing.assert_allclose(s.h_mean(1), s.read("h_sum", 1) / s.n_tokens)
        window = s.context_values(1, 7)
        assert window.shape == (s.attrs["top_k"], CONTEXT_LEFT + 1 + CONTEXT_RIGHT) and window.dtype == np.float32
        np.testing.assert_array_equal(window, s.read("ctx_val", 1)[:, :, 7])
        edges, counts = s.activation_histogram(1, 7)
        np.testing.assert_array_equal(edges, s.read("hist_edges", 1))
        assert counts.shape == (schema.HIST_BINS,) and counts.sum() == s.read("act_count", 1)[7]
        cases = s.sign_cases(1, 7)
        assert cases.count.sum() == s.read("act_count", 1)[7] and cases.top_val.shape == (len(schema.SIGN_CASES),)
        np.testing.assert_array_equal(cases.top_pos, s.read("sign_top_pos", 1)[:, 7])


def test_a_summary_made_before_these_statistics_reads_them_as_absent(gated, tmp_path, capsys):
    """A schema 3 file without them opens, says they are absent, and every read command still answers."""
    old = without_schema_3_statistics(gated, tmp_path / "old.h5")
    with Summary.open(old) as s:
        assert not any(s.has(name) for name in schema.ADDED_IN_3 + schema.SIGN_DATASETS)
        assert s.h_mean(0) is None and s.context_values(0, 1) is None
        assert s.activation_histogram(0, 1) is None and s.sign_cases(0, 1) is None
    for command in (["report", str(old), "--json"], ["neuron", str(old), "1", "7", "--json"],
                    ["neurons", str(old), "--layer", "1", "--json"]):
        assert main(command) == 0, command
        json.loads(capsys.readouterr().out)


def test_an_ungated_summary_has_no_sign_cases(tmp_path):
    with Summary.open(make_summary(tmp_path / "opt.h5", 2, 32)) as s:
        assert s.has("hist_count") and not s.has("sign_count") and s.sign_cases(0, 0) is None


def test_the_gated_architectures_are_those_whose_up_projection_the_pass_hooks():
    assert {name for name, adapter in ADAPTERS.items() if adapter.up_proj} == set(schema.GATED_ARCHITECTURES)
    assert ADAPTERS["llama"].up_proj == "mlp.up_proj" and ADAPTERS["opt"].up_proj is None


def test_a_checkpoint_made_before_these_statistics_is_not_resumed(tmp_path, monkeypatch):
    """Resuming it would mix counts with and without them: one line says to start over."""
    interrupt_forward_at(monkeypatch, 6)
    with pytest.raises(NeuronTuiError, match="checkpoint kept"):
        run_tiny(tiny_opt(), tmp_path, checkpoint_seconds=1e9)
    (partial,) = (tmp_path / "cache").glob("*.partial.h5")
    without_schema_3_statistics(partial, tmp_path / "old.h5").replace(partial)
    monkeypatch.undo()
    with pytest.raises(NeuronTuiError, match="written by an older neuron-tui.*delete it to start over"):
        run_tiny(tiny_opt(), tmp_path)
