"""The edges fault injection found: a disk that fills at any write, flush or close of a summary, a config
that does not match its weights, thresholds that are no numbers, two collections of one summary at once,
merges that would overwrite a file or mix models, an empty probe, and an event cap far beyond the run.
Each is one line and an exit status, and nothing collected is lost."""

from __future__ import annotations

import errno
import gc
import json
import os
import shlex
import subprocess
import sys

import h5py
import numpy as np
import pytest
from synthetic import tiny_summary
from test_edges import cli, one_line
from tiny import save_tiny, tiny_opt, write_text_corpus

from neuron_tui.cache import RunLock, Summary, chunks
from neuron_tui.core.model import checkpoints, passes
from neuron_tui.core.model import collect as collect_module
from neuron_tui.tui.cli import main


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_text_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", n_docs=60)


def collect_args(model_dir, corpus, out, *extra):
    """Sequences of 64 tokens: a layer's position counts (64 x 64) are compressed and written as whole
    chunks (cache.chunks), so every kind of write is part of the summary."""
    return ["collect", model_dir, "--corpus", corpus, "--tokens", 1536, "--seq-len", 64, "--batch-size", 4,
            "--out", out, "--quiet", *extra]


def datasets(path) -> dict:
    with h5py.File(path, "r") as f:
        found: dict = {}
        f.visititems(lambda name, obj: found.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return found


def assert_same_datasets(path, reference) -> None:
    """Every dataset equal; sums of activations up to float32 rounding (a checkpoint stores them in
    float32, and a resumed run goes on adding to those)."""
    got, want = datasets(path), datasets(reference)
    assert sorted(got) == sorted(want)
    for name in want:
        if name in ("act_sum", "act_sum_pos"):
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.fixture(scope="module")
def reference(model_dir, corpus, tmp_path_factory):
    """The summary of an uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "s.h5"
    assert main([str(a) for a in collect_args(model_dir, corpus, out)]) == 0
    return out


# ---- a full disk ----------------------------------------------------------------------------------------------

def _no_space(kind=OSError, what="Can't write data"):
    """The error h5py raises when the disk is full: an OSError from a write; a RuntimeError from a flush or a
    close, whose message carries HDF5's report of the failed write (over several lines)."""
    if kind is OSError:
        return OSError(errno.ENOSPC, f"{what} (file write failed: time = Thu Dec  3\n, errno = 28)")
    return RuntimeError(f"{what} (file write failed: time = Thu Dec  3\n, filename = 'x.h5.tmp', errno = 28, "
                        "error message = 'No space left on device')")


def _writing_file(name, mode="r", *args, **kwargs) -> bool:
    """Whether h5py.File(name, mode, ...) opens a file for writing."""
    return mode != "r"


# every call through which the writer writes, flushes or closes a summary: (what, the error h5py raises there)
WRITES = {
    "create the file": (h5py.File, "__init__", lambda: _no_space(what="Unable to synchronously create file"),
                        lambda file, *args, **kwargs: _writing_file(*args, **kwargs)),
    "create a dataset": (h5py.Group, "create_dataset", lambda: _no_space(what="Unable to create dataset"), None),
    "write a dataset": (h5py.Dataset, "__setitem__", lambda: _no_space(), None),
    "write whole chunks": (chunks, "write_layer", lambda: _no_space(what="Can't write chunk"), None),
    "write an attribute": (h5py.AttributeManager, "__setitem__", lambda: _no_space(what="Unable to write attribute"),
                           None),
    "flush a dataset": (h5py.Dataset, "flush", lambda: _no_space(RuntimeError, "Can't flush dataset"), None),
    "flush the file": (h5py.File, "flush", lambda: _no_space(RuntimeError, "Unable to flush file"), None),
    "close the file": (h5py.File, "close", lambda: _no_space(RuntimeError, "Can't decrement id ref count"), None),
    "sync the file": (os, "fsync", lambda: OSError(errno.ENOSPC, "No space left on device"), None),
}


def _close_what_the_fault_left_open() -> None:
    """A simulated failure of `close` leaves that HDF5 file open in this process (a real one ends the
    process); HDF5 would take a later file that reuses its inode number for it ("unable to truncate a
    file which is already open"), so the files left open are closed before the same process goes on."""
    gc.collect()
    for fid in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        for _ in range(8):  # each close drops one reference
            if not fid.valid:
                break
            fid.close()


class FullDisk:
    """Once `fill()`ed, the call `WRITES[what]` raises what h5py raises on a full disk, every time."""

    def __init__(self, monkeypatch, what: str):
        owner, name, error, applies = WRITES[what]
        real = getattr(owner, name)
        self.full = False
        self.failed = 0

        def call(*args, **kwargs):
            if self.full and (applies is None or applies(*args, **kwargs)):
                self.failed += 1
                raise error()
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, call)

    def fill(self) -> None:
        self.full = True


@pytest.mark.parametrize("what", WRITES)
def test_a_full_disk_during_the_final_write_is_one_line_and_the_run_resumes(what, capsys, monkeypatch, tmp_path,
                                                                           model_dir, corpus, reference):
    """The disk fills once the pass is over: the summary's write fails at `what`, which is one line and
    exit status 1; the pass's checkpoint is kept, no temporary file is left, and the same command
    writes the summary of an uninterrupted run."""
    disk = FullDisk(monkeypatch, what)
    run_pass = collect_module.run_pass

    def pass_then_fill(*args, **kwargs):
        outcome = run_pass(*args, **kwargs)
        disk.fill()
        return outcome

    monkeypatch.setattr(collect_module, "run_pass", pass_then_fill)
    out = tmp_path / "s.h5"
    code, _, err = cli(capsys, *collect_args(model_dir, corpus, out, "--checkpoint-seconds", 0))
    line = one_line(err)
    assert code == 1 and disk.failed
    assert "No space left on device" in line and f"make room in {tmp_path}" in line
    then = f"at {tmp_path / 's.partial.h5'}: make room in {tmp_path} and run the same command to"
    whole, last = f"the whole pass is kept as a checkpoint {then} finish", f"the last checkpoint is kept {then} resume"
    assert whole in line or last in line
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))
    monkeypatch.undo()
    _close_what_the_fault_left_open()
    with Summary.open(tmp_path / "s.partial.h5") as partial:
        assert not partial.complete
    code, _, err = cli(capsys, *collect_args(model_dir, corpus, out, "--checkpoint-seconds", 0))
    assert code == 0, err
    assert not (tmp_path / "s.partial.h5").exists()
    assert_same_datasets(out, reference)


# fills the disk at DIR/filler as the final write starts, then runs `neuron-tui ARGS`:
#     python -c FILLING DIR ARGS...
FILLING = """
import os, sys
from neuron_tui.core.model import collect
from neuron_tui.tui.cli import main
write = collect.candidates_and_signs

def fill_then_write(*args, **kwargs):
    fd = os.open(os.path.join(sys.argv[1], "filler"), os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(512))
    except OSError:
        os.close(fd)
    return write(*args, **kwargs)

collect.candidates_and_signs = fill_then_write
sys.exit(main(sys.argv[2:]))
"""


def test_a_real_full_disk_during_the_final_write_is_one_line_not_a_crash(tmp_path, model_dir, corpus, reference):
    """On a real (tiny, in-memory) file system filled as the summary starts being written: HDF5 itself
    fails, and the objects it still holds must close without the disk (it ended in a segmentation fault
    3 runs in 4, after dozens of "Exception ignored" tracebacks). Needs a user namespace for the mount."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("no user namespace to mount a small file system in (unshare -rm)")
    out = disk / "s.h5"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    args = [str(a) for a in collect_args(model_dir, corpus, out, "--checkpoint-seconds", 0)]
    fill = [sys.executable, "-c", FILLING, str(disk), *args]
    resume = [sys.executable, "-m", "neuron_tui.tui.cli", *args]
    script = (f"mount -t tmpfs -o size=2m tmpfs {shlex.quote(str(disk))} && {shlex.join(fill)}; echo $? > {disk}.rc; "
              f"rm {disk}/filler && {shlex.join(resume)} && cp {out} {tmp_path}/resumed.h5")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, capture_output=True, text=True)
    assert (tmp_path / "disk.rc").read_text().strip() == "1", done.stderr
    line = one_line(done.stderr)
    assert "No space left on device" in line and f"kept at {disk}/s.partial.h5: make room in {disk}" in line
    assert_same_datasets(tmp_path / "resumed.h5", reference)


def test_a_full_disk_during_a_checkpoint_keeps_the_one_before(capsys, monkeypatch, tmp_path, model_dir, corpus,
                                                               reference):
    """The disk fills after the pass's first checkpoint: the next one fails, the first stays whole and
    says how many tokens it holds, and the same command resumes from it to the uninterrupted summary."""
    disk = FullDisk(monkeypatch, "write a dataset")
    write = passes.Pass._write  # runs in the checkpoints' background thread

    def write_then_fill(self, *args):
        write(self, *args)
        disk.fill()

    monkeypatch.setattr(passes.Pass, "_write", write_then_fill)
    start = checkpoints.BackgroundWriter.start

    def start_and_finish(self, write):  # each write ends before the pass counts on: no race with its end
        start(self, write)
        self._thread.join()

    monkeypatch.setattr(checkpoints.BackgroundWriter, "start", start_and_finish)
    out = tmp_path / "s.h5"
    code, _, err = cli(capsys, *collect_args(model_dir, corpus, out, "--checkpoint-seconds", 0))
    line = one_line(err)
    assert code == 1 and "No space left on device" in line and "make room in" in line
    monkeypatch.undo()
    with Summary.open(tmp_path / "s.partial.h5") as partial:
        kept = partial.attrs["n_tokens"]
        assert 0 < kept < 1536 and not partial.complete
    assert f"the last checkpoint ({kept:,} tokens) is kept" in line
    assert cli(capsys, *collect_args(model_dir, corpus, out))[0] == 0
    assert_same_datasets(out, reference)


def test_an_unwritable_folder_is_not_told_to_make_room(capsys, monkeypatch, tmp_path, model_dir, corpus):
    """A write refused for permission (here: every file the run creates once the model is loaded) says
    to make the folder writable, not to make room."""
    real = h5py.File.__init__

    def refused(self, *args, **kwargs):
        if _writing_file(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Unable to synchronously create file (unable to open file)")
        real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.File, "__init__", refused)
    code, _, err = cli(capsys, *collect_args(model_dir, corpus, tmp_path / "s.h5", "--checkpoint-seconds", 0))
    line = one_line(err)
    assert code == 1 and "Permission denied" in line and f"make {tmp_path} writable" in line
    assert "make room" not in line and "no checkpoint was written yet" in line


# ---- the weights must be the config's ---------------------------------------------------------------------------

@pytest.mark.parametrize("layers, words", [(3, "missing (model.decoder.layers.2."),
                                           (1, "unexpected (model.decoder.layers.1.")])
def test_a_config_that_does_not_match_its_weights_is_refused_before_collecting(layers, words, capsys, tmp_path,
                                                                              corpus):
    """config.json says 3 (or 1) layers over the weights of 2: transformers would start layer 2 at random
    (or drop layer 1); instead one line names the weights, before anything is collected."""
    folder = save_tiny(tiny_opt(), tmp_path / "tiny-opt")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": layers}))
    code, _, err = cli(capsys, *collect_args(folder, corpus, tmp_path / "out" / "s.h5"))
    line = one_line(err)
    assert code == 1 and f"cannot load {folder}: its weights do not match its config: 16 {words}" in line
    assert not list((tmp_path / "out").iterdir())
    code, _, err = cli(capsys, *collect_args(folder, corpus, tmp_path / "out" / "s.h5")[:-1])  # not --quiet
    assert code == 1 and "LOAD REPORT" not in err and "MISSING" not in err  # transformers' own report


# ---- values that cannot mean anything -----------------------------------------------------------------------

@pytest.mark.parametrize("flag, value", [("--threshold", "inf"), ("--threshold", "nan"), ("--threshold", "-1"),
                                         ("--quantile", "nan"), ("--checkpoint-seconds", "nan")])
def test_thresholds_that_are_no_numbers_are_refused(flag, value, capsys, monkeypatch, tmp_path):
    """--threshold inf would run (every neuron silent) and store Infinity, which is not JSON."""
    from neuron_tui.core.model import loading

    monkeypatch.setattr(loading, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    code, _, err = cli(capsys, "collect", "smollm2", flag, value, "--cache-dir", tmp_path)
    assert code == 2 and flag in one_line(err)


def test_an_event_cap_beyond_the_run_asks_for_the_room_of_the_run(capsys, tmp_path, model_dir, corpus, reference):
    """--events 1,000,000,000 over 1,536 tokens: a neuron keeps at most one event a token, so the run
    needs the room (and memory) of a cap of 1,536, and keeps exactly the events such a cap keeps."""
    out = tmp_path / "s.h5"
    code, _, err = cli(capsys, *collect_args(model_dir, corpus, out, "--events", 10**9))
    assert code == 0, err
    capped = tmp_path / "capped.h5"
    assert cli(capsys, *collect_args(model_dir, corpus, capped, "--events", 1536))[0] == 0
    with Summary.open(out) as s:
        assert s.attrs["events_cap"] == 10**9
    got, want = datasets(out), datasets(capped)
    for name in ("act_count", "event_level", "event_offsets", "event_pos", "pos_count"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# ---- one collection of a summary at a time ----------------------------------------------------------------------

def test_a_second_collection_of_the_same_summary_says_who_runs_it(capsys, monkeypatch, tmp_path, model_dir, corpus,
                                                                   reference):
    """While a collection holds the run (here: this process), another of the same summary stops before
    loading the model, naming the running one; once it is done the same command collects."""
    from neuron_tui.core.model import loading

    out = tmp_path / "s.h5"
    with RunLock(out):
        with monkeypatch.context() as patched:
            patched.setattr(loading, "load", lambda *a, **k: pytest.fail("the model was loaded"))
            code, _, err = cli(capsys, *collect_args(model_dir, corpus, out))
    line = one_line(err)
    assert code == 1 and f"another collection of this summary is running (pid {os.getpid()})" in line
    assert cli(capsys, *collect_args(model_dir, corpus, out))[0] == 0
    assert not list(tmp_path.glob("*.lock"))
    assert_same_datasets(out, reference)


def test_a_lock_file_left_by_a_killed_collection_does_not_block(capsys, tmp_path, model_dir, corpus):
    """flock is released with its process, however it ends: a lock file whose holder is gone blocks nothing."""
    out = tmp_path / "s.h5"
    (tmp_path / "s.lock").write_text("999999\n")
    code, _, err = cli(capsys, *collect_args(model_dir, corpus, out))
    assert code == 0, err
    assert out.exists() and not (tmp_path / "s.lock").exists()


# ---- merge and probe ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shards(model_dir, corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    paths = [folder / f"s{k}.h5" for k in range(2)]
    for k, path in enumerate(paths):
        assert main([str(a) for a in collect_args(model_dir, corpus, path, "--shard", f"{k}/2")]) == 0
    return paths


def test_merge_refuses_to_overwrite_unless_forced(capsys, tmp_path, shards, reference):
    out = tmp_path / "merged.h5"
    out.write_bytes(b"precious")
    code, _, err = cli(capsys, "merge", *shards, "-o", out)
    assert code == 2 and f"{out} exists; pass --force" in one_line(err)
    assert out.read_bytes() == b"precious"
    code, _, err = cli(capsys, "merge", *shards, "-o", out, "--force")
    assert code == 0, err
    with Summary.open(out) as merged, Summary.open(reference) as whole:
        assert merged.attrs["key"] == whole.attrs["key"]


def test_merge_of_two_models_of_one_name_names_them(capsys, tmp_path, model_dir, corpus, shards):
    """Two folders both called tiny-opt with other weights: the message says which models, not which keys."""
    other = save_tiny(tiny_opt(seed=1), tmp_path / "elsewhere" / "tiny-opt")
    second = tmp_path / "other.h5"
    assert cli(capsys, *collect_args(other, corpus, second, "--shard", "1/2"))[0] == 0
    code, _, err = cli(capsys, "merge", shards[0], second, "-o", tmp_path / "merged.h5")
    line = one_line(err)
    assert code == 1 and "base_key" not in line
    assert f"they were made from different weights: tiny-opt ({model_dir.resolve()}, weights " in line
    assert f" vs tiny-opt ({other.resolve()}, weights " in line


def test_probing_no_text_is_refused_before_the_model_loads(capsys, monkeypatch, tmp_path):
    from neuron_tui.core.model import probe

    monkeypatch.setattr(probe, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    code, _, err = cli(capsys, "probe", tiny_summary(tmp_path), "")
    assert code == 2 and "the text to probe is empty" in one_line(err)
