"""The picker of filters (`f` on the layer table): every kind of neuron the registry knows, with its key,
its count in the layer and what it is, so a summary with many kinds needs no filter bar as wide as
all of them."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option


class FilterPicker(ModalScreen[str | None]):
    """Every filter as one line (key, letter, name, count in the layer, definition); enter filters the
    table to the one under the cursor, escape leaves the filter as it was."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", tooltip="close the picker, keep the filter", id="picker.cancel")]

    def __init__(self, choices: list[tuple[str, Text, bool]], current: str) -> None:
        super().__init__()
        self.choices, self.current = choices, current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog picker"):
            yield Static(Text("Show the neurons of one kind", style="bold"))
            yield OptionList(*(Option(line, id=name, disabled=not ok) for name, line, ok in self.choices),
                             id="picker-list")
            yield Static(Text("↑ ↓ choose · enter: filter · esc: cancel · the keys work on the table too",
                              style="dim"))

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        names = [name for name, _, _ in self.choices]
        options.highlighted = names.index(self.current) if self.current in names else 0
        options.focus()

    @on(OptionList.OptionSelected, "#picker-list")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
