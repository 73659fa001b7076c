"""Level sampling of firing events: the hash of a global token position that every process agrees on.

Every global position g = seq * T + t has a level z(g), the trailing zeros of a 64-bit hash of g, so
P(z >= L) = 2**-L. Neuron i keeps the firing positions with z(g) >= level_i, level_i the smallest L whose
kept events fit the cap (`core.model.accumulators` does this on the device during the pass); since z depends
on the position alone, the kept events are a uniform sample of the neuron's firings *and* the positions
with z >= L are a uniform sample of the corpus, which the analysis enumerates (docs/design.md,
"Level sampling"). This module is numpy only: the read side uses it without torch.
"""

from __future__ import annotations

import numpy as np

MAX_LEVEL = 32  # levels 0..31: a 2**31 sampling rate is beyond any corpus we can stream
MAX_TOKENS = 2**31 - 1  # global positions are int32 on the device and on disk

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def token_levels(positions: np.ndarray) -> np.ndarray:
    """z(g): trailing zeros of splitmix64(g), capped at MAX_LEVEL - 1 (int64, same shape).

    A fixed hash of the global position, so every process, resume and batch size agrees on it.
    """
    x = np.asarray(positions, dtype=np.uint64) + _GOLDEN
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _MIX1
        x = (x ^ (x >> np.uint64(27))) * _MIX2
        x = x ^ (x >> np.uint64(31))
        low = x & (~x + np.uint64(1))  # lowest set bit
    levels = np.where(low == 0, 64, np.log2(np.maximum(low, 1).astype(np.float64))).astype(np.int64)
    return np.minimum(levels, MAX_LEVEL - 1)
