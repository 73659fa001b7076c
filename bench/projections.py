"""The cost of the families' statistics in the projection step, as a share of the paper's projections
(same model, same device, one run).

    python bench/projections.py                   # SmolLM2 (GGUF), CPU
    python bench/projections.py --model PATH --device cuda --rounds 3

The collection projects every neuron's output vector onto the vocabulary once (core/model/projections.py):
the paper's part (the [batch, V] scores against U: promoted and suppressed tokens, the candidates'
ranks) and, since the families, their statistics against U_eff (vocabulary moments, null-space share,
frequency correlation, norms). This times (a) `UpdateProjector.layer` over every layer, all of it, and
(b) the statistics alone, as `_block` computes them (the same calls on the same blocks), and prints
b / (a - b): the statistics' cost relative to the paper's projections. Rounds alternate (a) and (b) so
that drift hits both.
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


def whole(projector: UpdateProjector, candidates: list[np.ndarray]) -> float:
    start = time.perf_counter()
    for layer in range(projector.n_layers):
        projector.layer(layer, candidates[layer])
    return time.perf_counter() - start


@torch.no_grad()
def statistics_only(projector: UpdateProjector) -> float:
    """The statistics' share of `_block`: `UpdateProjector.statistics` on the same blocks of neurons."""
    start = time.perf_counter()
    for layer in range(projector.n_layers):
        vectors = adapters.output_vectors(projector.out_projs[layer])
        for lo in range(0, projector.n_neurons, projector.batch_size):
            projector.statistics(vectors[lo : lo + projector.batch_size].detach().to(device=projector.device,
                                                                                   dtype=torch.float32))
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    loaded = load(resolve(args.model), device=args.device)
    projector = UpdateProjector(loaded.model, n_candidates=10)
    projector.use_token_counts(np.ones(projector.U.shape[0], np.int64))
    rng = np.random.default_rng(0)
    V, F = projector.U.shape[0], projector.n_neurons
    candidates = [rng.integers(0, V, (F, 10)) for _ in range(projector.n_layers)]
    times = {"whole": [], "statistics": []}
    for r in range(args.rounds):
        order = [("whole", lambda: whole(projector, candidates)), ("statistics", lambda: statistics_only(projector))]
        for name, run in order if r % 2 == 0 else order[::-1]:
            times[name].append(run())
            print(f"round {r}: {name} {times[name][-1]:.1f} s", flush=True)
    a, b = statistics.median(times["whole"]), statistics.median(times["statistics"])
    print(f"{args.model} on {args.device}: projections {a:.1f} s, of which the families' statistics {b:.1f} s: "
          f"{100 * b / (a - b):.1f}% over the paper's projections ({a - b:.1f} s)")


if __name__ == "__main__":
    main()
