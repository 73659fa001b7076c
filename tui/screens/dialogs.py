"""The mark dialog (a note for a marked neuron) and the export dialog (where the marks go)."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class MarkDialog(ModalScreen[str | None]):
    """A note for a marked neuron; enter saves, escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="mark.cancel")]

    def __init__(self, layer: int, neuron: int, note: str | None) -> None:
        super().__init__()
        self.layer_index, self.neuron, self.note = layer, neuron, note

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            verb = "Edit the note of" if self.note is not None else "Mark"
            yield Static(Text(f"{verb} L{self.layer_index} N{self.neuron}", style="bold"))
            yield Input(value=self.note or "", placeholder="note (optional)", id="note")
            yield Static(Text("enter: save · esc: cancel", style="dim"))

    def on_mount(self) -> None:
        self.query_one("#note", Input).focus()

    @on(Input.Submitted, "#note")
    def _save(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ExportDialog(ModalScreen[Path | None]):
    """Where to export the marks: a file name whose extension (.csv or .json) picks the format."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="export.cancel")]

    def __init__(self, n_marks: int, default: Path) -> None:
        super().__init__()
        self.n_marks, self.default = n_marks, default

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text(f"Export {self.n_marks} marked neuron(s) with their data to", style="bold"))
            yield Input(value=str(self.default), id="export-path")
            yield Static(Text("enter: export · esc: cancel · .csv or .json picks the format", style="dim"))

    def on_mount(self) -> None:
        self.query_one("#export-path", Input).focus()

    @on(Input.Submitted, "#export-path")
    def _export(self, event: Input.Submitted) -> None:
        path = Path(event.value.strip()).expanduser()
        if path.suffix.lower() not in (".csv", ".json"):
            self.notify("the file name must end in .csv or .json", severity="warning")
            return
        self.dismiss(path)

    def action_cancel(self) -> None:
        self.dismiss(None)
