"""The command line: each bad input gets its one-line error and exit status; a killed run resumes."""

import json
import os
import re
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
from tiny import write_text_corpus

from neuron_tui.cache import Summary, schema, write_summary
from neuron_tui.tui.cli import main


@pytest.fixture
def corpus(tmp_path):
    return write_text_corpus(tmp_path / "corpus.jsonl", n_docs=60)


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("neuron-tui: error: "), err
    assert "Traceback" not in err
    return lines[0]


def collect_args(model_dir, corpus, tmp_path, *extra):
    return ["collect", model_dir, "--corpus", corpus, "--tokens", 960, "--seq-len", 24, "--batch-size", 4,
            "--cache-dir", tmp_path / "cache", "--quiet", *extra]


def test_collect_then_report_json(capsys, model_dir, corpus, tmp_path):
    code, out, err = cli(capsys, *collect_args(model_dir, corpus, tmp_path))
    assert code == 0, err
    path = out.strip()
    assert path.endswith(".h5") and os.path.exists(path)
    code, out, _ = cli(capsys, "report", path, "--json")
    report = json.loads(out)
    assert code == 0 and len(report["layers"]) == 2
    with Summary.open(path) as s:
        dead = int((s.read("act_count", 0) == 0).sum())
    assert report["layers"][0]["neurons"] == 64 and report["layers"][0]["dead"] == dead
    # the same command again finds the summary instead of collecting
    code, out2, err = cli(capsys, *collect_args(model_dir, corpus, tmp_path)[:-1])
    assert code == 0 and out2.strip() == path and "existing summary" in err
    # `report MODEL` finds the cached summary by model name
    code, out3, _ = cli(capsys, "report", model_dir, "--cache-dir", tmp_path / "cache", "--json")
    assert code == 0 and json.loads(out3)["file"] == path
    # and so does every command that reads one summary: the same answers as from the file
    for args in (("neuron", "0", "3", "--json"), ("neurons", "--layer", "1", "--json")):
        by_file = cli(capsys, args[0], path, *args[1:])
        by_name = cli(capsys, args[0], model_dir, *args[1:], "--cache-dir", tmp_path / "cache")
        assert by_file[0] == by_name[0] == 0 and by_file[1] == by_name[1] and json.loads(by_name[1])
    # the Python API finds it by the same name
    import neuron_tui

    with neuron_tui.open_summary(model_dir, cache_dir=tmp_path / "cache") as s:
        assert str(s.path) == path
    code, out4, _ = cli(capsys, "analyze", model_dir, "--cache-dir", tmp_path / "cache")
    assert code == 0 and out4.strip() == path


def test_a_collection_reports_its_peak_memory(capsys, model_dir, corpus, tmp_path):
    code, _, err = cli(capsys, *collect_args(model_dir, corpus, tmp_path)[:-1])  # without --quiet
    assert code == 0, err
    line = next(line for line in err.splitlines() if "peak memory" in line)
    host = float(re.search(r"host ([\d.]+) GiB", line).group(1))
    assert 0.05 < host < 24  # this process: Python, torch, the model (the machine has 24 GiB)


@pytest.mark.parametrize(
    "model, status, message",
    [("opt-13x", 2, "unknown model 'opt-13x'; OPT sizes: opt-125m"),
     ("no such model!", 2, "unknown model 'no such model!'"),
     ("/nonexistent/model.gguf", 2, "no GGUF file at")],
)
def test_unknown_models(capsys, tmp_path, model, status, message):
    code, _, err = cli(capsys, "collect", model, "--cache-dir", tmp_path)
    assert code == status and message in one_line_error(err)


def test_hub_model_without_network_says_how_to_pass_a_folder(capsys, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no retries against an unreachable host: fail fast
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code, _, err = cli(capsys, "collect", "some-org/some-model", "--cache-dir", tmp_path)
    line = one_line_error(err)
    assert code == 1 and "unreachable" in line and "pass DIR" in line


def test_unknown_architecture_names_the_supported_ones(capsys, tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path / "bert")
    code, _, err = cli(capsys, "collect", tmp_path / "bert", "--cache-dir", tmp_path)
    line = one_line_error(err)
    assert code == 2 and "unsupported architecture 'bert'" in line and "gpt2" in line and "opt" in line


def test_corpus_errors(capsys, model_dir, tmp_path):
    code, _, err = cli(capsys, *collect_args(model_dir, tmp_path / "missing.txt", tmp_path))
    assert code == 2 and "missing.txt" in one_line_error(err)
    (tmp_path / "empty.txt").write_text("   \n")
    code, _, err = cli(capsys, *collect_args(model_dir, tmp_path / "empty.txt", tmp_path))
    assert code == 2 and "empty.txt" in one_line_error(err)


def test_seq_len_over_the_model_maximum(capsys, model_dir, corpus, tmp_path):
    code, _, err = cli(capsys, *collect_args(model_dir, corpus, tmp_path, "--seq-len", 100))
    assert code == 2 and "over this model's maximum of 64" in one_line_error(err)


def test_no_room_on_disk_is_refused_before_starting(capsys, model_dir, corpus, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 1000, 1000))
    code, _, err = cli(capsys, *collect_args(model_dir, corpus, tmp_path))
    assert code == 1 and "no room on disk" in one_line_error(err)
    assert not list((tmp_path / "cache").glob("*.h5"))


# a collection in a process of its own that gets signal SIG as its forward call CALL starts, once the
# file WAIT exists (a checkpoint, written atomically in the background: without the wait, whether one was
# written by then would be a race between the writer's thread and the pass):
#     python -c SIGNALLED TESTS_DIR CALL SIG WAIT collect ...
SIGNALLED = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from tiny import on_forward_call
from neuron_tui.tui.cli import main
def signal_after_a_checkpoint():
    deadline = time.monotonic() + 120
    while not os.path.exists(sys.argv[4]) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(os.getpid(), int(sys.argv[3]))
on_forward_call(setattr, int(sys.argv[2]), signal_after_a_checkpoint)
sys.exit(main(sys.argv[5:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_collection_resumes_to_the_uninterrupted_result(model_dir, tmp_path, sig):
    corpus = write_text_corpus(tmp_path / "big.jsonl", n_docs=400)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    base = ["collect", model_dir, "--corpus", corpus, "--tokens", 300 * 24, "--seq-len", 24, "--batch-size", 2, "--quiet"]
    ref = subprocess.run([sys.executable, "-m", "neuron_tui.tui.cli", *map(str, base), "--out", tmp_path / "ref.h5"],
                         env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "run.h5"
    args = [*base, "--out", out, "--checkpoint-seconds", 0]
    tests = os.path.dirname(__file__)
    partial = tmp_path / "run.partial.h5"
    killed = subprocess.run([sys.executable, "-c", SIGNALLED, tests, "30", str(int(sig)), str(partial), *map(str, args)],
                            env=env, capture_output=True, text=True)
    assert killed.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 1), killed.stderr
    assert not out.exists()
    if sig == signal.SIGTERM:
        assert "checkpoint kept" in killed.stderr and "resume" in killed.stderr
    with Summary.open(partial) as s:
        assert not s.complete and 0 < s.attrs["n_seq"] < 300 and s.attrs["n_seq"] % 2 == 0  # whole batches
    resumed = subprocess.run([sys.executable, "-m", "neuron_tui.tui.cli", *map(str, args)], env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert not partial.exists()
    with Summary.open(tmp_path / "ref.h5") as a, Summary.open(out) as b:
        for name in ("tokens", "act_count", "pos_count", "top_val", "top_pos", "event_level", "event_offsets", "event_pos"):
            np.testing.assert_array_equal(a.read(name), b.read(name), err_msg=name)


def test_bad_summary_files_get_one_line(capsys, tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    code, _, err = cli(capsys, "report", foreign)
    assert code == 1 and "not a neuron-tui summary" in one_line_error(err)

    newer = tmp_path / "newer.h5"
    write_summary(newer, {"schema_version": schema.SCHEMA_VERSION + 1}, {})
    code, _, err = cli(capsys, "report", newer)
    assert code == 1 and f"schema version {schema.SCHEMA_VERSION + 1}" in one_line_error(err)

    truncated = tmp_path / "truncated.h5"
    good = tmp_path / "good.h5"
    write_summary(good, {"n_layers": 1}, {"tokens": np.zeros((64, 64), np.int32)})
    truncated.write_bytes(good.read_bytes()[:2000])
    code, _, err = cli(capsys, "report", truncated)
    assert code == 1 and "truncated.h5 is a damaged HDF5 file" in one_line_error(err)

    code, _, err = cli(capsys, "report", tmp_path / "absent.h5")
    assert code == 1 and "no summary at" in one_line_error(err)
