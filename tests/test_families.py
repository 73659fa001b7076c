"""The families named since the paper, end to end: planted prediction, suppression, entropy and
token-frequency neurons of a one-layer Llama (tests/planted.py) are collected, analysed and found by
`neurons --category`, with their numbers in `neuron --json`, the neuron card and the explorer; the
gated model's sign cases sum to its firings; an older summary reads the new kinds as unknown."""

from __future__ import annotations

import json

import numpy as np
import pytest
import vocab_reference as ref
from pilot import press, settle
from planted import V, planted_llama, set_out, unit
from tiny import save_tiny, write_text_corpus

from neuron_tui.cache import Summary, SummaryWriter, schema
from neuron_tui.core.read import kinds
from neuron_tui.tui.app import NeuronApp
from neuron_tui.tui.cli import main

PLANTED = {0: "prediction", 1: "suppression", 2: "entropy", 3: "frequency"}
SIGNS = {4: "++", 5: "+-"}  # up = +-gate: h = silu(g) * (+-g) fires (|h| large) where g > 0, in this case
MIXED = 6  # a small gate (SiLU near 0 is about g / 2, odd) times a large up from another direction: h ~ g u / 2
#           fires on both signs of g and of u alike, in all four cases, none with a majority


def _plant_signs(model) -> None:
    import torch

    mlp = model.model.layers[0].mlp
    with torch.no_grad():
        rows = 4.0 * mlp.gate_proj.weight[4:7] / mlp.gate_proj.weight[4:7].norm(dim=1, keepdim=True)
        mlp.gate_proj.weight[4:7] = rows
        mlp.up_proj.weight[4], mlp.up_proj.weight[5] = rows[0], -rows[1]
        mlp.gate_proj.weight[6] = 0.05 * rows[2] / 4.0
        mlp.up_proj.weight[6] = 400.0 * mlp.up_proj.weight[6] / mlp.up_proj.weight[6].norm()


def _collect(model, folder, corpus, out) -> None:
    path = save_tiny(model, folder)
    assert main(["collect", str(path), "--corpus", str(corpus), "--tokens", "960", "--seq-len", "16",
                 "--batch-size", "4", "--out", str(out), "--quiet"]) == 0


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The planted model's summary; its frequency neuron reads the log frequency of the summary's own
    corpus, so a first collection counts the tokens and the second plants it."""
    tmp = tmp_path_factory.mktemp("families")
    model, _, n, gain = planted_llama()
    U_eff, _ = ref.effective(model)
    set_out(model, 0, 3.0 * unit(U_eff[17]))
    set_out(model, 1, -3.0 * unit(U_eff[17]))
    set_out(model, 2, 40.0 * unit(n / gain))
    _plant_signs(model)
    corpus = write_text_corpus(tmp / "corpus.jsonl", n_docs=60)
    _collect(model, tmp / "first", corpus, tmp / "first.h5")
    with Summary.open(tmp / "first.h5") as s:
        counts = np.zeros(V)
        counts[: len(s.token_occ)] = s.token_occ
    f = np.log1p(counts)
    set_out(model, 3, np.linalg.lstsq(U_eff, f - f.mean(), rcond=1e-3)[0])
    _collect(model, tmp / "model", corpus, tmp / "planted.h5")
    return tmp / "planted.h5"


def _json(capsys, *args):
    capsys.readouterr()
    assert main([str(a) for a in args]) == 0
    return json.loads(capsys.readouterr().out)


def test_each_planted_neuron_is_found_as_its_kind_and_nothing_else_is(planted, capsys):
    """The random neurons beside the planted ones: none has a heavy tail over the vocabulary, a large
    output in the null space or a frequency-like logit effect, and none fires often enough beside the
    loud planted ones (tau is the layer's 0.99 quantile of |h|) for a split of its firings to count."""
    for neuron, kind in [*PLANTED.items(), (MIXED, "mixed")]:
        rows = _json(capsys, "neurons", planted, "--category", kind, "--json")
        assert [(r["layer"], r["neuron"]) for r in rows] == [(0, neuron)], kind


def test_gated_neurons_fire_in_their_planted_sign_case_and_a_split_one_is_mixed(planted, capsys):
    for neuron, case in SIGNS.items():
        r = _json(capsys, "neuron", planted, 0, neuron, "--json")
        shares = {c["case"]: c["share"] or 0.0 for c in r["sign_cases"]}
        assert r["act_count"] > 10 and max(shares, key=shares.get) == case and shares[case] > 0.9, shares
        assert "mixed" not in r["categories"]
    r = _json(capsys, "neuron", planted, 0, MIXED, "--json")
    assert "mixed" in r["categories"] and max(c["share"] or 0.0 for c in r["sign_cases"]) < 0.9


def test_the_record_carries_the_numbers_its_kind_was_decided_from(planted, capsys):
    with Summary.open(planted) as s:
        params_kurt = 10.0
        for neuron, kind in PLANTED.items():
            r = _json(capsys, "neuron", planted, 0, neuron, "--json")
            assert kind in r["categories"]
            flags = int(s.analysis.read("flags", 0)[neuron])
            assert r["categories"] == kinds.names_of(flags)
            assert r["vocab"]["kurt"] == pytest.approx(float(s.projection.read("vocab_kurt", 0)[neuron]))
            assert r["geometry"]["null_share"] == pytest.approx(float(s.projection.read("null_share", 0)[neuron]))
        for neuron in (0, 1):  # the kinds read the skew as the neuron acts: a neuron with h < 0 pushes -w_out
            r = _json(capsys, "neuron", planted, 0, neuron, "--json")
            mean = r["activation"]["mean"]
            if mean is not None:
                assert r["vocab"]["sign"] == (-1 if mean < 0 else 1)
            acting = r["vocab"]["sign"] * r["vocab"]["skew"]
            assert ("prediction" if acting > 0 else "suppression") in r["categories"]
        prediction = _json(capsys, "neuron", planted, 0, 0, "--json")
        assert prediction["vocab"]["kurt"] > params_kurt and prediction["vocab"]["sign"] * prediction["vocab"]["skew"] > 0
        entropy = _json(capsys, "neuron", planted, 0, 2, "--json")["geometry"]
        assert entropy["null_share"] > 10 * entropy["typical_null_share"]
        assert entropy["w_out_norm"] > 2 * entropy["typical_w_out_norm"]
        r = _json(capsys, "neuron", planted, 0, 5, "--json")
        assert r["mean_h"] == pytest.approx(float(s.read("h_sum", 0)[5]) / s.n_tokens)
        assert sum(r["histogram"]["counts"]) == r["act_count"]  # every firing in one bin
        cases = r["sign_cases"]
        assert [c["case"] for c in cases] == ["++", "+-", "-+", "--"]
        assert sum(c["count"] for c in cases) == r["act_count"]
        for c in cases:
            if c["count"]:
                assert c["context"]["position"] == c["top_position"]
                assert (c["context"]["value"] > 0) == (c["case"] in ("++", "--"))  # h = act(gate) * up
            else:
                assert c["context"] is None and c["top_value"] is None


def test_the_neuron_card_and_screen_show_them(planted, capsys):
    assert main(["neuron", str(planted), "0", "2"]) == 0
    card = capsys.readouterr().out
    assert "Beyond the paper" in card and "in null space" in card and "sign cases of (act(gate), up)" in card
    assert max(len(line) for line in card.splitlines()) <= 80


@pytest.mark.anyio
async def test_the_explorer_neuron_screen_shows_them(planted):
    app = NeuronApp(planted)
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "enter", "enter")
        section = app.screen.query_one("#families")
        text = str(section.render())
        assert section.display and "Beyond the paper" in text and "vocabulary cosines: kurtosis" in text and "sign cases" in text


def test_a_summary_without_the_statistics_reads_the_new_kinds_as_unknown(planted, tmp_path, capsys):
    """A summary as a neuron-tui before the families wrote it (no pass statistics; its projection group
    lost, as after a merge without the model), analysed again: those kinds are unknown, not 0."""
    old = tmp_path / "old.h5"
    with Summary.open(planted) as s, SummaryWriter(old) as w:
        w.copy_from(s, skip=schema.ADDED_IN_3 + schema.SIGN_DATASETS + (schema.PROJECTION_GROUP, schema.ANALYSIS_GROUP))
    assert main(["analyze", str(old)]) == 0
    report = _json(capsys, "report", old, "--json")["layers"][0]
    assert all(report[k] is None for k in ("prediction", "suppression", "entropy", "frequency", "mixed"))
    assert report["token"] is not None  # the paper's kinds are decided as before
    r = _json(capsys, "neuron", old, 0, 0, "--json")
    assert all(r[k] is None for k in ("sign_cases", "histogram", "mean_h", "vocab", "geometry"))
