"""What every screen of an open summary shares: the app's explorer (a reactive attribute screens read
and watch, never set) and the banner of a partial or unanalysed summary."""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Static

from ..viewmodel import Explorer, SummaryInfo


class ExplorerScreen(Screen):
    """Base of the overview, layer, neuron and probe screens."""

    @property
    def explorer(self) -> Explorer:
        """The open summary's view-model (the app's `explorer`; set before any screen but the overview
        is pushed)."""
        return self.app.explorer  # type: ignore[attr-defined]

    def show_banner(self, info: SummaryInfo) -> None:
        banner = self.query_one("#banner", Static)
        banner.update(info.status)
        banner.display = bool(info.status)
