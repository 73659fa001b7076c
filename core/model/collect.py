"""One pass of a corpus through a model: the pass loop, its checkpoints and signals, and the final write.

`run_pass` streams the plan's packed sequences through the model with one forward pre-hook per FFN
output projection (core.model.recorder). Every `--checkpoint-seconds` (when given), else every
DEFAULT_CHECKPOINT_SECONDS or longer when a checkpoint takes long (each then waits at least
CHECKPOINT_SPACING times the last one's write time, so checkpoints stay a tenth of the run at most), and
on Ctrl-C / SIGTERM, the accumulators are copied to the host one layer at a time and written, atomically, as a *partial summary* next to the final file; running the same command
again resumes from it, skipping (and checking) the sequences already counted. Because every statistic
is a sum, a max, or a level sample keyed on global token positions, the resumed result equals an
uninterrupted run. `finish` writes the summary with its FFN-update projections (while the weights are
loaded) and, for a whole run, its analysis, all into the new file before it is renamed into place.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np

from neuron_tui.cache import (
    Summary,
    SummaryError,
    SummaryWriter,
    TokenRows,
    partial_path,
)
from neuron_tui.core.errors import NeuronTuiError
from neuron_tui.core.read.analysis import write_analysis
from neuron_tui.core.read.triggers import candidate_tokens

from .adapters import ffn_out_projections, n_neurons
from .loading import LoadedModel
from .packing import pack_sequences, tokenizer_adds_bos
from .plan import WHOLE, RunPlan
from .progress import CollectProgress, peak_memory
from .projections import UpdateProjector, write_projection
from .recorder import Recorder
from .schedules import BatchByBatch, calibrate
from .states import (
    PassResult,
    RunFacts,
    layer_state,
    summary_attrs,
    vocab_strings,
    write_pass,
)

N_CANDIDATES = 10  # candidate trigger tokens per neuron whose update scores are stored
DEFAULT_CHECKPOINT_SECONDS = 60.0
CHECKPOINT_SPACING = 9  # by default a checkpoint that took W seconds is followed by at least 9 W of pass


def facts_of(loaded: LoadedModel, device: str) -> RunFacts:
    """What the summary records about the loaded model and its tokenizer."""
    model, tokenizer = loaded.model, loaded.tokenizer
    modules = ffn_out_projections(model)
    return RunFacts(
        vocab=vocab_strings(tokenizer, model.get_input_embeddings().num_embeddings),
        bos=tokenizer_adds_bos(tokenizer),
        n_layers=len(modules),
        n_neurons=n_neurons(modules[0]),
        revision=loaded.revision,
        fingerprint=loaded.fingerprint,
        device=str(device).split(":")[0],
    )


@dataclass
class PassOutcome:
    """A finished pass: what it counted, its progress display, whether the corpus ran out first, and
    how to write it as a checkpoint (when the final write fails; None: the checkpoints are per rank)."""

    result: PassResult
    facts: RunFacts
    progress: CollectProgress
    exhausted: bool
    checkpoint: Callable[[], float] | None


def collect(loaded: LoadedModel, plan: RunPlan, quiet: bool = False, runner=None, device: str = "cpu") -> Path:
    """Run (or resume) the pass of `plan` and write its summary; returns its path. `runner`: the
    schedule (default BatchByBatch; layerwise.LayerByLayer for --layer-by-layer)."""
    return finish(loaded, plan, run_pass(loaded, plan, quiet, runner=runner, device=device))


def _own_tau(resumed: np.ndarray | None, compute) -> np.ndarray:
    """One process alone: the checkpoint's tau when resuming, else its own calibration."""
    return compute() if resumed is None else resumed


def run_pass(loaded: LoadedModel, plan: RunPlan, quiet: bool = False, agree_tau=_own_tau, runner=None,
             device: str = "cpu"):
    """Stream the plan's sequences through the model, checkpointing to (and resuming from) its partial
    file (a PassOutcome). A shard K/N streams the sequences i % N == K of the
    planned stream, at their global positions g = i * T + t. agree_tau(resumed tau or None, calibrate)
    -> the tau to use (distributed ranks take rank 0's). runner: the schedule (see schedules)."""
    partial = partial_path(plan.path)
    ks, n = plan.shard
    facts = facts_of(loaded, device)
    packed = islice(pack_sequences(plan.corpus, loaded.tokenizer, plan.seq_len, plan.settings.seed), plan.n_seq)
    stream = (seq for i, seq in enumerate(packed) if i % n in ks)
    resumed = _Resumed(partial, plan) if partial.exists() else None
    try:
        return _pass(loaded, plan, quiet, agree_tau, runner, facts, stream, resumed)
    finally:
        if resumed:
            resumed.close()


def _pass(loaded: LoadedModel, plan: RunPlan, quiet: bool, agree_tau, runner, facts: RunFacts, stream,
          resumed: "_Resumed | None") -> PassOutcome:
    """run_pass after its checkpoint (if any) is open."""
    model, tokenizer = loaded.model, loaded.tokenizer
    modules = ffn_out_projections(model)
    partial = partial_path(plan.path)
    T, B, s = plan.seq_len, plan.batch_size, plan.settings
    done_tokens = resumed.tokens if resumed else np.zeros((0, T), np.int32)
    for i, seq in enumerate(islice(stream, len(done_tokens))):
        if not np.array_equal(seq, done_tokens[i]):
            raise NeuronTuiError(f"the corpus changed since the checkpoint {partial} was written; delete it to start over")

    runner = runner or BatchByBatch(model)

    def calibrated() -> np.ndarray:
        if plan.tau_source != "quantile":
            return np.full(len(modules), plan.threshold, dtype=np.float32)
        calib = list(islice(pack_sequences(plan.corpus, tokenizer, T, s.seed), s.calib_seqs))
        return calibrate(modules, calib, plan.threshold, B, runner)

    tau = agree_tau(resumed.tau if resumed else None, calibrated)
    recorder = Recorder(modules, T, s.events_cap, s.top_k, plan.rule, tau, resumed=resumed.state if resumed else None)
    blocks = [done_tokens]
    n_done = len(done_tokens)
    rows = plan.rows()
    progress = CollectProgress(total=len(rows) * T, done=n_done * T, quiet=quiet, label=plan.model)
    kept = {"n": n_done}  # sequences in the last checkpoint written

    def result() -> PassResult:
        return PassResult(np.concatenate(blocks), rows[:n_done], tau, recorder.state, recorder.n_layers)

    def checkpoint() -> float:
        start = time.monotonic()
        with SummaryWriter(partial) as writer:
            writer.set_attrs(summary_attrs(facts, plan, n_done, complete=False))
            write_pass(writer, result(), facts.vocab, facts.bos, facts.n_neurons)
        kept["n"] = n_done
        return time.monotonic() - start

    def failed(exc: SummaryError) -> NeuronTuiError:
        kept_now = (f"the last checkpoint ({kept['n'] * T:,} tokens) is kept at {partial}" if partial.exists()
                    else "no checkpoint was written yet")
        return NeuronTuiError(f"{exc}; {kept_now}; make room (or use --cache-dir/--out) and run the same command "
                              "to resume")

    fixed = s.checkpoint_seconds is not None
    wait = s.checkpoint_seconds if fixed else DEFAULT_CHECKPOINT_SECONDS
    last_checkpoint = time.monotonic()
    with _StopRequests() as stop, recorder.attached(), progress:
        try:
            batches = _batches(stream, len(rows) - n_done, B)
            while chunk := list(islice(batches, runner.chunk_batches)):
                if stop.requested:
                    raise KeyboardInterrupt
                starts = n_done + np.cumsum([0] + [len(batch) for batch in chunk])
                recorder.set_batches([rows[a:b, None] * T + np.arange(T) for a, b in zip(starts[:-1], starts[1:])])
                runner(chunk, recorder.select, progress.advance)
                blocks.extend(chunk)
                n_done = int(starts[-1])
                if time.monotonic() - last_checkpoint >= wait:
                    took = checkpoint()
                    if not fixed:
                        wait = max(DEFAULT_CHECKPOINT_SECONDS, CHECKPOINT_SPACING * took)
                    last_checkpoint = time.monotonic()
        except KeyboardInterrupt:  # between chunks: every layer has counted exactly n_done sequences
            try:
                checkpoint()
            except SummaryError as exc:
                raise failed(exc) from None
            raise NeuronTuiError(
                f"interrupted after {n_done * T:,} of {len(rows) * T:,} tokens; checkpoint kept at {partial}; "
                "run the same command to resume"
            ) from None
        except _StopNow:  # a second Ctrl-C, mid-batch: the state is not consistent, keep the last checkpoint
            raise NeuronTuiError(f"interrupted; the last checkpoint is kept at {partial}; run the same command to "
                                 "resume") from None
        except SummaryError as exc:
            raise failed(exc) from None
    recorder.keep_resumed()
    exhausted = n_done < len(rows)
    if exhausted:
        progress.note(f"the corpus ran out after {n_done * T:,} tokens ({len(rows) * T:,} asked for); the summary "
                      "holds what it had")
    return PassOutcome(result(), facts, progress, exhausted, checkpoint)


def finish(loaded: LoadedModel, plan: RunPlan, outcome: PassOutcome) -> Path:
    """Write the summary of a finished pass with its FFN-update projections (while the weights are
    loaded) and, for a whole run, its analysis (a shard's needs every sequence: it is made when the
    shards are merged), into the new file before it is renamed into place; then drop the checkpoint."""
    result, progress, facts = outcome.result, outcome.progress, outcome.facts
    try:
        with SummaryWriter(plan.path) as writer:
            writer.set_attrs(summary_attrs(facts, plan, len(result.tokens), complete=True, exhausted=outcome.exhausted))
            layers = candidates_and_signs(writer, result, facts.vocab, facts.bos, facts.n_neurons)
            progress.note("projecting FFN updates onto the vocabulary", quiet_ok=True)
            projector = UpdateProjector(loaded.model, n_candidates=N_CANDIDATES, oriented=True)
            write_projection(writer, projector, layers)
            if plan.shard == WHOLE:
                progress.note("analysing neuron categories", quiet_ok=True)
                write_analysis(writer, writer.reader())
    except SummaryError as exc:
        raise NeuronTuiError(f"{exc}; {_kept_after_failure(outcome, plan)}") from None
    partial_path(plan.path).unlink(missing_ok=True)
    progress.note(peak_memory(), quiet_ok=True)
    return plan.path


def _kept_after_failure(outcome: PassOutcome, plan: RunPlan) -> str:
    """After a failed final write: write the pass as a checkpoint when that still works, and say what
    is kept and what to do next."""
    partial = partial_path(plan.path)
    if outcome.checkpoint is not None:
        try:
            outcome.checkpoint()
            return f"the whole pass is kept as a checkpoint at {partial}: make room and run the same command to finish"
        except SummaryError:
            pass
    if partial.exists():
        return f"the last checkpoint is kept at {partial}: make room and run the same command to resume"
    return "no checkpoint could be kept"


def candidates_and_signs(writer: SummaryWriter, result: PassResult, vocab: list[str], bos: bool,
                         n_neurons: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Write the root datasets of `result` (core.model.states.write_pass) and return, per layer, what its
    projection needs: each neuron's candidate triggers (its most frequent kept-event tokens) and the
    sign of its summed activation when it fires (a gated neuron firing negative pushes -w, so
    "suppressed" means what its firing actually does to the logits)."""
    flat, (n_rows, T) = result.tokens.reshape(-1), result.tokens.shape
    rows = TokenRows(result.seq_index, n_rows, T)

    def token_at(g: np.ndarray) -> np.ndarray:
        return flat[rows.local(g)]

    out: list[tuple[np.ndarray, np.ndarray]] = []

    def keep(layer: int, st) -> None:
        out.append((candidate_tokens(st.events, token_at, T, bos, N_CANDIDATES), np.where(st.act_sum < 0, -1.0, 1.0)))

    write_pass(writer, result, vocab, bos, n_neurons, on_layer=keep)
    return out


class _Resumed:
    """The checkpoint a run resumes from: its token rows and tau at once, each layer's state on demand
    (the file stays open until the pass ends: a new checkpoint replaces the name, not this file)."""

    def __init__(self, partial: Path, plan: RunPlan):
        try:
            self.summary = Summary.open(partial)
        except SummaryError as exc:
            raise NeuronTuiError(f"cannot resume from {partial}: {exc}; delete it to start over") from None
        if self.summary.attrs.get("key") != plan.key:
            self.summary.close()
            raise NeuronTuiError(f"{partial} belongs to another run; delete it to start over")
        try:
            self.tokens = self.summary.read("tokens")[: self.summary.n_seq]
            self.tau = self.summary.tau
        except SummaryError as exc:
            self.summary.close()
            raise NeuronTuiError(f"cannot resume from {partial}: {exc}; delete it to start over") from None

    def state(self, layer: int):
        return layer_state(self.summary, layer)

    def close(self) -> None:
        self.summary.close()


def _batches(stream: Iterator[np.ndarray], n_seq: int, batch_size: int) -> Iterator[np.ndarray]:
    left = n_seq
    while left > 0:
        batch = list(islice(stream, min(batch_size, left)))
        if not batch:
            return
        left -= len(batch)
        yield np.stack(batch)


class _StopNow(Exception):
    """A second Ctrl-C: stop at once, without writing a checkpoint of a half-counted batch."""


class _StopRequests:
    """Ctrl-C (SIGINT) and SIGTERM (kill, a closing tmux) only set a flag that the pass checks between
    batches, so no checkpoint ever holds a batch that some layers counted and others did not; a
    second Ctrl-C stops at once, keeping the previous checkpoint."""

    def __init__(self):
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise _StopNow
        self.requested = True

    def __enter__(self) -> "_StopRequests":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (a worker): signals stay as they are
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
