"""How a pass runs the model over its batches: the forward call and the batch-by-batch schedule (the
calibration, core.model.calibration, runs the first sequences through the pass's schedule too).

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

