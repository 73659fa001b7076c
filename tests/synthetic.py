"""Small synthetic summaries for the explorer's tests, made by `bench/make_summary.py` (one generator).

bench/ is not a package, so its folder is put on sys.path once here; tests import `make_summary` and
`tiny_summary` from this module.
"""

from __future__ import annotations

import sys
from pathlib import Path

_BENCH = str(Path(__file__).resolve().parents[1] / "bench")
if _BENCH not in sys.path:
    sys.path.insert(0, _BENCH)

from make_summary import make_summary, make_vocab  # noqa: E402

__all__ = ["make_summary", "make_vocab", "tiny_summary", "TINY"]

# 4 layers x 96 neurons, T=16, 128 sequences (2,048 tokens), vocabulary 400: every category present
TINY = dict(n_layers=4, n_neurons=96, seq_len=16, n_seq=128, vocab=400, seed=7, model="synthetic/tiny-opt")


def tiny_summary(folder: Path, name: str = "tiny.h5", **overrides) -> Path:
    """Write the standard tiny summary (with `overrides` of make_summary's arguments) into `folder`."""
    return make_summary(Path(folder) / name, **{**TINY, **overrides})
