"""Data-parallel collection over torch.distributed: every process streams one shard of the corpus.

    torchrun --nproc-per-node N -m neuron_tui.tui.cli collect --distributed MODEL [collect options]
    torchrun --nproc-per-node N --no-python neuron-tui collect --distributed MODEL [...]

Rank r of W collects shard r/W of the run (the planned sequences i % W == r, at their global positions,
core.model.passes) on cuda:LOCAL_RANK with NCCL, or on the CPU with gloo, and checkpoints to its own
partial file (`<summary>.shard<r>of<W>.partial.h5`), from which the same command resumes. All ranks
count with rank 0's calibration, tau and the histogram bins (its checkpoint's, or calibrated once on the
first sequences of the corpus and broadcast), since a rank calibrating on its own could pick a different
tau on different hardware. At
the end the states are gathered to rank 0 one layer at a time (the host LayerStates, pickled by
gather_object: at most W layers in flight) and merged exactly (merge.merge_layer) as rank 0 writes the
one summary of the whole run, with projections and analysis, as a single process would. The rank
checkpoints are deleted only after that summary exists.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist

from neuron_tui.cache.paths import partial_path
from neuron_tui.core.errors import NeuronTuiError

from .calibration import Calibration
from .collect import finish
from .loading import LoadedModel
from .merge import merge_layer, merge_rows
from .passes import PassOutcome, run_pass
from .plan import RunPlan, shard_plan
from .states import PassResult


@dataclass(frozen=True)
class Rank:
    """This process's place in the group and the device it counts on."""

    rank: int
    world: int
    device: str


@contextmanager
def session(device: str | None) -> Iterator[Rank]:
    """Join the process group torchrun set up (its environment variables), and leave it at the end.

    NCCL on cuda:LOCAL_RANK when CUDA is present and `device` does not ask for something else; gloo
    (on `device`, default the CPU) otherwise. A request for --distributed has checked that torchrun's
    variables are there (settings.CollectRequest)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if torch.cuda.is_available() and (device is None or device.startswith("cuda")):
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        device, backend = f"cuda:{local}", "nccl"
    else:
        device, backend = device or "cpu", "gloo"
    dist.init_process_group(backend, device_id=torch.device(device) if backend == "nccl" else None)
    try:
        yield Rank(rank, world, device)
    finally:
        dist.destroy_process_group()


def collect(loaded: LoadedModel, plan: RunPlan, rank: Rank, quiet: bool = False) -> Path:
    """This rank's shard of `plan`, then (rank 0) the merged summary of the whole run; its path."""
    part = shard_plan(plan, rank.rank, rank.world)
    agree = partial(_agree_calibration, rank)
    outcome = run_pass(loaded, part, quiet or rank.rank != 0, agree=agree, device=rank.device)
    merged = gather(outcome, plan.settings.events_cap, rank)
    if merged is not None:
        finish(loaded, plan, merged)
    else:
        for layer in range(outcome.result.n_layers):  # rank 0 asks for the layers one at a time
            _to_root(outcome.result.state(layer), rank)
    dist.barrier()  # the whole run's summary exists: the shard checkpoints are no longer needed
    partial_path(part.path).unlink(missing_ok=True)
    return plan.path


def _agree_calibration(rank: Rank, resumed: Calibration | None, compute) -> Calibration:
    """Rank 0's calibration (from its checkpoint, or calibrated there) for every rank."""
    box = [(resumed if resumed is not None else compute()) if rank.rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    agreed = box[0]
    if resumed is not None and not resumed.matches(agreed):
        raise NeuronTuiError(f"rank {rank.rank} resumed a checkpoint counted with another tau or other histogram "
                             "bins than rank 0's; delete the .shard*.partial.h5 checkpoints to start over")
    return agreed


def _to_root(obj, rank: Rank):
    """gather_object to rank 0: the list of every rank's `obj` there, None elsewhere."""
    out = [None] * rank.world if rank.rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def gather(outcome: PassOutcome, cap: int, rank: Rank) -> PassOutcome | None:
    """On rank 0 the outcome of the whole run, whose layer states are gathered from every rank and
    merged one layer at a time as the summary is written (the host LayerStates, pickled: at most W
    layers in flight; every other rank answers each request in the same order); None elsewhere."""
    result = outcome.result
    rows = _to_root((result.seq_index, result.tokens), rank)
    if rank.rank != 0:
        return None
    tokens, seq_index = merge_rows(rows)
    merged = PassResult(tokens, seq_index, result.calibration,
                        lambda layer: merge_layer(_to_root(result.state(layer), rank), cap), result.n_layers)
    # the final write failing keeps every rank's own checkpoint; a merged one cannot be resumed from
    return PassOutcome(merged, outcome.facts, outcome.progress, outcome.exhausted, checkpoint=None)
