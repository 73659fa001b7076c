"""`--device-map auto` (accelerate): layers placed over devices, offloaded to CPU memory or disk.

On this CPU-only machine accelerate can still offload: a small `--max-memory` puts some layers and the
LM head on disk (weights on the meta device, loaded per forward), which exercises what a model larger
than its GPUs goes through: hooks on offloaded layers, inputs sent to the execution device, and
projections of weights that are not resident. Several GPUs: the last test, skipped without two.
"""

import h5py
import numpy as np
import pytest
import torch
from tiny import (
    interrupt_forward_at,
    save_tiny,
    tiny_gpt2,
    tiny_llama,
    tiny_opt,
    write_text_corpus,
)

from neuron_tui.core.errors import UsageError
from neuron_tui.core.model import layerwise
from neuron_tui.core.model import loading as models
from neuron_tui.core.model.accumulators import LayerAccumulator, device_bytes
from neuron_tui.core.model.histograms import histogram_edges
from neuron_tui.core.model.plan import Settings, device_budget, make_plan
from neuron_tui.core.sources import resolve
from neuron_tui.tui.cli import main


def everything(path) -> dict:
    """Every dataset of a summary, by name (the projection group's included)."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def collect_args(model_dir, corpus, out, *extra, device="cpu") -> list[str]:
    return ["collect", str(model_dir), "--corpus", str(corpus), "--tokens", "480", "--seq-len", "24",
            "--batch-size", "4", "--events", "8", "--device", device, "--out", str(out), "--quiet", *extra]


# 80 KB: embeddings and layer 0 in memory, the rest on disk; 40 KB: the whole model on disk, embeddings too
@pytest.mark.parametrize("budget, in_memory, on_disk", [
    ("cpu=80KB", ["model.embed_tokens", "model.layers.0"], ["model.layers.1", "model.layers.2", "lm_head"]),
    ("cpu=40KB", [], [""]),
], ids=["some-layers", "everything"])
def test_layers_offloaded_to_disk_collect_what_resident_layers_collect(tmp_path, budget, in_memory, on_disk):
    model_dir = save_tiny(tiny_llama(), tmp_path / "model")
    corpus = write_text_corpus(tmp_path / "corpus.jsonl")
    placement = ["--device-map", "auto", "--max-memory", budget, "--offload-folder", str(tmp_path / "off")]
    loaded = models.load(resolve(str(model_dir)), device="cpu", device_map="auto",
                         max_memory=models.parse_max_memory(budget), offload_folder=str(tmp_path / "off0"))
    where = loaded.model.hf_device_map
    assert [where[m] for m in in_memory] == ["cpu"] * len(in_memory)
    assert [where[m] for m in on_disk] == ["disk"] * len(on_disk)

    assert main(collect_args(model_dir, corpus, tmp_path / "resident.h5")) == 0
    assert main(collect_args(model_dir, corpus, tmp_path / "offloaded.h5", *placement)) == 0
    resident, offloaded = everything(tmp_path / "resident.h5"), everything(tmp_path / "offloaded.h5")
    assert resident.keys() == offloaded.keys() and "projection/suppressed_tok" in resident
    assert resident["act_count"].sum() > 0
    for name, value in resident.items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(offloaded[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(offloaded[name], value, err_msg=name)


def test_placement_options_need_a_device_map(tmp_path, capsys):
    model_dir = save_tiny(tiny_llama(), tmp_path / "model")
    corpus = write_text_corpus(tmp_path / "corpus.jsonl")
    assert main(collect_args(model_dir, corpus, tmp_path / "x.h5", "--max-memory", "cpu=1GiB")) == 2
    assert "add it" in capsys.readouterr().err and not (tmp_path / "x.h5").exists()


def test_max_memory_is_parsed_into_bytes_per_device():
    assert models.parse_max_memory("0=2GiB, cuda:1=512MiB,cpu=1GB") == {0: 2 * 2**30, 1: 512 * 2**20, "cpu": 10**9}
    for bad in ("0", "gpu=1GiB", "0=lots"):
        with pytest.raises(UsageError, match="bad --max-memory entry"):
            models.parse_max_memory(bad)


@pytest.mark.parametrize("gated", [False, True])
def test_accumulator_footprint_is_what_the_accumulators_allocate(gated):
    acc = LayerAccumulator(100, 16, 8, 4, "cpu", "relu", 0.0, histogram_edges(0.0, 1.0, "relu"), gated)

    def held(obj) -> int:  # the tensors an accumulator and its parts hold
        return sum(t.nbytes if isinstance(t, torch.Tensor) else held(t) for t in vars(obj).values()
                   if isinstance(t, torch.Tensor) or type(t).__module__.startswith("neuron_tui.core.model"))

    assert device_bytes(100, 16, 8, 4, gated, cpu=True) == held(acc)
    # OPT-66b at the paper's settings: about 380 MB a layer, 24 GB for 64 layers
    assert device_bytes(36864, 2048, 256, 8, False) * 64 / 1e9 == pytest.approx(24.5, abs=0.1)


def test_device_budget_leaves_each_gpu_room_for_its_layers_accumulators(tmp_path):
    corpus = write_text_corpus(tmp_path / "corpus.jsonl")
    config = tiny_llama().config  # 3 layers x 48 neurons
    plan = make_plan("tiny", config, Settings(corpus=str(corpus), n_tokens=480, seq_len=24, batch_size=4,
                                              events_cap=8, top_k=4), "cuda", cache_dir=tmp_path)
    per_layer = device_bytes(48, 24, 8, 4, True)  # a gated FFN
    workspace = 17 * 4 * 24 * 48 + 2**30
    gib = 2**30
    # GPU 0 runs every offloaded layer: room for all 3; GPU 1 for its share, ceil(3 / 2) = 2
    assert device_budget(plan, 3, 48, [8 * gib, 8 * gib]) == {
        0: 8 * gib - 3 * per_layer - workspace, 1: 8 * gib - 2 * per_layer - workspace}
    assert device_budget(plan, 3, 48, [gib]) == {0: 0}  # the workspace alone fills it: never negative


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_layers_spread_over_two_gpus_collect_what_one_gpu_collects(tmp_path):
    """Each layer's accumulators live on its own GPU; the counts equal a one-GPU run's exactly."""
    model_dir = save_tiny(tiny_llama(), tmp_path / "model")
    corpus = write_text_corpus(tmp_path / "corpus.jsonl")
    fixed = ["--dtype", "fp32", "--threshold", "0.05"]  # the same tau for both runs
    one = collect_args(model_dir, corpus, tmp_path / "one.h5", *fixed, device="cuda:0")
    two = collect_args(model_dir, corpus, tmp_path / "two.h5", *fixed, "--device-map", "auto",
                       "--max-memory", "0=40KB,1=1GiB", device="cuda:0")
    loaded = models.load(resolve(str(model_dir)), dtype="fp32", device_map="auto",
                         max_memory=models.parse_max_memory("0=40KB,1=1GiB"))
    assert {str(d) for d in loaded.model.hf_device_map.values()} == {"0", "1"}
    assert main(one) == 0 and main(two) == 0
    a, b = everything(tmp_path / "one.h5"), everything(tmp_path / "two.h5")
    for name in ("act_count", "pos_count", "event_level", "event_offsets", "event_pos", "projection/promoted_tok"):
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("build", [tiny_opt, tiny_gpt2, tiny_llama], ids=["opt", "gpt2", "llama"])
def test_layer_by_layer_collects_what_batch_by_batch_collects(build, tmp_path):
    """Each layer runs every batch of a chunk before the next layer does (weights moved once a chunk):
    every layer sees the hidden states it sees batch by batch, so the summary is the same, calibrated
    tau and projections included. 19 sequences in batches of 4 and chunks of 3 batches: chunks of
    4+4+4 and 4+3 sequences, so a short chunk and a batch of another shape are covered."""
    model_dir = save_tiny(build(), tmp_path / "model")
    corpus = write_text_corpus(tmp_path / "corpus.jsonl")
    short = ["--tokens", str(19 * 24)]
    assert main(collect_args(model_dir, corpus, tmp_path / "batches.h5", *short)) == 0
    assert main(collect_args(model_dir, corpus, tmp_path / "layers.h5", *short, "--layer-by-layer",
                             "--chunk-tokens", str(3 * 4 * 24))) == 0
    batches, layers = everything(tmp_path / "batches.h5"), everything(tmp_path / "layers.h5")
    assert batches.keys() == layers.keys() and batches["act_count"].sum() > 0 and len(batches["tokens"]) == 19
    for name, value in batches.items():
        np.testing.assert_array_equal(layers[name], value, err_msg=name)


def test_layer_by_layer_builds_each_batchs_index_once_for_all_layers(tmp_path, monkeypatch):
    """Every layer of a chunk sees every batch; the batch's index tensors are made once, not per layer."""
    from neuron_tui.core.model import recorder as recorder_mod

    built = []
    real = recorder_mod.BatchIndex

    def counting(positions, device, scratch=None):
        built.append(int(positions.flat[0]))
        return real(positions, device, scratch)

    monkeypatch.setattr(recorder_mod, "BatchIndex", counting)
    model_dir = save_tiny(tiny_llama(), tmp_path / "model")  # 3 layers
    corpus = write_text_corpus(tmp_path / "corpus.jsonl")
    assert main(collect_args(model_dir, corpus, tmp_path / "layers.h5", "--tokens", str(19 * 24),
                             "--layer-by-layer", "--chunk-tokens", str(3 * 4 * 24))) == 0
    assert built == [b * 4 * 24 for b in range(5)]  # 19 sequences in 5 batches, one index each


def test_an_interrupted_layer_by_layer_run_resumes_to_the_uninterrupted_summary(tmp_path, monkeypatch, capsys):
    """Checkpoints fall between chunks; a stop request waits for the chunk to end."""
    model_dir = save_tiny(tiny_llama(), tmp_path / "model")
    corpus = write_text_corpus(tmp_path / "corpus.jsonl")
    layered = ["--layer-by-layer", "--chunk-tokens", str(3 * 4 * 24)]
    assert main(collect_args(model_dir, corpus, tmp_path / "whole.h5", *layered)) == 0
    # forward calls: 1-2 calibrate (8 sequences), 3-5 embed chunk 1 (12 sequences), 6 starts chunk 2
    interrupt_forward_at(monkeypatch, 6)
    args = collect_args(model_dir, corpus, tmp_path / "resumed.h5", *layered, "--checkpoint-seconds", "1e9")
    assert main(args) == 1
    assert "interrupted after 288 of 480 tokens" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(args) == 0
    whole, resumed = everything(tmp_path / "whole.h5"), everything(tmp_path / "resumed.h5")
    for name, value in whole.items():
        if name in ("act_sum", "act_sum_pos"):  # a checkpoint keeps the float64 sums as float32
            np.testing.assert_allclose(resumed[name], value, rtol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(resumed[name], value, err_msg=name)


def test_layer_by_layer_moves_each_layer_in_and_out_and_nothing_back():
    """on_device swaps a layer's weights for device copies and puts the same host tensors back."""
    layer = tiny_opt().model.decoder.layers[0]
    before = dict(layer.named_parameters())
    with layerwise.on_device(layer, torch.device("meta")):
        assert {t.device.type for t in layer.state_dict().values()} == {"meta"}
    after = dict(layer.named_parameters())
    assert after.keys() == before.keys() and all(after[name] is before[name] for name in before)
    assert {t.device.type for t in layer.state_dict().values()} == {"cpu"}
    assert layerwise.chunk_batches("cpu", 96, None) == layerwise.CPU_CHUNK_BATCHES
    assert layerwise.chunk_batches("cuda", 16384, None) == 64 and layerwise.chunk_batches("cuda", 16384, 1000) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_layer_by_layer_on_a_gpu_moves_weights_and_collects_the_same(tmp_path):
    """On a GPU the layers really travel: host weights, device embeddings, the same summary."""
    model_dir = save_tiny(tiny_llama(), tmp_path / "model")
    corpus = write_text_corpus(tmp_path / "corpus.jsonl")
    fixed = ["--dtype", "fp32", "--threshold", "0.05"]
    assert main(collect_args(model_dir, corpus, tmp_path / "batches.h5", *fixed, device="cuda")) == 0
    assert main(collect_args(model_dir, corpus, tmp_path / "layers.h5", *fixed, "--layer-by-layer",
                             "--chunk-tokens", str(3 * 4 * 24), device="cuda")) == 0
    batches, layers = everything(tmp_path / "batches.h5"), everything(tmp_path / "layers.h5")
    for name in ("act_count", "pos_count", "event_level", "event_offsets", "event_pos", "projection/promoted_tok"):
        np.testing.assert_array_equal(layers[name], batches[name], err_msg=name)
