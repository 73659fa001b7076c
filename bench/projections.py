"""The cost of the families' statistics in the projection step (same model, same device, one run).

    python bench/projections.py                   # SmolLM2 (GGUF), CPU
    python bench/projections.py --model PATH --device cuda --rounds 3

The collection projects every neuron's output vector onto the vocabulary once (core/model/projections.py):
the paper's part (the [batch, V] scores against U: promoted and suppressed tokens, the candidates'
ranks) and, since the families, their statistics against U_eff (vocabulary moments, null-space share,
frequency correlation, norms). This times (a) `UpdateProjector.layer` over every layer, all of it,
(b) the statistics alone, as `_block` computes them (the same calls on the same blocks), and (c) the
step as it was before the statistics: `layer` without them and with the eager ranks (numpy's, as then;
NEURON_TUI_COMPILE=0; its scores one product per batch). It prints b / (a - b), the statistics' cost
relative to today's paper part, and a / c - 1, what the whole step costs over the step before the
statistics (issue 22's goal: 10%). On the CPU the C kernels (cpu_vocab.c) make the top-k, the ranks and
the sums of powers cheap and the scores are made a vocabulary block at a time, which (c) leaves out.
The modes take turns on each layer (in alternating order), so that the drift of a shared machine,
which moves a layer's time by half within a minute, hits all of them alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from neuron_tui.core.model import adapters
from neuron_tui.core.model.loading import load
from neuron_tui.core.model.projections import UpdateProjector
from neuron_tui.core.sources import resolve


@torch.no_grad()
def statistics_of(projector: UpdateProjector, layer: int) -> None:
    """The statistics' share of `_block` for one layer: `UpdateProjector.statistics` on the same blocks."""
    vectors = adapters.output_vectors(projector.out_projs[layer])
    for lo in range(0, projector.n_neurons, projector.batch_size):
        projector.statistics(vectors[lo : lo + projector.batch_size].detach().to(device=projector.device,
                                                                               dtype=torch.float32))


def before_statistics(model) -> UpdateProjector:
    """The projector as the step was before the families' statistics: its scores as one `w @ U.t()`,
    torch.topk, numpy's ranks (the eager paths, as with NEURON_TUI_COMPILE=0), no statistics."""
    projector = UpdateProjector(model, n_candidates=10)
    projector.lib = None  # the eager top-k and ranks
    projector._score_buffer = None  # _scores: one product per batch, as then
    projector.statistics = lambda raw: {}  # _block's statistics: none (its arrays stay unwritten)
    return projector


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    loaded = load(resolve(args.model), device=args.device)
    projector = UpdateProjector(loaded.model, n_candidates=10)
    projector.use_token_counts(np.ones(projector.U.shape[0], np.int64))
    before = before_statistics(loaded.model)
    rng = np.random.default_rng(0)
    V, F = projector.U.shape[0], projector.n_neurons
    candidates = [rng.integers(0, V, (F, 10)) for _ in range(projector.n_layers)]
    kernels = "C kernels" if projector.lib is not None else "no C kernels"
    modes = {"whole": lambda layer: projector.layer(layer, candidates[layer]),
             "statistics": lambda layer: statistics_of(projector, layer),
             "before": lambda layer: before.layer(layer, candidates[layer])}
    times = {name: [] for name in modes}
    for r in range(args.rounds):
        spent = dict.fromkeys(modes, 0.0)
        for layer in range(projector.n_layers):  # every mode on each layer in turn: drift hits all alike
            order = list(modes.items())
            for name, run in order if (r + layer) % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                run(layer)
                spent[name] += time.perf_counter() - start
        for name in modes:
            times[name].append(spent[name])
        print(f"round {r}: " + ", ".join(f"{name} {spent[name]:.1f} s" for name in modes), flush=True)
    a, b, c = (statistics.median(times[name]) for name in ("whole", "statistics", "before"))
    print(f"{args.model} on {args.device} ({kernels}): projections {a:.1f} s, of which the families' statistics "
          f"{b:.1f} s: {100 * b / (a - b):.1f}% over today's paper part ({a - b:.1f} s)")
    print(f"the whole step {100 * (a / c - 1):+.1f}% over the step before the statistics ({c:.1f} s; goal: +10%); "
          "per round " + ", ".join(f"{100 * (x / y - 1):+.1f}%" for x, y in zip(times["whole"], times["before"])))


if __name__ == "__main__":
    main()
