"""The overview: the summary's model, corpus and rule, and one row per layer with a bar per kind of
neuron; `v` swaps the rows for the paper's curves over depth."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Footer, Static

from neuron_tui.core.read.queries import present_kinds
from neuron_tui.core.read.records import LayerRow

from ..messages import OpenLayer, ReadFailed
from ..present.formats import share_text, title_bar
from ..present.layers import depth_curves, info_grid, layer_summary, overview_bars, overview_table, share_scale
from ..viewmodel import Explorer
from ..widgets import PositionPlot
from ..workers import read_in_thread
from .base import ExplorerScreen


class OverviewScreen(ExplorerScreen):
    """Model, corpus, rule; one row per layer with dead / rare / token / n-gram / positional bars."""

    BINDINGS = [
        # shown in the title, not the footer: the focused table takes enter itself (and the footer
        # would show this binding only until the table gets the focus)
        Binding("enter", "open_layer", "Open", id="overview.open", tooltip="open the layer under the cursor",
                show=False),
        Binding("v", "plots", "Plots", id="overview.plots",
                tooltip="curves over depth (the paper's figures for this summary); again: the table"),
    ]

    TABLE_TITLE = "enter opens a layer"

    class RowsLoaded(Message):
        def __init__(self, rows: list[LayerRow]) -> None:
            super().__init__()
            self.rows = rows

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[LayerRow] | None = None
        self._table_width = 0

    def compose(self) -> ComposeResult:
        yield Static(title_bar(None, "opening…"), id="title", classes="title")
        yield Static("", id="info")
        yield Static("", id="banner", classes="banner")
        yield DataTable(id="layers", cursor_type="row", zebra_stripes=False)
        yield VerticalScroll(id="plots")
        yield Static("", id="layer-summary")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#plots").display = False
        self.watch(self.app, "explorer", self._explorer_changed)

    def _explorer_changed(self, explorer: Explorer | None) -> None:
        if explorer is None:
            return
        info = explorer.info
        self._set_title(self.TABLE_TITLE)
        self.query_one("#info", Static).update(info_grid(info))
        self.show_banner(info)
        self.query_one("#layers", DataTable).loading = True
        read_in_thread(self, explorer.overview, group="overview", answered=self.RowsLoaded,
                       failed=lambda why: ReadFailed(f"{info.path}: cannot read the layers: {why}", fatal=True))

    def _set_title(self, what: str) -> None:
        info = self.explorer.info
        if self.rows and what == self.TABLE_TITLE:
            scale = (f"bars to {share_text(share_scale(self.rows))}" if overview_bars(self.rows, self.size.width)
                     else "shares of each layer")
            what = f"{scale} · {what}"
        self.query_one("#title", Static).update(title_bar(info, f"{info.model} · overview · {what}"))

    @on(RowsLoaded)
    def _rows_loaded(self, message: RowsLoaded) -> None:
        self.rows = message.rows
        table = self.query_one("#layers", DataTable)
        table.loading = False
        self._set_title(self.TABLE_TITLE)
        self._fill()
        table.focus()

    def on_resize(self) -> None:
        if self.rows is not None and self.size.width != self._table_width:
            self._fill()

    def _fill(self) -> None:
        rows = self.rows or []
        table = self.query_one("#layers", DataTable)
        keep = table.cursor_row
        table.clear(columns=True)
        self._table_width = self.size.width
        columns, cells = overview_table(rows, self.size.width)
        for label, key, width in columns:
            table.add_column(label, key=key, width=width)
        for row, line in zip(rows, cells):
            table.add_row(*line, key=str(row["layer"]))
        if self.query_one("#layers", DataTable).display:  # the scale in the title follows the width
            self._set_title(self.TABLE_TITLE)
        if rows:
            table.move_cursor(row=min(max(0, keep), len(rows) - 1), animate=False)
            self._summarise(min(max(0, keep), len(rows) - 1))

    def _summarise(self, index: int) -> None:
        if self.rows and 0 <= index < len(self.rows):
            self.query_one("#layer-summary", Static).update(layer_summary(self.rows[index], present_kinds(self.rows)))

    @on(DataTable.RowHighlighted, "#layers")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._summarise(event.cursor_row)

    @on(DataTable.RowSelected, "#layers")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.post_message(OpenLayer(int(event.row_key.value)))

    def action_open_layer(self) -> None:
        if self.rows:
            self.post_message(OpenLayer(self.rows[self.query_one("#layers", DataTable).cursor_row]["layer"]))

    def action_plots(self) -> None:
        """Toggle between the layer table and the curves over depth (drawn once, from the rows read)."""
        if self.rows is None:
            return
        plots, table = self.query_one("#plots", VerticalScroll), self.query_one("#layers", DataTable)
        showing = not plots.display
        if showing and not plots.children:
            plots.mount_all(self._plot_widgets())
        plots.display, table.display = showing, not showing
        self.query_one("#layer-summary").display = not showing
        self._set_title("curves over depth · v: the table" if showing else self.TABLE_TITLE)
        (plots if showing else table).focus()

    def _plot_widgets(self) -> list[Static | PositionPlot]:
        widgets: list[Static | PositionPlot] = []
        for curve in depth_curves(self.explorer.depth_figures(self.rows or [])):
            widgets.append(Static(curve.title, classes="plot-title"))
            if curve.values is not None:
                widgets.append(PositionPlot(curve.values, x_label="L{}", x_unit="layers", scale_text=curve.scale_text,
                                            classes="depth-plot"))
        return widgets
