"""The read side's answers (core.read.queries): per-layer rows, cross-model comparison, the per-neuron
record, and their renderings on the command line (tui.present)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from planted import write_firing_summary
from rich.console import Console
from test_analysis import TOKENS, VOCAB, fires_on, hand_fired, projection_group

from neuron_tui.cache import Summary
from neuron_tui.core.read.analysis import run_analysis
from neuron_tui.core.read.params import AnalysisParams
from neuron_tui.core.read.queries import compare_rows, layer_rows, neuron_record
from neuron_tui.tui.present.card import neuron_panel
from neuron_tui.tui.present.layers import compare_table, report_table
from neuron_tui.tui.present.neuron import context_value

S, T = TOKENS.shape


def render(table) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


@pytest.fixture
def two_layers(tmp_path):
    """Layer 0: the hand neurons; layer 1: neuron 0 detects token 4, the rest dead."""
    fired = np.zeros((2, S, T, 8), bool)
    fired[0] = hand_fired()[0]
    fired[1, :, :, 0] = fires_on(4)
    nan = np.nan
    cand = np.full((2, 8, 2), -1)
    rank = np.full((2, 8, 2), -1)
    score = np.full((2, 8, 2), nan)
    cand[0, 1], rank[0, 1], score[0, 1] = [3, 5], [0, 40], [-1.5, 0.3]  # n1: trigger 3 is most suppressed
    cand[1, 0], rank[1, 0], score[1, 0] = [4, 3], [11, 2], [-0.2, -0.1]  # L1 n0: trigger 4 at rank 11
    path = tmp_path / "two.h5"
    write_firing_summary(path, TOKENS, fired, VOCAB, groups={"projection": projection_group(cand, rank, score)})
    return path


def test_layer_rows_without_analysis_have_only_counts(two_layers):
    with Summary.open(two_layers) as s:
        rows = layer_rows(s)
    assert [r["dead"] for r in rows] == [1, 7]
    assert rows[1]["dead_frac"] == pytest.approx(7 / 8)
    assert rows[0]["rare"] == 0  # default rare rate 1e-4 of 24 tokens: nobody
    assert rows[0]["token"] is None and rows[0]["covered"] is None and rows[0]["supp_share"] is None
    # firing-rate quantiles of act_count / n_tokens over the layer's 8 neurons
    act = hand_fired()[0].sum((0, 1)) / (S * T)
    assert rows[0]["fire_p50"] == pytest.approx(np.quantile(act, 0.5))
    assert rows[0]["fire_p99"] == pytest.approx(np.quantile(act, 0.99))
    text = render(report_table(rows, "no analysis"))
    assert "dead" in text and "token" not in text and "cover" not in text


def test_layer_rows_with_analysis(two_layers):
    run_analysis(two_layers, AnalysisParams(min_token_count=3))
    with Summary.open(two_layers) as s:
        rows = layer_rows(s)
    assert [r["token"] for r in rows] == [2, 1]  # L0: n1 (3) and n4 (3, 1); L1: n0 (4)
    assert rows[0]["token_frac"] == pytest.approx(2 / 8)
    assert [r["covered"] for r in rows] == [2, 1] and [r["new"] for r in rows] == [2, 1]
    # L0: n1 suppresses 3 (rank 0); n4's triggers are not among its candidates (unknown) -> 1/1
    assert rows[0]["supp_share"] == 1.0 and rows[0]["neg_share"] == 1.0
    # L1: trigger 4 at rank 11 is outside the top 10, but its score is negative
    assert rows[1]["supp_share"] == 0.0 and rows[1]["neg_share"] == 1.0
    assert rows[1]["depth"] == 1.0
    text = render(report_table(rows, "with analysis"))
    header = next(line for line in text.splitlines() if " dead " in line).split()
    first = next(line for line in text.splitlines() if line.split()[:1] == ["0"]).split()
    assert dict(zip(header, first))["token"] == "25%" and "cover" in header and "100%" in text
    assert max(len(line) for line in text.splitlines()) <= 80  # fits an 80-column terminal
    json.dumps(rows, allow_nan=False)  # plain JSON for --json


def test_compare_rows_lines_models_up_on_relative_depth(tmp_path):
    paths = []
    for name, L in (("small", 3), ("big", 5)):
        fired = np.zeros((L, S, T, 2), bool)
        for layer in range(L):
            fired[layer, :, :, 0] = layer == L - 1  # only the last layer's neuron 0 is alive
        path = tmp_path / f"{name}.h5"
        write_firing_summary(path, TOKENS, fired, VOCAB)
        paths.append(path)
    opened = [Summary.open(p) for p in paths]
    rows = compare_rows(opened)
    for s in opened:
        s.close()
    assert [r["depth"] for r in rows] == [0.0, 0.25, 0.5, 0.75, 1.0]
    names = list(rows[0]["models"])
    assert len(names) == 2 and names[0] != names[1]  # same model attr: told apart by file name
    small, big = names
    # depth 0.25 -> small layer 0.5 -> rounds up to 1; big layer 1. depth 0.75 -> small 2 (1.5 up), big 3
    assert [r["models"][small]["layer"] for r in rows] == [0, 1, 1, 2, 2]
    assert [r["models"][big]["layer"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[-1]["models"][small]["dead_frac"] == 0.5 and rows[0]["models"][big]["dead_frac"] == 1.0
    text = render(compare_table(rows, "dead_frac"))
    assert "100%" in text and "50%" in text


def test_neuron_record(two_layers):
    run_analysis(two_layers, AnalysisParams(min_token_count=3))
    with Summary.open(two_layers) as s:
        rec = neuron_record(s, 0, 1)
        text = json.dumps(rec, allow_nan=False)
        assert json.loads(text) == rec
        for key in ("layer", "index", "categories", "act_count", "triggers", "promoted", "suppressed", "position_rate"):
            assert key in rec
        assert rec["categories"] == ["token"] and rec["act_count"] == 7
        assert rec["fire_rate"] == pytest.approx(7 / 24)
        # token 3 occurs 7 times outside the BOS position and the neuron fires on all of them; its update
        # ranks it first (1-based) among the suppressed tokens
        assert rec["triggers"] == [
            {"token": 3, "text": "c", "count": 7.0, "count_se": 0.0, "occurrences": 7, "p_fire": 1.0, "supp_rank": 1,
             "covered": True, "explains": True}
        ]
        # position profile: token 3 sits at positions (1, 3 | 1, 4 | 2, 5 | 4) of the 4 sequences
        assert rec["position_rate"] == [0.0, 0.5, 0.25, 0.25, 0.5, 0.25]
        # contexts: the top positions first; left / token / right text from the token stream
        first = rec["contexts"][0]
        g = first["position"]
        assert first["token"] == "c" and TOKENS.ravel()[g] == 3
        seq, t = divmod(g, T)
        assert first["left"] == "".join(VOCAB[x] for x in TOKENS[seq, :t])
        assert first["right"] == "".join(VOCAB[x] for x in TOKENS[seq, t + 1 : t + 5])
        # 3 top contexts (one per sequence) topped up with kept events: all 7 firings, no position twice
        assert len(rec["contexts"]) == 7 and len({c["position"] for c in rec["contexts"]}) == 7
        assert [c["source"] for c in rec["contexts"]] == ["top"] * 3 + ["event"] * 4
        # the suppressed / promoted lists come from the projection group (dummy zeros here)
        assert len(rec["suppressed"]) == 2 and rec["suppressed"][0]["token"] == 0
        dead = neuron_record(s, 1, 3)
        assert dead["categories"] == ["dead"] and dead["triggers"] == [] and dead["contexts"] == []
        with pytest.raises(IndexError):
            neuron_record(s, 2, 0)


def test_neuron_record_without_analysis_group_computes_the_same(two_layers, tmp_path):
    with Summary.open(two_layers) as s:
        before = neuron_record(s, 0, 4)
    run_analysis(two_layers)
    with Summary.open(two_layers) as s:
        after = neuron_record(s, 0, 4)
    assert before.pop("analysis") == "computed" and after.pop("analysis") == "stored"
    assert before == after
    assert [t["token"] for t in after["triggers"]] == [3, 1]
    assert after["ngrams"][0]["count"] >= after["ngrams"][-1]["count"]


def test_is_trigger_marks_triggers_in_the_update_lists(tmp_path):
    fired = np.zeros((1, S, T, 1), bool)
    fired[0, :, :, 0] = fires_on(3)
    attrs, arrays = projection_group(np.full((1, 1, 1), 3), np.zeros((1, 1, 1)), np.full((1, 1, 1), -2.0))
    arrays["suppressed_tok"][0, 0] = [3, 6]
    arrays["suppressed_score"][0, 0] = [-2.0, -1.0]
    arrays["promoted_tok"][0, 0] = [5, 1]
    path = tmp_path / "m.h5"
    write_firing_summary(path, TOKENS, fired, VOCAB, groups={"projection": (attrs, arrays)})
    run_analysis(path)
    with Summary.open(path) as s:
        rec = neuron_record(s, 0, 0)
    assert [(x["token"], x["is_trigger"]) for x in rec["suppressed"]] == [(3, True), (6, False)]
    assert [x["is_trigger"] for x in rec["promoted"]] == [False, False]
    assert rec["suppressed"][0]["text"] == "c" and rec["suppressed"][0]["score"] == -2.0


def test_neuron_panel_renders_the_record(two_layers):
    run_analysis(two_layers, AnalysisParams(min_token_count=3))
    with Summary.open(two_layers) as s:
        record = neuron_record(s, 0, 1)
        text = render(neuron_panel(record, s.vocab))
    assert "L0 N1" in text and "token" in text and "● c" in text
    assert "P(fire|tok)" in text and "1.00" in text
    peak = int(np.argmax([v or 0.0 for v in record["position_rate"]]))
    assert f"at t={peak}" in text and f"t={T - 1}" in text  # the plot of its firing rate by position


def test_contexts_keep_the_sign_of_h(tmp_path, monkeypatch):
    """A gated summary ranks its top contexts by |h| and keeps the signed h around them (ctx_val): each
    context's value is h at its centre, sign and all, and the panel shows it so."""
    from synthetic import tiny_summary

    path = tiny_summary(tmp_path, architecture="llama")
    with Summary.open(path) as s:
        assert s.attrs["rule"] == "abs" and s.has("ctx_val")
        layer, index = 1, int(np.argmax(s.read("act_count", 1)))
        centre = int(s.attrs["ctx_left"])
        h = s.read_neuron("ctx_val", layer, index)[:, centre].astype(np.float64)
        rec = neuron_record(s, layer, index)
        tops = [c for c in rec["contexts"] if c["source"] == "top"]
        assert tops and all(c["signed"] for c in tops)
        assert [c["value"] for c in tops] == pytest.approx(h[: len(tops)].tolist())
        # the same positions firing negative: the values turn negative, their order and firing stay
        read = s.read_neuron
        monkeypatch.setattr(s, "read_neuron", lambda name, *a: -read(name, *a) if name == "ctx_val" else read(name, *a))
        flipped = neuron_record(s, layer, index)
        text = render(neuron_panel(flipped, s.vocab))
    negative = [c for c in flipped["contexts"] if c["source"] == "top"]
    assert [c["value"] for c in negative] == pytest.approx([-c["value"] for c in tops])
    assert [(c["position"], c["fired"]) for c in negative] == [(c["position"], c["fired"]) for c in tops]
    shown = context_value(negative[0])
    assert shown.startswith("-") and shown in text and "no sign" not in text
