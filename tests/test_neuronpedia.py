"""`neuron-tui export --format neuronpedia`: the files load into sae-dashboard's own Neuronpedia data
classes, and every number in them is the neuron's record's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synthetic import tiny_summary

from neuron_tui.cache import Summary
from neuron_tui.core.read import kinds
from neuron_tui.core.read.queries import neuron_record
from neuron_tui.tui.cli import main
from neuron_tui.tui.viewmodel import Marks

dashboard = pytest.importorskip("sae_dashboard.neuronpedia.neuronpedia_dashboard")


@pytest.fixture(scope="module")
def gated(tmp_path_factory) -> Path:
    return tiny_summary(tmp_path_factory.mktemp("np"), architecture="llama", model="synthetic/tiny-llama")


def _export(capsys, *args) -> list[Path]:
    assert main(["export", *map(str, args)]) == 0
    return [Path(line) for line in capsys.readouterr().out.split()]


def test_a_kind_exports_one_batch_per_layer_that_sae_dashboard_reads(gated, tmp_path, capsys):
    paths = _export(capsys, gated, "-o", tmp_path, "--category", "prediction")
    with Summary.open(gated) as s:
        flags = s.analysis.read("flags")
        expected = {layer: np.flatnonzero(kinds.has(flags[layer], "prediction")).tolist() for layer in range(s.n_layers)}
        expected = {layer: ids for layer, ids in expected.items() if ids}
        assert expected, "the synthetic summary plants prediction neurons"
        assert paths == [tmp_path / f"batch-{layer}.json" for layer in expected]
        for path, (layer, ids) in zip(paths, expected.items()):
            data = json.loads(path.read_text())
            batch = dashboard.NeuronpediaDashboardBatch(**data)
            assert batch.layer == layer and batch.model_id == "synthetic/tiny-llama"
            assert [f.feature_index for f in batch.features] == ids
            for f in data["features"]:
                feature = dashboard.NeuronpediaDashboardFeature(**f)
                assert feature.to_dict() == f  # no field the dashboard does not know, none missing
                record = neuron_record(s, layer, feature.feature_index)
                assert feature.frac_nonzero == record["fire_rate"]
                assert feature.pos_str == [t["text"] for t in record["promoted"]]
                assert feature.neg_str == [t["text"] for t in record["suppressed"]]
                assert feature.neg_values == [round(t["score"], 3) for t in record["suppressed"]]
                assert feature.freq_hist_data_bar_heights == [float(c) for c in record["histogram"]["counts"]]
                edges = np.asarray(record["histogram"]["edges"])
                assert feature.freq_hist_data_bar_values == [round(float(c), 3) for c in (edges[:-1] + edges[1:]) / 2]
                tops = [c for c in record["contexts"] if c["source"] == "top"]
                assert len(feature.activations) == len(tops) > 0
                for a, c in zip(f["activations"], tops):
                    act = dashboard.NeuronpediaDashboardActivation(**a)
                    assert act.tokens[act.qualifying_token_index] == c["token"]
                    assert "".join(act.tokens) == c["left"] + c["token"] + c["right"]
                    assert act.values[act.qualifying_token_index] == pytest.approx(c["value"], abs=2e-3)
                    assert act.bin_max == pytest.approx(abs(c["value"]), abs=2e-3)


def test_marked_neurons_only_and_at_most_limit(gated, tmp_path, capsys):
    marks = Marks(gated)
    marks.set(1, 7, "looks positional")
    marks.set(3, 2, "")
    marks.set(3, 40, "")
    try:
        paths = _export(capsys, gated, "-o", tmp_path / "m", "--marked")
        assert [json.loads(p.read_text())["layer"] for p in paths] == [1, 3]
        assert [f["feature_index"] for f in json.loads(paths[1].read_text())["features"]] == [2, 40]
        paths = _export(capsys, gated, "-o", tmp_path / "l", "--marked", "--limit", "2")
        assert [[f["feature_index"] for f in json.loads(p.read_text())["features"]] for p in paths] == [[7], [2]]
    finally:
        marks.path.unlink()


def test_bad_requests_are_one_line_and_write_nothing(gated, tmp_path, capsys):
    assert main(["export", str(gated), "-o", str(tmp_path / "x"), "--category", "nonsense"]) == 2
    assert main(["export", str(gated), "-o", str(tmp_path / "x"), "--layer", "9"]) == 2
    assert main(["export", str(gated), "-o", str(tmp_path / "x"), "--marked"]) == 2  # nothing marked
    assert not (tmp_path / "x").exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["export", str(gated), "-o", str(blocker / "sub"), "--limit", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("neuron-tui: error: ") for line in err)
    assert "cannot write the export" in err[-1]
