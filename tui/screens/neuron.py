"""The neuron screen: one neuron's record, section by section (tui/present/neuron.py draws each)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Footer, Static

from neuron_tui.core.read.records import NeuronRecord

from ..messages import MarkRequested, OpenProbe, ReadFailed, UnmarkRequested
from ..present import neuron as sections
from ..present.families import families_text
from ..present.formats import title_bar
from ..widgets import PositionPlot
from ..workers import read_in_thread
from .base import ExplorerScreen


class NeuronScreen(ExplorerScreen):
    """Everything about one neuron (its record): triggers, n-grams, promoted / suppressed tokens,
    positions, contexts, and the numbers of the families named since the paper. Dismissed with the neuron it shows last, so the table can follow."""

    BINDINGS = [
        Binding("comma", "step(-1)", "Prev", key_display=",", tooltip="previous neuron of the layer's list",
                id="neuron.prev"),
        Binding("full_stop", "step(1)", "Next", key_display=".", tooltip="next neuron of the layer's list",
                id="neuron.next"),
        Binding("i", "probe", "Probe", tooltip="probe: run new text through the model, this neuron in view",
                id="neuron.probe"),
        Binding("m", "mark", "Mark", tooltip="mark this neuron, with a note", id="neuron.mark"),
        Binding("u", "unmark", "Unmark", show=False, tooltip="remove this neuron's mark", id="neuron.unmark"),
        Binding("escape", "back", "Back", tooltip="back to the layer table", id="neuron.back"),
    ]

    class RecordLoaded(Message):
        def __init__(self, layer: int, neuron: int, record: NeuronRecord) -> None:
            super().__init__()
            self.layer, self.neuron, self.record = layer, neuron, record

    def __init__(self, layer: int, neuron: int, order: Callable[[], np.ndarray | None] = lambda: None) -> None:
        super().__init__()
        self.layer_index, self.neuron = layer, neuron
        self.order = order  # the ids of the layer table's current list, in its order (None: all, by id)
        self.record: NeuronRecord | None = None

    def compose(self) -> ComposeResult:
        yield Static(title_bar(None, f"L{self.layer_index} N{self.neuron}"), id="title", classes="title")
        yield Static("", id="banner", classes="banner")
        with VerticalScroll(id="detail"):
            yield Static("", id="headline")
            with Horizontal(classes="pair", id="trig-pair"):
                yield Static("", id="triggers", classes="half")
                yield Static("", id="ngrams", classes="half")
            yield Static("", id="plot-title", classes="section")
            yield PositionPlot(id="plot")
            with Horizontal(classes="pair"):
                yield Static("", id="promoted", classes="half")
                yield Static("", id="suppressed", classes="half")
            yield Static("", id="contexts")
            yield Static("", id="families", classes="section")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.show_banner(self.explorer.info)
        self.query_one("#detail").focus()
        self.load()
        self.watch(self.app, "marks_version", lambda _: self._draw() if self.record else None, init=False)

    def load(self) -> None:
        layer, neuron = self.layer_index, self.neuron
        self.query_one("#title", Static).update(title_bar(self.explorer.info, f"L{layer} N{neuron} · loading…"))
        read_in_thread(self, lambda: self.explorer.neuron(layer, neuron), group="neuron",
                       answered=lambda record: self.RecordLoaded(layer, neuron, record),
                       failed=lambda why: ReadFailed(f"cannot read L{layer} N{neuron}: {why}"))

    @on(RecordLoaded)
    def _record_loaded(self, message: RecordLoaded) -> None:
        if (message.layer, message.neuron) != (self.layer_index, self.neuron):
            return
        self.record = message.record
        self._draw()

    def on_resize(self) -> None:
        if self.record is not None:
            self._draw()

    @property
    def rows_shown(self) -> int:
        """Rows of the trigger and n-gram tables: fewer in 80x24 so the position plot stays on screen."""
        return 6 if self.size.height < 40 else 12

    def _draw(self) -> None:
        r, info = self.record, self.explorer.info
        if r is None:
            return
        self.query_one("#title", Static).update(title_bar(info, sections.heading(r)))
        note = self.explorer.marks.note(r["layer"], r["index"])
        self.query_one("#headline", Static).update(sections.headline(r, note))
        self.query_one("#triggers", Static).update(sections.triggers_table(r, self.rows_shown, self.size.width < 120))
        self.query_one("#ngrams", Static).update(sections.ngrams_table(r, self.rows_shown))
        self.query_one("#plot-title", Static).update(sections.position_title(r))
        self.query_one("#plot", PositionPlot).set_values(sections.position_values(r))
        for kind in ("promoted", "suppressed"):
            self.query_one(f"#{kind}", Static).update(sections.scored_table(r, kind, info.has_projection))
        width = self.query_one("#detail").size.width - 2
        vocab = self.explorer.file.vocab
        self.query_one("#contexts", Static).update(sections.contexts_text(r, vocab, width))
        beyond = families_text(r, vocab, width)
        self.query_one("#families", Static).update(beyond if beyond is not None else "")
        self.query_one("#families").display = beyond is not None

    # ---- actions ----
    def action_step(self, delta: int) -> None:
        n = self.explorer.info.n_neurons
        order = self.order()
        if order is not None and len(order):
            hits = np.flatnonzero(order == self.neuron)
            pos = int(hits[0]) + delta if len(hits) else 0
            if not 0 <= pos < len(order):
                self.app.bell()
                return
            self.neuron = int(order[pos])
        else:
            if not 0 <= self.neuron + delta < n:
                self.app.bell()
                return
            self.neuron += delta
        self.record = None
        self.load()

    def action_probe(self) -> None:
        self.post_message(OpenProbe(self.layer_index, self.neuron))

    def action_mark(self) -> None:
        self.post_message(MarkRequested(self.layer_index, self.neuron))

    def action_unmark(self) -> None:
        self.post_message(UnmarkRequested(self.layer_index, self.neuron))

    def action_back(self) -> None:
        self.dismiss(self.neuron)
