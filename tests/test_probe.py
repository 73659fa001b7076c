"""The probe (core/model/probe.py, `neuron-tui probe`, the explorer's `i`) on the planted OPT.

The planted OPT is saved as a model folder and collected through the command line, so its summary
records a folder fingerprint the probe must find and match. Its planted neurons give answers known
by construction (L0 N1 fires exactly on token 5, L0 N3 on 11 after 9, L1 N1 on 13); the probe's
firing on the stored corpus is checked against the summary's exact counts and event samples, and
ablation against the residual stream algebra (last layer) and a slow path that edits the weights
(earlier layers).
"""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from edit import rewritten
from pilot import press, screen_text, settle, type_text
from planted import planted_corpus, planted_text, save_planted, write_planted_corpus
from tiny import save_tiny, tiny_opt
from transformers import OPTForCausalLM

from neuron_tui.cache import Summary
from neuron_tui.core.model.probe import Probe, ProbeError, probe_text
from neuron_tui.core.read.api import SummaryFile
from neuron_tui.core.read.sampling import token_levels
from neuron_tui.core.sources import resolve
from neuron_tui.tui.app import NeuronApp
from neuron_tui.tui.cli import main
from neuron_tui.tui.screens import LayerScreen, NeuronScreen, ProbeScreen

N_SEQ, T = 64, 32


def collect_cli(folder, corpus, *where) -> int:
    """The planted collection through the command line; `where`: `--out FILE` or `--cache-dir DIR`."""
    return main(["collect", str(folder), "--corpus", str(corpus), "--tokens", str(N_SEQ * T), "--seq-len", str(T),
                 "--batch-size", "16", *map(str, where), "--quiet"])


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """(model folder, plan, summary path) of the planted OPT collected through the command line."""
    root = tmp_path_factory.mktemp("probe")
    folder, plan = save_planted(root / "planted-opt")
    corpus = write_planted_corpus(planted_corpus(n_seq=N_SEQ, T=T), root / "corpus.jsonl")
    out = root / "planted.h5"
    assert collect_cli(folder, corpus, "--out", out) == 0
    return folder, plan, out


@pytest.fixture(scope="module")
def probe(planted):
    with Summary.open(planted[2]) as s:
        return Probe.for_summary(s)


@pytest.fixture
def summary_file(planted):
    with SummaryFile.open(planted[2]) as s:
        yield s


def new_text(seed: int, n: int = T - 1) -> np.ndarray:
    """Token ids of a text the collection never saw (any of the tokens 3..23, the bigram 9 11 twice)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 24, size=n)
    ids[3:5] = [9, 11]
    ids[20:22] = [9, 11]
    return ids


def test_planted_detectors_fire_on_their_tokens_in_new_text_and_nowhere_else(probe, planted):
    plan = planted[1]
    ids = probe.encode(planted_text(new_text(1)))
    assert ids[0] == plan.bos_id and len(ids) == T
    prev = np.r_[-1, ids[:-1]]
    for (layer, neuron), token in plan.token.items():
        fired = probe.firing(ids, layer).fired[:, neuron]
        np.testing.assert_array_equal(fired, ids == token)
    for (layer, neuron), (a, b) in plan.bigram.items():
        fired = probe.firing(ids, layer).fired[:, neuron]
        np.testing.assert_array_equal(fired, (prev == a) & (ids == b))
    for layer, neuron in plan.dead:
        assert not probe.firing(ids, layer).fired[:, neuron].any()


def test_firing_on_the_stored_corpus_equals_the_summary_exactly(probe, planted):
    """Every stored sequence through the probe: per-position counts equal pos_count and act_count,
    and each neuron's firings in each sequence, level-sampled as the collection does, are its events."""
    with Summary.open(planted[2]) as s:
        assert s.n_seq == N_SEQ
        seqs = [s.sequence(i) for i in range(N_SEQ)]
        for layer in range(s.n_layers):
            fired = np.stack([probe.firing(ids, layer).fired for ids in seqs])  # [S, T, F]
            np.testing.assert_array_equal(fired.sum(0), s.read("pos_count", layer))
            np.testing.assert_array_equal(fired.sum((0, 1)), s.read("act_count", layer))
            level = s.read("event_level", layer)
            for neuron in range(s.n_neurons):
                seq, t = np.nonzero(fired[:, :, neuron])
                positions = seq.astype(np.int64) * T + t
                kept = positions[token_levels(positions) >= level[neuron]]
                np.testing.assert_array_equal(kept, s.neuron_events(layer, neuron))


def test_the_json_answer_marks_triggers_and_lists_firing_neurons(summary_file, probe, planted):
    ids = np.array([2, 4, 5, 7, 5, 13])
    out = probe_text(probe, summary_file, None, 0, 1, ids=ids, top=32)
    assert [t["id"] for t in out["tokens"]] == ids.tolist()
    assert [t["fired"] for t in out["tokens"]] == [False, False, True, False, True, False]
    assert [t["trigger"] for t in out["tokens"]] == [i == 5 for i in ids]  # the summary's own trigger list
    assert out["tokens"][2]["activation"] == pytest.approx(1.0, abs=1e-3)  # planted: exactly 1 on its token
    assert out["tokens"][2]["text"] == "t05"
    firing = probe.firing(ids, 0)
    for k, top in enumerate(out["top"]):  # all the layer's firing neurons (top=32 = F), strongest first
        assert sorted(n["neuron"] for n in top) == np.flatnonzero(firing.fired[k]).tolist()
        assert [n["activation"] for n in top] == sorted((n["activation"] for n in top), reverse=True)
    detector = next(n for n in out["top"][2] if n["neuron"] == 1)
    assert detector["categories"] == summary_file.neuron(0, 1)["categories"] and "token" in detector["categories"]
    assert [n["neuron"] for n in probe_text(probe, summary_file, None, 0, 1, ids=ids)["top"][2]] == \
        [n["neuron"] for n in out["top"][2]][:5]  # the default keeps the 5 strongest
    assert "ablation" not in out


def _last_layer_residual(probe: Probe, ids: np.ndarray, ablate=None) -> torch.Tensor:
    """The residual stream after the last decoder layer (before the final layer norm)."""
    seen = []
    layer = probe.model.model.decoder.layers[-1]
    handle = layer.register_forward_hook(lambda m, args, out: seen.append((out[0] if isinstance(out, tuple) else out)[0]))
    try:
        probe.logits(ids, ablate)
    finally:
        handle.remove()
    return seen[0].detach()


def test_ablating_a_last_layer_neuron_subtracts_its_update_from_the_residual(probe):
    ids = np.array([2, 13, 4, 13, 5, 7, 13])
    model = probe.model
    last = len(model.model.decoder.layers) - 1
    fc2 = model.model.decoder.layers[last].fc2.weight.detach()  # [d, F]
    for neuron in (1, 5):
        h = torch.from_numpy(probe.firing(ids, last).h[:, neuron])
        before = _last_layer_residual(probe, ids)
        after = _last_layer_residual(probe, ids, (last, neuron, 0.0))
        torch.testing.assert_close(after - before, -h[:, None] * fc2[:, neuron][None], atol=1e-5, rtol=0)
        dec = model.model.decoder
        expected = model.lm_head(dec.final_layer_norm(before - h[:, None] * fc2[:, neuron][None]))
        np.testing.assert_allclose(probe.logits(ids, (last, neuron, 0.0)), expected.detach().numpy(), atol=1e-4)
    # the planted detector of 13 erases 13's embedding: without it, 13 becomes likelier after a 13
    moves = probe.ablation(ids, last, 1, 0.0, floor=0.0, rank="logp")
    assert all(13 in [t for t, *_ in moves["rises"][k]] for k in np.flatnonzero(ids == 13))
    # it did not fire on token 4: nothing moves there (an FFN acts on its own position only)
    assert moves["rises"][2] == moves["falls"][2] == [] and moves["kl"][2] == 0.0


@pytest.mark.parametrize("value", [0.0, 0.75])
def test_ablating_an_earlier_neuron_equals_rerunning_with_its_weights_edited(probe, value):
    """Slow path: a copy of the model whose fc2 has the neuron's column zeroed and, for a clamp,
    value times that column added to the bias: the same as h_i = value at every position."""
    ids = np.r_[2, new_text(2)]
    slow = copy.deepcopy(probe.model)
    for neuron in (1, 2, 9):  # two planted detectors, one random neuron (3..5 have no update)
        edited = copy.deepcopy(slow)
        fc2 = edited.model.decoder.layers[0].fc2
        with torch.no_grad():
            fc2.bias += value * fc2.weight[:, neuron]
            fc2.weight[:, neuron] = 0.0
            expected = edited(input_ids=torch.as_tensor(ids)[None]).logits[0].numpy()
        got = probe.logits(ids, (0, neuron, value))
        np.testing.assert_allclose(got, expected, atol=1e-4)
        assert not np.allclose(got, probe.logits(ids), atol=1e-4)  # the neuron mattered somewhere


def test_a_planted_detector_suppresses_its_own_trigger_when_clamped_on(summary_file, probe):
    """L1 N1 detects 13 and its update is minus 13's embedding: clamped to its mean firing value
    everywhere, 13 falls most at every position, as the paper finds for real detectors."""
    on = summary_file.neuron(1, 1)["activation"]["mean"]
    out = probe_text(probe, summary_file, None, 1, 1, ablate="clamp", value=on, ids=np.array([2, 4, 5, 7, 9]))
    assert out["ablation"]["mode"] == "clamp" and out["ablation"]["value"] == pytest.approx(1.0, abs=0.3)
    for position in out["ablation"]["positions"]:
        assert position["falls"][0]["token"] == 13 and position["falls"][0]["text"] == "t13"
        assert position["falls"][0]["dp"] < 0 and position["kl"] > 0


# ---- which model ---------------------------------------------------------------------------------------


def test_a_changed_or_missing_model_is_one_line_and_never_loaded(planted, tmp_path, capsys):
    folder, _, out = planted
    copy_ = shutil.copytree(folder, tmp_path / "planted-opt")
    corpus = write_planted_corpus(planted_corpus(n_seq=N_SEQ, T=T), tmp_path / "corpus.jsonl")
    summary = tmp_path / "copy.h5"
    assert collect_cli(copy_, corpus, "--out", summary) == 0
    capsys.readouterr()
    # retrained in place: other weights in the same folder
    model = OPTForCausalLM.from_pretrained(copy_)
    with torch.no_grad():
        model.model.decoder.layers[0].fc1.bias += 1.0
    model.save_pretrained(copy_)
    capsys.readouterr()
    with Summary.open(summary) as s, pytest.raises(ProbeError, match="not the one .* was made from"):
        Probe.for_summary(s)
    assert main(["probe", str(summary), "t05"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("neuron-tui: error: ") and "fingerprint differs" in err
    # gone
    shutil.rmtree(copy_)
    assert main(["probe", str(summary), "t05"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not here" in err
    # a summary that records no fingerprint cannot be probed
    bare = rewritten(out, tmp_path / "bare.h5", model_fingerprint=json.dumps({"kind": "folder"}))
    assert main(["probe", str(bare), "t05"]) == 1
    assert "records no fingerprint" in capsys.readouterr().err


def test_a_model_of_another_shape_is_refused(planted, tmp_path):
    """A summary whose fingerprint names a folder holding a model of another width: refused after
    loading, before any text runs."""
    other = save_tiny(tiny_opt(), tmp_path / "tiny-opt")  # 2 layers x 64 neurons
    fp = json.dumps(resolve(str(other)).fingerprint())
    lying = rewritten(planted[2], tmp_path / "lying.h5", model_fingerprint=fp)
    with Summary.open(lying) as s, pytest.raises(ProbeError, match="2 layers x 64 neurons, .* 2 x 32"):
        Probe.for_summary(s)


# ---- the command line ----------------------------------------------------------------------------------


def test_cli_probe_json_and_ablation(planted, capsys):
    path = planted[2]
    assert main(["probe", str(path), "t04 t05 t07 t05", "--layer", "0", "--neuron", "1", "--ablate", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [t["text"] for t in out["tokens"]] == ["t02", "t04", "t05", "t07", "t05"]
    assert [t["fired"] for t in out["tokens"]] == [False, False, True, False, True]
    assert out["ablation"]["mode"] == "zero" and out["ablation"]["value"] == 0.0
    # the detector of 5 erases 5: ablated, 5 rises most where it fired, and nothing moves where it did not
    assert out["ablation"]["positions"][2]["rises"][0]["text"] == "t05"
    before = out["ablation"]["positions"][1]
    assert before["rises"] == before["falls"] == [] and before["kl"] == 0.0 and before["loss_delta"] == 0.0
    assert main(["probe", str(path), "t04 t05 t07", "--neuron", "1"]) == 0
    text = capsys.readouterr().out
    assert "L0 N1" in text and "●" in text and "t05" in text


def test_cli_probe_finds_a_models_summary_in_the_cache_by_its_name(planted, tmp_path, capsys):
    folder, _, _ = planted
    corpus = write_planted_corpus(planted_corpus(n_seq=N_SEQ, T=T), tmp_path / "corpus.jsonl")
    assert collect_cli(folder, corpus, "--cache-dir", tmp_path / "cache") == 0
    capsys.readouterr()
    assert main(["probe", str(folder), "t04 t05", "--neuron", "1", "--json", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert [t["fired"] for t in json.loads(capsys.readouterr().out)["tokens"]] == [False, False, True]


@pytest.mark.parametrize("args, message", [
    (["t05", "--ablate"], "--ablate needs --neuron"),
    (["t05", "--neuron", "1", "--ablate", "clamp"], "--ablate clamp needs --value X"),
    (["t05", "--neuron", "1", "--ablate", "zero", "--value", "2"], "--value is the value of --ablate clamp"),
    (["t05", "--neuron", "1", "--ablate", "--floor", "1"], "--floor 1.0 is not a probability below 1"),
    (["t05", "--layer", "7"], "no layer 7"),
    (["t05", "--neuron", "99"], "no neuron 99"),
    (["   "], "the text is empty"),
    ([" ".join(["t05"] * T)], "the text has 33 tokens; planted-opt reads at most 32"),
])
def test_cli_probe_refusals_are_one_line(planted, capsys, args, message):
    code = main(["probe", str(planted[2]), *args])
    err = capsys.readouterr().err.strip()
    assert code in (1, 2) and err.count("\n") == 0 and message in err and "Traceback" not in err


def test_the_model_loads_where_the_summary_was_made_when_that_device_is_here(planted, tmp_path):
    made_on_gpu = rewritten(planted[2], tmp_path / "gpu.h5", device="cuda", dtype="bf16")
    with Summary.open(made_on_gpu) as s:
        probe = Probe.for_summary(s)
        expected = "cuda" if torch.cuda.is_available() else "cpu"
        assert probe.device.type == expected
        # on another device than the summary's, the model keeps its default precision there
        assert next(probe.model.parameters()).dtype == (torch.bfloat16 if expected == "cuda" else torch.float32)
        assert Probe.for_summary(s, "cpu").device.type == "cpu"  # --device wins


# ---- the explorer --------------------------------------------------------------------------------------


async def go_to(pilot, where: str) -> None:
    """From the explorer's first screen to the neuron `where` (`L0 N1`), through go-to."""
    await settle(pilot)
    await press(pilot, "g")
    await type_text(pilot, where)
    await press(pilot, "enter")


@pytest.mark.anyio
async def test_the_probe_screen_from_a_neuron_runs_text_moves_ablates_and_opens(planted):
    app = NeuronApp(planted[2])
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await go_to(pilot, "L0 N1")
        assert isinstance(app.screen, NeuronScreen) and (app.screen.layer_index, app.screen.neuron) == (0, 1)
        await press(pilot, "i")
        probe = app.screen
        assert isinstance(probe, ProbeScreen) and (probe.layer_index, probe.neuron) == (0, 1)
        await type_text(pilot, "t04 t05 t07")
        await press(pilot, "enter")
        assert app.explorer.probe.model is not None and probe.result is not None
        assert [t["fired"] for t in probe.result["tokens"]] == [False, False, True, False]
        await press(pilot, "right", "right")
        assert probe.position == 2
        text = screen_text(app)
        assert "t=2 t05" in text and "fired on a recorded trigger" in text and "Firing on t=2" in text
        await press(pilot, "z")  # zeroed: the detector of 5 no longer erases 5
        assert probe.result["ablation"]["mode"] == "zero" and probe.position == 2
        assert "N1 = 0 (zero): next token after t=2" in screen_text(app)
        assert probe.result["ablation"]["positions"][2]["rises"][0]["text"] == "t05"
        await press(pilot, "z")
        assert probe.result["ablation"]["mode"] == "mean"
        await press(pilot, "z")
        assert "ablation" not in probe.result
        await press(pilot, "down")  # the second strongest of those firing on t05
        picked = probe.result["top"][2][1]["neuron"]
        await press(pilot, "enter")
        assert isinstance(app.screen, NeuronScreen) and app.screen.neuron == picked
        await press(pilot, "escape")
        assert app.screen is probe and probe.position == 2  # the probe keeps its text and cursor
        await press(pilot, "escape")
        assert isinstance(app.screen, NeuronScreen) and app.screen.neuron == 1


@pytest.mark.anyio
async def test_the_probe_from_the_layer_table_and_a_model_that_is_not_here(planted, tmp_path):
    app = NeuronApp(planted[2])
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(pilot)
        await press(pilot, "enter")
        assert isinstance(app.screen, LayerScreen)
        neuron = app.screen.table.neuron
        await press(pilot, "i")
        assert isinstance(app.screen, ProbeScreen) and app.screen.neuron == neuron
        await type_text(pilot, "t09 t11")
        await press(pilot, "enter")
        assert len(app.screen.result["tokens"]) == 3
        await press(pilot, "i")  # back to the text box: typing edits the text again
        await type_text(pilot, " t13")
        await press(pilot, "enter")
        assert [t["text"] for t in app.screen.result["tokens"]] == ["t02", "t09", "t11", "t13"]
        await press(pilot, "escape")
        assert isinstance(app.screen, LayerScreen)
    gone = rewritten(planted[2], tmp_path / "gone.h5", model="/nonexistent/planted-opt", model_fingerprint=json.dumps(
        {"kind": "folder", "path": "/nonexistent/planted-opt", "digest": "0" * 16}))
    app = NeuronApp(gone)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(pilot)
        await press(pilot, "enter", "i")
        await settle(pilot)
        assert isinstance(app.screen, LayerScreen)  # the probe closed
        text = screen_text(app)
        assert "is not here" in text and app.explorer.probe.model is None
