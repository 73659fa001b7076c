"""The `?` screen: every key of every screen and what the marks on the screens mean."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ..present.help import Rows, keys_table


class HelpScreen(ModalScreen):
    """Every key of every screen, from the bindings themselves (keymap overrides applied; tui/keys.py
    makes the sections), and what the marks and ranks on the screens mean."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close", id="help.close")]

    def __init__(self, sections: Sequence[tuple[str, Rows]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            yield Static(Text("Keys  (esc or ? closes · ↑↓ scroll)", style="bold"), id="help-title")
            with VerticalScroll(id="help-scroll"):
                yield Static(keys_table(self.sections), id="help-table")

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()
