"""What a pass fixes before it counts, from the calibration slice (the corpus's first sequences): each
layer's firing threshold tau and the bins of its activation histogram.

Both are stored in the summary (`tau`, `hist_edges`) and read back by a resumed run; every shard of a
run calibrates on the same first sequences, and distributed ranks take rank 0's, so every part of a run
counts firings and histograms alike and their counts add (docs/design.md, "What fired means").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .histograms import histogram_edges

SUBSAMPLE = 1 << 20  # |h| values kept per layer and batch for the quantile: memory stays bounded
QUANTILE_VALUES = 1 << 24  # at most this many of them enter the quantile (torch.quantile's limit)


@dataclass(frozen=True, eq=False)
class Calibration:
    """tau [L] float32 and the histogram bins hist_edges [L, B + 1] float32 of a run."""

    tau: np.ndarray
    hist_edges: np.ndarray

    def matches(self, other: "Calibration") -> bool:
        return np.array_equal(self.tau, other.tau) and np.array_equal(self.hist_edges, other.hist_edges)


def calibrate(modules, sequences: list[np.ndarray], batch_size: int, runner, rule: str, tau_source: str,
              threshold: float) -> Calibration:
    """Run the calibration slice `sequences` through the pass's schedule `runner` with a pre-hook on
    each FFN output projection (`modules`), and fix each layer's tau (the `threshold` quantile of |h|
    over all its neurons when `tau_source` is "quantile", else `threshold` itself) and its histogram
    bins (from tau and the slice's largest |h|: core.model.histograms)."""
    samples: list[list[torch.Tensor]] = [[] for _ in modules]
    peaks = [torch.zeros(()) for _ in modules]
    # one generator per layer: the subsample is the same whatever order the schedule runs layers in
    gens = [torch.Generator().manual_seed(layer) for layer in range(len(modules))]

    def hook_for(layer):
        def hook(module, args):
            flat = args[0].detach().abs().float().reshape(-1)
            peaks[layer] = torch.maximum(peaks[layer], flat.max().cpu())
            if tau_source == "quantile":
                take = min(flat.numel(), SUBSAMPLE)  # a fixed-size random subsample keeps memory bounded
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
    if tau_source == "quantile":
        tau = np.array([torch.quantile(torch.cat(s)[:QUANTILE_VALUES], threshold).item() for s in samples],
                       dtype=np.float32)
    else:
        tau = np.full(len(modules), threshold, dtype=np.float32)
    edges = np.stack([histogram_edges(t, float(p), rule) for t, p in zip(tau, peaks)])
    return Calibration(tau, edges)
