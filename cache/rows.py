"""`TokenRows`: the one mapping of global token positions to the rows of a summary's `tokens` array."""

from __future__ import annotations

import numpy as np


class TokenRows:
    """Where a global sequence's tokens are in a summary's `tokens` array: row r holds sequence
    seq_index[r] (a shard keeps some sequences only), or sequence r when there is no seq_index. Every
    mapping from global positions g = seq * T + t to stored tokens goes through here."""

    def __init__(self, seq_index: np.ndarray | None, n_rows: int, seq_len: int):
        self.seq_index = None if seq_index is None else np.asarray(seq_index, dtype=np.int64)
        if self.seq_index is not None and np.array_equal(self.seq_index, np.arange(n_rows)):
            self.seq_index = None
        self.n_rows, self.T = int(n_rows), int(seq_len)

    def rows(self, seqs: np.ndarray) -> np.ndarray:
        """Rows holding the global sequences `seqs`; KeyError naming a sequence that is not there."""
        seqs = np.asarray(seqs, dtype=np.int64)
        if self.seq_index is None:
            bad = (seqs < 0) | (seqs >= self.n_rows)
            if bad.any():
                raise KeyError(f"sequence {int(seqs[bad][0])}")
            return seqs
        index = self.seq_index
        rows = np.minimum(np.searchsorted(index, seqs), max(len(index) - 1, 0))
        missing = index[rows] != seqs if len(index) else np.ones(seqs.shape, dtype=bool)
        if missing.any():
            raise KeyError(f"sequence {int(seqs[missing][0])}")
        return rows

    def local(self, positions: np.ndarray) -> np.ndarray:
        """Indices into the flattened `tokens` array (row * T + t) of global positions."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.seq_index is None:
            return positions
        return self.rows(positions // self.T) * self.T + positions % self.T

    def global_(self, local: np.ndarray) -> np.ndarray:
        """Global positions of indices into the flattened `tokens` array."""
        local = np.asarray(local, dtype=np.int64)
        if self.seq_index is None:
            return local
        return self.seq_index[local // self.T] * self.T + local % self.T

    def sequences(self) -> np.ndarray:
        """The global sequence of every row."""
        return np.arange(self.n_rows, dtype=np.int64) if self.seq_index is None else self.seq_index
