"""Checkpoints written in the background: one write in flight at most, a failed write keeps the one
before, Ctrl-C and the final write wait for the write in flight, and a snapshot does not move with the
pass that goes on counting."""

import threading
import time

import numpy as np
import pytest
import torch
from test_collect import _arrays, assert_resumes_to, run_tiny
from tiny import interrupt_forward_at, tiny_llama

from neuron_tui.cache import Summary
from neuron_tui.core.errors import NeuronTuiError
from neuron_tui.core.model import checkpoints, passes, states
from neuron_tui.core.model.accumulators import LayerAccumulator
from neuron_tui.core.model.batches import BatchIndex
from neuron_tui.core.model.histograms import histogram_edges


class Writes:
    """Wraps Pass._write (the background thread's work): each write held `delay` seconds before it
    starts; records how many ran at once, and when each started and ended."""

    def __init__(self, monkeypatch, delay: float = 0.05):
        self.real, self.delay = passes.Pass._write, delay
        self.running, self.most, self.log = 0, 0, []
        self.lock = threading.Lock()
        monkeypatch.setattr(passes.Pass, "_write", lambda pass_, result, n_done: self.write(pass_, result, n_done))

    def write(self, pass_, result, n_done):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        self.log.append(("start", n_done, threading.current_thread().name))
        try:
            time.sleep(self.delay)
            self.real(pass_, result, n_done)
        finally:
            with self.lock:
                self.running -= 1
            self.log.append(("end", n_done, threading.current_thread().name))


def test_one_write_in_flight_and_the_summary_is_the_uninterrupted_one(tmp_path, monkeypatch):
    """A checkpoint due after every chunk (--checkpoint-seconds 0) while each write is slow: the writes
    never overlap, they run off the pass's thread, and the summary equals a run without checkpoints."""
    model = tiny_llama()
    with run_tiny(model, tmp_path / "a", checkpoint_seconds=1e9) as s:
        expected = _arrays(s)
    writes = Writes(monkeypatch)
    asked, starting = [], []  # what the pass found when a checkpoint was due: a write in flight (True) or none
    busy, start = checkpoints.BackgroundWriter.busy.fget, checkpoints.BackgroundWriter.start

    def watched_busy(writer):
        value = busy(writer)
        if not starting:  # start's own check is not the pass asking
            asked.append(value)
        return value

    def watched_start(writer, write):
        starting.append(True)
        try:
            start(writer, write)
        finally:
            starting.pop()

    monkeypatch.setattr(checkpoints.BackgroundWriter, "busy", property(watched_busy))
    monkeypatch.setattr(checkpoints.BackgroundWriter, "start", watched_start)
    with run_tiny(model, tmp_path / "b", checkpoint_seconds=0) as s:
        got = _arrays(s)
    started = [entry for entry in writes.log if entry[0] == "start"]
    # how many writes start while the pass goes on is the threads' timing; that a due checkpoint starts a
    # write exactly when none is in flight, and that one never overlaps another, is not
    assert writes.most == 1 and len(started) >= 1 and len(started) == asked.count(False) and len(asked) >= 2
    assert all(name == "neuron-tui checkpoint" for _, _, name in started)
    assert [n for _, n, _ in started] == sorted(n for _, n, _ in started)  # each later than the last
    assert not list((tmp_path / "b" / "cache").glob("*.partial.h5"))
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_a_write_that_crashes_keeps_the_checkpoint_before(tmp_path, monkeypatch):
    """The second checkpoint's write fails halfway (after its first layer): the error stops the pass,
    and the first checkpoint is left whole, no temporary file beside it. The pass waits for the first
    write to end before it counts on, so a second checkpoint comes however fast the pass runs."""
    write_pass, calls, first_written = states.write_pass, [], threading.Event()

    def crashing(writer, result, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            def crash(layer, st):
                raise RuntimeError("injected write failure")

            return write_pass(writer, result, *args, on_layer=crash)
        try:
            return write_pass(writer, result, *args, **kwargs)
        finally:
            first_written.set()

    update = LayerAccumulator.update

    def after_the_first_write(self, *args, **kwargs):
        if calls:  # the first checkpoint is being written: let it end first
            assert first_written.wait(timeout=60)
        return update(self, *args, **kwargs)

    monkeypatch.setattr(passes, "write_pass", crashing)
    monkeypatch.setattr(LayerAccumulator, "update", after_the_first_write)
    with pytest.raises(RuntimeError, match="injected write failure"):
        run_tiny(tiny_llama(), tmp_path, checkpoint_seconds=0)
    (partial,) = (tmp_path / "cache").glob("*.partial.h5")
    assert not list((tmp_path / "cache").glob("*.tmp"))
    with Summary.open(partial) as p:  # the first checkpoint, whole (it opens: its integrity record holds)
        assert not p.complete and 0 < p.attrs["n_seq"] < 40
        assert p.read("act_count").shape[0] == p.n_layers


def test_ctrl_c_waits_for_the_write_in_flight(tmp_path, monkeypatch):
    """Ctrl-C while a (slow) checkpoint is being written: that write ends before the interrupt's own
    checkpoint starts, and no writer thread outlives the pass; the checkpoint resumes to the
    uninterrupted result."""
    model = tiny_llama()
    with run_tiny(model, tmp_path / "a") as s:
        expected = _arrays(s)
    writes = Writes(monkeypatch, delay=0.3)
    interrupt_forward_at(monkeypatch, 8)
    with pytest.raises(NeuronTuiError, match="checkpoint kept"):
        run_tiny(model, tmp_path / "b", checkpoint_seconds=0)
    kinds = [kind for kind, _, _ in writes.log]
    assert kinds[0] == "start" and kinds == ["start", "end"] * (len(kinds) // 2)  # never two at once
    assert writes.log[-1][2] == threading.current_thread().name  # the interrupt's own, waited for
    assert not any(t.name == "neuron-tui checkpoint" for t in threading.enumerate())
    monkeypatch.undo()
    assert_resumes_to(model, tmp_path / "b", expected)


def test_a_snapshot_does_not_change_as_counting_goes_on():
    """On the CPU a host copy could be a view of the live tensors; a snapshot must keep the counts of the
    moment it was taken while the next batches are added, also when it reuses the last one's arrays."""
    T, F = 4, 3
    acc = LayerAccumulator(F, T, 8, 2, torch.device("cpu"), "relu", 0.0, histogram_edges(0.0, 1.0, "relu"))
    h = torch.ones(2, T, F)
    acc.update(h, BatchIndex(np.arange(2 * T).reshape(2, T), torch.device("cpu")))
    first = acc.snapshot()
    kept = LayerAccumulator.state_of(first)
    acc.update(h, BatchIndex(np.arange(2 * T, 4 * T).reshape(2, T), torch.device("cpu")))
    assert kept.act_count.tolist() == [8, 8, 8] and kept.pos_count.tolist() == [[2] * F] * T
    again = acc.snapshot(into=first)
    assert again["counters"]["pos_count"] is first["counters"]["pos_count"]  # the arrays are reused
    assert LayerAccumulator.state_of(again).act_count.tolist() == [16, 16, 16]


@pytest.mark.parametrize("writer_first", [0, 1, 2], ids=["pass-copies-all", "writer-copies-one", "writer-thread"])
def test_a_checkpoint_holds_every_layer_as_it_was_whoever_copies_it(writer_first):
    """Recorder.snapshot copies nothing; each layer's copy is taken by the writer or, before the layer's
    next update, by the pass: either way the checkpoint holds the state of the moment it was taken, and
    the pass's own copies are what it waited (snapshot_wait). writer_first: 0 the pass reaches every
    layer first, 1 the writer has copied layer 0, 2 the writer copies in its thread while the pass runs."""
    from tiny import tiny_opt

    from neuron_tui.core.model.adapters import ffn_out_projections
    from neuron_tui.core.model.calibration import Calibration
    from neuron_tui.core.model.recorder import Recorder, take_all

    model = tiny_opt()
    modules = ffn_out_projections(model)
    L, T, B = len(modules), 8, 2
    edges = histogram_edges(0.0, 4.0, "relu")
    recorder = Recorder(modules, T, 8, 2, "relu", Calibration(np.zeros(L, np.float32), np.stack([edges] * L)),
                        compile=False)
    ids = torch.randint(4, model.config.vocab_size, (2, B, T), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), recorder.attached():
        recorder.set_batches([np.arange(B * T).reshape(B, T)])
        model(ids[0])
        before = [recorder.state(layer) for layer in range(L)]
        snapshot = recorder.snapshot()
        thread = threading.Thread(target=take_all, args=(snapshot,)) if writer_first == 2 else None
        if writer_first == 1:
            snapshot[0].take()
        elif thread is not None:
            thread.start()
        recorder.set_batches([np.arange(B * T, 2 * B * T).reshape(B, T)])
        model(ids[1])
        if thread is not None:
            thread.join()
    for layer in range(L):
        got = snapshot[layer]()
        assert got.act_count.sum() > 0 and recorder.state(layer).act_count.sum() > got.act_count.sum()
        for name in ("act_count", "pos_count", "act_sum", "h_sum", "top_val", "top_pos", "hist_count", "level"):
            np.testing.assert_array_equal(getattr(got, name), getattr(before[layer], name), err_msg=name)
        assert [e.tolist() for e in got.events] == [e.tolist() for e in before[layer].events]
    if writer_first != 2:  # the pass copied layers itself (with the thread, how many is its timing)
        assert recorder.snapshot_wait > 0
