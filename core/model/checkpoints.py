"""A pass's checkpoints: when one is taken (`CheckpointPolicy`), who writes it (`BackgroundWriter`) and the
one a run resumes from (`Resumed`).

A checkpoint is a partial summary (`complete = False`) next to the final file (cache.partial_path),
written atomically with the whole state counted so far; running the same command again resumes from
it. The pass does not wait for it: taking one copies nothing (core.model.recorder's `snapshot`), and
one background thread copies every layer's state to the host in layer order, lists the events,
compresses and writes the file while the pass counts on (as torch.distributed.checkpoint.async_save
does); the pass copies a layer itself only if it reaches the layer before the writer has. One write
at most is in flight: a checkpoint that comes due meanwhile waits until that write ends, so a write
slower than the interval spaces the checkpoints out by itself. bench/checkpoint.py measures what the
pass still waits at the paper's shapes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np

from neuron_tui.cache import Summary, SummaryError, schema
from neuron_tui.core.errors import NeuronTuiError

from .accumulators import LayerState
from .calibration import Calibration
from .plan import RunPlan
from .states import layer_state


class CheckpointPolicy:
    """When the pass takes its next checkpoint: every `seconds` (`--checkpoint-seconds`; default
    DEFAULT_SECONDS) after the last one was taken."""

    DEFAULT_SECONDS = 60.0

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic):
        self.interval = self.DEFAULT_SECONDS if seconds is None else seconds
        self._clock = clock
        self._last = clock()

    def due(self) -> bool:
        return self._clock() - self._last >= self.interval

    def taken(self) -> None:
        """A checkpoint was taken now: the next is due one interval later."""
        self._last = self._clock()


class BackgroundWriter:
    """One thread that writes checkpoints, one at a time; what a write raised is raised in the pass
    (`check`, `wait`), so a full disk is the pass's one-line error with the previous checkpoint kept."""

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, write: Callable[[], None]) -> None:
        """Run `write()` in the thread (none may be in flight: the pass asks `busy` first)."""
        if self.busy:
            raise RuntimeError("a checkpoint is already being written")
        self.check()
        self._thread = threading.Thread(target=self._run, args=(write,), name="neuron-tui checkpoint")
        self._thread.start()

    def _run(self, write: Callable[[], None]) -> None:
        try:
            write()
        except BaseException as exc:  # noqa: BLE001 - handed to the pass, raised there (check, wait)
            self._error = exc

    def check(self) -> None:
        """Raise what the last finished write raised (a WriteError: a full disk, ...), once."""
        error, self._error = self._error, None
        if error is not None:
            raise error

    def wait(self) -> None:
        """Wait for the write in flight (Ctrl-C, the end of the pass), then raise what it raised."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.check()


class Resumed:
    """The checkpoint a run resumes from: its token rows and calibration at once, each layer's state on
    demand (the file stays open until the pass ends: a new checkpoint replaces the name, not this file)."""

    def __init__(self, partial: Path, plan: RunPlan):
        try:
            self.summary = Summary.open(partial)
        except SummaryError as exc:
            raise NeuronTuiError(f"cannot resume from {partial}: {exc}; delete it to start over") from None
        if self.summary.attrs.get("key") != plan.key:
            self.summary.close()
            raise NeuronTuiError(f"{partial} belongs to another run; delete it to start over")
        if not all(self.summary.has(name) for name in schema.ADDED_IN_3):
            self.summary.close()
            raise NeuronTuiError(f"{partial} was written by an older neuron-tui, without the statistics this one "
                                 "adds; delete it to start over")
        try:
            self.tokens = self.summary.read("tokens")[: self.summary.n_seq]
            self.calibration = Calibration(self.summary.tau, self.summary.read("hist_edges"))
        except SummaryError as exc:
            self.summary.close()
            raise NeuronTuiError(f"cannot resume from {partial}: {exc}; delete it to start over") from None

    @classmethod
    def at(cls, partial: Path, plan: RunPlan) -> "Resumed | None":
        """The checkpoint at `partial`, None when there is none."""
        return cls(partial, plan) if partial.exists() else None

    def state(self, layer: int) -> LayerState:
        return layer_state(self.summary, layer)

    def check_stream(self, stream: Iterator[np.ndarray], partial: Path) -> None:
        """Consume the checkpoint's sequences from `stream` (the run's sequences in order), each equal to
        the one counted, so that counting goes on where the checkpoint ends."""
        for seq, counted in zip(islice(stream, len(self.tokens)), self.tokens):
            if not np.array_equal(seq, counted):
                raise NeuronTuiError(f"the corpus changed since the checkpoint {partial} was written; delete it "
                                     "to start over")

    def close(self) -> None:
        self.summary.close()
