"""`neuron-tui figures`: the numbers it plots are `report --json`'s and `neuron --json`'s, the files
are valid SVG / PNG / PDF, and bad requests are one line."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from synthetic import tiny_summary

from neuron_tui.cache import Summary, schema
from neuron_tui.core.read import kinds
from neuron_tui.core.read.figures import PROFILES_PER_TYPE, tokens_label
from neuron_tui.core.read.queries import ROW_KEYS
from neuron_tui.tui.cli import main

MAGIC = {"svg": b"<?xml", "png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-"}


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """Two synthetic models of different depth and width (lined up by relative depth)."""
    folder = tmp_path_factory.mktemp("figures")
    a = tiny_summary(folder, "a.h5")
    b = tiny_summary(folder, "b.h5", n_layers=6, n_neurons=64, seed=11, model="synthetic/deeper")
    return a, b


def run_json(capsys, *args):
    assert main([str(a) for a in args]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def drawn(two, tmp_path_factory):
    out = tmp_path_factory.mktemp("drawn") / "figs"
    assert main(["figures", str(two[0]), str(two[1]), "-o", str(out)]) == 0
    return out, json.loads((out / "figures.json").read_text())


def test_every_depth_panel_plots_the_reports_numbers(two, drawn, capsys):
    _, data = drawn
    reports = {}
    for path in two:
        report = run_json(capsys, "report", path, "--json")
        reports[report["model"]] = report["layers"]
    assert [m["model"] for m in data["models"]] == list(reports)
    depth = [f for f in data["figures"] if not f["name"].startswith(("profiles_", "histograms_"))]
    assert [f["name"] for f in depth] == ["dead", "alive_rate", "token_detectors", "coverage", "suppression", "positional",
                                        "families"]
    checked = 0
    for figure in depth:
        assert figure["xlabel"] and figure["caption"] and figure["title"]
        for panel in figure["panels"]:
            assert [s["model"] for s in panel["series"]] == list(reports)
            for series in panel["series"]:
                layers = reports[series["model"]]
                assert series["x"] == [row["depth"] for row in layers] and series["layers"] == [r["layer"] for r in layers]
                if panel["key"] == "cumulative":
                    assert series["y"] == np.cumsum([row["new"] for row in layers]).tolist()
                else:
                    assert panel["key"] in ROW_KEYS and series["y"] == [row[panel["key"]] for row in layers]
                n_tokens = next(m["n_tokens"] for m in data["models"] if m["model"] == series["model"])
                assert series["label"] == f"{series['model']} ({tokens_label(n_tokens)} tokens)"
                checked += 1
    assert checked == 2 * (3 + 1 + 1 + 3 + 2 + 5 + 5)
    # the paper's depth trends need something to plot: the synthetic models have every category
    dead = next(f for f in depth if f["name"] == "dead")["panels"][0]["series"][0]["y"]
    assert max(dead) > 0


def test_the_profiles_are_the_strongest_positional_neurons_of_the_layer_with_most(two, drawn, capsys):
    _, data = drawn
    profiles = [f for f in data["figures"] if f["name"].startswith("profiles_")]
    assert len(profiles) == 2
    for path, figure in zip(two, profiles):
        with Summary.open(path) as s:
            flags = kinds.has(s.analysis.read("flags"), "positional")
            layer = int(np.argmax((flags > 0).sum(1)))
            shape, mi = s.analysis.read("pos_shape", layer), s.analysis.read("pos_mi", layer)
        assert f"layer {layer}" in figure["title"]
        assert [p["title"] for p in figure["panels"]] == [t.replace("-", " ") for t in schema.POS_SHAPES[1:]]
        drawn_any = 0
        for code, panel in enumerate(figure["panels"], start=1):
            of_type = np.flatnonzero((flags[layer] > 0) & (shape == code))
            expected = of_type[np.argsort(-mi[of_type], kind="stable")][:PROFILES_PER_TYPE]
            assert [int(s["label"].split()[0][1:]) for s in panel["series"]] == expected.tolist()
            for series, neuron in zip(panel["series"], expected):
                record = run_json(capsys, "neuron", path, layer, neuron, "--json")
                assert series["y"] == record["position_rate"] and series["x"] == list(range(len(record["position_rate"])))
                assert record["pos_shape"] == schema.POS_SHAPES[code]
                drawn_any += 1
        assert drawn_any > 0


def test_the_histograms_are_the_pass_counts_of_the_most_firing_neuron_of_each_kind(two, drawn):
    _, data = drawn
    figures = [f for f in data["figures"] if f["name"].startswith("histograms_")]
    assert len(figures) == 2
    for path, figure in zip(two, figures):
        with Summary.open(path) as s:
            flags, act = s.analysis.read("flags"), s.read("act_count")
            for panel in figure["panels"]:
                kind = panel["key"].removeprefix("histogram_")
                mine = kinds.has(flags, kind) & (act > 0)
                layer, neuron = np.unravel_index(np.argmax(np.where(mine, act, -1)), act.shape)
                (series,) = panel["series"]
                assert series["label"] == f"L{layer} N{neuron}"
                counts = s.read("hist_count", int(layer))[:, neuron]
                first, last = np.flatnonzero(counts)[[0, -1]]
                keep = slice(max(0, first - 1), min(len(counts), last + 2))  # its firings' bins, one more each side
                assert series["y"] == counts[keep].astype(float).tolist() and sum(series["y"]) == act[layer, neuron]
                edges = s.read("hist_edges", int(layer)).astype(np.float64)
                assert series["x"] == ((edges[:-1] + edges[1:]) / 2)[keep].tolist()
            assert len(figure["panels"]) >= 1


@pytest.mark.parametrize("fmt", ["svg", "png", "pdf"])
def test_every_file_is_a_valid_image_of_its_format(two, tmp_path, fmt, capsys):
    out = tmp_path / fmt
    assert main(["figures", str(two[0]), "-o", str(out), "--format", fmt]) == 0
    listed = capsys.readouterr().out.split()
    data = json.loads((out / "figures.json").read_text())
    assert data["files"] == [f"{f['name']}.{fmt}" for f in data["figures"]]
    assert listed == [str(out / name) for name in data["files"]] + [str(out / "figures.json")]
    for name in data["files"]:
        blob = (out / name).read_bytes()
        assert blob.startswith(MAGIC[fmt]) and len(blob) > 2000
        if fmt == "svg":
            assert b"<svg" in blob[:2000] and blob.rstrip().endswith(b"</svg>")
        if fmt == "pdf":
            assert blob.rstrip().endswith(b"%%EOF")
        if fmt == "png":
            assert blob.endswith(b"IEND\xaeB`\x82")


def test_the_same_numbers_draw_the_same_file(two, tmp_path):
    """No dates or random ids in the files: committed figures change only when their numbers do."""
    for run in ("one", "two"):
        assert main(["figures", str(two[0]), "-o", str(tmp_path / run)]) == 0
    assert (tmp_path / "one" / "dead.svg").read_bytes() == (tmp_path / "two" / "dead.svg").read_bytes()


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("neuron-tui: error: ") and "Traceback" not in err
    return err


def test_refusals_are_one_line(two, tmp_path, capsys, monkeypatch):
    bare = tiny_summary(tmp_path, "bare.h5", analysis=False)
    assert main(["figures", str(bare), "-o", str(tmp_path / "x")]) == 2
    assert "no analysis in" in one_line(capsys) and not (tmp_path / "x").exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["figures", str(two[0]), "-o", str(blocker / "sub")]) in (1, 2)
    assert "cannot create" in one_line(capsys)
    assert main(["figures", str(two[0]), "-o", str(tmp_path / "y"), "--format", "gif"]) == 2
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # not installed
    assert main(["figures", str(two[0]), "-o", str(tmp_path / "z")]) in (1, 2)
    assert "figures need matplotlib" in one_line(capsys)


@pytest.fixture(scope="module")
def three(two, tmp_path_factory):
    """A third model: three legends' entries, and depths that line up with neither of the others."""
    return (*two, tiny_summary(tmp_path_factory.mktemp("third"), "c.h5", n_layers=3, n_neurons=48, seed=5,
                               model="synthetic/shallow"))


@pytest.mark.parametrize("count", [1, 3])
def test_nothing_covers_the_title_and_counts_are_whole_numbers(two, three, count):
    """With one model and with three: the legend is below the title and above every panel, the title
    and the caption clear the panels; a panel of counts (an empty one included: no positional type of
    a summary may have any) has whole-number ticks only, never 0.000, 0.006, ..."""
    from neuron_tui.core.read.figures import figure_data
    from neuron_tui.tui.figures import _pyplot, layout

    plt = _pyplot()
    summaries = [Summary.open(p) for p in three[:count]]
    try:
        figures = figure_data(summaries)
    finally:
        for s in summaries:
            s.close()
    empty_counts = 0
    for figure in figures:
        fig = layout(figure)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        title = fig._suptitle.get_window_extent(renderer)
        boxes = [ax.get_tightbbox(renderer) for ax in fig.axes if ax.get_visible()]
        for box in boxes:
            assert not box.overlaps(title), (figure.name, "title")
        if fig.legends:
            legend = fig.legends[0].get_window_extent(renderer)
            assert not legend.overlaps(title) and legend.y1 <= title.y0 + 1, figure.name
            for box in boxes:
                assert not legend.overlaps(box), (figure.name, "legend")
        if not figure.share and not figure.xlabel.startswith("position"):
            for ax, panel in zip(fig.axes, figure.panels):
                ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
                assert ticks and all(float(t).is_integer() for t in ticks), (figure.name, panel.title, ticks)
                if all(not v for s in panel.series for v in s.y):
                    empty_counts += 1
                    assert ax.get_ylim()[1] >= 1
        plt.close(fig)
    assert empty_counts  # some count panel was all zeros, and drew 0 and 1
