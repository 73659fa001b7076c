"""Valid copies of a summary with some attributes changed (tests of what readers refuse or report).

A copy edited in place with h5py fails its integrity check (which is the point of the check); these
go through the store's own writer instead, so the copy is a well-formed summary that merely says
something else.
"""

from __future__ import annotations

from pathlib import Path

from neuron_tui.cache import Summary, SummaryWriter


def rewritten(source: Path, path: Path, **attrs) -> Path:
    """A copy of summary `source` at `path` with root attributes `attrs` changed."""
    with Summary.open(source) as s, SummaryWriter(path) as w:
        w.copy_from(s)
        w.set_attrs(attrs)
    return path


def raw_vocab(f) -> list[str]:
    """The vocabulary of an open h5py file, read without the store (its UTF-8 bytes and offsets)."""
    data, offsets = f["vocab_utf8"][()].tobytes(), f["vocab_offsets"][()]
    return [data[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]
