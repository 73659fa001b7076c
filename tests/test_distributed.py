"""Data-parallel collection: two gloo processes on the CPU must write the single-process summary."""

import json
import os
import socket
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch.multiprocessing as mp
from test_merge import assert_same_root_datasets
from tiny import interrupt_forward_at, save_tiny, tiny_llama, write_text_corpus

from neuron_tui.cache import Summary, schema
from neuron_tui.core.errors import NeuronTuiError
from neuron_tui.tui.cli import main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _calibration_worker(rank: int, world: int, port: int, out: str) -> None:
    """Rank r calibrates to tau r*10 + [1, 2] and bins r + [0, 1, 2], so any calibration but rank 0's
    shows; then rank 1 resumes a checkpoint whose tau, and one whose bins, are not rank 0's."""
    from neuron_tui.core.model import distributed
    from neuron_tui.core.model.calibration import Calibration

    def calibration(tau, edges):
        return Calibration(np.array(tau, np.float32), np.array([edges, edges], np.float32))

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    with distributed.session("cpu") as me:
        first = distributed._agree_calibration(me, None, lambda: calibration([1 + 10 * rank, 2 + 10 * rank],
                                                                            [rank, rank + 1, rank + 2]))
        outcomes = []
        for theirs in (calibration([9, 9], [0, 1, 2]), calibration([1, 2], [0, 1, 3])):
            resumed = calibration([1, 2], [0, 1, 2]) if rank == 0 else theirs
            try:
                agreed = distributed._agree_calibration(me, resumed, lambda: calibration([5, 5], [5, 6, 7]))
                outcomes.append([agreed.tau.tolist(), agreed.hist_edges[0].tolist()])
            except NeuronTuiError as exc:
                outcomes.append(str(exc))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"first": [first.tau.tolist(), first.hist_edges[0].tolist()], "resumed": outcomes}, f)


def test_every_rank_counts_with_rank_0s_calibration(tmp_path):
    """tau and the histogram bins come from rank 0 (calibrated there, or its checkpoint's); a rank
    that resumes a checkpoint counted with another tau or other bins stops with a one-line error
    instead of mixing thresholds or bins."""
    # fork: the workers need no fresh interpreter (spawn would re-import transformers in each)
    mp.start_processes(_calibration_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, start_method="fork")
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["first"] == r1["first"] == [[1.0, 2.0], [0.0, 1.0, 2.0]]
    assert r0["resumed"] == [[[1.0, 2.0], [0.0, 1.0, 2.0]]] * 2
    assert all("rank 1 resumed a checkpoint counted with another tau or other histogram bins" in outcome
               for outcome in r1["resumed"])


def datasets(path) -> dict:
    with h5py.File(path, "r") as f:
        return {name: f[name][()] for name in f if isinstance(f[name], h5py.Dataset)}


def test_torchrun_two_processes_equal_one_process(tmp_path, monkeypatch, capsys):
    """`torchrun --nproc-per-node 2 -m neuron_tui.tui.cli collect --distributed` on a tiny Llama (abs rule: tau is
    calibrated, on rank 0) writes the single-process summary: counts, events and levels exactly.
    Rank 1 starts from a checkpoint of its shard (4 of its 20 sequences) in which act_max of one
    neuron was set to 1e6: the result carries that value, so rank 1 resumed rather than restarted."""
    model = save_tiny(tiny_llama(), tmp_path / "tiny-llama")
    corpus = write_text_corpus(tmp_path / "corpus.jsonl", n_docs=60)
    args = [str(a) for a in (model, "--corpus", corpus, "--tokens", 960, "--seq-len", 24, "--batch-size", 4,
                             "--events", 12, "--quiet")]
    assert main(["collect", *args, "--out", str(tmp_path / "single.h5")]) == 0

    interrupt_forward_at(monkeypatch, 4)  # calls 1-2 calibrate (8 sequences), 3 counts a batch, 4 stops
    out = tmp_path / "dist.h5"
    rank1 = tmp_path / "dist.shard1of2.h5"  # the checkpoint rank 1 of 2 resumes from
    assert main(["collect", *args, "--shard", "1/2", "--out", str(rank1)]) == 1
    checkpoint = tmp_path / "dist.shard1of2.partial.h5"
    with h5py.File(checkpoint, "r+") as f:
        assert f.attrs["n_seq"] == 4
        f["act_max"][1, 5] = 1e6
    monkeypatch.undo()
    capsys.readouterr()

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "neuron_tui.tui.cli", "collect", "--distributed", *args, "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert not checkpoint.exists() and not list(tmp_path.glob("*.partial.h5"))
    got, want = datasets(out), datasets(tmp_path / "single.h5")
    assert got["act_max"][1, 5] == np.float32(1e6)
    got["act_max"][1, 5] = want["act_max"][1, 5]
    assert_same_root_datasets(got, want)  # the histogram in the same bins, the sign cases, the windows
    assert (want["event_level"] > 0).any() and len(want["tau"]) == 3 and (want["tau"] > 0).all()
    assert want["hist_edges"].shape == (3, schema.HIST_BINS + 1) and "sign_count" in want
    with Summary.open(out) as f, Summary.open(tmp_path / "single.h5") as g:
        assert f.attrs["key"] == g.attrs["key"] and f.attrs["shard"] == "0/1" and f.attrs["complete"]
        np.testing.assert_array_equal(f.analysis.read("flags"), g.analysis.read("flags"))
        np.testing.assert_array_equal(f.projection.read("cand_tok"), g.projection.read("cand_tok"))


@pytest.mark.parametrize("extra, message", [
    (["--shard", "0/2"], "drop --shard, --device-map and --layer-by-layer"),
    (["--device-map", "auto"], "drop --shard, --device-map and --layer-by-layer"),
    (["--layer-by-layer"], "drop --shard, --device-map and --layer-by-layer"),
    ([], "--distributed runs under torchrun (no RANK in the environment)"),
])
def test_distributed_usage_errors(extra, message, capsys, monkeypatch):
    """Before any model is loaded: a shard or device map of its own, or no torchrun around it."""
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    code = main(["collect", "--distributed", "some-model", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err
