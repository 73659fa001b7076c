"""Snapshots (pytest-textual-snapshot) of every screen of the explorer at 80x24 and 160x48.

Baselines live in tests/__snapshots__/; after a deliberate change of the look, regenerate them with
`pytest tests/test_tui_snapshots.py --snapshot-update` and look at the SVGs before committing.
Summaries are opened by a relative name from their folder, so no temporary path shows on screen.
"""

from __future__ import annotations

import time

import pytest

from neuron_tui.tui.app import NeuronApp
from neuron_tui.tui.screens import ErrorScreen, HelpScreen, LayerScreen, NeuronScreen, OverviewScreen

from synthetic import tiny_summary

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("snap")
    tiny_summary(path, "tiny.h5")
    tiny_summary(path, "partial.h5", complete=False, n_seq_planned=512, analysis=False, projection=False)
    return path


@pytest.fixture
def in_folder(folder, monkeypatch):
    monkeypatch.chdir(folder)
    return folder


async def _wait(pilot, cond, timeout=10.0):
    start = time.monotonic()
    while not cond():
        assert time.monotonic() - start < timeout, "the app did not get there"
        await pilot.pause(0.02)
    await pilot.pause()


def _overview_ready(app):
    return isinstance(app.screen, OverviewScreen) and app.screen.painted


def _layer_ready(app, **state):
    s = app.screen
    return (isinstance(s, LayerScreen) and s.view is not None and s.table.painted is s.view
            and all(getattr(s.view.state, k) == v for k, v in state.items()))


async def _to_overview(pilot):
    await _wait(pilot, lambda: _overview_ready(pilot.app))


async def _to_layer(pilot):
    await _to_overview(pilot)
    await pilot.press("down", "enter")
    await _wait(pilot, lambda: _layer_ready(pilot.app))
    await pilot.press("t")  # token detectors of layer 1, sorted by rate
    await _wait(pilot, lambda: _layer_ready(pilot.app, filter="token"))
    await pilot.press("3")
    await _wait(pilot, lambda: _layer_ready(pilot.app, filter="token", sort="rate"))


async def _to_neuron(pilot):
    await _to_layer(pilot)
    await pilot.press("enter")
    await _wait(pilot, lambda: isinstance(pilot.app.screen, NeuronScreen) and pilot.app.screen.painted)


async def _to_help(pilot):
    await _to_layer(pilot)
    await pilot.press("question_mark")
    await _wait(pilot, lambda: isinstance(pilot.app.screen, HelpScreen))


@pytest.mark.parametrize("size", SIZES)
def test_overview(snap_compare, in_folder, size):
    assert snap_compare(NeuronApp("tiny.h5"), terminal_size=size, run_before=_to_overview)


@pytest.mark.parametrize("size", SIZES)
def test_layer(snap_compare, in_folder, size):
    assert snap_compare(NeuronApp("tiny.h5"), terminal_size=size, run_before=_to_layer)


@pytest.mark.parametrize("size", SIZES)
def test_neuron(snap_compare, in_folder, size):
    assert snap_compare(NeuronApp("tiny.h5"), terminal_size=size, run_before=_to_neuron)


@pytest.mark.parametrize("size", SIZES)
def test_help(snap_compare, in_folder, size):
    assert snap_compare(NeuronApp("tiny.h5"), terminal_size=size, run_before=_to_help)


def test_partial_without_analysis(snap_compare, in_folder):
    assert snap_compare(NeuronApp("partial.h5"), terminal_size=(80, 24), run_before=_to_overview)


def test_missing_file(snap_compare, in_folder):
    async def error(pilot):
        await _wait(pilot, lambda: isinstance(pilot.app.screen, ErrorScreen))

    assert snap_compare(NeuronApp("missing.h5"), terminal_size=(80, 24), run_before=error)
