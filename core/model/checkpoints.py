"""A pass's checkpoints: when one is written (`CheckpointPolicy`) and the one a run resumes from (`Resumed`).

A checkpoint is a partial summary (`complete = False`) next to the final file (cache.partial_path),
written atomically with the whole state counted so far; running the same command again resumes from
it. Writing one takes time (every layer's state, compressed: bench/checkpoint.py measures it at the
paper's shapes), so the policy spaces them out when they are slow.
"""

from __future__ import annotations

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
    """When the pass writes its next checkpoint: every `seconds` (`--checkpoint-seconds`) when given;
    else every DEFAULT_SECONDS, or SPACING times the last checkpoint's write time when that is longer,
    so that checkpoints take at most a tenth of the run."""

    DEFAULT_SECONDS = 60.0
    SPACING = 9  # a checkpoint that took W seconds is followed by at least 9 W of pass

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic):
        self.fixed = seconds is not None
        self.interval = seconds if self.fixed else self.DEFAULT_SECONDS
        self._clock = clock
        self._last = clock()

    @classmethod
    def interval_after(cls, write_seconds: float) -> float:
        """The default interval after a checkpoint that took `write_seconds` to write."""
        return max(cls.DEFAULT_SECONDS, cls.SPACING * write_seconds)

    def due(self) -> bool:
        return self._clock() - self._last >= self.interval

    def write(self, checkpoint: Callable[[], None]) -> None:
        """Write a checkpoint (`checkpoint()`), timed: the next is due one interval after it ends."""
        start = self._clock()
        checkpoint()
        if not self.fixed:
            self.interval = self.interval_after(self._clock() - start)
        self._last = self._clock()


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
