"""Snapshots (pytest-textual-snapshot) of every screen of the explorer at 80x24 and 160x48.

Baselines live in tests/__snapshots__/; after a deliberate change of the look, regenerate them with
`pytest tests/test_tui_snapshots.py --snapshot-update` and look at the SVGs before committing.
Summaries are opened by a relative name from their folder, so no temporary path shows on screen.
"""

from __future__ import annotations

import pytest
from pilot import settle, type_text
from planted import planted_corpus, save_planted, write_planted_corpus
from synthetic import tiny_summary

from neuron_tui.tui.app import NeuronApp
from neuron_tui.tui.cli import main
from neuron_tui.tui.screens.errors import ErrorScreen
from neuron_tui.tui.screens.help import HelpScreen
from neuron_tui.tui.screens.layer import LayerScreen
from neuron_tui.tui.screens.neuron import NeuronScreen
from neuron_tui.tui.screens.overview import OverviewScreen
from neuron_tui.tui.screens.probe import ProbeScreen

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("snap")
    tiny_summary(path, "tiny.h5")
    tiny_summary(path, "partial.h5", complete=False, n_seq_planned=512, analysis=False, projection=False)
    return path


@pytest.fixture(scope="module")
def planted_folder(tmp_path_factory):
    """The planted OPT's folder and its summary planted.h5, collected by the command line (the
    probe needs the model the summary names)."""
    path = tmp_path_factory.mktemp("snap-probe")
    model, _ = save_planted(path / "planted-opt")
    corpus = write_planted_corpus(planted_corpus(n_seq=64), path / "corpus.jsonl")
    assert main(["collect", str(model), "--corpus", str(corpus), "--tokens", "2048", "--seq-len", "32",
                 "--batch-size", "16", "--out", str(path / "planted.h5"), "--quiet"]) == 0
    return path


@pytest.fixture
def in_folder(folder, monkeypatch):
    monkeypatch.chdir(folder)
    return folder


async def _to_overview(pilot):
    await settle(pilot)
    assert isinstance(pilot.app.screen, OverviewScreen)


async def _to_layer(pilot):
    await _to_overview(pilot)
    for keys in (("down", "enter"), ("t",), ("3",)):  # token detectors of layer 1, sorted by rate
        await pilot.press(*keys)
        await settle(pilot)
    s = pilot.app.screen
    assert isinstance(s, LayerScreen) and (s.view.state.filter, s.view.state.sort) == ("token", "rate")


async def _to_neuron(pilot):
    await _to_layer(pilot)
    await pilot.press("enter")
    await settle(pilot)
    assert isinstance(pilot.app.screen, NeuronScreen) and pilot.app.screen.record is not None


async def _to_help(pilot):
    await _to_layer(pilot)
    await pilot.press("question_mark")
    await settle(pilot)
    assert isinstance(pilot.app.screen, HelpScreen)


async def _to_plots(pilot):
    await _to_overview(pilot)
    await pilot.press("v")
    await settle(pilot)
    assert pilot.app.screen.query_one("#plots").display


SCREENS = {"overview": _to_overview, "overview_plots": _to_plots, "layer": _to_layer, "neuron": _to_neuron,
           "help": _to_help}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen(snap_compare, in_folder, screen, size):
    assert snap_compare(NeuronApp("tiny.h5"), terminal_size=size, run_before=SCREENS[screen])


def test_partial_without_analysis(snap_compare, in_folder):
    assert snap_compare(NeuronApp("partial.h5"), terminal_size=(80, 24), run_before=_to_overview)


def test_missing_file(snap_compare, in_folder):
    async def error(pilot):
        await settle(pilot)
        assert isinstance(pilot.app.screen, ErrorScreen)

    assert snap_compare(NeuronApp("missing.h5"), terminal_size=(80, 24), run_before=error)


async def _to_probe(pilot):
    """L0 N1 (the planted detector of t05), a text through the probe, the cursor on its first t05, ablated."""
    await _to_overview(pilot)
    await pilot.press("g")
    await type_text(pilot, "L0 N1")
    for keys in (("enter",), ("i",)):
        await pilot.press(*keys)
        await settle(pilot)
    await type_text(pilot, "t04 t05 t07 t09 t11 t05 t13")
    for keys in (("enter",), ("right", "right"), ("z",)):
        await pilot.press(*keys)
        await settle(pilot)
    s = pilot.app.screen
    assert isinstance(s, ProbeScreen) and s.position == 2 and s.result["ablation"]["mode"] == "zero"


@pytest.mark.parametrize("size", SIZES)
def test_probe(snap_compare, planted_folder, monkeypatch, size):
    monkeypatch.chdir(planted_folder)
    assert snap_compare(NeuronApp("planted.h5"), terminal_size=size, run_before=_to_probe)
