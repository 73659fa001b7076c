"""Collection end to end: the pass (core.model.passes), then the final write of its summary.

`finish` writes the summary of a finished pass with its FFN-update projections (while the weights are
loaded) and, for a whole run, its analysis, all into the new file before it is renamed into place; when
that write fails, the pass is kept as a checkpoint, so running the same command again only writes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neuron_tui.cache import SummaryError, SummaryWriter, TokenRows, WriteError, partial_path
from neuron_tui.core.errors import NeuronTuiError
from neuron_tui.core.read.analysis import write_analysis
from neuron_tui.core.read.triggers import candidate_tokens

from .loading import LoadedModel
from .passes import PassOutcome, run_pass
from .plan import WHOLE, RunPlan
from .progress import peak_memory
from .projections import UpdateProjector, write_projection
from .states import PassResult, summary_attrs, write_pass

N_CANDIDATES = 10  # candidate trigger tokens per neuron whose update scores are stored


def collect(loaded: LoadedModel, plan: RunPlan, quiet: bool = False, runner=None, device: str = "cpu") -> Path:
    """Run (or resume) the pass of `plan` and write its summary; returns its path. `runner`: the
    schedule (default BatchByBatch; layerwise.LayerByLayer for --layer-by-layer)."""
    return finish(loaded, plan, run_pass(loaded, plan, quiet, runner=runner, device=device))


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
        raise NeuronTuiError(f"{exc}; {_kept_after_failure(outcome, plan, exc)}") from None
    partial_path(plan.path).unlink(missing_ok=True)
    progress.note(peak_memory(), quiet_ok=True)
    return plan.path


def _kept_after_failure(outcome: PassOutcome, plan: RunPlan, exc: SummaryError) -> str:
    """After a failed final write: write the pass as a checkpoint when that still works, and say what
    is kept and what to do next."""
    partial = partial_path(plan.path)
    then = f"{exc.remedy} and run" if isinstance(exc, WriteError) else "run"
    if outcome.checkpoint is not None:
        try:
            outcome.checkpoint()
            return f"the whole pass is kept as a checkpoint at {partial}: {then} the same command to finish"
        except SummaryError:
            pass
    if partial.exists():
        return f"the last checkpoint is kept at {partial}: {then} the same command to resume"
    return f"no checkpoint could be kept: {then} the same command to collect again"


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
