"""What screens ask of the app, as messages (they bubble from a screen to the app, which handles them):
screens never import the app, and never call its methods.

Navigation (`OpenLayer`, `OpenNeuron`, `OpenProbe`), the picker of filters (`PickFilter`), marks (`MarkRequested`, `UnmarkRequested`) and
failures (`ReadFailed`, `ProbeFailed`: a worker's read that failed, in one line).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from rich.text import Text
from textual.message import Message


class OpenLayer(Message):
    """Open layer `layer`'s table (the cursor on `neuron`; `detail`: and that neuron's detail over it)."""

    def __init__(self, layer: int, neuron: int | None = None, detail: bool = False) -> None:
        super().__init__()
        self.layer, self.neuron, self.detail = layer, neuron, detail


class OpenNeuron(Message):
    """Open a neuron's detail. `order`: the ids `,` and `.` step through (None: every neuron, by id);
    `closed`: called with the neuron shown last when the detail closes."""

    def __init__(self, layer: int, neuron: int, order: Callable[[], np.ndarray | None] | None = None,
                 closed: Callable[[int | None], None] | None = None) -> None:
        super().__init__()
        self.layer, self.neuron, self.order, self.closed = layer, neuron, order, closed


class OpenProbe(Message):
    """Open the probe on layer `layer`, neuron `neuron` in view (None: the layer only)."""

    def __init__(self, layer: int, neuron: int | None) -> None:
        super().__init__()
        self.layer, self.neuron = layer, neuron


class PickFilter(Message):
    """Offer every filter of the layer table (`choices`: (filter name, its line, whether it can be
    chosen now)) with `current` under the cursor; `chosen` gets the name picked (None: cancelled)."""

    def __init__(self, choices: list[tuple[str, Text, bool]], current: str,
                 chosen: Callable[[str | None], None]) -> None:
        super().__init__()
        self.choices, self.current, self.chosen = choices, current, chosen


class MarkRequested(Message):
    """Mark a neuron (the app asks for its note)."""

    def __init__(self, layer: int, neuron: int) -> None:
        super().__init__()
        self.layer, self.neuron = layer, neuron


class UnmarkRequested(Message):
    """Remove a neuron's mark."""

    def __init__(self, layer: int, neuron: int) -> None:
        super().__init__()
        self.layer, self.neuron = layer, neuron


class ReadFailed(Message):
    """A read of the summary failed: `text` says what and why, in one line. A `fatal` failure (the
    summary cannot be used) replaces the explorer by the error screen; any other is a notification."""

    def __init__(self, text: str, fatal: bool = False) -> None:
        super().__init__()
        self.text, self.fatal = text, fatal


class ProbeFailed(Message):
    """The probe cannot run for this summary (its model is not here, or no torch): one line, and the
    probe screen closes."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
