"""Ablation as researchers measure it (issue 21) on the planted OPT of tests/test_probe.py: the KL
divergence and loss change against a direct computation (the model's own forward pass, the neuron
edited out of the weights, float64 softmax here), the moves ranked among the tokens above the
probability floor, mean ablation at the corpus mean of h (a dense pass over the stored corpus), the
command line's answers and refusals, the probe screen at 80x24, and the word boundaries of the text."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import test_probe
import torch
from pilot import press, screen_text, type_text
from test_probe import go_to, new_text

from neuron_tui.cache import Summary, SummaryWriter
from neuron_tui.core.model.probe import MOVE_EPS, ProbeError, ablation_value, probe_text
from neuron_tui.tui.app import NeuronApp
from neuron_tui.tui.cli import main
from neuron_tui.tui.present.formats import nats_text
from neuron_tui.tui.present.probe import WORD_JOIN, continues_word, shaded_text
from neuron_tui.tui.screens import ProbeScreen

# the planted OPT collected through the command line, its probe and its summary (test_probe's fixtures)
planted, probe, summary_file = test_probe.planted, test_probe.probe, test_probe.summary_file


def log_probs(model, ids: np.ndarray, edit: tuple[int, int, float] | None = None) -> np.ndarray:
    """[T, V] float64 next-token log-probabilities of `ids` from the model's own forward pass; `edit`
    (layer, neuron, value): a copy whose fc2 has the neuron's column zeroed and value times it added
    to the bias, which is h = value at every position."""
    if edit is not None:
        layer, neuron, value = edit
        model = copy.deepcopy(model)
        fc2 = model.model.decoder.layers[layer].fc2
        with torch.no_grad():
            fc2.bias += value * fc2.weight[:, neuron]
            fc2.weight[:, neuron] = 0.0
    with torch.no_grad():
        logits = model(input_ids=torch.as_tensor(ids)[None]).logits[0].double()
    return torch.log_softmax(logits, -1).numpy()


def direct(model, ids, layer, neuron, value):
    """(log p, log q, KL(p || q) [T], loss change [T-1]) computed here."""
    lp, lq = log_probs(model, ids), log_probs(model, ids, (layer, neuron, value))
    kl = (np.exp(lp) * (lp - lq)).sum(1)
    t = np.arange(len(ids) - 1)
    return lp, lq, kl, lp[t, ids[1:]] - lq[t, ids[1:]]


@pytest.mark.parametrize("layer, neuron, mode, value", [(0, 1, "zero", None), (1, 1, "clamp", 0.7),
                                                        (0, 9, "zero", None), (0, 2, "clamp", -1.5)])
def test_kl_and_loss_change_equal_a_direct_computation(probe, summary_file, layer, neuron, mode, value):
    ids = np.r_[2, new_text(3)]
    out = probe_text(probe, summary_file, None, layer, neuron, ablate=mode, ids=ids, value=value)["ablation"]
    set_to = 0.0 if value is None else value
    assert (out["mode"], out["value"], out["rank"], out["floor"]) == (mode, set_to, "p", 1e-3)
    lp, lq, kl, loss = direct(probe.model, ids, layer, neuron, set_to)
    assert kl.max() > 1e-3  # the neuron matters on this text: the comparison is not of zeros
    got = out["positions"]
    np.testing.assert_allclose([p["kl"] for p in got], kl, atol=1e-6, rtol=1e-4)
    np.testing.assert_allclose([p["loss_delta"] for p in got[:-1]], loss, atol=1e-6, rtol=1e-4)
    assert got[-1]["loss_delta"] is None and got[-1]["next"] is None  # the text has no token after the last
    assert out["mean_kl"] == pytest.approx(kl.mean(), abs=1e-7) and out["mean_loss_delta"] == pytest.approx(loss.mean(), abs=1e-7)
    for t, here in enumerate(got[:-1]):
        assert here["next"]["token"] == ids[t + 1]
        assert (here["next"]["p_before"], here["next"]["p_after"]) == pytest.approx(
            (np.exp(lp[t, ids[t + 1]]), np.exp(lq[t, ids[t + 1]])), abs=1e-6)
    for t, here in enumerate(got):  # the most probable tokens, by probability
        assert [m["token"] for m in here["top_before"]] == np.argsort(-lp[t], kind="stable")[:5].tolist()
        assert [m["token"] for m in here["top_after"]] == np.argsort(-lq[t], kind="stable")[:5].tolist()
        assert [m["p"] for m in here["top_before"]] == pytest.approx(np.exp(np.sort(lp[t])[::-1][:5]), abs=1e-6)


@pytest.mark.parametrize("rank", ["p", "logp"])
def test_moves_are_ranked_among_the_tokens_above_the_floor(probe, rank):
    """Every reported move is a token the model gives at least `floor` before or after, ranked by Δp
    (or Δ log p); a token below the floor is never reported, however far its log-probability moves."""
    ids = np.r_[2, new_text(4)]
    lp, lq, _, _ = direct(probe.model, ids, 0, 1, 0.0)
    p, q = np.exp(lp), np.exp(lq)
    dl = lq - lp
    change = q - p if rank == "p" else dl
    # the token whose log-probability moves most anywhere, and a floor just above its probability
    t_star, token_star = np.unravel_index(np.argmax(np.abs(dl)), dl.shape)
    floor_star = 1.01 * max(p[t_star, token_star], q[t_star, token_star])
    assert 0 < floor_star < 0.5
    for floor in (0.0, floor_star):
        eff = probe.ablation(ids, 0, 1, 0.0, top=4, floor=floor, rank=rank)
        for t in range(len(ids)):
            eligible = (np.maximum(p[t], q[t]) >= floor) & (np.abs(dl[t]) > MOVE_EPS)
            for name, sign in (("rises", 1), ("falls", -1)):
                keep = eligible & (sign * change[t] > 0)
                order = np.argsort(-sign * change[t], kind="stable")
                want = [i for i in order if keep[i]][:4]
                got = eff[name][t]
                assert [m[0] for m in got] == want, (floor, t, name)
                for token, p_before, p_after, dlogp in got:
                    assert max(p_before, p_after) >= floor
                    assert (p_before, p_after, dlogp) == pytest.approx((p[t, token], q[t, token], dl[t, token]), abs=1e-9)
        moved = [m[0] for kind in ("rises", "falls") for m in eff[kind][t_star]]
        if rank == "logp":  # without a floor it is the first of its direction; above its probability, gone
            assert (token_star in moved) == (floor == 0.0)
        else:
            assert floor == 0.0 or token_star not in moved


def test_mean_ablation_sets_the_neuron_to_its_corpus_mean_of_h(probe, planted, summary_file):
    """`mean` is h_sum / n_tokens, the mean of h over every token of the corpus (fired or not), which
    a dense pass over the stored corpus reproduces; the ablation equals a rerun with the neuron's h
    replaced by it (its weights edited)."""
    with Summary.open(planted[2]) as s:
        assert s.has("h_sum")
        seqs = [s.sequence(i) for i in range(s.n_seq)]
        for layer in range(s.n_layers):
            dense = np.concatenate([probe.firing(ids, layer).h for ids in seqs]).astype(np.float64).mean(0)
            np.testing.assert_allclose(s.read("h_sum", layer) / s.n_tokens, dense, rtol=1e-5, atol=1e-7)
    ids = np.r_[2, new_text(5)]
    for layer, neuron in ((0, 1), (1, 1), (0, 9)):
        mean = float(np.concatenate([probe.firing(x, layer).h[:, neuron] for x in seqs]).astype(np.float64).mean())
        out = probe_text(probe, summary_file, None, layer, neuron, ablate="mean", ids=ids)["ablation"]
        assert out["mode"] == "mean" and out["value"] == pytest.approx(mean, rel=1e-5, abs=1e-7)
        assert out["value"] != summary_file.neuron(layer, neuron)["activation"]["mean"]  # not the mean *firing* value
        _, _, kl, loss = direct(probe.model, ids, layer, neuron, mean)
        np.testing.assert_allclose([p["kl"] for p in out["positions"]], kl, atol=1e-6, rtol=1e-4)
        np.testing.assert_allclose([p["loss_delta"] for p in out["positions"][:-1]], loss, atol=1e-6, rtol=1e-4)


def test_mean_ablation_of_a_summary_collected_before_h_sum_says_so(planted, probe, tmp_path, capsys):
    older = tmp_path / "older.h5"
    with Summary.open(planted[2]) as s, SummaryWriter(older) as w:
        w.copy_from(s, skip=("h_sum",))
    assert main(["probe", str(older), "t04 t05", "--neuron", "1", "--ablate", "mean"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mean ablation needs" in err and "collect it again" in err
    assert main(["probe", str(older), "t04 t05", "--neuron", "1", "--ablate", "zero", "--json"]) == 0  # zero still works
    assert json.loads(capsys.readouterr().out)["ablation"]["mode"] == "zero"
    with Summary.open(older) as s, pytest.raises(ProbeError, match="mean ablation needs"):
        ablation_value(s, 0, 1, "mean")


def test_cli_json_fields_and_table(planted, capsys):
    path = str(planted[2])
    assert main(["probe", path, "t04 t05 t07 t05", "--neuron", "1", "--ablate", "clamp", "--value", "2",
                 "--rank", "logp", "--floor", "0.01", "--json"]) == 0
    a = json.loads(capsys.readouterr().out)["ablation"]
    assert list(a) == ["mode", "value", "rank", "floor", "mean_kl", "mean_loss_delta", "positions"]
    assert (a["mode"], a["value"], a["rank"], a["floor"]) == ("clamp", 2.0, "logp", 0.01)
    here = a["positions"][2]
    assert list(here) == ["kl", "loss_delta", "next", "top_before", "top_after", "rises", "falls"]
    assert list(here["next"]) == ["token", "text", "p_before", "p_after"] and here["next"]["text"] == "t07"
    assert list(here["rises"][0]) == ["token", "text", "p_before", "p_after", "dp", "dlogp"]
    dlogp = [m["dlogp"] for m in here["rises"]]
    assert dlogp == sorted(dlogp, reverse=True)  # ranked by the change of log-probability
    assert all(max(m["p_before"], m["p_after"]) >= 0.01 for kind in ("rises", "falls") for m in here[kind])
    assert main(["probe", path, "t04 t05 t07 t05", "--neuron", "1", "--ablate"]) == 0
    text = capsys.readouterr().out
    assert "mean KL" in text and "mean Δloss" in text and "KL" in text and "rises" in text
    assert "t05 +" in text  # the detector of 5, zeroed: 5 rises where it fired


# ---- the probe screen ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_probe_screen_at_80x24_shows_kl_loss_change_and_moves_at_the_cursor(planted):
    app = NeuronApp(planted[2])
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await go_to(pilot, "L0 N1")
        await press(pilot, "i")
        screen = app.screen
        assert isinstance(screen, ProbeScreen)
        await type_text(pilot, "t04 t05 t07")
        await press(pilot, "enter")
        assert "z sets the neuron to 0" in screen_text(app)
        await press(pilot, "right", "right", "z")  # t05, where the detector fires: zeroed
        a = screen.result["ablation"]
        assert a["mode"] == "zero" and screen.position == 2
        here = a["positions"][2]
        text = screen_text(app)
        assert "N1 = 0 (zero): next token after t=2" in text
        assert f"KL {nats_text(here['kl'])} nats" in text and f"Δloss {nats_text(here['loss_delta'], True)}" in text
        assert "next t07 p" in text and "before" in text and "after" in text
        assert "rises (Δp) t05 +" in text and "falls (Δp)" in text
        # the whole text's effect, in the status line
        assert f"mean KL {nats_text(a['mean_kl'])}, mean Δloss {nats_text(a['mean_loss_delta'], True)} nats" in text
        await press(pilot, "left")  # t04: the detector is silent there, nothing moves
        text = screen_text(app)
        assert "KL 0.000 nats" in text and "rises (Δp) none" in text
        await press(pilot, "z")
        assert screen.result["ablation"]["mode"] == "mean" and "(mean)" in screen_text(app)
        await press(pilot, "z")
        assert "ablation" not in screen.result


def test_word_boundaries_are_marked_inside_words_only():
    assert continues_word("neur", "ons") and continues_word("x", "2")
    assert not continues_word("wall", ",") and not continues_word("the", " wall") and not continues_word(",", "and")
    tokens = [{"text": t, "activation": None, "fired": None} for t in ("The", " wall", ",", " neur", "ons", ".")]
    shown = shaded_text({"tokens": tokens}, cursor=0).plain
    assert shown == f"The wall, neur{WORD_JOIN}ons." and WORD_JOIN != "·"
