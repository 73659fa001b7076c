"""How often each token and n-gram context occurs in a summary's token stream, in all and at each
sampling level, and the firings per (neuron, item) estimated from the kept events.

Counting. Per neuron the summary keeps a uniform sample of its firing positions: the firings at
positions g with z(g) >= L_i, z a fixed hash of the position (level sampling, core.read.sampling);
level 0 = every firing, exact. Because z depends on the position alone, the positions with z >= L are
a uniform sample of the *corpus*, which we can enumerate. So the rate of neuron i on token v is
measured exactly on that sample: rate = kept(i, v) / occ_L(v), occ_L(v) the occurrences of v at
positions with z >= L_i, and its firings on v are estimated as rate * occ(v). This ratio estimator is
exact at level 0, unbiased, never exceeds occ(v), and is *exact for a perfect detector at any level*
(rate = 1), where the plain kept * 2**L would put a true 100% detector below the 95% criterion about
a third of the time. `count_stderr` gives the standard error of an estimate (0 where exact). N-gram
contexts are counted the same way.

BOS. When the summary's attribute `bos` is 1, position 0 of every sequence is the BOS token: those
positions are left out of every occurrence count, as in the paper (section 4).
"""

from __future__ import annotations

import numpy as np

from neuron_tui.cache import Summary, SummaryError, TokenRows

from .sampling import MAX_LEVEL, token_levels
from .triggers import PairCounts, count_pairs


def count_stderr(count: np.ndarray, occurrences: np.ndarray, sampled: np.ndarray) -> np.ndarray:
    """Standard error of an estimated firing count `count` = rate * `occurrences`, the rate measured
    on `sampled` of those occurrences (a uniform sample without replacement); 0 where exact.

    se = occ * sqrt(rate (1 - rate) / sampled * (1 - sampled / occ)): 0 at level 0 (sampled = occ)
    and for a neuron that fired on every (or no) sampled occurrence.
    """
    occ = np.asarray(occurrences, dtype=np.float64)
    n = np.asarray(sampled, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.clip(np.asarray(count, dtype=np.float64) / occ, 0.0, 1.0)
        var = rate * (1.0 - rate) / n * np.clip(1.0 - n / occ, 0.0, 1.0)
        return np.where((occ > 0) & (n > 0), occ * np.sqrt(var), 0.0)


def at_least(a: np.ndarray, frac: float, b: np.ndarray) -> np.ndarray:
    """a >= frac * b, robust to float rounding of frac * b (a, b counts)."""
    b = np.asarray(b, dtype=np.float64)
    return np.asarray(a, dtype=np.float64) >= frac * b - 1e-9 * np.maximum(b, 1.0)


class TokenStream:
    """The token stream of a summary with what every layer's analysis shares: occurrences of tokens
    and of n-gram contexts, in total and per sampling level (BOS position excluded when `bos`)."""

    def __init__(self, tokens: np.ndarray, vocab_size: int, bos: bool, rows: TokenRows | None = None):
        tokens = np.asarray(tokens)
        self.n_seq, self.T = tokens.shape
        self.flat = tokens.reshape(-1).astype(np.int64)  # local positions: row * T + t
        self.rows = rows or TokenRows(None, self.n_seq, self.T)  # a shard holds some sequences only
        self.V = max(int(vocab_size), int(self.flat.max()) + 1 if self.flat.size else 1)
        self.base = self.V + 1  # n-gram key digits: token ids, and V = "before the sequence start"
        self.bos = bool(bos)
        if self.base**3 >= 2**62:  # pragma: no cover - vocabularies beyond ~1.6M ids
            raise ValueError(f"vocabulary of {self.V} is too large for n-gram keys")
        g = np.arange(self.flat.size, dtype=np.int64)
        if self.bos:
            g = g[g % self.T != 0]
        self.positions = g  # local positions that count (all but BOS)
        # their sampling levels (a hash of the global position; < MAX_LEVEL = 32, so int8)
        self.z = token_levels(self.rows.global_(g)).astype(np.int8)
        # occ_by_level[L, v]: occurrences of v at positions with z >= L
        key = self.z.astype(np.int64) * self.V + self.flat[g]
        hist = np.bincount(key, minlength=MAX_LEVEL * self.V).reshape(MAX_LEVEL, self.V)
        self.occ_by_level = np.cumsum(hist[::-1], axis=0)[::-1]
        self.token_occ = self.occ_by_level[0]  # [V] occurrences outside the BOS position
        self._contexts: dict[int, Contexts] = {}

    @classmethod
    def from_summary(cls, summary: Summary) -> "TokenStream":
        tokens = summary.read("tokens")[: summary.n_seq]
        return cls(tokens, len(summary.vocab), summary.bos, summary.rows)

    def to_local(self, positions: np.ndarray) -> np.ndarray:
        """Local positions (indices into `flat`) of global positions; every sequence must be here."""
        try:
            return self.rows.local(positions)
        except KeyError:
            raise SummaryError("its firing events refer to sequences whose tokens it does not hold") from None

    def token_occurrences(self, tokens: np.ndarray, level: np.ndarray | int = 0) -> np.ndarray:
        """Occurrences of `tokens` at positions with z >= level (level 0: all), elementwise."""
        return self.occ_by_level[np.asarray(level, dtype=np.int64), np.asarray(tokens, dtype=np.int64)]

    def ngram_keys(self, positions: np.ndarray, order: int) -> np.ndarray:
        """Key of the context (order-1 previous tokens, token) at each local position (row * T + t)."""
        g = np.asarray(positions, dtype=np.int64)
        t = g % self.T
        key = np.zeros(g.shape, dtype=np.int64)
        for back in range(order - 1, 0, -1):
            prev = np.where(t >= back, self.flat[np.maximum(g - back, 0)], self.V)
            key = key * self.base + prev
        return key * self.base + self.flat[g]

    def decode_key(self, key: np.ndarray, order: int) -> list[np.ndarray]:
        """Token ids of the context keys, oldest first; -1 for "before the sequence start"."""
        key = np.asarray(key, dtype=np.int64)
        out = []
        for _ in range(order):
            out.append(key % self.base)
            key = key // self.base
        return [np.where(x == self.V, -1, x) for x in reversed(out)]

    def contexts(self, order: int) -> "Contexts":
        """The n-gram contexts of every position (built once per order)."""
        if order not in self._contexts:
            self._contexts[order] = Contexts(self, order)
        return self._contexts[order]


class Contexts:
    """Dense ids of the order-n contexts of a corpus and their occurrences per sampling level.

    `ids[g]` is the context id at local position g (-1 at the BOS position when it is excluded), so
    an event's context is one gather; `keys[id]` is the context key (TokenStream.ngram_keys); `occ[id]`
    its occurrences. A table sorted by (id, z) answers "occurrences with z >= L" for sampled neurons.
    """

    def __init__(self, corpus: TokenStream, order: int):
        self.order = order
        keys, inverse = np.unique(corpus.ngram_keys(corpus.positions, order), return_inverse=True)
        inverse = inverse.reshape(-1).astype(np.int64)
        self.keys = keys
        dtype = np.int32 if keys.size < 2**31 else np.int64
        self.ids = np.full(corpus.flat.size, -1, dtype=dtype)
        self.ids[corpus.positions] = inverse
        self.occ = np.bincount(inverse, minlength=keys.size).astype(np.int64)
        kz, counts = np.unique(inverse * MAX_LEVEL + corpus.z, return_counts=True)
        self._kz = kz
        self._cum = np.concatenate([[0], np.cumsum(counts)])
        self._block_end = np.cumsum(np.bincount(kz // MAX_LEVEL, minlength=keys.size))  # table end of each id

    def occurrences(self, ids: np.ndarray, level: np.ndarray | int = 0) -> np.ndarray:
        """Occurrences of context `ids` at positions with z >= level (elementwise)."""
        ids = np.asarray(ids, dtype=np.int64)
        level = np.broadcast_to(np.asarray(level, dtype=np.int64), ids.shape)
        out = self.occ[ids]
        sampled = level > 0
        if sampled.any():
            i, lv = ids[sampled], level[sampled]
            lo = np.searchsorted(self._kz, i * MAX_LEVEL + lv)
            out = out.copy()
            out[sampled] = self._cum[self._block_end[i]] - self._cum[lo]
        return out


def estimated_pairs(offsets, items, keep, level, occurrences, order: bool = True) -> tuple[PairCounts, np.ndarray]:
    """(pairs with value = estimated firings, [P] corpus occurrences of each pair's item).

    occurrences(items, levels) counts each item's occurrences at positions with z >= its level (0:
    all). The estimate is kept / occ_level * occ (module docstring; exactly the kept count at level
    0). With `order` the pairs are sorted by it within each neuron, else they stay by item id.
    """
    pc = count_pairs(offsets, items, keep, order=False)
    lv = np.asarray(level, dtype=np.int64)[pc.neuron]
    occ = occurrences(pc.item, 0)
    sampled = occurrences(pc.item, lv)
    with np.errstate(divide="ignore", invalid="ignore"):
        est = np.where(lv > 0, np.minimum(pc.count / np.maximum(sampled, 1), 1.0) * occ, pc.count)
    pc = PairCounts(pc.neuron, pc.item, pc.count, est.astype(np.float64), pc.rank, pc.start)
    if order:
        pc, perm = pc.reorder(pc.value, return_order=True)
        occ = occ[perm]
    return pc, occ
