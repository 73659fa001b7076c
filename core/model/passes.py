"""One pass of a corpus through a model: `Pass` streams a plan's packed sequences through the hooks,
checkpointing as it goes and resuming from its checkpoint.

`run_pass` streams the plan's sequences (a shard K/N: the planned sequences i % N == K, at their global
positions g = i * T + t) through the model with one forward pre-hook per FFN output projection
(core.model.recorder). When `CheckpointPolicy` says so, the accumulators are copied to the host and
written in the background (core.model.checkpoints), atomically, as a *partial summary* next to the
final file, while the pass counts on; on Ctrl-C / SIGTERM (core.model.signals) the write in flight
ends and the counts so far are written the same way, waited for. Running the same command again
resumes from it, skipping (and checking) the sequences already counted. Because every statistic is a sum, a max, or a level sample
keyed on global token positions, the resumed result equals an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import Iterator

import numpy as np

from neuron_tui.cache import SummaryWriter, WriteError, partial_path
from neuron_tui.core.errors import NeuronTuiError

from .adapters import ffn_out_projections, ffn_up_projections
from .calibration import Calibration, calibrate
from .checkpoints import BackgroundWriter, CheckpointPolicy, Resumed
from .loading import LoadedModel
from .packing import pack_sequences
from .plan import RunPlan
from .progress import CollectProgress
from .recorder import Recorder, take_all
from .schedules import BatchByBatch
from .signals import StopNow, StopRequests
from .states import PassResult, RunFacts, summary_attrs, write_pass


@dataclass
class PassOutcome:
    """A finished pass: what it counted, its progress display, whether the corpus ran out first, and
    how to write it as a checkpoint (when the final write fails; None: the checkpoints are per rank)."""

    result: PassResult
    facts: RunFacts
    progress: CollectProgress
    exhausted: bool
    checkpoint: Callable[[], None] | None


def _own_calibration(resumed: Calibration | None, compute: Callable[[], Calibration]) -> Calibration:
    """One process alone: the checkpoint's calibration when resuming, else its own."""
    return compute() if resumed is None else resumed


def run_pass(loaded: LoadedModel, plan: RunPlan, quiet: bool = False, agree=_own_calibration, runner=None,
             device: str = "cpu") -> PassOutcome:
    """Stream the plan's sequences through the model, checkpointing to (and resuming from) its partial
    file. agree(resumed calibration or None, calibrate) -> the calibration (tau, histogram bins) to count
    with (distributed ranks take rank 0's). runner: the schedule (default BatchByBatch;
    layerwise.LayerByLayer for --layer-by-layer)."""
    resumed = Resumed.at(partial_path(plan.path), plan)
    try:
        counting = Pass(loaded, plan, RunFacts.of(loaded, device), runner or BatchByBatch(loaded.model), resumed)
        return counting.run(quiet, agree)
    finally:
        if resumed:
            resumed.close()


class Pass:
    """The pass of one plan (see the module docstring): `run` checks the checkpoint's sequences against
    the corpus, agrees on the calibration, counts chunk after chunk of batches, and writes checkpoints."""

    def __init__(self, loaded: LoadedModel, plan: RunPlan, facts: RunFacts, runner, resumed: Resumed | None):
        self.loaded, self.plan, self.facts, self.runner, self.resumed = loaded, plan, facts, runner, resumed
        self.partial = partial_path(plan.path)
        self.modules = ffn_out_projections(loaded.model)
        self.ups = ffn_up_projections(loaded.model)  # a gated FFN's up projections (sign cases), else None
        self.rows = plan.rows()  # the global sequence of every row this run plans to count
        counted = resumed.tokens if resumed else np.zeros((0, plan.seq_len), np.int32)
        self.blocks = [counted]  # the token rows counted so far, a batch at a time
        self.n_done = len(counted)  # sequences counted by every layer
        self.n_kept = self.n_done  # sequences in the last checkpoint written
        self.calibration: Calibration | None = None  # agreed when the pass runs
        self.recorder: Recorder | None = None  # made with the calibration
        self.writer = BackgroundWriter()  # writes the checkpoints while the pass counts on
        self._snapshot: list | None = None  # the last checkpoint's host copies, whose arrays the next reuses

    def run(self, quiet: bool, agree) -> PassOutcome:
        plan, T = self.plan, self.plan.seq_len
        stream = self._sequences()
        if self.resumed:
            self.resumed.check_stream(stream, self.partial)
        self.calibration = agree(self.resumed.calibration if self.resumed else None, self._calibrate)
        s = plan.settings
        self.recorder = Recorder(self.modules, T, plan.event_slots, s.top_k, plan.rule, self.calibration, self.ups,
                                 resumed=self.resumed.state if self.resumed else None)
        progress = CollectProgress(total=len(self.rows) * T, done=self.n_done * T, quiet=quiet, label=plan.model)
        with StopRequests() as stop, self.recorder.attached(), progress:
            try:
                self._count(stream, stop, progress)
                self.writer.wait()  # the final write follows: the checkpoint in flight ends first
            except KeyboardInterrupt:  # between chunks: every layer has counted exactly n_done sequences
                raise self._interrupted() from None
            except StopNow:  # a second Ctrl-C, mid-batch: the state is not consistent, keep the last checkpoint
                raise NeuronTuiError(f"interrupted; the last checkpoint is kept at {self.partial}; run the same "
                                     "command to resume") from None
            except WriteError as exc:  # a checkpoint's write failed (raised here from the background)
                raise self._failed(exc) from None
            finally:  # no write outlives the pass
                self._settle()
        self.recorder.keep_resumed()
        exhausted = self.n_done < len(self.rows)
        if exhausted:
            progress.note(f"the corpus ran out after {self.n_done * T:,} tokens ({len(self.rows) * T:,} asked for); "
                          "the summary holds what it had")
        return PassOutcome(self.result(), self.facts, progress, exhausted, self.checkpoint)

    def _sequences(self) -> Iterator[np.ndarray]:
        """The packed sequences this run counts, in order (a shard's: i % N in its Ks)."""
        plan = self.plan
        ks, n = plan.shard
        packed = pack_sequences(plan.corpus, self.loaded.tokenizer, plan.seq_len, plan.settings.seed)
        return (seq for i, seq in enumerate(islice(packed, plan.n_seq)) if i % n in ks)

    def _calibrate(self) -> Calibration:
        """tau (the fixed threshold for every layer, or each layer's quantile of |h|) and the histogram
        bins, from the first sequences of the corpus (calibration.calibrate), run by the pass's own
        schedule."""
        plan, s = self.plan, self.plan.settings
        calib = list(islice(pack_sequences(plan.corpus, self.loaded.tokenizer, plan.seq_len, s.seed), s.calib_seqs))
        return calibrate(self.modules, calib, plan.batch_size, self.runner, plan.rule, plan.tau_source, plan.threshold)

    def _count(self, stream: Iterator[np.ndarray], stop: StopRequests, progress: CollectProgress) -> None:
        """Run the rest of the stream through the model, a chunk of batches at a time, with stop
        requests honoured and checkpoints written between chunks."""
        T = self.plan.seq_len
        policy = CheckpointPolicy(self.plan.settings.checkpoint_seconds)
        batches = _batches(stream, len(self.rows) - self.n_done, self.plan.batch_size)
        while chunk := list(islice(batches, self.runner.chunk_batches)):
            if stop.requested:
                raise KeyboardInterrupt
            starts = self.n_done + np.cumsum([0] + [len(batch) for batch in chunk])
            positions = [self.rows[a:b, None] * T + np.arange(T) for a, b in zip(starts[:-1], starts[1:])]
            self.recorder.set_batches(positions)
            self.runner(chunk, self.recorder.select, progress.advance)
            self.blocks.extend(chunk)
            self.n_done = int(starts[-1])
            self.writer.check()  # a checkpoint that failed in the background stops the pass here
            if policy.due() and not self.writer.busy:
                result, n_done = self._take(), self.n_done
                self.writer.start(lambda: self._write(result, n_done))
                policy.taken()

    def result(self) -> PassResult:
        """What is counted so far (each layer's state read from the accumulators when asked)."""
        return PassResult(np.concatenate(self.blocks), self.rows[: self.n_done], self.calibration, self.recorder.state,
                          self.recorder.n_layers)

    def checkpoint(self) -> None:
        """Write what is counted so far as the partial summary, waiting for it (Ctrl-C, a failed final
        write; the pass's own checkpoints are written in the background)."""
        self._write(self._take(), self.n_done)

    def _take(self) -> PassResult:
        """What is counted so far, each layer's state copied to the host (into the last snapshot's arrays)
        by the writer or by the pass before it changes (Recorder.snapshot): the pass copies nothing here."""
        self.blocks = [np.concatenate(self.blocks)]
        self._snapshot = self.recorder.snapshot(self._snapshot)
        return PassResult(self.blocks[0], self.rows[: self.n_done], self.calibration,
                          lambda layer, states=self._snapshot: states[layer](), self.recorder.n_layers)

    def _write(self, result: PassResult, n_done: int) -> None:
        """Write a taken checkpoint atomically (the last one stays whole until this one is), the layers'
        host copies first (the writer has one checkpoint at a time: `self._snapshot` is this one's)."""
        take_all(self._snapshot)  # first the copies the pass has not taken (it waits for none it reaches later)
        with SummaryWriter(self.partial) as writer:
            writer.set_attrs(summary_attrs(self.facts, self.plan, n_done, complete=False))
            write_pass(writer, result, self.facts.vocab, self.facts.bos, self.facts.n_neurons)
        self.n_kept = n_done

    def _settle(self) -> None:
        """Wait for the checkpoint in flight, its failure aside (the pass is stopping for another reason)."""
        try:
            self.writer.wait()
        except WriteError:
            pass

    def _interrupted(self) -> NeuronTuiError:
        """Ctrl-C or SIGTERM between chunks: the write in flight ends, then the counts so far as a
        checkpoint, and how to resume."""
        T = self.plan.seq_len
        self._settle()
        try:
            self.checkpoint()
        except WriteError as exc:
            return self._failed(exc)
        return NeuronTuiError(f"interrupted after {self.n_done * T:,} of {len(self.rows) * T:,} tokens; checkpoint "
                              f"kept at {self.partial}; run the same command to resume")

    def _failed(self, exc: WriteError) -> NeuronTuiError:
        """A checkpoint that could not be written: what is kept, and how to go on."""
        kept = (f"the last checkpoint ({self.n_kept * self.plan.seq_len:,} tokens) is kept at {self.partial}"
                if self.partial.exists() else "no checkpoint was written yet")
        return NeuronTuiError(f"{exc}; {kept}; {exc.remedy} and run the same command to resume")


def _batches(stream: Iterator[np.ndarray], n_seq: int, batch_size: int) -> Iterator[np.ndarray]:
    left = n_seq
    while left > 0:
        batch = list(islice(stream, min(batch_size, left)))
        if not batch:
            return
        left -= len(batch)
        yield np.stack(batch)
