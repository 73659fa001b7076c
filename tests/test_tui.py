"""Pilot tests of the explorer at 80x24: every key, and what the screen then holds."""

from __future__ import annotations

import csv
import json
import time

import h5py
import numpy as np
import pytest

from neuron_tui.cache import schema
from neuron_tui.tui.app import NeuronApp, load_keymap
from neuron_tui.tui.screens import (
    ErrorScreen,
    ExportDialog,
    HelpScreen,
    LayerScreen,
    MarkDialog,
    NeuronScreen,
    OverviewScreen,
    TooSmallScreen,
)
from neuron_tui.tui.viewmodel import show_token

from synthetic import tiny_summary

SIZE = (80, 24)
pytestmark = pytest.mark.anyio  # async tests run by anyio's pytest plugin, on asyncio


@pytest.fixture
def anyio_backend():
    return "asyncio"


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
            "vocab": [s.decode() if isinstance(s, bytes) else s for s in f["vocab"][()]],
            "n_tokens": int(f.attrs["n_tokens"]),
        }


@pytest.fixture
def fresh(tmp_path, summary):
    """A private copy of the summary (marks and exports are written next to it)."""
    path = tmp_path / "copy.h5"
    path.write_bytes(summary.read_bytes())
    return path


def screen_text(app) -> str:
    """The characters on the terminal, modal screens over their background included."""
    update = app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    return "\n".join("".join(chop.text for chop in line) for line in update.strips)


async def wait_for(pilot, cond, timeout: float = 10.0):
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out; screen:\n{screen_text(pilot.app)}")
        await pilot.pause(0.02)
    await pilot.pause()


async def ready_overview(pilot):
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, OverviewScreen) and pilot.app.screen.painted)


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
    flat = flat_text(app)
    return any(text in n.message for n in app._notifications) and words in flat


def view_ready(app, layer=None, **state):
    s = app.screen
    if not isinstance(s, LayerScreen) or s.view is None or s.table.painted is not s.view:
        return False
    if layer is not None and s.view.layer != layer:
        return False
    return all(getattr(s.view.state, k) == v for k, v in state.items())


async def open_layer(pilot, layer=0):
    await ready_overview(pilot)
    for _ in range(layer):
        await pilot.press("down")
    await pilot.press("enter")
    await wait_for(pilot, lambda: view_ready(pilot.app, layer))


def shown_ids(app) -> list[int]:
    """Neuron ids of the table rows on screen, top to bottom."""
    out = []
    for line in table_lines(app)[1:]:
        first = line.split()[0].lstrip("*") if line.split() else ""
        if first.isdigit():
            out.append(int(first))
    return out


async def type_text(pilot, text):
    for ch in text:
        await pilot.press({" ": "space", "/": "slash"}.get(ch, ch))


def table_lines(app) -> list[str]:
    """Rows of the neuron table as shown (header first)."""
    table = app.screen.table
    lines = screen_text(app).splitlines()
    top = table.region.y
    return lines[top : top + table.region.height]


# ---- overview -------------------------------------------------------------------------------------------


async def test_overview_shows_run_and_depth_bars(summary, raw):
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready_overview(pilot)
        text = screen_text(app)
        assert "synthetic/tiny-opt" in text and "2,048" in text and "ReLU: fired iff h > 0" in text
        assert "4 × 96 neurons" in text and "tiny.h5" in text
        lines = text.splitlines()
        header = next(i for i, l in enumerate(lines) if "token det." in l)
        rows = lines[header + 1 : header + 5]
        dead0 = int((raw["act_count"][0] == 0).sum())
        assert rows[0].split()[0] == "0" and f"{100 * dead0 / 96:.0f}%" in rows[0] and "█" in rows[0]
        assert [r.split()[0] for r in rows] == ["0", "1", "2", "3"]
        assert f"dead {dead0} ({100 * dead0 / 96:.1f}%)" in text  # the highlighted layer's counts
        await pilot.press("down")
        await wait_for(pilot, lambda: "L1: 96 neurons" in screen_text(app))


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
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, OverviewScreen))


# ---- layer: filters, sort, search, layers ------------------------------------------------------------------


@pytest.mark.parametrize("key, name, letter", [("d", "dead", "D"), ("r", "rare", "R"), ("t", "token", "T"),
                                                ("n", "ngram", "N"), ("p", "positional", "P")])
async def test_filter_keys(summary, raw, key, name, letter):
    layer = next(l for l in range(4) if (raw["flags"][l] & {"dead": 1, "rare": 2, "token": 4, "ngram": 8,
                                                               "positional": 16}[name]).any())
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_layer(pilot, layer)
        await pilot.press(key)
        await wait_for(pilot, lambda: view_ready(app, layer, filter=name))
        bit = {"dead": 1, "rare": 2, "token": 4, "ngram": 8, "positional": 16}[name]
        expected = np.flatnonzero(raw["flags"][layer] & bit)
        shown = shown_ids(app)
        assert shown == expected[: len(shown)].tolist() and shown
        assert all(letter in l.split()[1] for l in table_lines(app)[1 : 1 + len(shown)])
        assert f"{len(expected)} of 96 neurons" in screen_text(app)
        await pilot.press("a")
        await wait_for(pilot, lambda: view_ready(app, layer, filter="all"))
        assert "96 of 96 neurons" in screen_text(app)


async def test_sort_keys(summary, raw):
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_layer(pilot, 3)
        await pilot.press("3")  # rate, descending first
        await wait_for(pilot, lambda: view_ready(app, 3, sort="rate", descending=True))
        assert "rate▼" in table_lines(app)[0]
        top = int(table_lines(app)[1].split()[0])
        assert raw["act_count"][3, top] == raw["act_count"][3].max()
        await pilot.press("3")  # again: reversed
        await wait_for(pilot, lambda: view_ready(app, 3, sort="rate", descending=False))
        assert "rate▲" in table_lines(app)[0]
        low = int(table_lines(app)[1].split()[0])
        assert raw["act_count"][3, low] == raw["act_count"][3].min()
        await pilot.press("s")  # next column: distinct
        await wait_for(pilot, lambda: view_ready(app, 3, sort="distinct"))
        await pilot.press("S")
        await wait_for(pilot, lambda: view_ready(app, 3, sort="distinct", descending=True))
        for n, key in enumerate(["id", "cat", "rate", "distinct", "top", "pos", "supp"], start=1):
            await pilot.press(str(n))
            await wait_for(pilot, lambda: view_ready(app, 3, sort=key))


async def test_search_is_incremental_and_escape_clears(summary, raw):
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_layer(pilot, 0)
        ex = app.explorer
        await pilot.press("slash")
        await wait_for(pilot, lambda: app.screen.query_one("#search").has_focus)
        await type_text(pilot, " th")
        await wait_for(pilot, lambda: view_ready(app, 0, query=" th"))
        n_th = len(app.screen.view)
        await type_text(pilot, "e")
        await wait_for(pilot, lambda: view_ready(app, 0, query=" the"))
        view = app.screen.view
        assert len(view) <= n_th and "search ' the'" in screen_text(app)
        for i in view.order.tolist():
            texts = [raw["vocab"][t].lower() for t in raw["trig_tok"][0, i] if t >= 0]
            assert any(" the" in t for t in texts)
        await pilot.press("enter")  # back to the table, search kept
        await wait_for(pilot, lambda: app.screen.table.has_focus)
        assert app.screen.state.query == " the"
        await pilot.press("escape")  # clears the search
        await wait_for(pilot, lambda: view_ready(app, 0, query=""))
        assert len(app.screen.view) == 96 and isinstance(app.screen, LayerScreen)
        await pilot.press("escape")  # then goes back
        await wait_for(pilot, lambda: isinstance(app.screen, OverviewScreen))
        assert ex is app.explorer


async def test_brackets_change_layer_and_keep_the_filter(summary):
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_layer(pilot, 0)
        await pilot.press("t")
        await wait_for(pilot, lambda: view_ready(app, 0, filter="token"))
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: view_ready(app, 1, filter="token"))
        assert "L1/3" in screen_text(app)
        await pilot.press("left_square_bracket")
        await wait_for(pilot, lambda: view_ready(app, 0, filter="token"))
        await pilot.press("left_square_bracket")  # no layer -1: stays, says so
        await wait_for(pilot, lambda: notified(app, "no layer -1"))
        assert app.screen.layer_index == 0


async def test_table_navigation_and_paging(summary):
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_layer(pilot, 1)
        table = app.screen.table
        await pilot.press("down", "down", "j")
        assert table.cursor == 3 and table.neuron == 3
        await pilot.press("k")
        assert table.cursor == 2
        await pilot.press("pagedown")
        assert table.cursor > 10
        await pilot.press("end")
        assert table.cursor == 95
        assert table_lines(app)[-1].split()[0] == "95"  # scrolled: only the bottom rows are drawn
        await pilot.press("home")
        assert table.cursor == 0 and table_lines(app)[1].split()[0] == "0"


# ---- neuron detail -------------------------------------------------------------------------------------------


async def test_neuron_detail_shows_everything(summary, raw):
    layer = next(l for l in range(4) if (raw["flags"][l] & schema.FLAG_TOKEN).any())
    app = NeuronApp(summary)
    async with app.run_test(size=(160, 48), notifications=True) as pilot:
        await open_layer(pilot, layer)
        await pilot.press("t")
        await wait_for(pilot, lambda: view_ready(app, layer, filter="token"))
        neuron = app.screen.table.neuron
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, NeuronScreen) and app.screen.painted)
        d = app.screen.detail
        text = screen_text(app)
        assert f"L{layer} N{neuron} · token detector" in text
        for section in ("Top triggers", "P(fire|tok)", "N-gram contexts", "Promoted tokens", "Suppressed tokens",
                        "Firing rate by position", "scale 0 …", "Contexts"):
            assert section in text
        assert show_token(d.triggers[0].text) in text and f"{d.triggers[0].pfire:.2f}" in text
        assert "t=0" in text and "t=15" in text
        if any(s.is_trigger for s in d.suppressed):
            assert "◆ trigger" in text
        assert d.contexts and d.contexts[0].tokens[d.contexts[0].index].strip() in text


async def test_detail_steps_through_the_list_and_back(summary, raw):
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_layer(pilot, 0)
        await pilot.press("d")
        await wait_for(pilot, lambda: view_ready(app, 0, filter="dead"))
        order = app.screen.view.order.tolist()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, NeuronScreen) and app.screen.painted)
        assert f"L0 N{order[0]} · dead" in screen_text(app) and "never fired" in screen_text(app)
        await pilot.press("full_stop")
        await wait_for(pilot, lambda: app.screen.painted and app.screen.neuron == order[1])
        assert f"L0 N{order[1]}" in screen_text(app)
        await pilot.press("comma")
        await wait_for(pilot, lambda: app.screen.painted and app.screen.neuron == order[0])
        await pilot.press("comma")  # before the first: stays
        await pilot.pause(0.1)
        assert app.screen.neuron == order[0]
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, LayerScreen))


# ---- go to, help ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("query, layer, neuron", [("L2 N5", 2, 5), ("3/17", 3, 17), ("L1", 1, None)])
async def test_command_palette_goes_to(summary, query, layer, neuron):
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready_overview(pilot)
        await pilot.press("g")  # = ctrl+p
        await wait_for(pilot, lambda: app.screen.__class__.__name__ == "CommandPalette")
        await type_text(pilot, query)
        expected = f"Go to L{layer} N{neuron}" if neuron is not None else f"Go to layer L{layer}"
        await wait_for(pilot, lambda: expected in screen_text(app))
        await pilot.press("enter")
        if neuron is None:
            await wait_for(pilot, lambda: view_ready(app, layer))
        else:
            await wait_for(pilot, lambda: isinstance(app.screen, NeuronScreen) and app.screen.painted)
            assert (app.screen.layer_index, app.screen.neuron) == (layer, neuron)
            assert f"L{layer} N{neuron}" in screen_text(app)
            await pilot.press("escape")  # underneath: that layer's table with the neuron under the cursor
            await wait_for(pilot, lambda: view_ready(app, layer))
            assert app.screen.table.neuron == neuron


async def test_palette_says_out_of_range(summary):
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready_overview(pilot)
        await pilot.press("ctrl+p")
        await type_text(pilot, "L9 N1")
        await wait_for(pilot, lambda: "no layer 9 (layers 0..3)" in screen_text(app))


async def test_help_lists_every_key(summary):
    app = NeuronApp(summary)
    async with app.run_test(size=(160, 48), notifications=True) as pilot:
        await open_layer(pilot, 0)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.pause(0.1)
        help_text = "\n".join(f"{k} {d}" for _, keys in app.key_sections() for k, d in keys)
        for cls in (LayerScreen, NeuronScreen, NeuronApp):
            for b in cls.BINDINGS:
                assert (b.tooltip or b.description) in help_text, b.id
        for needle in ("only dead neurons", "only token detectors", "previous layer", "ctrl+p", "mark the neuron",
                       "export the marks"):
            assert needle in help_text
        shown = screen_text(app)
        assert "Keys" in shown and "only dead neurons" in shown
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, LayerScreen))


async def test_keymap_overrides_bindings_by_id(summary, tmp_path, monkeypatch):
    app = NeuronApp(summary, keymap={"layer.filter.dead": "x", "app.help": "f1"})
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_layer(pilot, 0)
        await pilot.press("d")
        await pilot.pause(0.1)
        assert app.screen.state.filter == "all"
        await pilot.press("x")
        await wait_for(pilot, lambda: view_ready(app, 0, filter="dead"))
        assert ("x", "only dead neurons (never fired)") in dict(app.key_sections())["Layer table"]
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
    keymap = tmp_path / "keys.json"
    keymap.write_text(json.dumps({"layer.filter.dead": "x"}))
    monkeypatch.setenv("NEURON_TUI_KEYMAP", str(keymap))
    assert load_keymap() == {"layer.filter.dead": "x"}


# ---- marks and export ---------------------------------------------------------------------------------------------


async def test_mark_with_note_filter_and_unmark(fresh):
    app = NeuronApp(fresh)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_layer(pilot, 1)
        await pilot.press("down", "down")
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, MarkDialog))
        assert "Mark L1 N2" in screen_text(app)
        await type_text(pilot, "odd one")
        await pilot.press("enter")
        await wait_for(pilot, lambda: view_ready(app, 1) and app.screen.view._marked == {2})
        side = json.loads((fresh.parent / "copy.h5.marks.json").read_text())
        assert [(m["layer"], m["neuron"], m["note"]) for m in side["marks"]] == [(1, 2, "odd one")]
        assert table_lines(app)[3].split()[0] == "*2"
        await pilot.press("M")
        await wait_for(pilot, lambda: view_ready(app, 1, filter="marked"))
        assert app.screen.view.order.tolist() == [2] and "Marked 1" in screen_text(app)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, NeuronScreen) and app.screen.painted)
        assert "* marked: odd one" in screen_text(app)
        await pilot.press("u")
        await wait_for(pilot, lambda: "* marked" not in screen_text(app))
        await pilot.press("escape")
        await wait_for(pilot, lambda: view_ready(app, 1, filter="marked") and len(app.screen.view) == 0)
        assert "no neurons match" in screen_text(app)
    assert json.loads((fresh.parent / "copy.h5.marks.json").read_text())["marks"] == []


@pytest.mark.parametrize("key, suffix", [("c", "csv"), ("j", "json")])
async def test_export_marks(fresh, key, suffix):
    app = NeuronApp(fresh)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_layer(pilot, 0)
        await pilot.press("e")  # nothing marked yet
        await wait_for(pilot, lambda: notified(app, "nothing to export"))
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, MarkDialog))
        await type_text(pilot, "first")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, LayerScreen))
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, ExportDialog))
        assert "Export 1 marked neuron(s)" in screen_text(app)
        await pilot.press(key)
        out = fresh.parent / f"copy-marks.{suffix}"
        await wait_for(pilot, lambda: out.exists())
        await wait_for(pilot, lambda: notified(app, "exported 1 mark(s)"))
    if suffix == "csv":
        rows = list(csv.DictReader(out.open()))
        assert [(r["layer"], r["neuron"], r["note"]) for r in rows] == [("0", "0", "first")]
    else:
        data = json.loads(out.read_text())
        assert [(m["layer"], m["neuron"], m["note"]) for m in data["marks"]] == [(0, 0, "first")]


# ---- partial, no analysis, errors, size -----------------------------------------------------------------------------


async def test_partial_summary_is_read_only(folder):
    path = tiny_summary(folder, "partial.h5", complete=False, n_seq_planned=512)
    app = NeuronApp(path)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready_overview(pilot)
        text = screen_text(app)
        assert "PARTIAL: 128 of 512 sequences collected so far; read-only" in text
        await pilot.press("enter")
        await wait_for(pilot, lambda: view_ready(app, 0))
        assert "PARTIAL" in screen_text(app)
        await pilot.press("m")
        await wait_for(pilot, lambda: notified(app, "read-only, marks are off"))
        assert not isinstance(app.screen, MarkDialog)
    assert not (folder / "partial.h5.marks.json").exists()


async def test_summary_without_analysis_says_what_to_run(folder):
    path = tiny_summary(folder, "plain.h5", analysis=False, projection=False)
    app = NeuronApp(path)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready_overview(pilot)
        text = screen_text(app)
        assert "no analysis yet: counts only; run `neuron-tui analyze" in text
        assert "token –" in text  # counts only in the layer summary line
        await pilot.press("enter")
        await wait_for(pilot, lambda: view_ready(app, 0))
        await pilot.press("t")
        await wait_for(pilot, lambda: notified(app, "token filter needs the analysis"))
        assert app.screen.state.filter == "all"
        await pilot.press("slash")
        await wait_for(pilot, lambda: notified(app, "search by trigger token needs the analysis"))
        await pilot.press("d")
        await wait_for(pilot, lambda: view_ready(app, 0, filter="dead"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, NeuronScreen) and app.screen.painted)
        assert "Top triggers, n-grams: need the analysis" in flat_text(app)
        assert "no projection group" in flat_text(app) and "never fired" in flat_text(app)


@pytest.mark.parametrize("kind, message", [
    ("missing", "no summary at"),
    ("garbage", "not a readable HDF5 file"),
    ("foreign", "not a neuron-tui summary"),
])
async def test_unusable_file_shows_a_message_and_q_quits(tmp_path, kind, message):
    path = tmp_path / "s.h5"
    if kind == "garbage":
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"junk" * 200)
    elif kind == "foreign":
        with h5py.File(path, "w") as f:
            f["x"] = np.arange(3)
    app = NeuronApp(path)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ErrorScreen))
        text = screen_text(app)
        assert "Cannot open this summary" in text and "Traceback" not in text
        assert message in widget_text(app, "#error-message")
        assert app.return_code is None
        await pilot.press("q")
        await pilot.pause(0.1)
        assert app.return_code == 0  # q quit cleanly


async def test_too_small_terminal_says_so_until_it_grows(summary):
    app = NeuronApp(summary)
    async with app.run_test(size=(60, 20), notifications=True) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, TooSmallScreen))
        assert "Terminal too small: 60×20" in screen_text(app) and "at least 80×24" in screen_text(app)
        await pilot.resize_terminal(80, 24)
        await wait_for(pilot, lambda: not isinstance(app.screen, TooSmallScreen))
        await ready_overview(pilot)
        assert "synthetic/tiny-opt" in screen_text(app)
        await pilot.resize_terminal(79, 24)
        await wait_for(pilot, lambda: isinstance(app.screen, TooSmallScreen))
        assert "79×24" in screen_text(app)


async def test_damaged_analysis_gives_a_message_not_a_traceback(tmp_path):
    path = tiny_summary(tmp_path, "damaged.h5")
    with h5py.File(path, "a") as f:
        del f["analysis/trig_tok"]
    app = NeuronApp(path)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready_overview(pilot)
        await pilot.press("enter")
        await wait_for(pilot, lambda: notified(app, "cannot read layer 0"))
        assert isinstance(app.screen, LayerScreen) and app.screen.view is None
        assert "analysis/trig_tok" in " ".join(n.message for n in app._notifications)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, OverviewScreen))
    assert app.return_code in (None, 0)
