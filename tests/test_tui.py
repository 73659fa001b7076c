"""Pilot tests of the explorer at 80x24: every key, and what the screen then holds.

Tests wait with Textual's own means (`settle`: every worker done, every message handled, the screen
repainted), never with polling against a clock.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest
from edit import raw_vocab
from pilot import press, screen_text, settle, type_text
from synthetic import tiny_summary

from neuron_tui.core.read import kinds
from neuron_tui.core.read.api import SummaryFile
from neuron_tui.core.read.tokens import visible
from neuron_tui.tui import screens, widgets
from neuron_tui.tui.app import NeuronApp
from neuron_tui.tui.keys import KEYED, known_binding_ids, load_keymap
from neuron_tui.tui.present.formats import share_text
from neuron_tui.tui.present.help import LEGEND
from neuron_tui.tui.screens.dialogs import ExportDialog, MarkDialog
from neuron_tui.tui.screens.errors import ErrorScreen, TooSmallScreen
from neuron_tui.tui.screens.help import HelpScreen
from neuron_tui.tui.screens.layer import LayerScreen
from neuron_tui.tui.screens.neuron import NeuronScreen
from neuron_tui.tui.screens.overview import OverviewScreen

SIZE = (80, 24)
pytestmark = pytest.mark.anyio  # async tests run by anyio's pytest plugin, on asyncio


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("tui")


@pytest.fixture(scope="module")
def summary(folder):
    return tiny_summary(folder)


@pytest.fixture(scope="module")
def raw(summary):
    with h5py.File(summary, "r") as f:
        return {
            "act_count": f["act_count"][()],
            "flags": f["analysis/flags"][()],
            "trig_tok": f["analysis/trig_tok"][()],
            "vocab": raw_vocab(f),
            "n_tokens": int(f.attrs["n_tokens"]),
        }


@pytest.fixture
def fresh(tmp_path, summary, monkeypatch):
    """A private copy of the summary (marks are written next to it, exports to the current folder)."""
    path = tmp_path / "copy.h5"
    path.write_bytes(summary.read_bytes())
    monkeypatch.chdir(tmp_path)
    return path


def flat_text(app) -> str:
    """The screen's words joined by single spaces (phrases wrapped over lines still match)."""
    return " ".join(screen_text(app).split())


def widget_text(app, selector: str) -> str:
    """The words inside one widget's content region, joined by single spaces: a phrase wrapped over
    several lines of a bordered box still matches, wherever the wrap falls (it depends on the length
    of the temporary path in the message)."""
    region = app.screen.query_one(selector).content_region
    lines = screen_text(app).splitlines()[region.y : region.bottom]
    return " ".join(" ".join(line[region.x : region.right] for line in lines).split())


def notified(app, text: str) -> bool:
    """A toast holding `text` is on screen (toasts wrap long lines, so its first words are looked for)."""
    words = " ".join(text.split()[:3])
    return any(text in n.message for n in app._notifications) and words in flat_text(app)


def assert_view(app, layer, **state) -> None:
    """The layer screen shows `layer` in `state`."""
    s = app.screen
    assert isinstance(s, LayerScreen) and s.view is not None and s.view.layer == layer, screen_text(app)
    for k, v in state.items():
        assert getattr(s.view.state, k) == v, (k, s.view.state)


async def open_layer(pilot, layer=0):
    await settle(pilot)
    for _ in range(layer):
        await pilot.press("down")
    await press(pilot, "enter")
    assert_view(pilot.app, layer)


def table_lines(app) -> list[str]:
    """Rows of the neuron table as shown (header first)."""
    table = app.screen.table
    lines = screen_text(app).splitlines()
    return lines[table.region.y : table.region.y + table.region.height]


def shown_ids(app) -> list[int]:
    """Neuron ids of the table rows on screen, top to bottom."""
    out = []
    for line in table_lines(app)[1:]:
        first = line.split()[0].lstrip("*") if line.split() else ""
        if first.isdigit():
            out.append(int(first))
    return out


# ---- overview -------------------------------------------------------------------------------------------


async def test_overview_shows_run_and_depth_bars_with_their_scale(summary, raw):
    """Wide: a bar per kind on one scale, given in the title; at 80 columns every kind's share, whole."""
    dead = (raw["act_count"] == 0).sum(1) / 96
    shares = [dead, *((kinds.has(raw["flags"], k).sum(1) / 96) for k in kinds.NAMES if k != "dead")]
    top = max(s.max() for s in shares)
    app = NeuronApp(summary)
    async with app.run_test(size=(160, 30), notifications=True) as pilot:
        await settle(pilot)
        lines = screen_text(app).splitlines()
        assert f"overview · bars to {100 * top:.0f}% · enter opens a layer" in lines[0] and top == dead.max()
        header = next(i for i, l in enumerate(lines) if " dead" in l and "token" in l)
        rows = lines[header + 1 : header + 5]
        full = int(np.argmax(dead))
        assert "█████" in rows[full]  # the largest share draws the full bar
        # layer 1 holds the largest rare, token and positional shares, yet none of them reaches dead's 39%:
        # on one scale no bar of layer 1 is full (each column on its own scale drew three full bars there)
        assert "█████" not in rows[1]
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, OverviewScreen)
        text = screen_text(app)
        assert "synthetic/tiny-opt" in text and "2,048" in text and "ReLU: fired iff h > 0" in text
        assert "4 × 96 neurons" in text and "tiny.h5" in text
        lines = text.splitlines()
        assert "overview · shares of each layer" in lines[0]  # no room for bars beside nine kinds
        header = next(i for i, l in enumerate(lines) if " dead" in l and "token" in l)
        shown = [k for k in kinds.KINDS if kinds.has(raw["flags"], k.name).any()]
        assert lines[header].split() == ["L", *(k.column for k in shown)]
        rows = lines[header + 1 : header + 5]
        assert [r.split()[0] for r in rows] == ["0", "1", "2", "3"]
        for layer, row in enumerate(rows):
            assert row.split()[1:] == [share_text(kinds.has(raw["flags"], k.name)[layer].sum() / 96) for k in shown]
        assert f"dead {int(dead[0] * 96)} ({100 * dead[0]:.0f}%)" in text  # the highlighted layer's counts
        await press(pilot, "down")
        assert "L1: 96 neurons" in screen_text(app)


async def test_enter_opens_the_layer_table(summary, raw):
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_layer(pilot, 2)
        lines = table_lines(app)
        assert "neuron" in lines[0] and "rate" in lines[0] and "top triggers" in lines[0] and "supp" in lines[0]
        assert lines[1].split()[0] == "0" and lines[2].split()[0] == "1"
        rate1 = raw["act_count"][2, 1] / raw["n_tokens"]
        assert f"{rate1:.3g}" in lines[2]
        assert "L2/3 · 96 of 96 neurons" in screen_text(app)
        assert len(lines) == app.screen.table.region.height
        await press(pilot, "escape")
        assert isinstance(app.screen, OverviewScreen)


# ---- layer: filters, sort, search, layers ------------------------------------------------------------------

BITS = {"dead": 1, "rare": 2, "token": 4, "ngram": 8, "positional": 16}


@pytest.mark.parametrize("key, name, letter", [("d", "dead", "D"), ("r", "rare", "R"), ("t", "token", "T"),
                                                ("n", "ngram", "N"), ("p", "positional", "P")])
async def test_filter_keys(summary, raw, key, name, letter):
    layer = next(l for l in range(4) if (raw["flags"][l] & BITS[name]).any())
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_layer(pilot, layer)
        await press(pilot, key)
        assert_view(app, layer, filter=name)
        expected = np.flatnonzero(raw["flags"][layer] & BITS[name])
        shown = shown_ids(app)
        assert shown == expected[: len(shown)].tolist() and shown
        assert all(letter in l.split()[1] for l in table_lines(app)[1 : 1 + len(shown)])
        assert f"{len(expected)} of 96 neurons" in screen_text(app)
        await press(pilot, "a")
        assert_view(app, layer, filter="all")
        assert "96 of 96 neurons" in screen_text(app)


async def test_sort_keys(summary, raw):
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_layer(pilot, 3)
        await press(pilot, "3")  # rate, descending first
        assert_view(app, 3, sort="rate", descending=True)
        assert "rate▼" in table_lines(app)[0]
        top = int(table_lines(app)[1].split()[0])
        assert raw["act_count"][3, top] == raw["act_count"][3].max()
        await press(pilot, "3")  # again: reversed
        assert_view(app, 3, sort="rate", descending=False)
        assert "rate▲" in table_lines(app)[0]
        low = int(table_lines(app)[1].split()[0])
        assert raw["act_count"][3, low] == raw["act_count"][3].min()
        await press(pilot, "s")  # next column: distinct
        assert_view(app, 3, sort="distinct")
        await press(pilot, "S")
        assert_view(app, 3, sort="distinct", descending=True)
        for n, key in enumerate(["id", "cat", "rate", "distinct", "top", "pos", "supp"], start=1):
            await press(pilot, str(n))
            assert_view(app, 3, sort=key)


async def test_supp_ranks_are_one_based_everywhere(summary):
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_layer(pilot, 1)
        await press(pilot, "7")  # sort by supp: the best rank first
        table = app.screen.view.table
        best = int(table.supp[table.supp >= 0].min())  # stored 0-based
        assert table_lines(app)[1].split()[-1] == f"#{best + 1}"
        neuron = app.screen.table.neuron
        await press(pilot, "enter")
        record = app.screen.record
        ranks = [t["supp_rank"] for t in record["triggers"] if t["supp_rank"] is not None]
        assert min(ranks) == best + 1 and f"#{best + 1}" in screen_text(app)
        assert record["index"] == neuron


async def test_search_is_incremental_and_escape_clears(summary, raw):
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_layer(pilot, 0)
        ex = app.explorer
        await press(pilot, "slash")
        assert app.screen.query_one("#search").has_focus
        await type_text(pilot, " th")
        assert_view(app, 0, query=" th")
        await type_text(pilot, "e")
        assert_view(app, 0, query=" the")
        view = app.screen.view
        assert "search ' the'" in screen_text(app)
        for i in view.order.tolist():  # the whole token: ` the`, not ` there`
            assert " the" in [raw["vocab"][t] for t in raw["trig_tok"][0, i] if t >= 0]
        await press(pilot, "enter")  # back to the table, search kept
        assert app.screen.table.has_focus and app.screen.state.query == " the"
        await press(pilot, "escape")  # clears the search
        assert_view(app, 0, query="")
        assert len(app.screen.view) == 96
        await press(pilot, "escape")  # then goes back
        assert isinstance(app.screen, OverviewScreen) and ex is app.explorer


async def test_brackets_change_layer_and_keep_the_filter(summary):
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_layer(pilot, 0)
        await press(pilot, "t")
        assert_view(app, 0, filter="token")
        await press(pilot, "right_square_bracket")
        assert_view(app, 1, filter="token")
        assert "L1/3" in screen_text(app)
        await press(pilot, "left_square_bracket")
        assert_view(app, 0, filter="token")
        await press(pilot, "left_square_bracket")  # no layer -1: stays, says so
        assert notified(app, "no layer -1") and app.screen.layer_index == 0


async def test_table_navigation_and_paging(summary):
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_layer(pilot, 1)
        table = app.screen.table
        await press(pilot, "down", "down", "j")
        assert table.cursor == 3 and table.neuron == 3
        await press(pilot, "k")
        assert table.cursor == 2
        await press(pilot, "pagedown")
        assert table.cursor > 10
        await press(pilot, "end")
        assert table.cursor == 95
        assert table_lines(app)[-1].split()[0] == "95"  # scrolled: only the bottom rows are drawn
        await press(pilot, "home")
        assert table.cursor == 0 and table_lines(app)[1].split()[0] == "0"


# ---- neuron detail -------------------------------------------------------------------------------------------


async def test_neuron_detail_shows_everything(summary, raw):
    layer = next(l for l in range(4) if (kinds.has(raw["flags"][l], "token")).any())
    app = NeuronApp(summary)
    async with app.run_test(size=(160, 48), notifications=True) as pilot:
        await open_layer(pilot, layer)
        await press(pilot, "t")
        neuron = app.screen.table.neuron
        await press(pilot, "enter")
        assert isinstance(app.screen, NeuronScreen)
        r = app.screen.record
        text = screen_text(app)
        assert f"L{layer} N{neuron} · token detector" in text
        for section in ("Top triggers", "P(fire|tok)", "N-gram contexts", "Promoted tokens", "Suppressed tokens",
                        "Rate by position", "peak", "Contexts", "largest h", "mean h"):
            assert section in text
        first = r["triggers"][0]
        assert f"{first['p_fire']:.2f}" in text
        # the first token detector of the layer: its first trigger is counted in the criterion, marked ● before it
        assert first["explains"] and f"● {visible(first['text'])}" in text
        assert "● criterion ○ covered" in text  # the legend of the marks
        assert "t=0" in text and "t=15" in text
        # and one of its suppressed tokens is one of its triggers
        assert any(s["is_trigger"] for s in r["suppressed"]) and "◆ trigger" in text
        assert r["contexts"] and r["contexts"][0]["token"].strip() in text


async def test_detail_steps_and_the_table_follows(summary, raw):
    """`,` `.` step through the table's list; escape returns to the table with the cursor on the
    neuron shown last (not the one first opened), and that row on screen."""
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_layer(pilot, 0)
        await press(pilot, "d")
        order = app.screen.view.order.tolist()
        await press(pilot, "enter")
        assert f"L0 N{order[0]} · dead" in screen_text(app) and "never fired" in screen_text(app)
        await press(pilot, "full_stop")
        assert app.screen.neuron == order[1] and f"L0 N{order[1]}" in screen_text(app)
        await press(pilot, "comma")
        assert app.screen.neuron == order[0]
        await press(pilot, "comma")  # before the first: stays
        assert app.screen.neuron == order[0]
        for _ in range(len(order) - 1):
            await pilot.press("full_stop")
        await settle(pilot)
        assert app.screen.neuron == order[-1]
        await press(pilot, "escape")
        assert_view(app, 0, filter="dead")
        assert app.screen.table.neuron == order[-1] and order[-1] in shown_ids(app)
        await press(pilot, "enter")  # reopens the neuron the cursor is on
        assert app.screen.neuron == order[-1]


async def test_a_dead_neurons_contexts_say_they_are_below_tau(summary, raw):
    app = NeuronApp(summary)
    async with app.run_test(size=(120, 48), notifications=True) as pilot:
        await open_layer(pilot, 0)
        await press(pilot, "d", "enter")
        r = app.screen.record
        assert r["categories"] == ["dead"]
        if r["contexts"]:  # a synthetic dead neuron may keep no context at all
            assert "none above tau" in flat_text(app)
        else:
            assert "none: the neuron never fired" in flat_text(app)


# ---- go to, help ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("query, layer, neuron", [("L2 N5", 2, 5), ("3/17", 3, 17), ("L1", 1, None), ("1/77", 1, 77)])
async def test_command_palette_goes_to(summary, query, layer, neuron):
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(pilot)
        await press(pilot, "g")  # = ctrl+p
        assert app.screen.__class__.__name__ == "CommandPalette"
        await type_text(pilot, query)
        expected = f"Go to L{layer} N{neuron}" if neuron is not None else f"Go to layer L{layer}"
        assert expected in screen_text(app)
        await press(pilot, "enter")
        if neuron is None:
            assert_view(app, layer)
            return
        assert isinstance(app.screen, NeuronScreen) and (app.screen.layer_index, app.screen.neuron) == (layer, neuron)
        assert f"L{layer} N{neuron}" in screen_text(app)
        await press(pilot, "escape")  # underneath: that layer's table, the neuron under the cursor and on screen
        assert_view(app, layer)
        assert app.screen.table.neuron == neuron and neuron in shown_ids(app)
        await press(pilot, "down")  # one step from there, not a jump
        assert app.screen.table.neuron == neuron + 1 and neuron + 1 in shown_ids(app)


async def test_palette_says_out_of_range(summary):
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(pilot)
        await press(pilot, "ctrl+p")
        await type_text(pilot, "L9 N1")
        assert "no layer 9 (layers 0..3)" in screen_text(app)


async def test_help_lists_every_key_and_the_legend(summary):
    app = NeuronApp(summary)
    async with app.run_test(size=(160, 48), notifications=True) as pilot:
        await open_layer(pilot, 0)
        await press(pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        help_text = "\n".join(f"{k} {d}" for _, keys in app.key_sections() for k, d in keys)
        for keyed in KEYED:  # every binding the help lists, the app's own included
            for b in keyed.bindings if keyed.section else ():
                assert (b.tooltip or b.description) in help_text, b.id
        assert all(b in KEYED[0].bindings for b in NeuronApp.BINDINGS)
        for key, meaning in LEGEND:
            assert meaning in help_text
        shown = screen_text(app)
        assert "Keys" in shown and "only dead neurons" in shown
        await press(pilot, "escape")
        assert isinstance(app.screen, LayerScreen)


async def test_a_rebound_key_works_and_shows_in_help(summary):
    app = NeuronApp(summary, keymap={"layer.filter.dead": "x", "app.help": "f1"})
    async with app.run_test(size=(160, 48), notifications=True) as pilot:
        await open_layer(pilot, 0)
        await press(pilot, "d")
        assert app.screen.state.filter == "all"
        await press(pilot, "x")
        assert_view(app, 0, filter="dead")
        await press(pilot, "f1")
        assert isinstance(app.screen, HelpScreen)
        assert re.search(r"│\s+x\s+only dead neurons", screen_text(app))  # the help box's row of that binding
        assert not re.search(r"│\s+d\s+only dead neurons", screen_text(app))


def test_keymap_file_warnings(tmp_path, monkeypatch):
    keymap = tmp_path / "keys.json"
    monkeypatch.setenv("NEURON_TUI_KEYMAP", str(keymap))
    keymap.write_text(json.dumps({"layer.filter.dead": "x"}))
    assert load_keymap() == ({"layer.filter.dead": "x"}, "")
    keymap.write_text(json.dumps({"layer.filter.dead": "x", "layer.filter.deaf": "y"}))
    mapping, warning = load_keymap()
    assert mapping == {"layer.filter.dead": "x"} and "unknown binding id(s) layer.filter.deaf" in warning
    keymap.write_text("{not json")
    mapping, warning = load_keymap()
    assert mapping == {} and "unreadable" in warning and "\n" not in warning
    keymap.write_text(json.dumps(["x"]))
    assert load_keymap()[1].endswith("default keys")
    assert {"layer.filter.dead", "app.help", "neuron.next", "table.open"} <= known_binding_ids()


def test_every_binding_of_every_screen_and_widget_is_registered_once():
    """Help and keymap derive from keys.KEYED: a screen or widget with bindings that is missing there
    (or listed twice) would show no help and refuse its ids in a keymap."""
    owners = [getattr(module, name) for module in (screens, widgets) for name in dir(module)]
    bound = [cls for cls in owners if isinstance(cls, type) and cls.__module__.startswith("neuron_tui.tui")
             and cls.__dict__.get("BINDINGS")]
    assert {"LayerScreen", "NeuronTable", "ProbeScreen", "TooSmallScreen"} <= {cls.__name__ for cls in bound}
    registered = [b for keyed in KEYED for b in keyed.bindings]
    for cls in bound:
        assert all(registered.count(b) == 1 for b in cls.BINDINGS), cls.__name__
    ids = [b.id for b in registered if getattr(b, "id", None)]
    assert len(ids) == len(set(ids)) and set(ids) == known_binding_ids()


async def test_a_keymap_warning_is_shown(summary):
    app = NeuronApp(summary, keymap_warning="keymap k.json: unknown binding id(s) nope ignored")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(pilot)
        assert notified(app, "keymap k.json: unknown binding id(s) nope ignored")


# ---- marks and export ---------------------------------------------------------------------------------------------


async def test_mark_with_note_filter_and_unmark(fresh):
    app = NeuronApp(fresh)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_layer(pilot, 1)
        await press(pilot, "down", "down", "m")
        assert isinstance(app.screen, MarkDialog) and "Mark L1 N2" in screen_text(app)
        await type_text(pilot, "odd one")
        await press(pilot, "enter")
        assert_view(app, 1)
        assert app.screen.view._marked == {2}
        side = json.loads((fresh.parent / "copy.h5.marks.json").read_text())
        assert [(m["layer"], m["neuron"], m["note"]) for m in side["marks"]] == [(1, 2, "odd one")]
        assert table_lines(app)[3].split()[0] == "*2"
        await press(pilot, "M")
        assert_view(app, 1, filter="marked")
        assert app.screen.view.order.tolist() == [2] and "M marked 1" in screen_text(app)
        await press(pilot, "enter")
        assert "* marked: odd one" in screen_text(app)
        await press(pilot, "u")
        assert "* marked" not in screen_text(app)
        await press(pilot, "escape")
        assert_view(app, 1, filter="marked")
        assert len(app.screen.view) == 0 and "no marked neuron in L1 · a shows all 96" in screen_text(app)
    assert json.loads((fresh.parent / "copy.h5.marks.json").read_text())["marks"] == []


@pytest.mark.parametrize("suffix", ["csv", "json"])
async def test_export_asks_where_and_labels_the_triggers(fresh, suffix):
    app = NeuronApp(fresh)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_layer(pilot, 1)
        await press(pilot, "e")  # nothing marked yet
        assert notified(app, "nothing to export")
        await press(pilot, "t")
        neuron = int(app.screen.view.order[0])
        await press(pilot, "m")
        await type_text(pilot, "first")
        await press(pilot, "enter", "e")
        assert isinstance(app.screen, ExportDialog) and "Export 1 marked neuron(s)" in screen_text(app)
        path_box = app.screen.query_one("#export-path")
        assert path_box.value == str(fresh.parent / "copy-marks.csv")  # the current folder by default
        out = fresh.parent / "exports" / f"mine.{suffix}"
        out.parent.mkdir()
        path_box.value = str(out)
        await press(pilot, "enter")
        assert out.exists() and notified(app, "exported 1 mark(s)")
        record = app.explorer.neuron(1, neuron)
    if suffix == "csv":
        (row,) = list(csv.DictReader(out.open()))
        assert (row["layer"], row["neuron"], row["note"]) == ("1", str(neuron), "first")
        first = record["triggers"][0]
        assert row["trigger1_text"] == first["text"] and float(row["trigger1_count"]) == first["count"]
        assert float(row["trigger1_p_fire"]) == pytest.approx(first["p_fire"])
        assert row["trigger1_supp_rank"] == ("" if first["supp_rank"] is None else str(first["supp_rank"]))
    else:
        data = json.loads(out.read_text())
        (mark,) = data["marks"]
        assert mark.pop("note") == "first" and mark == json.loads(json.dumps(record))  # the neuron --json record


# ---- partial, no analysis, errors, size -----------------------------------------------------------------------------


async def test_partial_summary_is_read_only(folder):
    path = tiny_summary(folder, "partial.h5", complete=False, n_seq_planned=512)
    app = NeuronApp(path)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(pilot)
        assert "PARTIAL: 128 of 512 sequences collected so far; read-only" in screen_text(app)
        await press(pilot, "enter")
        assert "PARTIAL" in screen_text(app)
        await press(pilot, "m")
        assert notified(app, "read-only, marks are off") and not isinstance(app.screen, MarkDialog)
    assert not (folder / "partial.h5.marks.json").exists()


async def test_summary_without_analysis_says_what_to_run(folder):
    path = tiny_summary(folder, "plain.h5", analysis=False, projection=False)
    app = NeuronApp(path)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "no analysis yet: counts only; run `neuron-tui analyze" in text
        header = next(line for line in text.splitlines() if " dead" in line)
        assert "token" not in header  # the kinds that need the analysis take no column until it is run
        await press(pilot, "enter", "t")
        assert notified(app, "token filter needs the analysis") and app.screen.state.filter == "all"
        await press(pilot, "slash")
        assert notified(app, "search by trigger token needs the analysis")
        await press(pilot, "d")
        assert_view(app, 0, filter="dead")
        await press(pilot, "enter")
        # the neuron's triggers are analysed on the spot; its updates need the projection group
        assert "Top triggers · computed now" in flat_text(app)
        assert "no projection group" in flat_text(app)


@pytest.mark.parametrize("kind, message", [
    ("missing", "no summary at"),
    ("garbage", "is a damaged HDF5 file"),
    ("foreign", "not a neuron-tui summary"),
    ("folder", "is a folder, not a summary file"),
])
async def test_unusable_file_shows_a_message_and_q_quits(tmp_path, kind, message):
    path = tmp_path / "s.h5"
    if kind == "garbage":
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"junk" * 200)
    elif kind == "foreign":
        with h5py.File(path, "w") as f:
            f["x"] = np.arange(3)
    elif kind == "folder":
        path.mkdir()
    app = NeuronApp(path)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, ErrorScreen)
        text = screen_text(app)
        assert "Cannot open this summary" in text and "Traceback" not in text
        assert message in widget_text(app, "#error-message")
        assert app.return_code is None
        await press(pilot, "q")
    assert app.return_code == 0  # q quit cleanly


async def test_too_small_terminal_says_so_until_it_grows(summary):
    app = NeuronApp(summary)
    async with app.run_test(size=(60, 20), notifications=True) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, TooSmallScreen)
        assert "Terminal too small: 60×20" in screen_text(app) and "at least 80×24" in screen_text(app)
        await pilot.resize_terminal(80, 24)
        await settle(pilot)
        assert not isinstance(app.screen, TooSmallScreen) and "synthetic/tiny-opt" in screen_text(app)
        await pilot.resize_terminal(79, 24)
        await settle(pilot)
        assert isinstance(app.screen, TooSmallScreen) and "79×24" in screen_text(app)


async def test_a_damaged_dataset_is_named_on_screen(tmp_path):
    path = tiny_summary(tmp_path, "damaged.h5")
    with h5py.File(path, "a") as f:
        del f["analysis/trig_tok"]
    app = NeuronApp(path)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, ErrorScreen)
        assert "analysis/trig_tok" in widget_text(app, "#error-message")
        assert app.return_code is None  # still running, showing the error
        await press(pilot, "q")
    assert app.return_code == 0


async def test_the_overview_plot_view_draws_the_figures_curves(summary):
    from neuron_tui.core.read.figures import depth_figures
    from neuron_tui.tui.widgets import PositionPlot

    app = NeuronApp(summary)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(pilot)
        await press(pilot, "v")
        plots = app.screen.query(PositionPlot)
        figures = depth_figures([app.explorer.file.summary])
        curves = [p.series[0].y for f in figures for p in f.panels]
        unknown = [c for c in curves if all(v is None for v in c)]  # mixed-sign: no sign cases in a ReLU model
        curves = [c for c in curves if c not in unknown]
        titles = [str(w.render()) for w in app.screen.query(".plot-title")]
        assert len(unknown) == 1 and sum("– (not known for this summary)" in t for t in titles) == 1
        assert len(plots) == len(curves) and not app.screen.query_one("#layers").display
        for plot, curve in zip(plots, curves):  # the same numbers as `neuron-tui figures`
            np.testing.assert_array_equal(plot.values, [0.0 if v is None else v for v in curve])
        text = screen_text(app)
        assert "curves over depth" in text and "Dead, silent and faint neurons · dead" in text and "scale 0 …" in text
        assert "L0" in text
        await press(pilot, "v")
        assert app.screen.query_one("#layers").display and not app.screen.query_one("#plots").display
        await press(pilot, "enter")  # the table is back, with the focus
        assert isinstance(app.screen, LayerScreen)


# ---- the presentation: one for the command line and the explorer --------------------------------------------------


def test_the_presentation_imports_no_textual():
    code = ("import sys, neuron_tui.tui.present.layers, neuron_tui.tui.present.neuron, neuron_tui.tui.present.probe, "
            "neuron_tui.tui.present.help; print(any(m.split('.')[0] == 'textual' for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_neuron_command_prints_the_neuron_screens_sections(summary, capsys):
    """`neuron-tui neuron` stacks the sections the neuron screen places: each one, drawn at the panel's
    inner width, stands line for line in the command's output."""
    from rich.console import Console

    from neuron_tui.tui.cli import main
    from neuron_tui.tui.present import neuron as sections

    with SummaryFile.open(summary) as s:
        record = s.neuron(0, 13)
    assert main(["neuron", str(summary), "0", "13"]) == 0
    printed = [line[2:-2].rstrip() for line in capsys.readouterr().out.splitlines()[1:-1]]  # inside the border
    assert printed[0] == sections.heading(record)

    def drawn(renderable) -> list[str]:
        console = Console(width=76, record=True, file=io.StringIO())
        console.print(renderable)
        return [line.rstrip() for line in console.export_text().splitlines()]

    for section in (sections.triggers_table(record), sections.ngrams_table(record), sections.position_title(record)):
        lines = drawn(section)
        start = printed.index(lines[0])
        assert printed[start : start + len(lines)] == lines


def test_one_plot_draws_positions_and_depth():
    """The plot of the neuron screen, the overview's curves and the neuron command: rows of eighth
    blocks scaled to the largest value, the scale on the left, the first and last x below."""
    from neuron_tui.tui.present.plot import plot

    assert plot(np.array([0.0, 0.5, 1.0]), width=8 + 6, height=3).plain.splitlines() == [
        "      1┤    ██", "      0┤  ████", "        t=0t=2"]
    lines = plot(np.eye(1, 2048, 1000)[0], width=8 + 64, height=2, x_label="L{}", x_unit="layers").plain.splitlines()
    assert lines[0].count("█") == 1 and len(lines[0]) == 8 + 64  # a one-position peak survives 32 per column
    assert lines[1].split() == ["L0", "32", "layers", "per", "column", "L2047"]
