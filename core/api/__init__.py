"""neuron-tui: explore the FFN neurons of language models (dead, n-gram, positional).

This file is the `neuron_tui` package itself (pyproject.toml maps it here, so that the repository keeps
the user's top-level layout). Its public names are the Python API of `neuron_tui.core.read.api`:

    import neuron_tui
    s = neuron_tui.open_summary("summary.h5")
    s.layers(), s.neurons(0, category="token"), s.neuron(0, 767), s.array("act_count", 0)

They load on first use, so `import neuron_tui.tui.cli` pays for none of them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neuron_tui.cache import SummaryError
    from neuron_tui.core.read.api import Rows, SummaryFile, open_summary

__all__ = ["Rows", "SummaryError", "SummaryFile", "open_summary"]
_HOME = {"Rows": "neuron_tui.core.read.api", "SummaryFile": "neuron_tui.core.read.api", "open_summary": "neuron_tui.core.read.api",
         "SummaryError": "neuron_tui.cache"}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(import_module(_HOME[name]), name)
    raise AttributeError(f"module 'neuron_tui' has no attribute {name!r}")
