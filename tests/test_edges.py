"""Trust at the edges: a summary is never another model's, a read-only or missing destination is one
line before the model loads, values that cannot mean anything are refused, a closed pipe ends quietly,
and a hub that cannot be reached fails at once with a hint that works."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic import tiny_summary
from tiny import save_tiny, tiny_gpt2, write_text_corpus

from neuron_tui.cache import Summary
from neuron_tui.core import sources
from neuron_tui.tui.cli import main


def cli(capsys, *args):
    capsys.readouterr()  # what came before (a model saved by the test) is not the command's
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("neuron-tui: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def corpus(tmp_path):
    return write_text_corpus(tmp_path / "corpus.jsonl", n_docs=60)


def collect(capsys, model, corpus, cache, *extra):
    return cli(capsys, "collect", model, "--corpus", corpus, "--tokens", 480, "--seq-len", 24, "--batch-size", 4,
               "--cache-dir", cache, *extra)


# ---- a summary is its model's -------------------------------------------------------------------------------

def test_two_folders_of_the_same_name_are_two_models(capsys, tmp_path, corpus):
    small = save_tiny(tiny_gpt2(n_layer=2), tmp_path / "a" / "tiny-gpt2", bos=False)
    large = save_tiny(tiny_gpt2(n_layer=4), tmp_path / "b" / "tiny-gpt2", bos=False)
    code, first, _ = collect(capsys, small, corpus, tmp_path / "cache")
    assert code == 0
    code, second, err = collect(capsys, large, corpus, tmp_path / "cache")
    assert code == 0 and second != first and "existing summary" not in err
    with Summary.open(first.strip()) as a, Summary.open(second.strip()) as b:
        assert (a.n_layers, b.n_layers) == (2, 4)
        assert a.json_attr("model_fingerprint")["path"] == str(small.resolve())
    code, again, err = collect(capsys, small, corpus, tmp_path / "cache")
    assert code == 0 and again == first and "existing summary" in err  # the same folder: found


def test_a_model_retrained_in_place_is_collected_again_and_the_old_summary_says_so(capsys, tmp_path, corpus):
    folder = save_tiny(tiny_gpt2(seed=0), tmp_path / "ckpt", bos=False)
    code, first, _ = collect(capsys, folder, corpus, tmp_path / "cache")
    assert code == 0
    tiny_gpt2(seed=1).save_pretrained(folder)  # new weights, same name and place
    os.utime(folder / "model.safetensors", ns=(1, 1))  # whatever the clock's resolution: a new time
    code, second, err = collect(capsys, folder, corpus, tmp_path / "cache")
    assert code == 0 and second != first and "existing summary" not in err
    code, out, _ = cli(capsys, "report", first.strip())
    assert code == 0 and "has changed since this summary was made" in " ".join(out.split())
    code, out, _ = cli(capsys, "report", first.strip(), "--json")
    assert any("has changed since" in note for note in json.loads(out)["notes"])
    code, out, _ = cli(capsys, "report", second.strip(), "--json")
    assert not any("has changed since" in note for note in json.loads(out)["notes"])


def test_a_gguf_is_known_by_its_header_not_its_place(tmp_path):
    from neuron_tui.core.fingerprint import gguf_fingerprint

    a, b = tmp_path / "a.gguf", tmp_path / "sub" / "b.gguf"
    b.parent.mkdir()
    a.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    b.write_bytes(a.read_bytes())
    assert gguf_fingerprint(a)["digest"] == gguf_fingerprint(b)["digest"]
    b.write_bytes(b"GGUF" + bytes(range(255, -1, -1)) * 64)
    assert gguf_fingerprint(a)["digest"] != gguf_fingerprint(b)["digest"]


# ---- the destination is checked before the model loads ----------------------------------------------------------

@pytest.fixture
def no_model_load(monkeypatch):
    from neuron_tui.core.model import loading as models

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the destination was checked")

    monkeypatch.setattr(models, "load", refuse)


def read_only(folder: Path, monkeypatch) -> Path:
    """`folder`, unwritable: by its mode, or (as root, whom modes do not stop) by the file system calls."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return folder
    real = Path.write_bytes

    def write_bytes(self, data):
        if Path(self).parent == folder:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    return folder


def test_a_read_only_cache_folder_is_refused_before_the_model_loads(capsys, tmp_path, corpus, monkeypatch,
                                                                    no_model_load):
    model = save_tiny(tiny_gpt2(), tmp_path / "m", bos=False)
    cache = read_only(tmp_path / "ro", monkeypatch)
    code, _, err = collect(capsys, model, corpus, cache)
    line = one_line(err)
    assert code == 1 and f"cannot write in {cache}" in line and "Read-only file system" in line and "--cache-dir" in line


def test_a_read_only_out_folder_is_refused_too(capsys, tmp_path, corpus, monkeypatch, no_model_load):
    model = save_tiny(tiny_gpt2(), tmp_path / "m", bos=False)
    out = read_only(tmp_path / "ro", monkeypatch) / "s.h5"
    code, _, err = collect(capsys, model, corpus, tmp_path / "cache", "--out", out)
    assert code == 1 and f"cannot write in {out.parent}" in one_line(err)


def test_an_uncreatable_cache_folder_is_one_line(capsys, tmp_path, corpus, no_model_load):
    model = save_tiny(tiny_gpt2(), tmp_path / "m", bos=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = collect(capsys, model, corpus, blocker / "cache")
    assert code == 1 and "cannot create the output folder" in one_line(err)


def test_the_writability_probe_leaves_nothing_behind(tmp_path):
    from neuron_tui.core.model.plan import check_destination

    check_destination(tmp_path / "out" / "s.h5", needed=1)
    assert list((tmp_path / "out").iterdir()) == []


# ---- values that cannot mean anything -----------------------------------------------------------------------------

@pytest.fixture
def small(tmp_path):
    return tiny_summary(tmp_path)


def test_analyze_options_are_parsed_by_their_types(capsys, small):
    assert cli(capsys, "analyze", small, "--shape-smooth", 3)[0] == 0
    assert cli(capsys, "analyze", small, "--shape-smooth", "none")[0] == 0
    assert cli(capsys, "analyze", small, "--positional-skip-bos", "False")[0] == 0
    with Summary.open(small) as s:
        params = json.loads(s.analysis.attrs["params"])
    assert params["positional_skip_bos"] is False and params["shape_smooth"] is None


@pytest.mark.parametrize("args, words", [
    (["--min-fire-rate", "2"], "--min-fire-rate must be a share in (0, 1], not 2.0"),
    (["--max-tokens", "-1"], "--max-tokens must be at least 1, not -1"),
    (["--positional-skip-bos", "maybe"], "expected true or false"),
    (["--shape-smooth", "x"], "--shape-smooth"),
    (["--ngram-order", "4"], "--ngram-order must be 2 or 3"),
    (["--n-triggers", "3"], "--n-triggers (3) must be at least max_tokens (5)"),
])
def test_analyze_refuses_values_that_cannot_mean_anything(capsys, small, args, words):
    before = small.read_bytes()
    code, _, err = cli(capsys, "analyze", small, *args)
    assert code == 2 and words in one_line(err)
    assert small.read_bytes() == before  # nothing was rewritten


def test_every_analysis_parameter_has_a_check():
    from dataclasses import fields

    from neuron_tui.core.read.params import CHECKS, PARAM_TYPES, AnalysisParams

    assert {f.name for f in fields(AnalysisParams)} == set(CHECKS) == set(PARAM_TYPES)


@pytest.mark.parametrize("flag, value", [("--seq-len", 0), ("--tokens", 0), ("--batch-size", 0), ("--events", 0),
                                         ("--quantile", 1.5), ("--checkpoint-seconds", -1)])
def test_collect_refuses_values_that_cannot_mean_anything(capsys, tmp_path, no_model_load, flag, value):
    code, _, err = cli(capsys, "collect", "smollm2", flag, value, "--cache-dir", tmp_path)
    assert code == 2 and flag in one_line(err)


def test_help_lists_the_commands_and_nothing_hidden(capsys):
    code, out, _ = cli(capsys, "--help")
    assert code == 0 and "SUPPRESS" not in out and "main" not in out.split()
    for command in ("collect", "report", "neurons", "neuron", "probe", "figures", "analyze", "open", "merge"):
        assert command in out


def test_a_partial_summary_keeps_its_label_in_the_report(capsys, tmp_path):
    path = tiny_summary(tmp_path, "p.h5", complete=False, n_seq_planned=512)
    code, out, _ = cli(capsys, "report", path)
    assert code == 0 and "[PARTIAL: 128 of 512 sequences collected so far]" in " ".join(out.split())


def test_a_folder_is_not_a_summary(capsys, tmp_path):
    code, _, err = cli(capsys, "open", tmp_path)
    assert code == 1 and f"{tmp_path} is a folder, not a summary file" in one_line(err)


def test_a_closed_pipe_ends_quietly(small):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "neuron_tui.tui.cli", "neurons", str(small)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head` that has read enough: every write from now on is EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == ""


# ---- no network to the hub --------------------------------------------------------------------------------------

def test_an_unreachable_hub_fails_at_once_with_a_working_hint(capsys, tmp_path, monkeypatch):
    import socket

    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # nothing cached
    monkeypatch.setattr(sources, "_REACHABLE", None)
    tried = []

    def unreachable(address, *args, **kwargs):
        tried.append(address)
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    code, _, err = cli(capsys, "collect", "some-org/some-model", "--cache-dir", tmp_path / "cache")
    line = one_line(err)  # one line: no retry messages before it
    assert code == 1 and "unreachable" in line and "hf download some-org/some-model --local-dir DIR" in line
    assert len(tried) == 1  # asked once
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # the rest of the run stays off the network


def test_an_analysis_from_an_older_neuron_tui_reads_as_absent_until_reanalysed(capsys, tmp_path):
    """Its category codes mean other things (version 1 named other positional types): counts only,
    a note that says to re-analyse, and `analyze` makes it current."""
    from neuron_tui.cache import SummaryWriter, schema

    source = tiny_summary(tmp_path, "current.h5")
    old = tmp_path / "old.h5"
    with Summary.open(source) as s, SummaryWriter(old) as w:
        w.copy_from(s)
        w.set_attrs({"analysis_version": 1}, group=schema.ANALYSIS_GROUP)
    with Summary.open(old) as s:
        assert s.analysis_outdated and s.analysis is None
    assert main(["report", str(old), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert any("older neuron-tui" in note for note in report["notes"]) and report["layers"][0]["token"] is None
    assert main(["figures", str(old), "-o", str(tmp_path / "figs")]) == 2
    assert "no analysis in" in capsys.readouterr().err
    assert main(["analyze", str(old)]) == 0 and main(["analyze", str(source)]) == 0  # the generator's analysis
    capsys.readouterr()                                                            # is planted, not computed
    with Summary.open(old) as s, Summary.open(source) as c:
        assert not s.analysis_outdated and (s.analysis.read("flags") == c.analysis.read("flags")).all()
