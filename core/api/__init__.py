"""neuron-tui: explore the FFN neurons of language models (dead, n-gram, positional).

This file is the `neuron_tui` package itself (pyproject.toml maps it here, so that the repository keeps
the user's top-level layout). Its public names are the Python API of `neuron_tui.core.read.api`:

    import neuron_tui
    s = neuron_tui.open_summary("smollm2")   # a model's cached summary, or a file
    s.layers(), s.neurons(0, category="token"), s.neuron(0, 767), s.array("act_count", 0)

They load on first use, so `import neuron_tui.tui.cli` pays for none of them; `dir(neuron_tui)` and
tab completion list them all the same.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neuron_tui.cache import SummaryError
    from neuron_tui.core.errors import NeuronTuiError
    from neuron_tui.core.read.api import Rows, SummaryFile, open_summary

__all__ = ["NeuronTuiError", "Rows", "SummaryError", "SummaryFile", "open_summary"]
_HOME = {"open_summary": "neuron_tui.core.read.api", "SummaryFile": "neuron_tui.core.read.api",
         "Rows": "neuron_tui.core.read.api", "SummaryError": "neuron_tui.cache",
         "NeuronTuiError": "neuron_tui.core.errors"}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(import_module(_HOME[name]), name)
    raise AttributeError(f"module 'neuron_tui' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
