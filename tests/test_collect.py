"""Collection end to end on tiny real-architecture models, checked against an independent slow path."""

import os
import signal

import numpy as np
import pytest
import torch
from test_accumulators import reference_contexts, reference_histogram, reference_sign_cases
from tiny import (
    interrupt_forward_at,
    make_tokenizer,
    on_forward_call,
    tiny_gpt2,
    tiny_llama,
    tiny_opt,
    write_text_corpus,
)

from neuron_tui.cache import Summary
from neuron_tui.core.errors import NeuronTuiError
from neuron_tui.core.model.adapters import ffn_out_projections
from neuron_tui.core.model.checkpoints import CheckpointPolicy
from neuron_tui.core.model.collect import collect
from neuron_tui.core.model.histograms import histogram_edges
from neuron_tui.core.model.loading import LoadedModel
from neuron_tui.core.model.plan import Settings, make_plan
from neuron_tui.core.read.queries import CONTEXT_LEFT, CONTEXT_RIGHT
from neuron_tui.core.read.sampling import MAX_LEVEL, token_levels
from neuron_tui.core.sources import ModelSource


def ffn_slow(model, tokens: np.ndarray, layers_wanted=None) -> list[dict[str, np.ndarray]]:
    """The FFN of every layer (or of `layers_wanted`) recomputed from its *input* side (fc1 / c_fc /
    gate & up projections), in one batch, without the hooks under test: per layer {"h": [S, T, F]} and,
    for a gated FFN, "act_gate" and "up" (h = act_gate * up)."""
    kind = model.config.model_type
    outs: dict[tuple[int, str], torch.Tensor] = {}
    handles = []
    layers = {"opt": lambda: model.model.decoder.layers, "gpt2": lambda: model.transformer.h,
              "llama": lambda: model.model.layers}[kind]()
    wanted = range(len(layers)) if layers_wanted is None else layers_wanted
    for i, layer in enumerate(layers):
        if i not in wanted:
            continue
        if kind == "opt":
            mods = {"in": layer.fc1}
        elif kind == "gpt2":
            mods = {"in": layer.mlp.c_fc}
        else:
            mods = {"gate": layer.mlp.gate_proj, "up": layer.mlp.up_proj}
        for name, mod in mods.items():
            handles.append(mod.register_forward_hook(lambda m, a, o, key=(i, name): outs.__setitem__(key, o.detach())))
    with torch.no_grad():
        model(torch.as_tensor(tokens, dtype=torch.long))
    for h in handles:
        h.remove()
    S, T = tokens.shape

    def as_array(x: torch.Tensor) -> np.ndarray:
        return x.reshape(S, T, -1).float().numpy()

    result = []
    for i in wanted:
        layer = layers[i]
        if kind == "opt":
            result.append({"h": as_array(torch.relu(outs[(i, "in")]))})
        elif kind == "gpt2":
            result.append({"h": as_array(layer.mlp.act(outs[(i, "in")]))})
        else:
            act_gate, up = layer.mlp.act_fn(outs[(i, "gate")]), outs[(i, "up")]
            result.append({"h": as_array(act_gate * up), "act_gate": as_array(act_gate), "up": as_array(up)})
    return result


def ffn_activations_slow(model, tokens: np.ndarray) -> list[np.ndarray]:
    """h of every layer, recomputed by `ffn_slow`: [S, T, F] per layer."""
    return [layer["h"] for layer in ffn_slow(model, tokens)]


def assert_collected_as_the_slow_path(s: Summary, layer: int, slow: dict[str, np.ndarray]) -> None:
    """The statistics of one layer beyond the counts against its FFN recomputed over the summary's
    corpus (`slow`, from ffn_slow): h summed over every token; the histogram in the stored bins, which
    sum to act_count and are those of tau and the largest |h| of the calibration slice (the first 8
    sequences); each top context's window of signed h; for a gated FFN the sign cases."""
    h, rule, tau = slow["h"], s.attrs["rule"], s.tau[layer]
    fired = (np.abs(h) if rule == "abs" else h) > tau
    np.testing.assert_allclose(s.read("h_sum", layer), h.sum((0, 1)), rtol=1e-4, atol=1e-4)
    edges = s.read("hist_edges", layer)
    np.testing.assert_array_equal(edges, histogram_edges(tau, np.abs(h[:8]).max(), rule))
    np.testing.assert_array_equal(s.read("hist_count", layer), reference_histogram(h, fired, edges))
    np.testing.assert_array_equal(s.read("hist_count", layer).sum(0), s.read("act_count", layer))
    top_val, top_pos, ctx = s.read("top_val", layer), s.read("top_pos", layer), s.read("ctx_val", layer)
    assert s.context_window == (CONTEXT_LEFT, CONTEXT_RIGHT) and (top_pos >= 0).all()
    np.testing.assert_allclose(ctx, reference_contexts(h, top_pos), rtol=2e-3, atol=1e-6)
    centre = ctx[:, CONTEXT_LEFT].astype(np.float32)
    np.testing.assert_array_equal(np.abs(centre) if rule == "abs" else centre, top_val.astype(np.float16))
    np.testing.assert_allclose(centre, h.reshape(-1, h.shape[-1])[top_pos, np.arange(h.shape[-1])], rtol=2e-3)
    if "up" not in slow:
        assert not s.has("sign_count") and s.sign_cases(layer, 0) is None
        return
    count, val, pos = reference_sign_cases(h, slow["act_gate"], slow["up"], fired)
    np.testing.assert_array_equal(s.read("sign_count", layer), count)
    np.testing.assert_array_equal(count.sum(0), s.read("act_count", layer))
    np.testing.assert_allclose(s.read("sign_top_val", layer), val, rtol=1e-5)
    np.testing.assert_array_equal(s.read("sign_top_pos", layer), pos)


def run_tiny(model, tmp_path, name="tiny", **settings) -> Summary:
    tmp_path.mkdir(parents=True, exist_ok=True)
    corpus = write_text_corpus(tmp_path / "corpus.jsonl")
    defaults = dict(corpus=str(corpus), n_tokens=40 * 24, seq_len=24, batch_size=3, events_cap=12, top_k=3)
    defaults.update(settings)
    plan = make_plan(name, model.config, Settings(**defaults), "cpu", cache_dir=tmp_path / "cache")
    path = collect(LoadedModel(model, make_tokenizer(), ModelSource(name, "memory"), ""), plan, quiet=True)
    return Summary.open(path)


@pytest.mark.parametrize("build", [tiny_opt, tiny_gpt2, tiny_llama], ids=["opt", "gpt2", "llama"])
def test_hooks_match_an_independent_slow_path(build, tmp_path):
    model = build()
    with run_tiny(model, tmp_path) as s:
        tokens = s.read("tokens")
        assert tokens.shape == (40, 24) and (tokens[:, 0] == 1).all()  # BOS first, as the tokenizer adds it
        slow = ffn_slow(model, tokens)
        acts = [layer["h"] for layer in slow]
        tau = s.read("tau")
        expected_rule = "relu" if model.config.model_type == "opt" else "abs"
        assert s.attrs["rule"] == expected_rule
        g = np.arange(tokens.size)
        z = token_levels(g)
        for layer, h in enumerate(acts):
            value = h if expected_rule == "relu" else np.abs(h)
            fired = value > tau[layer]
            np.testing.assert_array_equal(s.read("act_count", layer), fired.sum((0, 1)))
            np.testing.assert_array_equal(s.read("pos_count", layer), fired.sum(0))
            np.testing.assert_allclose(s.read("act_sum", layer), np.where(fired, h, 0).sum((0, 1)), rtol=1e-4, atol=1e-5)
            up = fired & (h > 0)  # the sign split: a gated neuron fires negative too
            np.testing.assert_array_equal(s.read("act_count_pos", layer), up.sum((0, 1)))
            np.testing.assert_allclose(s.read("act_sum_pos", layer), np.where(up, h, 0).sum((0, 1)), rtol=1e-4, atol=1e-5)
            if expected_rule == "abs":
                assert (s.read("act_count_pos", layer) < s.read("act_count", layer)).any()
            np.testing.assert_allclose(s.read("act_max", layer), value.max((0, 1)), rtol=1e-5)
            flat = fired.reshape(-1, fired.shape[-1])
            levels = s.read("event_level", layer)
            for i in range(flat.shape[1]):
                fg = g[flat[:, i]]
                level = next(L for L in range(MAX_LEVEL) if (z[fg] >= L).sum() <= 12)
                assert levels[i] == level
                np.testing.assert_array_equal(s.neuron_events(layer, i), fg[z[fg] >= level])
            assert_collected_as_the_slow_path(s, layer, slow[layer])
        assert s.has("sign_count") == (model.config.model_type == "llama")
        if expected_rule == "abs":  # tau is the 0.99 quantile of |h| on the calibration slice
            calib = np.abs(acts[0][:8]).ravel()
            assert np.mean(calib > tau[0]) == pytest.approx(0.01, abs=0.004)
        assert s.complete and s.attrs["n_tokens"] == 960


def test_summary_records_what_reproduces_it(tmp_path):
    with run_tiny(tiny_opt(), tmp_path, seed=3) as s:
        a = s.attrs
        assert a["model"] == "tiny" and a["architecture"] == "opt" and a["threshold"] == 0.0
        assert a["seq_len"] == 24 and a["n_seq"] == a["n_seq_planned"] == 40 and a["events_cap"] == 12
        assert s.corpus["seed"] == 3 and len(s.corpus["content_sha256"]) == 64
        assert str(tmp_path) not in str(dict(a))  # nothing machine-specific
        assert s.vocab[4] == "the" and s.vocab[5] == "of" and len(s.vocab) == tiny_opt().config.vocab_size


def _arrays(summary: Summary) -> dict:
    """The datasets a resumed run must reproduce exactly (h_sum too: a checkpoint keeps it in float64)."""
    names = ["tokens", "tau", "act_count", "pos_count", "act_max", "top_val", "top_pos", "event_level",
             "event_offsets", "event_pos", "h_sum", "ctx_val", "hist_edges", "hist_count", "sign_count",
             "sign_top_val", "sign_top_pos"]
    return {n: summary.read(n) for n in names}


def assert_resumes_to(model, folder, expected: dict) -> None:
    """Running the same collection again in `folder` (it resumes) gives the datasets `expected`."""
    with run_tiny(model, folder) as s:
        got = _arrays(s)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def assert_a_prefix_of_whole_batches(partial, model, expected: dict, batch_size: int = 3) -> None:
    """The checkpoint of an interrupted run: its first sequences, a whole number of batches, each layer
    holding exactly their counts (recounted by the slow path) and nothing of the batch cut short."""
    with Summary.open(partial) as p:
        assert not p.complete
        n_seq = p.attrs["n_seq"]
        tokens = p.read("tokens")[:n_seq]
        counted = [p.read("act_count", layer) for layer in range(p.n_layers)]
    assert 0 < n_seq < len(expected["tokens"]) and n_seq % batch_size == 0
    np.testing.assert_array_equal(tokens, expected["tokens"][:n_seq])
    for layer, h in enumerate(ffn_activations_slow(model, tokens)):
        np.testing.assert_array_equal(counted[layer], (np.abs(h) > expected["tau"][layer]).sum((0, 1)))


def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    model = tiny_llama()
    with run_tiny(model, tmp_path / "a") as s:
        expected = _arrays(s)

    interrupt_forward_at(monkeypatch, 6)
    with pytest.raises(NeuronTuiError, match="checkpoint kept.*resume"):
        run_tiny(model, tmp_path / "b", checkpoint_seconds=1e9)
    (partial,) = (tmp_path / "b" / "cache").glob("*.partial.h5")
    assert_a_prefix_of_whole_batches(partial, model, expected)
    monkeypatch.undo()
    assert_resumes_to(model, tmp_path / "b", expected)
    assert not partial.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_collection_equals_cpu(tmp_path):
    """The sync-free device path gives the CPU's counts and samples (ReLU model: fired iff h > 0)."""
    with run_tiny(tiny_opt(), tmp_path / "cpu") as a, run_tiny(tiny_opt().to("cuda"), tmp_path / "cuda") as b:
        for name in ("act_count", "pos_count", "event_level", "event_offsets", "event_pos"):
            np.testing.assert_array_equal(a.read(name), b.read(name), err_msg=name)
        # top contexts: the same values (positions may differ where two sequences tie exactly)
        np.testing.assert_allclose(a.read("top_val"), b.read("top_val"), rtol=1e-5)


def test_a_signal_mid_forward_never_checkpoints_a_half_counted_batch(tmp_path, monkeypatch):
    """SIGTERM arriving while layer 1 runs (layer 0 has already counted the batch): the batch
    finishes, the checkpoint holds whole batches only, and the resumed run equals an uninterrupted one."""
    model = tiny_llama()
    with run_tiny(model, tmp_path / "a") as s:
        expected = _arrays(s)

    def sigterm_in_layer_1():
        def send(module, args):
            handle.remove()
            os.kill(os.getpid(), signal.SIGTERM)

        handle = ffn_out_projections(model)[1].register_forward_pre_hook(send)

    on_forward_call(monkeypatch.setattr, 6, sigterm_in_layer_1)
    with pytest.raises(NeuronTuiError, match="checkpoint kept"):
        run_tiny(model, tmp_path / "b", checkpoint_seconds=1e9)
    (partial,) = (tmp_path / "b" / "cache").glob("*.partial.h5")
    assert_a_prefix_of_whole_batches(partial, model, expected)
    monkeypatch.undo()
    assert_resumes_to(model, tmp_path / "b", expected)


def test_checkpoints_come_every_interval_after_the_last_was_taken():
    """Every 60 s by default, whatever a write costs (the pass no longer waits for it);
    --checkpoint-seconds sets the interval."""
    now = [0.0]
    policy = CheckpointPolicy(None, clock=lambda: now[0])
    now[0] = 59.9
    assert not policy.due()
    now[0] = 60.0
    assert policy.due()
    policy.taken()
    now[0] += 59.9
    assert not policy.due()
    now[0] += 0.1
    assert policy.due()
    fixed = CheckpointPolicy(5.0, clock=lambda: now[0])
    assert fixed.interval == 5.0 and not fixed.due()
    now[0] += 5.0
    assert fixed.due()
