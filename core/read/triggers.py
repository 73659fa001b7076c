"""Which items (tokens, n-gram contexts) a neuron fires on, counted from its kept firing events.

Every function here is vectorised over all neurons of a layer at once: the events of a layer are one
flat array (`event_pos[off[i]:off[i+1]]` belongs to neuron i), and counting is one sort of composite
keys `neuron * n_items + item`, never a Python loop over neurons and never a dense [F, V] matrix. A
layer of 36,864 neurons with 256 events each (9.4M events) costs a few sorts of 9.4M int64.

`count_pairs` is the building block: it returns every distinct (neuron, item) pair with its number of
kept events, ordered by neuron, then count (descending), then item id (ascending): the order in
which triggers are listed everywhere (the tie-break by id makes the result deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_INT64_MAX = np.iinfo(np.int64).max
QUANT = 10  # float ordering values are compared in steps of 2**-QUANT


@dataclass
class PairCounts:
    """Distinct (neuron, item) pairs of a layer, ordered by neuron, value descending, item ascending.

    `value` is what the order is by (the kept-event count, or an estimate derived from it); `rank` is
    the 0-based position of the pair within its neuron; `start[i]:start[i+1]` are neuron i's pairs.
    """

    neuron: np.ndarray  # [P] int64
    item: np.ndarray  # [P] int64
    count: np.ndarray  # [P] int64, kept events of the pair
    value: np.ndarray  # [P] the ordering key: == count, or an estimate given to `reorder`
    rank: np.ndarray  # [P] int64
    start: np.ndarray  # [F+1] int64

    @property
    def n_neurons(self) -> int:
        return len(self.start) - 1

    def n_distinct(self) -> np.ndarray:
        """[F] distinct items per neuron."""
        return np.diff(self.start)

    def reorder(self, value: np.ndarray, return_order: bool = False):
        """The same pairs ordered by a new non-negative `value` [P] (descending) within each neuron.

        Ties keep the current order (item id ascending after `count_pairs`); with `return_order` the
        permutation applied is returned too, as (pairs, order). Float values are
        compared at a resolution of 2**-QUANT (they are estimated firing counts: far finer than
        their error). Used when the estimate that orders items is not a multiple of the kept count.
        """
        value = np.asarray(value)
        if value.size == 0:
            pc = PairCounts(self.neuron, self.item, self.count, value, self.rank, self.start)
            return (pc, np.zeros(0, np.int64)) if return_order else pc
        key = value if value.dtype.kind in "iu" else np.round(value * (1 << QUANT))
        key = np.asarray(key, dtype=np.int64)
        vmax = int(key.max())
        if self.n_neurons * (vmax + 1) < _INT64_MAX // 2:
            order = np.argsort(self.neuron * (vmax + 1) + (vmax - key), kind="stable")
        else:  # pragma: no cover - astronomically large counts
            order = np.lexsort((np.arange(value.size), -key, self.neuron))
        neuron = self.neuron[order]
        ranks = _ranks(neuron, self.start)
        pc = PairCounts(neuron, self.item[order], self.count[order], value[order], ranks, self.start)
        return (pc, order) if return_order else pc

    def subset(self, mask: np.ndarray) -> "PairCounts":
        """The pairs where `mask` [P] is True, in the same order (ranks and offsets recomputed)."""
        mask = np.asarray(mask, dtype=bool)
        neuron = self.neuron[mask]
        start = np.searchsorted(neuron, np.arange(self.n_neurons + 1, dtype=np.int64))
        value = self.value[mask] if self.value.size else self.value
        return PairCounts(neuron, self.item[mask], self.count[mask], value, _ranks(neuron, start), start)

    def top(self, k: int, values: np.ndarray | None = None, fill=0) -> tuple[np.ndarray, np.ndarray]:
        """([F, k] items, -1 padded; [F, k] `values` (default: the ordering value), `fill` padded)."""
        F = self.n_neurons
        values = self.value if values is None else np.asarray(values)
        items = np.full((F, k), -1, dtype=np.int64)
        out = np.full((F, k), fill, dtype=values.dtype)
        keep = self.rank < k
        items[self.neuron[keep], self.rank[keep]] = self.item[keep]
        out[self.neuron[keep], self.rank[keep]] = values[keep]
        return items, out

    def segment_cumsum(self, weights: np.ndarray) -> np.ndarray:
        """Running sum of `weights` [P] within each neuron, in pair order (inclusive)."""
        weights = np.asarray(weights)
        if weights.size == 0:
            return weights.copy()
        total = np.cumsum(weights)
        before = np.concatenate([[0], total])[self.start[:-1]]  # cumsum just before each neuron
        return total - before[self.neuron]


def _ranks(neuron: np.ndarray, start: np.ndarray) -> np.ndarray:
    return np.arange(neuron.size, dtype=np.int64) - start[neuron]


def neuron_of_events(offsets: np.ndarray) -> np.ndarray:
    """[E] the neuron of each event, from a layer's offsets [F+1] (relative to the layer's first event)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    return np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))


def count_pairs(
    offsets: np.ndarray, items: np.ndarray, keep: np.ndarray | None = None, order: bool = True
) -> PairCounts:
    """Count the distinct items among each neuron's events.

    offsets: [F+1] event offsets relative to `items[0]`; items: [E] non-negative item id per event
    (negative ids are ignored); keep: optional [E] bool, False for events to ignore (e.g. BOS).
    order: sort each neuron's pairs by count (descending); False leaves them by item id, for a
    caller that reorders by its own estimate anyway.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    F = len(offsets) - 1
    neuron = neuron_of_events(offsets)
    mask = items >= 0
    if keep is not None:
        mask &= np.asarray(keep, dtype=bool)
    if not mask.all():
        neuron, items = neuron[mask], items[mask]
    if items.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return PairCounts(empty, empty, empty, empty, empty, np.zeros(F + 1, dtype=np.int64))
    span = int(items.max()) + 1
    if F * span >= _INT64_MAX // 2:  # pragma: no cover - item ids too large for one key: densify them
        uniq, dense = np.unique(items, return_inverse=True)
        pc = _count(neuron, dense.astype(np.int64), F, order)
        pc.item = uniq[pc.item]
        return pc
    return _count(neuron, items, F, order)


def _count(neuron: np.ndarray, items: np.ndarray, F: int, order: bool) -> PairCounts:
    span = int(items.max()) + 1
    key = np.sort(neuron * span + items)
    first = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    count = np.diff(np.append(first, key.size))
    uk = key[first]
    pair_neuron, pair_item = uk // span, uk % span
    start = np.searchsorted(pair_neuron, np.arange(F + 1, dtype=np.int64))
    pc = PairCounts(pair_neuron, pair_item, count, count, _ranks(pair_neuron, start), start)
    return pc.reorder(count) if order else pc


def candidate_triggers(
    offsets: np.ndarray, event_tokens: np.ndarray, k: int, exclude: np.ndarray | None = None
) -> np.ndarray:
    """[F, k] int32: per neuron the k most frequent token ids among its kept events (-1 padded).

    Ties are broken by token id (smaller first). offsets: [F+1] offsets of each neuron's events into
    `event_tokens` (relative: offsets[0] is the first event of the layer); event_tokens: [E] token id
    of each event. exclude: either a bool array [E] marking events to ignore (the BOS position), or
    an integer array of token ids to ignore. Within a neuron every kept event stands for the same
    2**level firings, so the order by kept count is the order by estimated firing count.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    tokens = np.asarray(event_tokens, dtype=np.int64)
    offsets = offsets - offsets[0]  # global offsets of one layer's slice work too
    keep = None
    if exclude is not None:
        exclude = np.asarray(exclude)
        if exclude.dtype == bool:
            keep = ~exclude
        else:
            keep = ~np.isin(tokens, exclude.astype(np.int64))
    items, _ = count_pairs(offsets, tokens, keep).top(k)
    return items.astype(np.int32)


def candidate_tokens(events: list[np.ndarray], token_at, T: int, bos: bool, k: int, allowed=None) -> np.ndarray:
    """[F, k] candidate triggers of one layer, whose FFN-update scores the projection group keeps:
    each neuron's most frequent tokens among its kept `events` (one array of global positions per
    neuron), the BOS position left out. token_at(global positions) -> token ids; allowed(neuron, token)
    -> bool per event, to count only some tokens (a merge without the model knows a few scores only)."""
    flat = np.concatenate(events) if events else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in events])]).astype(np.int64)
    tokens = token_at(flat)
    exclude = (flat % T == 0) if bos else np.zeros(flat.shape, dtype=bool)
    if allowed is not None:
        exclude |= ~allowed(neuron_of_events(offsets), tokens)
    return candidate_triggers(offsets, tokens, k, exclude=exclude)
