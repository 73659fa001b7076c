"""Each neuron's exact histogram of its firing values, in bins fixed per layer before counting.

The bins of layer l come from the calibration slice (the first sequences of the corpus, whose |h|
quantile gives tau_l; core.model.calibration) and are stored with the summary (`hist_edges`), so a
resumed run, the shards of a run and the ranks of a distributed run count into the same bins, and
their counts add. Every firing lands in exactly one bin (values beyond the outer edges in the outer
bins), so a neuron's histogram sums to its `act_count`.

The bins (`histogram_edges`): B = schema.HIST_BINS = 2n + 1 with n = 24, log-spaced in |h|. Firing
values are heavy-tailed (most firings lie within a few times tau, the strongest one or two orders of
magnitude above), so equal steps in log |h| show both the bulk and the tail, where equal steps in h
would put nearly every firing in the first bins. The range runs from tau (nothing fires below it) to
hi, at least twice the largest |h| of the calibration slice (the corpus may go beyond the slice's
maximum), rounded up to a power of two, so that shards calibrated on other hardware, whose maxima
differ in the last bits, almost always get the same bins. n = 24 bins over that range are steps of
about 18% in |h| (SmolLM2: hi / tau is 52 in the median layer, 19 to 12,700 over its 30 layers, so
steps of 13% to 48%): fine enough to show a mode and the shape of the tail, as the ~50-bin plots of
Neuronpedia do, for 4(B + 1) = 200 bytes a neuron on the device (2% of the position counts at
T = 2,048).

- abs rule (firing iff |h| > tau, signed): n bins from -hi to -tau, the middle bin [-tau, tau) (empty
  but for values within rounding of tau at bf16 precision), n bins from tau to hi.
- ReLU (firing iff h > tau): B bins from tau to hi.
- tau = 0 (the paper's ReLU rule, or `--threshold 0`), where a log scale cannot start: the range starts
  at hi * 2**-14 instead, and the middle bin (abs), or the first bin [0, hi * 2**-14) (ReLU), holds
  the smallest firings.

Binning costs O(1) a value (`FiringHistogram.bins`), not a binary search over the edges (which cost
most of the CPU pass's extra time on a densely firing ReLU layer): a table indexed by a float32's top 16
bits (sign, exponent, 7 mantissa bits: intervals under 0.8% wide) gives the bin of the smallest value
with those bits, and one comparison with that bin's upper edge corrects it, since edges at least 1.4%
apart put at most one edge inside such an interval. The result is exactly edges[k] <= h < edges[k + 1]
(-inf and inf in the outer bins). The CPU kernel (cpu_update.c) reads the same bins from one table load
instead of two dependent ones (`FiringHistogram.steps`, `step_table`): within an interval the bin is a
step function of the low 16 bits, so each entry holds the bin below the step, the bin from it on, and
where it is. In rows where many fire, on a CPU with AVX-512, it computes them 16 at a time instead, from
log2 |h| and one comparison with the candidate's `upper` edge (`bins16` there: the same bin for every
float32, tested).
"""

from __future__ import annotations

import numpy as np
import torch

from neuron_tui.cache.schema import HIST_BINS

from .batches import host_copy, to_device

SIDE_BINS = (HIST_BINS - 1) // 2  # bins on each side of +-tau (abs rule)
FLOOR = 2.0**-14  # with tau = 0, the log scale starts at hi * FLOOR
DENSE_CHUNK = 1 << 22  # elements binned at once on the sync-free path: its int64 bin numbers take 32 MiB
TOP_BITS = 16  # a float32's bits that index the bin table: sign, exponent and 7 mantissa bits


def histogram_edges(tau: float, peak: float, rule: str) -> np.ndarray:
    """[HIST_BINS + 1] float32 edges of a layer's bins from its tau and the largest |h| of its
    calibration slice (`peak`); see the module docstring."""
    bound = 2.0 * max(float(peak), float(tau))
    hi = 2.0 ** np.ceil(np.log2(bound)) if bound > 0 else 1.0  # 1: a layer whose h is 0 throughout
    low = float(tau) if tau > 0 else hi * FLOOR
    if rule == "abs":
        side = np.geomspace(low, hi, SIDE_BINS + 1)
        edges = np.concatenate([-side[::-1], side])
    elif tau > 0:
        edges = np.geomspace(low, hi, HIST_BINS + 1)
    else:
        edges = np.concatenate([[0.0], np.geomspace(low, hi, HIST_BINS)])
    return edges.astype(np.float32)


class FiringHistogram:
    """`count` [B, F] int32: each neuron's firings per bin of its layer's `edges` [B + 1]."""

    def __init__(self, n_neurons: int, edges: np.ndarray, device: torch.device):
        edges = np.asarray(edges, dtype=np.float32)
        self.n_bins = len(edges) - 1
        self.table = torch.as_tensor(_bin_table(edges)).to(device)
        # bin k's upper edge; NaN for the last, which no value is at or above (+inf included): values
        # beyond the outer edges fall in the outer bins
        self.upper = torch.as_tensor(np.append(edges[1:-1], np.nan).astype(np.float32)).to(device)
        # what the CPU kernel reads instead of these two (it runs on the CPU only)
        self.steps = (torch.as_tensor(step_table(self.table.cpu().numpy(), self.upper.cpu().numpy()))
                      if device.type == "cpu" else None)
        # row B is a spare row that takes the non-firing tokens of a dense batch (see add_dense)
        self.count = torch.zeros(self.n_bins + 1, n_neurons, dtype=torch.int32, device=device)
        self._one = torch.ones(1, 1, dtype=torch.int32, device=device)

    @staticmethod
    def device_bytes(n_neurons: int, cpu: bool = False) -> int:
        """4(B + 1) bytes a neuron for the counts (B bins and the spare row); the bin table and the upper
        edges; on the CPU also the kernel's step table."""
        return n_neurons * 4 * (HIST_BINS + 1) + 4 * (1 << TOP_BITS) * (1 + int(cpu)) + 4 * HIST_BINS + 4

    def bins(self, values: torch.Tensor) -> torch.Tensor:
        """The bin (int32) of each of `values`, any shape (see the module docstring)."""
        values = values.float()
        top = (values.view(torch.int32) >> (32 - TOP_BITS)) & ((1 << TOP_BITS) - 1)
        bins = _take(self.table, top)
        bins += values >= _take(self.upper, bins)
        return bins

    def add(self, values: torch.Tensor, neuron: torch.Tensor) -> None:
        """Count firings given as a list (the CPU's path): their h (`values`, signed) and neurons (both
        [n]), counted by numpy's bincount, three times faster here than torch's."""
        F = self.count.shape[1]
        key = (self.bins(values) * F + neuron).numpy()
        counts = torch.from_numpy(np.bincount(key, minlength=self.n_bins * F).reshape(-1, F))
        self.count[: self.n_bins] += counts.to(torch.int32)

    def add_dense(self, h: torch.Tensor, fired: torch.Tensor) -> None:
        """Count a batch's firings from h and the firing mask ([B, T, F]) without listing them (no
        host sync): the bin of every token, the non-firing ones moved to the spare row, added by one
        scatter, DENSE_CHUNK values at a time so the int64 bin numbers stay small beside the batch."""
        F = h.shape[-1]
        rows, mask = h.reshape(-1, F), fired.view(-1, F)
        step = max(1, DENSE_CHUNK // F)
        for start in range(0, rows.shape[0], step):
            bins = torch.where(mask[start : start + step], self.bins(rows[start : start + step]), self.n_bins).long()
            self.count.scatter_add_(0, bins, self._one.expand_as(bins))

    def snapshot(self, into: dict | None = None) -> dict[str, np.ndarray]:
        """A host copy of the counts, spare row included (into a previous snapshot's array)."""
        return {"count": host_copy(self.count, (into or {}).get("count"))}

    @staticmethod
    def state_of(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"hist_count": raw["count"][:-1]}

    def load(self, st) -> None:
        """Restore from a checkpoint's LayerState `st`."""
        counts = np.zeros(tuple(self.count.shape), dtype=np.int32)
        counts[: self.n_bins] = st.hist_count
        self.count = to_device(counts, self.count)


def _take(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table[index] for a 1-D table, through index_select (several times faster on the CPU)."""
    return table.index_select(0, index.reshape(-1)).view(index.shape)


def _bin_table(edges: np.ndarray) -> np.ndarray:
    """[2**TOP_BITS] int32: for each value of a float32's top bits, the bin of the smallest float32 with
    those bits (a negative one's low bits all set: the largest magnitude; but -inf in its own interval,
    whose other values are NaN), clipped to the bins."""
    top = np.arange(1 << TOP_BITS, dtype=np.uint32) << (32 - TOP_BITS)
    infinite_or_nan = (top >> 23) & 0xFF == 0xFF
    low = np.where((top >> 31 == 1) & ~infinite_or_nan, (1 << (32 - TOP_BITS)) - 1, 0).astype(np.uint32)
    smallest = (top | low).view(np.float32)
    return np.clip(np.searchsorted(edges, smallest, side="right") - 1, 0, len(edges) - 2).astype(np.int32)


STEP_BITS = 32 - TOP_BITS  # the low bits of a float32 within one interval of the bin table
BIN_BITS = 7  # a bin number in a step-table entry: up to 127 (the kernel holds at most 64 bins)


def step_table(table: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """[2**TOP_BITS] int32: `FiringHistogram.bins` as one lookup. Within the interval of top bits k, the
    bin of the value with low bits u is table[k] + (x >= upper[table[k]]), and that comparison changes at
    most once as u runs from 0 to 2**16 - 1: upwards for positive values, downwards for negative ones
    (their magnitude grows with u), and for the interval of +-inf, whose u = 0 is infinite and every
    other u a NaN (false). So entry k is s | below << 17 | above << 24: the bin is `above` where u >= s,
    else `below` (s = 2**16 where it does not change). Found by bisection of every interval at once,
    from the very comparison `bins` makes (tests/test_accumulators.py checks every u of the intervals
    holding an edge)."""
    k = np.arange(1 << TOP_BITS, dtype=np.uint32)
    low = table.astype(np.int64)
    threshold = upper[table]

    def at_or_above(u: np.ndarray) -> np.ndarray:
        x = ((k << STEP_BITS) | u.astype(np.uint32)).view(np.float32)
        with np.errstate(invalid="ignore"):
            return x >= threshold

    first = at_or_above(np.zeros_like(k))
    last = at_or_above(np.full_like(k, (1 << STEP_BITS) - 1))
    changes = first != last
    lo, hi = np.zeros(k.shape, np.int64), np.full(k.shape, (1 << STEP_BITS) - 1, np.int64)
    while True:  # invariant where it changes: u = lo compares as u = 0, u = hi as the last u
        open_ = changes & (hi - lo > 1)
        if not open_.any():
            break
        mid = (lo + hi) // 2
        same = at_or_above(mid) == first
        lo, hi = np.where(open_ & same, mid, lo), np.where(open_ & ~same, mid, hi)
    step = np.where(changes, hi, 1 << STEP_BITS)
    return (step | (low + first) << (STEP_BITS + 1) | (low + last) << (STEP_BITS + 1 + BIN_BITS)).astype(np.int32)
