"""The explorer at 80x24 with nothing cut that must show: whole ranks, whole trigger tokens, the whole
firing rule; an empty view that says why; a filter bar and category column that scale with the count
of kinds (the picker `f` lists every kind); the search's whole-token and part-of-a-token modes."""

from __future__ import annotations

import pytest
from pilot import press, screen_text, settle, type_text
from synthetic import make_summary, tiny_summary
from test_tui import assert_view, flat_text, open_layer, table_lines
from textual.keys import format_key

from neuron_tui.core.read import kinds
from neuron_tui.core.read.api import SummaryFile
from neuron_tui.core.read.tokens import visible
from neuron_tui.tui.app import NeuronApp
from neuron_tui.tui.present.formats import rank_text
from neuron_tui.tui.screens.kinds import FilterPicker
from neuron_tui.tui.screens.neuron import NeuronScreen
from neuron_tui.tui.viewmodel import COLUMNS, kinds_per_neuron
from neuron_tui.tui.widgets import layout_columns

SIZE = (80, 24)
pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    return tiny_summary(tmp_path_factory.mktemp("narrow"))


@pytest.fixture(scope="module")
def wide_vocab(tmp_path_factory):
    """A vocabulary of 50,000 tokens: suppression ranks of five digits."""
    return make_summary(tmp_path_factory.mktemp("wide") / "wide.h5", 2, 64, seq_len=16, n_seq=128, vocab=50_000,
                        seed=3)


async def test_ranks_of_five_digits_show_whole(wide_vocab):
    with SummaryFile.open(wide_vocab) as s:
        ranks = sorted({r["supp_rank"] for r in s.neurons(0) if r["supp_rank"]}, reverse=True)
    assert ranks[0] >= 10_000
    app = NeuronApp(wide_vocab)
    async with app.run_test(size=SIZE) as pilot:
        await open_layer(pilot, 0)
        await press(pilot, "7")  # sort by supp; again: largest first
        await press(pilot, "7")
        rows = table_lines(app)[1:]
        shown = [row.split()[-1] for row in rows if row.split()]
        assert shown[: len(ranks[:5])] == [rank_text(r) for r in ranks[:5]]  # `#22153`, never `#2215`


async def test_the_neuron_screen_shows_every_trigger_token_whole(summary):
    with SummaryFile.open(summary) as s:
        layer, index = next((l, int(i)) for l in range(s.n_layers)
                            for i in s.table(l).select("token", sort="distinct", descending=True))
        record = s.neuron(layer, index)
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await type_text(pilot, f"L{layer} N{index}")
        await press(pilot, "enter")
        assert isinstance(app.screen, NeuronScreen) and app.screen.record is not None
        lines = screen_text(app).splitlines()
        rows = app.screen.rows_shown
        for trig in record["triggers"][:rows]:
            token = visible(trig["text"])
            assert any(f" {token} " in line for line in lines), (token, "\n".join(lines))
        assert "…" not in "".join(line[:45] for line in lines[6:6 + rows])  # no trigger cut short
        assert "[[" not in screen_text(app)  # the highlight marks the firing token here, not brackets


async def test_the_overview_shows_the_whole_firing_rule(summary, tmp_path):
    from neuron_tui.cache import Summary, SummaryWriter

    gated = tmp_path / "gated.h5"
    with Summary.open(summary) as s, SummaryWriter(gated) as w:
        w.copy_from(s)
        w.set_attrs({"rule": "abs", "tau_source": "quantile", "threshold": 0.99})
    app = NeuronApp(gated)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "|h| > tau_l, tau_l = 0.99 quantile of |h|" in screen_text(app)


async def test_an_empty_view_says_why(summary):
    with SummaryFile.open(summary) as s:
        layer = next(l for l in range(s.n_layers) if not len(s.table(l).select("token")))
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE) as pilot:
        await open_layer(pilot, layer)
        await press(pilot, "t")
        assert_view(app, layer, filter="token")
        assert f"no token detector in L{layer} · a shows all 96" in screen_text(app)
        await press(pilot, "a", "slash")
        await type_text(pilot, "zzzz")
        assert f"no neuron in L{layer} is triggered by 'zzzz' · esc clears the search" in screen_text(app)


async def test_the_filter_bar_lists_the_kinds_the_summary_has_and_f_picks_among_all(summary):
    with SummaryFile.open(summary) as s:
        rows = s.layers()
    absent = [k for k in kinds.KINDS if not any(r[k.name] for r in rows)]
    assert absent  # a ReLU summary has no silent neuron, for one
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE) as pilot:
        await open_layer(pilot, 0)
        bar = screen_text(app).splitlines()[1]
        with SummaryFile.open(summary) as s:
            in_layer = {k.name for k in kinds.KINDS if kinds.has(s.summary.analysis.read("flags", 0), k.name).any()}
        for k in kinds.KINDS:  # at 80 columns, the kinds some layer has that this one has not may give way
            shown = f" {k.filter_label[len(k.key):]} " in bar or f" {k.filter_label} " in bar
            if k in absent:
                assert not shown, k
            elif k.name in in_layer:
                assert shown, k
        assert "f kinds…" in bar
        silent = absent[0]
        await press(pilot, silent.key)  # the key of a kind the bar leaves out still filters
        assert_view(app, 0, filter=silent.name)
        assert f"{silent.filter_label} 0" in screen_text(app).splitlines()[1]
        await press(pilot, "f")
        picker = app.screen
        assert isinstance(picker, FilterPicker)
        text = flat_text(app)
        for k in kinds.KINDS:  # every kind of the registry, with its key
            assert f"{format_key(k.key)} {k.letter} {k.filter_label}" in text, k.name
        names = [name for name, _, _ in picker.choices]
        target = names.index("token")
        await press(pilot, *(["down"] * (target - names.index(silent.name))), "enter")
        assert_view(app, 0, filter="token")
        await press(pilot, "f", "escape")
        assert_view(app, 0, filter="token")


async def test_the_category_column_is_as_wide_as_the_kinds_one_neuron_has(summary):
    with SummaryFile.open(summary) as s:
        flags = s.table(1).flags
    widest = kinds_per_neuron(flags)
    assert widest < len(kinds.KINDS)
    cat = next(w for key, _, w, _ in layout_columns(80, max(3, widest)) if key == "cat")
    assert cat == max(3, widest) and cat < len(kinds.KINDS)
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE) as pilot:
        await open_layer(pilot, 1)
        await press(pilot, "2")  # by category: neurons with kinds first
        row = table_lines(app)[1]
        i = int(row.split()[0].lstrip("*"))
        letters = "".join(k.letter for k in kinds.KINDS if kinds.has(int(flags[i]), k.name))
        assert row.split()[1] == letters and "·" not in row


async def test_ctrl_t_searches_a_part_of_a_token(summary):
    app = NeuronApp(summary)
    async with app.run_test(size=SIZE) as pilot:
        await open_layer(pilot, 0)
        await press(pilot, "slash")
        await type_text(pilot, " the")
        whole = app.screen.view.order.tolist()
        assert "search ' the'" in screen_text(app) and "in a token" not in screen_text(app)
        await press(pilot, "ctrl+t")
        assert_view(app, 0, query=" the", substring=True)
        part = app.screen.view.order.tolist()
        assert "search ' the' in a token" in screen_text(app)
        assert set(whole) < set(part)
        expected = app.explorer.file.table(0).select(matching=app.explorer.file.matcher.matching(" the", True))
        assert part == expected.tolist()
        await press(pilot, "ctrl+t")
        assert app.screen.view.order.tolist() == whole


def test_every_column_fits_80_cells():
    columns = layout_columns(80)
    assert sum(w for *_, w, _ in columns) + len(columns) - 1 <= 80
    supp = next(c for c in COLUMNS if c.key == "supp")
    assert all(len(rank_text(r)) <= supp.width for r in (1, 9_999, 34_609, 99_999, 123_456, 262_144, 5_000_000))


@pytest.mark.parametrize("width", [30, 40, 60, 80, 160, 200])
def test_the_filter_bar_fits_its_width_with_every_kind_present(width):
    """Every kind of the registry in the summary (as a summary of many kinds has): kinds with none in
    the layer give way first, then the last ones, then marked and all; the current filter and the
    picker's key always stay."""
    from types import SimpleNamespace

    from neuron_tui.tui.present.layers import filter_bar
    from neuron_tui.tui.viewmodel import ViewState

    names = [k.name for k in kinds.KINDS]
    counts = {"all": 36_864, "marked": 0, **{n: (i % 2) * 1_000 for i, n in enumerate(names)}}
    keys = {"all": "a", "marked": "M", "pick": "f", **{k.name: format_key(k.key) for k in kinds.KINDS}}
    current = names[-1]
    info = SimpleNamespace(has_analysis=True)
    bar = filter_bar(info, ViewState(filter=current), counts, keys, names, width)
    assert bar.cell_len <= width and bar.plain.endswith("f kinds…")
    assert kinds.BY_NAME[current].filter_label[1:] in bar.plain
    whole = filter_bar(info, ViewState(filter=current), counts, keys, names, 1_000)
    assert all(kinds.BY_NAME[n].filter_label[1:] in whole.plain for n in names)
    if width >= whole.cell_len:
        assert bar.plain == whole.plain
    elif width >= 160:  # only kinds with none in the layer gave way
        assert all(kinds.BY_NAME[n].filter_label[1:] in bar.plain for n in names if counts[n])
