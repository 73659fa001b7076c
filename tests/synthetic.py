"""The standard tiny synthetic summary of the explorer's tests (neuron_tui.core.read.synthetic makes it)."""

from __future__ import annotations

from pathlib import Path

from neuron_tui.core.read.synthetic import make_summary, make_vocab

__all__ = ["make_summary", "make_vocab", "tiny_summary", "TINY"]

# 4 layers x 96 neurons, T=16, 128 sequences (2,048 tokens), vocabulary 400: every category present
TINY = dict(n_layers=4, n_neurons=96, seq_len=16, n_seq=128, vocab=400, seed=7, model="synthetic/tiny-opt")


def tiny_summary(folder: Path, name: str = "tiny.h5", **overrides) -> Path:
    """Write the standard tiny summary (with `overrides` of make_summary's arguments) into `folder`."""
    return make_summary(Path(folder) / name, **{**TINY, **overrides})
