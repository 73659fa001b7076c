"""How a pass runs the model over its batches: the forward call, the batch-by-batch schedule, and the
calibration of the firing threshold, which runs the first sequences through the same schedule.

A schedule is called as runner(batches, before, advance): before(i) ahead of batch i reaching the
layers, advance(tokens) as work completes; the pass checkpoints and honours stop requests between
calls, every `chunk_batches` batches. `BatchByBatch` (here) runs each batch through the whole model;
`layerwise.LayerByLayer` runs a chunk of batches one layer at a time (the paper's single-GPU schedule).
"""

from __future__ import annotations

import numpy as np
import torch

from .loading import execution_device


def forward_fn(model: torch.nn.Module):
    """The cheapest call that runs every layer: the base model, without the LM head over the vocabulary."""
    base = model.base_model
    device = execution_device(model.get_input_embeddings())  # the first device under --device-map auto

    @torch.inference_mode()
    def run(ids: np.ndarray) -> None:
        base(input_ids=torch.as_tensor(ids, dtype=torch.long).to(device), use_cache=False)

    return run


class BatchByBatch:
    """The usual schedule: each batch runs through the whole model (weights resident, or placed by
    accelerate); a chunk is one batch."""

    chunk_batches = 1

    def __init__(self, model: torch.nn.Module):
        self._run = forward_fn(model)

    def __call__(self, batches: list[np.ndarray], before, advance) -> None:
        for i, ids in enumerate(batches):
            before(i)
            self._run(ids)
            advance(ids.size)


def calibrate(modules, sequences: list[np.ndarray], quantile: float, batch_size: int, runner) -> np.ndarray:
    """tau_l = the `quantile` of |h| over all neurons of layer l on the calibration slice (the first
    sequences of the corpus; docs/design.md, "What fired means"), run by the pass's schedule `runner`."""
    samples: list[list[torch.Tensor]] = [[] for _ in modules]
    # one generator per layer: the subsample is the same whatever order the schedule runs layers in
    gens = [torch.Generator().manual_seed(layer) for layer in range(len(modules))]

    def hook_for(layer):
        def hook(module, args):
            flat = args[0].detach().abs().float().reshape(-1)
            take = min(flat.numel(), 1 << 20)  # a fixed-size random subsample keeps memory bounded
            idx = torch.randint(flat.numel(), (take,), generator=gens[layer]).to(flat.device)
            samples[layer].append(flat[idx].cpu())

        return hook

    handles = [m.register_forward_pre_hook(hook_for(i)) for i, m in enumerate(modules)]
    try:
        batches = [np.stack(sequences[start : start + batch_size]) for start in range(0, len(sequences), batch_size)]
        runner(batches, lambda i: None, lambda tokens: None)
    finally:
        for handle in handles:
            handle.remove()
    return np.array([torch.quantile(torch.cat(s)[: 1 << 24], quantile).item() for s in samples], dtype=np.float32)
