"""The explorer's view-models and the layer tables they stand on (core.read.queries), without Textual:
columns, filter, sort, search, paging, records, marks, export."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from edit import raw_vocab
from synthetic import tiny_summary

from neuron_tui.cache import SummaryError
from neuron_tui.core.read import kinds, queries, table
from neuron_tui.core.read.api import LAYER_TABLES
from neuron_tui.core.read.tokens import visible
from neuron_tui.tui import viewmodel as vm
from neuron_tui.tui.viewmodel import (
    Explorer,
    Marks,
    ReadOnlyError,
    ViewState,
    parse_goto,
)


@pytest.fixture(scope="module")
def summary_path(tmp_path_factory):
    return tiny_summary(tmp_path_factory.mktemp("vm"))


@pytest.fixture(scope="module")
def raw(summary_path):
    """The file's arrays read with h5py directly, independent of the reader under test."""
    with h5py.File(summary_path, "r") as f:
        out = {name: f[name][()] for name in ("act_count", "pos_count", "tokens_at_pos", "top_pos", "tokens")}
        for name in ("flags", "trig_tok", "trig_pfire", "trig_count", "pos_mi", "trig_supp_rank", "n_distinct"):
            out[name] = f["analysis/" + name][()]
        out["suppressed_tok"] = f["projection/suppressed_tok"][()]
        out["vocab"] = raw_vocab(f)
        out["n_tokens"] = int(f.attrs["n_tokens"])
    return out


@pytest.fixture
def explorer(summary_path, tmp_path):
    ex = Explorer.open(summary_path)
    ex.marks = Marks(tmp_path / "copy.h5", "k")  # marks of these tests go to a scratch folder
    yield ex
    ex.close()


def test_viewmodel_imports_no_textual():
    code = "import sys, neuron_tui.tui.viewmodel; print(any(m.split('.')[0] == 'textual' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_layer_columns_match_the_file(explorer, raw):
    for layer in range(explorer.info.n_layers):
        cols = explorer.table(layer)
        np.testing.assert_array_equal(cols.count, raw["act_count"][layer])
        np.testing.assert_allclose(cols.rate, raw["act_count"][layer] / raw["n_tokens"])
        np.testing.assert_array_equal(cols.flags, raw["flags"][layer])
        np.testing.assert_array_equal(cols.distinct, raw["n_distinct"][layer])
        for i in range(cols.n):
            first = raw["trig_tok"][layer, i, 0]
            expected = visible(raw["vocab"][first]) if first >= 0 else ""
            assert cols.top[i].split(" ")[0] == expected.split(" ")[0]
            ranks = raw["trig_supp_rank"][layer, i]
            assert cols.supp[i] == (ranks[ranks >= 0].min() if (ranks >= 0).any() else -1)


@pytest.mark.parametrize("name", ["dead", "rare", "token", "ngram", "positional"])
def test_filter_is_the_category_mask(explorer, raw, name):
    bit = kinds.mask_bit(name)
    seen = 0
    for layer in range(explorer.info.n_layers):
        view = explorer.view(layer, ViewState(filter=name))
        expected = np.flatnonzero(raw["flags"][layer] & bit)
        np.testing.assert_array_equal(view.order, expected)  # default sort: id ascending
        seen += len(expected)
    assert seen > 0, f"the fixture has no {name} neuron"


def test_dead_filter_agrees_with_counts(explorer, raw):
    view = explorer.view(0, ViewState(filter="dead"))
    assert len(view) > 0
    assert (raw["act_count"][0][view.order] == 0).all()
    assert len(view) == int((raw["act_count"][0] == 0).sum())


def test_sort_by_rate_descending_is_stable(explorer, raw):
    view = explorer.view(1, ViewState(sort="rate", descending=True))
    rates = raw["act_count"][1][view.order]
    assert (np.diff(rates) <= 0).all()
    for value in np.unique(rates):  # ties keep ascending neuron ids
        ids = view.order[rates == value]
        assert (np.diff(ids) > 0).all()
    up = explorer.view(1, ViewState(sort="rate"))
    assert (np.diff(raw["act_count"][1][up.order]) >= 0).all()
    assert len(up) == len(view) == explorer.info.n_neurons


def test_sort_puts_unknown_values_last_both_ways(explorer):
    cols = explorer.table(0)
    for descending in (False, True):
        view = explorer.view(0, ViewState(sort="supp", descending=descending))
        supp = cols.supp[view.order]
        known = supp >= 0
        assert known.any() and (~known).any()
        first_unknown = int(np.argmin(known))
        assert known[:first_unknown].all() and not known[first_unknown:].any()
        step = np.diff(supp[:first_unknown])
        assert (step <= 0).all() if descending else (step >= 0).all()


def test_sort_by_text_and_every_column(explorer):
    view = explorer.view(2, ViewState(sort="top"))
    texts = [t for t in explorer.table(2).top[view.order]]
    filled = [t for t in texts if t]
    assert filled == sorted(filled) and texts[: len(filled)] == filled  # empty texts last
    for key in vm.COLUMN_KEYS:
        order = explorer.view(2, ViewState(sort=key, descending=True)).order
        assert sorted(order.tolist()) == list(range(explorer.info.n_neurons))


def _brute_search(raw, layer, query, lift, substring):
    """Neurons with a trigger slot whose text is `query` (or contains it: `substring`, case-folded for
    a query without capitals) and whose lift passes (plain Python)."""
    fold = substring and query == query.lower()
    out = []
    rate = raw["act_count"][layer] / raw["n_tokens"]
    for i in range(raw["act_count"].shape[1]):
        for tok, p in zip(raw["trig_tok"][layer, i], raw["trig_pfire"][layer, i]):
            if tok < 0:
                continue
            text = raw["vocab"][tok].lower() if fold else raw["vocab"][tok]
            if (query in text if substring else query == text) and p >= lift * rate[i]:
                out.append(i)
                break
    return out


@pytest.mark.parametrize("substring", [False, True], ids=["whole", "part"])
@pytest.mark.parametrize("query", [" the", "the", "The", ",", "ing", "zzzz-not-a-token"])
def test_search_matches_brute_force(explorer, raw, query, substring):
    total = 0
    for layer in range(explorer.info.n_layers):
        view = explorer.view(layer, ViewState(query=query, substring=substring))
        expected = _brute_search(raw, layer, query, table.SEARCH_MIN_LIFT, substring)
        assert view.order.tolist() == expected
        total += len(expected)
    if query == "zzzz-not-a-token":
        assert total == 0
    elif query in (" the", ","):
        assert total > 0


def test_search_finds_the_whole_token_unless_asked_for_a_part(explorer, raw):
    """` the` is ` the`: not ` there` nor ` theory`, which a search for a part of a token finds too."""
    vocab = raw["vocab"]
    longer = [t for t in vocab if t.startswith(" the") and t != " the"]
    assert longer  # the synthetic vocabulary has tokens that contain " the"
    whole = explorer.file.matcher.matching(" the")
    part = explorer.file.matcher.matching(" the", True)
    assert [vocab[i] for i in np.flatnonzero(whole)] == [" the"]
    assert {vocab[i] for i in np.flatnonzero(part)} >= {" the", *longer}
    assert (explorer.file.matcher.matching("␣the") == whole).all()  # the visible space stands for a space


def test_search_ignores_frequent_tokens_without_lift(explorer, raw, monkeypatch):
    """A neuron whose only ' the' trigger fires at its average rate is no ' the' neuron."""
    strict = [len(explorer.view(l, ViewState(query=" the"))) for l in range(4)]
    monkeypatch.setattr(table, "SEARCH_MIN_LIFT", 0.0)
    every = [len(explorer.view(l, ViewState(query=" the"))) for l in range(4)]
    assert sum(every) > sum(strict)


def test_search_and_filter_intersect(explorer):
    both = explorer.view(0, ViewState(filter="token", query="e"))
    token = set(explorer.view(0, ViewState(filter="token")).order.tolist())
    search = set(explorer.view(0, ViewState(query="e")).order.tolist())
    assert set(both.order.tolist()) == token & search
    assert len(token) > len(both.order) or len(search) > len(both.order)


def test_paging(explorer):
    view = explorer.view(3, ViewState(sort="rate", descending=True))
    rows = view.page(10, 7)
    assert [r.neuron for r in rows] == view.order[10:17].tolist()
    assert rows[0].rate >= rows[-1].rate
    assert view.page(len(view) - 2, 10) == view.page(len(view) - 2, 2)
    assert view.page(len(view), 5) == []
    n = int(view.order[12])
    assert view.row_of(n) == 12 and view.neuron_at(12) == n
    assert view.row_of(10**6) is None and view.neuron_at(-1) is None


def test_overview_rows_count_each_category(explorer, raw):
    rows = explorer.overview()
    assert [r["layer"] for r in rows] == list(range(4))
    for r in rows:
        flags = raw["flags"][r["layer"]]
        assert r["dead"] == int(kinds.has(flags, "dead").sum()) == int((raw["act_count"][r["layer"]] == 0).sum())
        assert r["token"] == int(kinds.has(flags, "token").sum())
        assert r["ngram"] == int(kinds.has(flags, "ngram").sum())
        assert r["positional"] == int(kinds.has(flags, "positional").sum())
        alive = raw["act_count"][r["layer"]] > 0
        assert r["alive_rate"] == pytest.approx((raw["act_count"][r["layer"]][alive] / raw["n_tokens"]).mean())
    assert rows[0]["dead"] > rows[-1]["dead"]  # dead neurons sit in early layers


def test_neuron_record_of_a_token_detector(explorer, raw):
    layer = next(l for l in range(4) if (kinds.has(raw["flags"][l], "token")).any())
    i = int(np.flatnonzero(kinds.has(raw["flags"][layer], "token"))[0])
    r = explorer.neuron(layer, i)
    assert "token" in r["categories"] and r["act_count"] == raw["act_count"][layer, i]
    counts = [t["count"] for t in r["triggers"]]
    assert counts == sorted(counts, reverse=True) and r["triggers"]
    # occurrences outside the BOS position, from the token stream itself
    hist = np.bincount(raw["tokens"][:, 1:].ravel(), minlength=len(raw["vocab"]))
    with h5py.File(explorer.info.path, "r") as f:
        explains = f["analysis/trig_explains"][layer, i]
    for k, t in enumerate(r["triggers"]):
        assert t["occurrences"] == hist[t["token"]]
        assert t["text"] == raw["vocab"][t["token"]]
        assert t["explains"] is bool(explains[k])
    np.testing.assert_allclose(r["position_rate"], raw["pos_count"][layer, :, i] / raw["tokens_at_pos"])
    flat = raw["tokens"].ravel()
    for c in r["contexts"]:
        assert c["ids"][c["at"]] == flat[c["position"]] and c["token"] == raw["vocab"][flat[c["position"]]]
        assert c["at"] == min(c["position"] % raw["tokens"].shape[1], queries.CONTEXT_LEFT)
    tops = int((raw["top_pos"][layer, :, i] >= 0).sum())
    assert [c["source"] for c in r["contexts"][:tops]] == ["top"] * tops
    trig = {t["token"] for t in r["triggers"]}
    assert [s["is_trigger"] for s in r["suppressed"]] == [s["token"] in trig for s in r["suppressed"]]


def test_detectors_suppress_their_triggers_somewhere(explorer):
    flagged = 0
    for layer in range(4):
        for i in explorer.view(layer, ViewState(filter="token")).order.tolist():
            flagged += any(s["is_trigger"] for s in explorer.neuron(layer, i)["suppressed"])
    assert flagged > 0


def test_dead_neuron_record(explorer, raw):
    i = int(np.flatnonzero(raw["act_count"][0] == 0)[0])
    r = explorer.neuron(0, i)
    assert r["act_count"] == 0 and r["triggers"] == [] and r["contexts"] == [] and not any(r["position_rate"])
    assert r["activation"]["max"] is None and r["activation"]["mean"] is None


def test_layer_tables_are_kept_but_bounded(explorer):
    explorer.file.table.cache_clear()
    for layer in range(4):
        explorer.table(layer)
    assert explorer.table(3) is explorer.table(3)  # a second ask reads nothing
    assert explorer.file.table.cache_info().maxsize == LAYER_TABLES
    with pytest.raises(IndexError):
        explorer.table(4)


def test_marks_persist_next_to_the_summary(tmp_path):
    path = tmp_path / "s.h5"
    marks = Marks(path, "abc")
    marks.set(2, 17, "fires on commas")
    marks.set(0, 3, "")
    assert (tmp_path / "s.h5.marks.json").exists()
    again = Marks(path)
    assert list(again) == [(0, 3, ""), (2, 17, "fires on commas")]
    assert again.in_layer(2) == {17} and (2, 17) in again
    data = json.loads((tmp_path / "s.h5.marks.json").read_text())
    assert data["key"] == "abc" and data["summary"] == "s.h5"
    assert again.remove(2, 17) and not again.remove(2, 17)
    assert list(Marks(path)) == [(0, 3, "")]


def test_unreadable_marks_are_kept_aside(tmp_path):
    side = tmp_path / "s.h5.marks.json"
    side.write_text("{not json")
    marks = Marks(tmp_path / "s.h5")
    assert "unreadable" in marks.error and len(marks) == 0
    marks.set(1, 1, "x")
    assert (tmp_path / "s.h5.marks.json.bad").read_text() == "{not json"
    assert list(Marks(tmp_path / "s.h5")) == [(1, 1, "x")]


def test_marks_of_a_partial_summary_are_read_only(tmp_path):
    path = tiny_summary(tmp_path, "partial.h5", complete=False, n_seq_planned=999)
    ex = Explorer.open(path)
    try:
        assert not ex.info.complete and "PARTIAL" in ex.info.status and "128 of 999" in ex.info.status
        with pytest.raises(ReadOnlyError):
            ex.marks.set(0, 1, "x")
        assert not (tmp_path / "partial.h5.marks.json").exists()
    finally:
        ex.close()


def test_export_csv_and_json(explorer, tmp_path):
    explorer.marks.set(1, 5, "a note, with comma")
    explorer.marks.set(0, 2, "")
    out = explorer.export_marks("csv", tmp_path / "m.csv")
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == vm.EXPORT_COLUMNS
    assert [(r["layer"], r["neuron"], r["note"]) for r in rows] == [("0", "2", ""), ("1", "5", "a note, with comma")]
    assert float(rows[1]["rate"]) == pytest.approx(explorer.table(1).rate[5])
    record = explorer.neuron(1, 5)
    for k, t in enumerate(record["triggers"][: vm.EXPORT_TRIGGERS], start=1):
        assert rows[1][f"trigger{k}_text"] == t["text"] and float(rows[1][f"trigger{k}_count"]) == t["count"]
    assert rows[1]["suppressed"] == " | ".join(s["text"] for s in record["suppressed"][: vm.EXPORT_TRIGGERS])
    data = json.loads(explorer.export_marks("json", tmp_path / "m.json").read_text())
    assert data["model"] == "synthetic/tiny-opt" and [m["index"] for m in data["marks"]] == [2, 5]
    assert data["marks"][1] == {"note": "a note, with comma", **json.loads(json.dumps(record))}
    with pytest.raises(ValueError):
        explorer.export_marks("xml")


@pytest.mark.parametrize("text, expected", [
    ("L12 N345", (12, 345)), ("l12n345", (12, 345)), ("12/345", (12, 345)), ("12 345", (12, 345)),
    (" L3 / 7 ", (3, 7)), ("12:5", (12, 5)), ("L12", (12, None)), ("layer 4", (4, None)),
    ("N5", None), ("hello", None), ("", None), ("12/", None),
])
def test_parse_goto(text, expected):
    assert parse_goto(text) == expected


def test_visible_token_text():
    assert visible(" the") == "␣the"
    assert visible("\n") == "⏎"
    assert visible("a b ") == "a b␣"
    assert visible("  ") == "␣␣"
    assert visible("") == "∅"


def test_summary_without_analysis_has_counts_only(tmp_path):
    path = tiny_summary(tmp_path, "plain.h5", analysis=False, projection=False)
    with h5py.File(path, "r") as f:
        counts = f["act_count"][()]
    ex = Explorer.open(path)
    try:
        assert not ex.info.has_analysis and "neuron-tui analyze" in ex.info.status
        rows = ex.overview()
        assert rows[0]["token"] is None and rows[0]["dead"] == int((counts[0] == 0).sum())
        cols = ex.table(0)
        assert np.isnan(cols.pos_mi).all() and (cols.supp == -1).all()
        assert len(ex.view(0, ViewState(query="the"))) == 0
        assert ex.view(0, ViewState(filter="dead")).order.tolist() == np.flatnonzero(counts[0] == 0).tolist()
        r = ex.neuron(0, int(np.argmax(counts[0])))  # analysed on the spot; no projection to show
        assert r["analysis"] == "computed" and r["triggers"] and r["promoted"] == []
        assert r["act_count"] == counts[0].max() and r["contexts"]
    finally:
        ex.close()


def test_open_errors_are_summary_errors(tmp_path):
    with pytest.raises(SummaryError, match="no summary"):
        Explorer.open(tmp_path / "missing.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(SummaryError, match="not an HDF5 file"):
        Explorer.open(bad)
