"""The screens that stand in for the explorer: a summary that cannot be opened, a terminal too small."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Static


class ErrorScreen(Screen):
    """A summary that cannot be opened: the reason, and how to leave. Never a traceback."""

    BINDINGS = [Binding("q,escape,enter", "app.quit", "Quit", id="error.quit")]

    def __init__(self, title: str, message: str) -> None:
        super().__init__()
        self.title_text, self.message = title, message

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog error"):
            yield Static(Text(self.title_text, style="bold red"))
            yield Static(Text(self.message), id="error-message")
            yield Static(Text("press q to quit", style="dim"))
        yield Footer(compact=True)


class TooSmallScreen(ModalScreen):
    """Shown while the terminal is smaller than the explorer needs (the app pushes and pops it as the
    terminal's size changes)."""

    BINDINGS = [Binding("q,ctrl+c", "app.quit", "Quit", id="small.quit")]

    def __init__(self, need: tuple[int, int]) -> None:
        super().__init__()
        self.need = need

    def compose(self) -> ComposeResult:
        yield Static("", id="too-small")

    def on_mount(self) -> None:
        self.update_size()

    def on_resize(self) -> None:
        self.update_size()

    def update_size(self) -> None:
        w, h = self.app.size
        self.query_one("#too-small", Static).update(
            f"Terminal too small: {w}×{h}.\nneuron-tui needs at least {self.need[0]}×{self.need[1]}.\n"
            "Enlarge the window (or press q to quit)."
        )
