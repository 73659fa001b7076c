"""Screens of the explorer: overview, layer table, neuron detail, probe, help, dialogs, error and too-small.

Every HDF5 read runs in a thread worker of the screen that needs it (`@work(thread=True)`), which
posts its answer to that screen as a message; screens only format what the view-models return. The
open summary and the marks are reactive attributes of the app (`explorer`, `marks_version`) that
screens watch.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import zip_longest
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input, Static

from neuron_tui.cache import SummaryError
from neuron_tui.core.read import kinds
from neuron_tui.core.read.queries import DEFAULT_DESCENDING
from neuron_tui.core.read.tokens import inline, token_text, visible

from .render import activation_text
from .viewmodel import (
    ANALYSIS_FILTERS,
    COLUMNS,
    Explorer,
    LayerView,
    SummaryInfo,
    ViewState,
    rank_text,
)
from .widgets import (
    NeuronTable,
    PositionPlot,
    depth_bar_cell,
    fmt_count,
    fmt_rate,
    share_text,
)

if TYPE_CHECKING:
    from .app import NeuronApp

FILTER_LABELS = (("all", "all", "a"), *((k.name, k.filter_label, k.key) for k in kinds.KINDS), ("marked", "Marked", "M"))
TRIGGER_STYLE = "bold black on yellow"
FIRING_STYLE = "bold reverse"
ALT_STYLE = "grey62"  # every other context token, so token boundaries show
CRITERION, COVERED = "●", "○"  # trigger marks: counted in the detector criterion / covered only


def reason(exc: Exception) -> str:
    """A one-line reason: SummaryError's own message, else the exception's class and message."""
    return str(exc) if isinstance(exc, SummaryError) else f"{exc.__class__.__name__}: {exc}"


class ExplorerScreen(Screen):
    """Base: access to the app's explorer, and the too-small check on every resize."""

    app: "NeuronApp"

    def on_resize(self) -> None:
        self.app.call_later(self.app.check_size)

    @property
    def explorer(self) -> Explorer:
        return self.app.explorer

    def show_banner(self, info: SummaryInfo) -> None:
        banner = self.query_one("#banner", Static)
        banner.update(info.status)
        banner.display = bool(info.status)


def _title(info: SummaryInfo | None, text: str) -> Text:
    out = Text(no_wrap=True, overflow="ellipsis")
    out.append(" neuron-tui ", style="bold reverse")
    out.append(" " + text)
    if info is not None and not info.complete:
        out.append("  PARTIAL", style="bold red")
    return out


# ---- overview -------------------------------------------------------------------------------------

OVERVIEW_BARS = tuple((k.name, k.column) for k in kinds.KINDS)


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

    class RowsLoaded(Message):
        def __init__(self, rows: list[dict]) -> None:
            super().__init__()
            self.rows = rows

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] | None = None
        self._table_width = 0

    def compose(self) -> ComposeResult:
        yield Static(_title(None, "opening…"), id="title", classes="title")
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
        self.query_one("#title", Static).update(_title(info, f"{info.model} · overview · enter opens a layer"))
        grid = Table.grid(padding=(0, 1), expand=True)
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        grid.add_row("model", f"{info.model} ({info.architecture})", "corpus", info.corpus)
        grid.add_row("tokens", f"{info.n_tokens:,} ({info.n_seq:,} × {info.seq_len})", "rule", info.rule_text)
        grid.add_row("layers", f"{info.n_layers} × {info.n_neurons:,} neurons", "file", info.path.name)
        self.query_one("#info", Static).update(grid)
        self.show_banner(info)
        self.query_one("#layers", DataTable).loading = True
        self._load_rows(explorer)

    @work(thread=True, exclusive=True, group="overview")
    def _load_rows(self, explorer: Explorer) -> None:
        try:
            rows = explorer.overview()
        except Exception as exc:  # noqa: BLE001 - a damaged file gives a message, never a traceback
            self.app.call_from_thread(self.app.failed, f"{explorer.info.path}: cannot read the layers: {reason(exc)}")
            return
        self.post_message(self.RowsLoaded(rows))

    @on(RowsLoaded)
    def _rows_loaded(self, message: RowsLoaded) -> None:
        self.rows = message.rows
        table = self.query_one("#layers", DataTable)
        table.loading = False
        self._fill()
        table.focus()

    def on_resize(self) -> None:
        super().on_resize()
        if self.rows is not None and self.size.width != self._table_width:
            self._fill()

    def _fill(self) -> None:
        rows = self.rows or []
        table = self.query_one("#layers", DataTable)
        keep = table.cursor_row
        table.clear(columns=True)
        width = max(40, self.size.width - 2)
        self._table_width = self.size.width
        wide = width >= 120
        extra = 36 if wide else 0
        bar_w = max(6, (width - 5 - extra) // 5 - 2)
        show_count = bar_w >= 20
        table.add_column("L", key="layer")
        if wide:
            table.add_column("neurons", key="neurons")
        scale = {}
        for key, label in OVERVIEW_BARS:
            fracs = [r[f"{key}_frac"] for r in rows if r[f"{key}_frac"] is not None]
            scale[key] = max(fracs) if fracs else 0.0
            head = f"{label} ≤{share_text(scale[key])}" if scale[key] > 0 else label
            table.add_column(head[:bar_w].ljust(bar_w), key=key, width=bar_w)
        if wide:
            table.add_column("alive rate", key="rate")
            table.add_column("covered", key="covered")
            table.add_column("new", key="new")
        for r in rows:
            cells = [Text(str(r["layer"]), justify="right")]
            if wide:
                cells.append(Text(f"{r['neurons']:,}", justify="right"))
            for key, _ in OVERVIEW_BARS:
                cells.append(depth_bar_cell(r[key], r["neurons"], scale[key], bar_w, show_count))
            if wide:
                cells.append(Text(fmt_rate(r["alive_rate"]), justify="right"))
                cells.append(Text("–" if r["covered"] is None else f"{r['covered']:,}", justify="right"))
                cells.append(Text("–" if r["new"] is None else f"{r['new']:,}", justify="right"))
            table.add_row(*cells, key=str(r["layer"]))
        if rows:
            table.move_cursor(row=min(max(0, keep), len(rows) - 1), animate=False)
            self._summarise(min(max(0, keep), len(rows) - 1))

    def _summarise(self, index: int) -> None:
        if not self.rows or not 0 <= index < len(self.rows):
            return
        r = self.rows[index]

        def part(name, key):
            value = r[key]
            return f"{name} {value:,} ({100 * value / r['neurons']:.1f}%)" if value is not None else f"{name} –"

        bits = [f"L{r['layer']}: {r['neurons']:,} neurons", *(part(k.label, k.name) for k in kinds.KINDS),
                f"alive fire at {fmt_rate(r['alive_rate'])}"]
        if r["covered"] is not None:
            bits.append(f"covers {r['covered']:,} tokens ({r['new']:,} new)")
        self.query_one("#layer-summary", Static).update(" · ".join(bits))

    @on(DataTable.RowHighlighted, "#layers")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._summarise(event.cursor_row)

    @on(DataTable.RowSelected, "#layers")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.app.open_layer(int(event.row_key.value))

    def action_open_layer(self) -> None:
        table = self.query_one("#layers", DataTable)
        if self.rows:
            self.app.open_layer(self.rows[table.cursor_row]["layer"])

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
        info = self.explorer.info
        what = "curves over depth · v: the table" if showing else "enter opens a layer"
        self.query_one("#title", Static).update(_title(info, f"{info.model} · overview · {what}"))
        (plots if showing else table).focus()

    def _plot_widgets(self) -> list:
        from neuron_tui.core.read.figures import depth_figures

        widgets = []
        for figure in depth_figures([self.explorer.file.summary], [self.rows]):
            for panel in figure.panels:
                values = panel.series[0].y
                name = figure.title + (f" · {panel.title}" if panel.title else "")
                if all(v is None for v in values):
                    widgets.append(Static(Text.assemble((name, "bold"), ("  – (no analysis)", "dim")), classes="plot-title"))
                    continue
                share = figure.share
                top = max(v for v in values if v is not None)
                scale = share_text(top) if share else f"{top:,.0f}"
                widgets.append(Static(Text.assemble((name, "bold"), (f"  {panel.ylabel} · scale 0 … {scale}", "dim")),
                                      classes="plot-title"))
                widgets.append(PositionPlot(np.array([0.0 if v is None else v for v in values]), x_label="L{}",
                                            x_unit="layers", scale_text=share_text if share else (lambda v: f"{v:,.0f}"),
                                            classes="depth-plot"))
        return widgets


# ---- layer ------------------------------------------------------------------------------------------


class LayerScreen(ExplorerScreen):
    """The neuron table of one layer: filter, sort, search, mark; `[` / `]` change the layer."""

    LAYER_GROUP = Binding.Group("Layer")
    BINDINGS = [
        Binding("slash", "search", "Search", key_display="/", tooltip="search triggers by token text", id="layer.search"),
        Binding("s", "sort_next", "Sort", tooltip="sort by the next column", id="layer.sort.next"),
        Binding("S", "sort_reverse", "Reverse", show=False, tooltip="reverse the sort order", id="layer.sort.reverse"),
        Binding("left_square_bracket", "layer(-1)", "Prev layer", key_display="[", group=LAYER_GROUP,
                tooltip="previous layer (same filter, sort, search)", id="layer.prev"),
        Binding("right_square_bracket", "layer(1)", "Next layer", key_display="]", group=LAYER_GROUP,
                tooltip="next layer (same filter, sort, search)", id="layer.next"),
        Binding("a", "filter('all')", "All", show=False, tooltip="show all neurons", id="layer.filter.all"),
        *[Binding(k.key, f"filter('{k.name}')", k.label.capitalize(), show=False, tooltip=k.tooltip,
                  id=f"layer.filter.{k.name}") for k in kinds.KINDS],
        Binding("M", "filter('marked')", "Marked", show=False, tooltip="only marked neurons", id="layer.filter.marked"),
        *[Binding(str(i + 1), f"sort('{c.key}')", f"Sort {c.title}", show=False,
                  tooltip=f"sort by {c.title} ({c.help}); again reverses", id=f"layer.sort.{c.key}")
          for i, c in enumerate(COLUMNS)],
        Binding("i", "probe", "Probe", tooltip="probe: run new text through the model, the neuron under the cursor in "
                "view", id="layer.probe"),
        Binding("m", "mark", "Mark", tooltip="mark the neuron under the cursor, with a note", id="layer.mark"),
        Binding("u", "unmark", "Unmark", show=False, tooltip="remove the mark of the neuron under the cursor",
                id="layer.unmark"),
        Binding("escape", "back", "Back", tooltip="clear the search, else back to the overview", id="layer.back"),
    ]

    class ViewLoaded(Message):
        def __init__(self, view: LayerView, neuron: int | None) -> None:
            super().__init__()
            self.view, self.neuron = view, neuron

    def __init__(self, layer: int, state: ViewState | None = None, neuron: int | None = None) -> None:
        super().__init__()
        self.layer_index = layer
        self.state = state or ViewState()
        self._keep = neuron
        self.view: LayerView | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="title", classes="title")
        yield Static("", id="filters")
        yield Static("", id="banner", classes="banner")
        yield NeuronTable(id="table")
        yield Input(placeholder="search triggers by token text, e.g. ' the'  (enter: done, esc: clear)", id="search")
        yield Footer(compact=True)

    @property
    def table(self) -> NeuronTable:
        return self.query_one(NeuronTable)

    def on_mount(self) -> None:
        self.show_banner(self.explorer.info)
        search = self.query_one("#search", Input)
        search.display = bool(self.state.query)
        search.value = self.state.query
        self.table.focus()
        self.request_view(self._keep)
        self.watch(self.app, "marks_version", lambda _: self.request_view(self.table.neuron), init=False)

    # ---- loading ----
    def request_view(self, neuron: int | None = None) -> None:
        """Recompute the view for the current layer and state in a worker; the table keeps `neuron`."""
        self._update_title(loading=True)
        self._load_view(self.layer_index, self.state, neuron)

    @work(thread=True, exclusive=True, group="layer-view")
    def _load_view(self, layer: int, state: ViewState, neuron: int | None) -> None:
        try:
            view = self.explorer.view(layer, state)
        except Exception as exc:  # noqa: BLE001 - a damaged file gives a message, never a traceback
            self.app.call_from_thread(self.app.notify, f"cannot read layer {layer}: {reason(exc)}", severity="error")
            return
        self.post_message(self.ViewLoaded(view, neuron))

    @on(ViewLoaded)
    def _view_loaded(self, message: ViewLoaded) -> None:
        view = message.view
        if view.layer != self.layer_index or view.state != self.state:
            return  # a newer request is on its way
        self.view = view
        self.table.empty_text = "no neurons match" if view.counts.get("all") else "empty layer"
        self.table.set_view(view, message.neuron)
        self._update_title()
        self._prefetch(self.layer_index)

    @work(thread=True, exclusive=True, group="prefetch")
    def _prefetch(self, layer: int) -> None:
        for other in (layer + 1, layer - 1):
            if 0 <= other < self.explorer.info.n_layers:
                try:
                    self.explorer.table(other)  # kept by the summary's table cache
                except Exception:  # noqa: BLE001 - a prefetch is only a guess; the real read reports
                    return

    # ---- header lines ----
    def _update_title(self, loading: bool = False) -> None:
        info = self.explorer.info
        st = self.state
        col = next(c for c in COLUMNS if c.key == st.sort)
        shown = f"{len(self.view):,} of {info.n_neurons:,}" if self.view is not None and not loading else "…"
        text = f"L{self.layer_index}/{info.n_layers - 1} · {shown} neurons · sort {col.title} {'▼' if st.descending else '▲'}"
        if st.query:
            text += f" · search {st.query!r}"
        self.query_one("#title", Static).update(_title(info, text))
        counts = self.view.counts if self.view is not None and self.view.layer == self.layer_index else {}
        bar = Text(no_wrap=True, overflow="ellipsis")
        for name, label, key in FILTER_LABELS:
            count = counts.get(name)
            needs = name in ANALYSIS_FILTERS and not info.has_analysis
            value = "–" if needs or count is None else f"{count:,}"
            style = "bold reverse" if st.filter == name else ("dim" if needs else "")
            bar.append(" ")
            bar.append(label[0], style=(style + " bold underline").strip())
            bar.append(f"{label[1:]} {value}", style=style)
        self.query_one("#filters", Static).update(bar)

    # ---- actions ----
    def _set_state(self, **change) -> None:
        self.state = ViewState(**{**self.state.__dict__, **change})
        self.request_view(None)

    def action_filter(self, name: str) -> None:
        if name in ANALYSIS_FILTERS and not self.explorer.info.has_analysis:
            self.notify(f"the {name} filter needs the analysis: run `neuron-tui analyze {self.explorer.info.path}`",
                        severity="warning")
            return
        self._set_state(filter=name)

    def action_sort(self, key: str) -> None:
        if self.state.sort == key:
            self._set_state(descending=not self.state.descending)
        else:
            self._set_state(sort=key, descending=DEFAULT_DESCENDING.get(key, False))

    def action_sort_next(self) -> None:
        keys = [c.key for c in COLUMNS]
        key = keys[(keys.index(self.state.sort) + 1) % len(keys)]
        self._set_state(sort=key, descending=DEFAULT_DESCENDING.get(key, False))

    def action_sort_reverse(self) -> None:
        self._set_state(descending=not self.state.descending)

    def action_layer(self, delta: int) -> None:
        target = self.layer_index + delta
        if not 0 <= target < self.explorer.info.n_layers:
            self.app.bell()
            self.notify(f"no layer {target}: layers are 0..{self.explorer.info.n_layers - 1}", timeout=2)
            return
        self.layer_index = target
        self.request_view(None)

    def action_search(self) -> None:
        if not self.explorer.info.has_analysis:
            self.notify("search by trigger token needs the analysis: run `neuron-tui analyze FILE`",
                        severity="warning")
            return
        search = self.query_one("#search", Input)
        search.display = True
        search.focus()

    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        if event.value != self.state.query:
            self._set_state(query=event.value)

    @on(Input.Submitted, "#search")
    def _search_done(self, event: Input.Submitted) -> None:
        if not event.value:
            event.input.display = False
        self.table.focus()

    def action_back(self) -> None:
        search = self.query_one("#search", Input)
        if search.has_focus or self.state.query:
            search.value = ""
            search.display = False
            self.table.focus()
            if self.state.query:
                self.state = ViewState(**{**self.state.__dict__, "query": ""})
                self.request_view(self.table.neuron)
            return
        self.app.pop_screen()

    def open_neuron(self, neuron: int) -> None:
        """The detail of `neuron`; when it closes, the table's cursor follows the neuron it showed last."""
        self.app.push_screen(NeuronScreen(self.layer_index, neuron, lambda: self.view.order if self.view else None),
                             self.detail_closed)

    def detail_closed(self, neuron: int | None) -> None:
        if neuron is not None:
            self.table.show_neuron(neuron)

    @on(NeuronTable.Selected)
    def _open(self, event: NeuronTable.Selected) -> None:
        self.open_neuron(event.neuron)

    @on(NeuronTable.HeaderClicked)
    def _header_clicked(self, event: NeuronTable.HeaderClicked) -> None:
        self.action_sort(event.column)

    def action_probe(self) -> None:
        self.app.push_screen(ProbeScreen(self.layer_index, self.table.neuron))

    def action_mark(self) -> None:
        neuron = self.table.neuron
        if neuron is not None:
            self.app.mark_neuron(self.layer_index, neuron)

    def action_unmark(self) -> None:
        neuron = self.table.neuron
        if neuron is not None:
            self.app.unmark_neuron(self.layer_index, neuron)


# ---- neuron detail ------------------------------------------------------------------------------------


class NeuronScreen(ExplorerScreen):
    """Everything about one neuron (its record): triggers, n-grams, promoted / suppressed tokens,
    positions, contexts. Dismissed with the neuron it shows last, so the table can follow."""

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
        def __init__(self, layer: int, neuron: int, record: dict) -> None:
            super().__init__()
            self.layer, self.neuron, self.record = layer, neuron, record

    def __init__(self, layer: int, neuron: int, order: Callable[[], np.ndarray | None] = lambda: None) -> None:
        super().__init__()
        self.layer_index, self.neuron = layer, neuron
        self.order = order  # the ids of the layer table's current list, in its order (None: all, by id)
        self.record: dict | None = None

    def compose(self) -> ComposeResult:
        yield Static(_title(None, f"L{self.layer_index} N{self.neuron}"), id="title", classes="title")
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
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.show_banner(self.explorer.info)
        self.query_one("#detail").focus()
        self.load()
        self.watch(self.app, "marks_version", lambda _: self._draw() if self.record else None, init=False)

    def load(self) -> None:
        self.query_one("#title", Static).update(_title(self.explorer.info, f"L{self.layer_index} N{self.neuron} · loading…"))
        self._load(self.layer_index, self.neuron)

    @work(thread=True, exclusive=True, group="neuron")
    def _load(self, layer: int, neuron: int) -> None:
        try:
            record = self.explorer.neuron(layer, neuron)
        except Exception as exc:  # noqa: BLE001 - a damaged file gives a message, never a traceback
            self.app.call_from_thread(self.app.notify, f"cannot read L{layer} N{neuron}: {reason(exc)}",
                                      severity="error")
            return
        self.post_message(self.RecordLoaded(layer, neuron, record))

    @on(RecordLoaded)
    def _record_loaded(self, message: RecordLoaded) -> None:
        if (message.layer, message.neuron) != (self.layer_index, self.neuron):
            return
        self.record = message.record
        self._draw()

    def on_resize(self) -> None:
        super().on_resize()
        if self.record is not None:
            self._draw()

    def _draw(self) -> None:
        r = self.record
        info = self.explorer.info
        note = self.explorer.marks.note(r["layer"], r["index"])
        shape = f" ({'strong' if r['pos_strong'] else 'weak'} {r['pos_shape']})" if r["pos_shape"] else ""
        cats = ", ".join(kinds.BY_NAME[c].noun + (shape if c == "positional" else "") for c in r["categories"])
        self.query_one("#title", Static).update(_title(info, f"L{r['layer']} N{r['index']} · {cats or 'no category'}"))
        head = Text()
        head.append(f"fires on {100 * r['fire_rate']:.3g}% of tokens ({r['act_count']:,} firings)", style="bold")
        head.append(f" · {activation_text(r)}")
        if r["n_events"]:
            stands = f"1 per {2 ** r['event_level']:,} firings" if r["event_level"] else "all firings"
            head.append(f" · {r['n_events']:,} events kept ({stands})")
        if r["coverage"] is not None and r["triggers"]:
            head.append(f" · {CRITERION} tokens explain {100 * r['coverage']:.0f}% of its firings")
        if note is not None:
            head.append("\n* marked", style="bold yellow")
            head.append(f": {note}" if note else "")
        self.query_one("#headline", Static).update(head)
        self.query_one("#triggers", Static).update(self._triggers(r))
        self.query_one("#ngrams", Static).update(self._ngrams(r))
        self._plot(r)
        self.query_one("#promoted", Static).update(self._scored(r, "promoted"))
        self.query_one("#suppressed", Static).update(self._scored(r, "suppressed"))
        self.query_one("#contexts", Static).update(self._contexts(r))

    @property
    def narrow(self) -> bool:
        return self.size.width < 120

    @property
    def rows_shown(self) -> int:
        """Rows of the trigger and n-gram tables: fewer in 80x24 so the position plot stays on screen."""
        return 6 if self.size.height < 40 else 12

    def _triggers(self, r: dict):
        legend = f"  {CRITERION} criterion {COVERED} covered" if any(t["covered"] for t in r["triggers"]) else ""
        title = "Top triggers" + legend + ("" if r["analysis"] == "stored" else " · computed now")
        t = Table(title=title, title_justify="left", box=None, padding=(0, 1), expand=True, title_style="bold")
        t.add_column("token", ratio=1, no_wrap=True, overflow="ellipsis")
        t.add_column("fired", justify="right", no_wrap=True)
        t.add_column("P(f|t)" if self.narrow else "P(fire|tok)", justify="right", no_wrap=True)
        t.add_column("occ", justify="right", no_wrap=True)
        t.add_column("supp", justify="right", no_wrap=True)
        approx = "~" if r["event_level"] else ""
        for tr in r["triggers"][: self.rows_shown]:
            token = Text()
            # the mark before the text, so a narrow column never cuts it off
            if tr["explains"]:
                token.append(CRITERION + " ", style="bold green")
            elif tr["covered"]:
                token.append(COVERED + " ", style="green")
            token.append(visible(tr["text"]))
            p = "–" if tr["p_fire"] is None else f"{tr['p_fire']:.2f}"
            rank = tr["supp_rank"]
            t.add_row(token, approx + fmt_count(tr["count"]), p, fmt_count(tr["occurrences"]),
                      Text(rank_text(rank), style="bold green" if rank is not None and rank <= 10 else ""))
        if not r["triggers"]:
            t.add_row(Text("none (never fired)", style="dim"), "", "", "", "")
        return t

    def _ngrams(self, r: dict):
        t = Table(title="N-gram contexts", title_justify="left", box=None, padding=(0, 1), expand=True,
                  title_style="bold")
        t.add_column("previous → token", ratio=1, no_wrap=True, overflow="ellipsis")
        t.add_column("fired", justify="right", no_wrap=True)
        trig = {tr["token"] for tr in r["triggers"]}
        for g in r["ngrams"][: self.rows_shown]:
            ctx = Text(visible(g["prev_text"]) if g["prev"] >= 0 else g["prev_text"], style="dim")
            ctx.append(" → ")
            ctx.append(visible(g["text"]), style="bold" if g["token"] in trig else "")
            t.add_row(ctx, ("~" if r["event_level"] else "") + fmt_count(g["count"]))
        if not r["ngrams"]:
            t.add_row(Text("none", style="dim"), "")
        return t

    def _plot(self, r: dict) -> None:
        plot = self.query_one("#plot", PositionPlot)
        values = np.array([np.nan if v is None else v for v in r["position_rate"]], dtype=np.float64)
        values = np.nan_to_num(values)
        title = Text("Firing rate by position", style="bold")
        if len(values) and values.max() > 0:
            peak = int(values.argmax())
            title.append(f"  scale 0 … {values.max():.3g} (peak at t={peak}), mean {values.mean():.3g}")
            if r["pos_mi"] is not None:
                title.append(f" · MI {r['pos_mi']:.3f} nats")
            if r["pos_range"]:
                title.append(f" · fires most on t={r['pos_range'][0]}..{r['pos_range'][1]}")
        else:
            title.append("  never fired", style="dim")
        self.query_one("#plot-title", Static).update(title)
        plot.set_values(values)

    def _scored(self, r: dict, kind: str):
        if not self.explorer.info.has_projection:
            return Text(f"{kind.capitalize()}: no projection group in this summary", style="dim")
        t = Table(title=f"{kind.capitalize()} tokens", title_justify="left", box=None, padding=(0, 1),
                  expand=True, title_style="bold")
        t.add_column("#", justify="right", no_wrap=True)
        t.add_column("token", ratio=1, no_wrap=True, overflow="ellipsis")
        t.add_column("score", justify="right", no_wrap=True)
        for rank, s in enumerate(r[kind], start=1):
            label = Text(visible(s["text"]))
            if s["is_trigger"]:
                label.stylize(TRIGGER_STYLE)
                label.append(" ◆ trigger", style="bold yellow")
            t.add_row(str(rank), label, "–" if s["score"] is None else f"{s['score']:+.3g}")
        return t

    def _contexts(self, r: dict) -> Text:
        vocab = self.explorer.file.vocab
        out = Text()
        out.append("Contexts", style="bold")
        fired = any(c["fired"] for c in r["contexts"])
        if fired or not r["contexts"]:
            out.append("  (strongest activations, one per sequence; firing token highlighted)\n", style="dim")
        else:
            out.append(f"  strongest activations, none above tau = {r['tau']:.3g}\n", style="dim")
        if not r["contexts"]:
            out.append("none: the neuron never fired", style="dim")
            return out
        width = max(30, self.query_one("#detail").size.width - 2)
        for c in r["contexts"]:
            value = "" if c["value"] is None else f"{c['value']:6.3g} "
            room = width - len(value)
            texts = [token_text(vocab, t) for t in c["ids"]]
            raw = texts[c["at"]]
            lead = raw[: len(raw) - len(raw.lstrip(" "))] if raw.strip() else ""
            tok = visible(raw) if not raw.strip() else inline(raw.strip(" "))
            # tokens alternate between two shades so their boundaries show even without spaces
            left = [(inline(t), k % 2) for k, t in enumerate(texts[: c["at"]])]
            if lead:
                left.append((lead, 0))
            right = [(inline(t), k % 2) for k, t in enumerate(texts[c["at"] + 1 :])]
            max_left = max(4, int(room * 0.6) - len(tok))
            used, kept = 0, []
            for text, shade in reversed(left):
                if used + len(text) > max_left - 1:
                    kept.append((("…" + text[len(text) - (max_left - 1 - used) :]) if max_left - 1 - used > 0 else "…", shade))
                    break
                kept.append((text, shade))
                used += len(text)
            line = Text(no_wrap=True, overflow="ellipsis")
            line.append(value, style="dim")
            for text, shade in reversed(kept):
                line.append(text, style=ALT_STYLE if shade else "")
            line.append(tok, style=FIRING_STYLE if c["fired"] else "reverse dim")
            for text, shade in right:
                line.append(text, style=ALT_STYLE if shade else "")
            line.truncate(width)
            out.append_text(line)
            out.append("\n")
        out.rstrip()
        return out

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
        self.app.push_screen(ProbeScreen(self.layer_index, self.neuron))

    def action_mark(self) -> None:
        self.app.mark_neuron(self.layer_index, self.neuron)

    def action_unmark(self) -> None:
        self.app.unmark_neuron(self.layer_index, self.neuron)

    def action_back(self) -> None:
        self.dismiss(self.neuron)


# ---- probe ------------------------------------------------------------------------------------------------

ABLATIONS = (None, "zero", "mean")


class ProbeScreen(ExplorerScreen):
    """New text through the summary's model: how the neuron fires on each token (coloured by its
    activation, firings underlined, checked against its recorded triggers), which neurons of the
    layer fire on the token under the cursor, and what ablating the neuron does to the next-token
    prediction there. The model loads once, in a worker, on first use."""

    AUTO_FOCUS = ""  # none: back from a neuron opened here, the arrows still move over the tokens

    BINDINGS = [
        Binding("left", "token(-1)", "Token", key_display="←", tooltip="previous token", id="probe.left"),
        Binding("right", "token(1)", "Token", key_display="→", show=False, tooltip="next token", id="probe.right"),
        Binding("up", "pick(-1)", "Pick", key_display="↑", show=False,
                tooltip="previous of the neurons firing on the token", id="probe.up"),
        Binding("down", "pick(1)", "Pick", key_display="↓", show=False,
                tooltip="next of the neurons firing on the token", id="probe.down"),
        Binding("enter", "open", "Open", tooltip="open the neuron picked among those firing on the token",
                id="probe.open"),
        Binding("z", "ablate", "Ablate", tooltip="ablation of the neuron: off, set to 0, clamped to its mean firing value",
                id="probe.ablate"),
        Binding("i", "edit", "Text", tooltip="edit the text (enter runs it)", id="probe.edit"),
        Binding("escape", "back", "Back", tooltip="back", id="probe.back"),
    ]

    class ModelReady(Message):
        def __init__(self, probe) -> None:
            super().__init__()
            self.probe = probe

    class Answered(Message):
        def __init__(self, result: dict) -> None:
            super().__init__()
            self.result = result

    def __init__(self, layer: int, neuron: int | None) -> None:
        super().__init__()
        self.layer_index, self.neuron = layer, neuron
        self.result: dict | None = None
        self.position = 0  # the token under the cursor
        self.pick = 0  # the neuron picked among those firing on it
        self.ablate: str | None = None
        self._text = ""

    def compose(self) -> ComposeResult:
        yield Static("", id="title", classes="title")
        yield Input(placeholder="type or paste text, enter runs it", id="probe-input", select_on_focus=False)
        yield Static("", id="probe-status")
        with VerticalScroll(id="probe-body"):
            yield Static("", id="probe-text")
            yield Static("", id="probe-token")
            with Horizontal(classes="pair"):
                yield Static("", id="probe-neurons", classes="half")
                yield Static("", id="probe-ablation", classes="half")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        what = f"L{self.layer_index}" + (f" N{self.neuron}" if self.neuron is not None else "")
        self.query_one("#title", Static).update(_title(self.explorer.info, f"probe · {what}"))
        self.query_one("#probe-input", Input).focus()
        if self.app.probe is None:
            self._status(f"loading {self.explorer.info.model} … (the explorer stays usable meanwhile)")
            self._load_model()
        else:
            self._status("")

    def _status(self, text: str) -> None:
        self.query_one("#probe-status", Static).update(Text(text, style="dim"))

    @work(thread=True, exclusive=True, group="probe-model")
    def _load_model(self) -> None:
        try:
            from neuron_tui.core.model.probe import (
                Probe,  # torch and transformers load here, in the worker
            )

            probe = Probe.for_summary(self.explorer.file.summary, self.app.device)
        except Exception as exc:  # noqa: BLE001 - one line on screen, and the probe closes
            self.app.call_from_thread(self.app.probe_failed, reason(exc) if not isinstance(exc, ImportError)
                                      else f"the probe needs torch and transformers: {exc}")
            return
        self.post_message(self.ModelReady(probe))

    @on(ModelReady)
    def _model_ready(self, message: ModelReady) -> None:
        self.app.probe = message.probe
        device = message.probe.device
        self._status(f"{self.explorer.info.model} on {device}" + (" · running …" if self._text else ""))
        if self._text:
            self._run(self._text, self.ablate)

    @on(Input.Submitted, "#probe-input")
    def _submitted(self, event: Input.Submitted) -> None:
        self._text = event.value
        if not self._text.strip():
            return
        self.set_focus(None)  # the arrows now move over the tokens
        if self.app.probe is not None:
            self._status("running …")
            self._run(self._text, self.ablate)

    @work(thread=True, exclusive=True, group="probe-run")
    def _run(self, text: str, ablate: str | None) -> None:
        from neuron_tui.core.model.probe import probe_text

        try:
            result = probe_text(self.app.probe, self.explorer.file, text, self.layer_index, self.neuron, ablate)
        except Exception as exc:  # noqa: BLE001 - a message, never a traceback
            self.app.call_from_thread(self._status, f"cannot probe: {reason(exc)}")
            return
        self.post_message(self.Answered(result))

    @on(Answered)
    def _answered(self, message: Answered) -> None:
        self.result = message.result
        self.position = min(self.position, len(self.result["tokens"]) - 1)
        self.pick = 0
        self._status(f"{self.explorer.info.model} on {self.app.probe.device} · {len(self.result['tokens'])} tokens"
                     + (f" · ablation {self.ablate}" if self.ablate else ""))
        self._draw()

    def _draw(self) -> None:
        r = self.result
        if r is None:
            return
        tokens, k = r["tokens"], self.position
        peak = max((abs(t["activation"]) for t in tokens if t["activation"] is not None), default=0.0) or 1.0
        text = Text()
        for i, tok in enumerate(tokens):
            piece = inline(tok["text"]) or "∅"
            if i and not piece[:1].isspace() and not inline(tokens[i - 1]["text"])[-1:].isspace():
                text.append("·", style="dim")  # a boundary inside a word (or between words without spaces)
            style = ""
            if tok["activation"] is not None:
                level = min(1.0, abs(tok["activation"]) / peak)
                shade = int(40 + 160 * level)
                style = f"on rgb({shade // 3},{shade},{shade // 3})" if tok["activation"] >= 0 else \
                    f"on rgb({shade},{shade // 3},{shade})"
                if tok["fired"]:
                    style += " bold underline"
            if i == k:
                style += " reverse"
            text.append(piece, style=style.strip())
        self.query_one("#probe-text", Static).update(text)
        tok = tokens[k]
        line = Text(f"t={k} {visible(tok['text'])}", style="bold")
        if tok["activation"] is not None:
            line.append(f" · N{self.neuron} h = {tok['activation']:+.3g}")
            if tok["fired"]:
                line.append(" · fired on a recorded trigger" if tok["trigger"] else
                            " · fired, not on one of its recorded triggers: news", style="bold")
            elif tok["trigger"]:
                line.append(" · a recorded trigger, but it did not fire here", style="yellow")
        if r.get("triggers") is not None:
            line.append(f"\nN{self.neuron}: {', '.join(r['categories']) or 'no category'} · recorded triggers: ", style="dim")
            line.append(", ".join(visible(t["text"]) for t in r["triggers"]) or "none", style="dim")
        self.query_one("#probe-token", Static).update(line)
        table = Table(title=f"Firing on t={k} (strongest first)", title_justify="left", box=None, padding=(0, 1),
                      expand=True, title_style="bold")
        table.add_column("", no_wrap=True)
        table.add_column("neuron", no_wrap=True)
        table.add_column("h", justify="right", no_wrap=True)
        table.add_column("categories", ratio=1, no_wrap=True, overflow="ellipsis")
        top = r["top"][k]
        for j, n in enumerate(top):
            table.add_row("▶" if j == self.pick else "", f"N{n['neuron']}", f"{n['activation']:+.3g}",
                          ", ".join(n["categories"]) or "–")
        if not top:
            table.add_row("", Text("none", style="dim"), "", "")
        self.query_one("#probe-neurons", Static).update(table)
        self.query_one("#probe-ablation", Static).update(self._ablation(r, k))

    def _ablation(self, r: dict, k: int):
        if self.neuron is None:
            return Text("ablation: open the probe from a neuron", style="dim")
        if "ablation" not in r:
            return Text("ablation: z sets the neuron to 0, again clamps it to its mean firing value", style="dim")
        a = r["ablation"]
        table = Table(title=f"N{self.neuron} = {a['value']:.3g} ({a['mode']}): next token after t={k}",
                      title_justify="left", box=None, padding=(0, 1), expand=True, title_style="bold")
        table.add_column("rises", ratio=1, no_wrap=True, overflow="ellipsis")
        table.add_column("Δ log p", justify="right", no_wrap=True)
        table.add_column("falls", ratio=1, no_wrap=True, overflow="ellipsis")
        table.add_column("Δ log p", justify="right", no_wrap=True)
        moves = a["positions"][k]
        for up, down in zip_longest(moves["rises"], moves["falls"]):
            table.add_row(*(cells for m in (up, down) for cells in
                            ((Text(visible(m["text"])), f"{m['delta']:+.3f}") if m else ("", ""))))
        if not moves["rises"] and not moves["falls"]:
            table.add_row(Text("no change here", style="dim"), "", "", "")
        return table

    # ---- actions ----
    def action_token(self, delta: int) -> None:
        if self.result is not None and 0 <= self.position + delta < len(self.result["tokens"]):
            self.position += delta
            self.pick = 0
            self._draw()

    def action_pick(self, delta: int) -> None:
        if self.result is not None and 0 <= self.pick + delta < len(self.result["top"][self.position]):
            self.pick += delta
            self._draw()

    def action_open(self) -> None:
        if self.result is None or not self.result["top"][self.position]:
            return
        neuron = self.result["top"][self.position][self.pick]["neuron"]
        self.app.push_screen(NeuronScreen(self.layer_index, neuron))

    def action_ablate(self) -> None:
        if self.neuron is None:
            self.notify("open the probe from a neuron to ablate it", severity="warning")
            return
        self.ablate = ABLATIONS[(ABLATIONS.index(self.ablate) + 1) % len(ABLATIONS)]
        if self._text.strip() and self.app.probe is not None:
            self._status(f"running with ablation {self.ablate} …" if self.ablate else "running …")
            self._run(self._text, self.ablate)

    def action_edit(self) -> None:
        self.query_one("#probe-input", Input).focus()

    def action_back(self) -> None:
        search = self.query_one("#probe-input", Input)
        if search.has_focus and self.result is not None:
            self.set_focus(None)
            return
        self.app.pop_screen()


# ---- help, dialogs, errors ------------------------------------------------------------------------------


class HelpScreen(ModalScreen):
    """Every key of every screen, from the bindings themselves (keymap overrides applied), and what
    the marks and ranks on the screens mean."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close", id="help.close")]

    def __init__(self, sections: list[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            yield Static(Text("Keys  (esc or ? closes · ↑↓ scroll)", style="bold"), id="help-title")
            with VerticalScroll(id="help-scroll"):
                t = Table(box=None, padding=(0, 1), expand=True, show_header=False)
                t.add_column(style="bold cyan", no_wrap=True, min_width=12)
                t.add_column(ratio=1)
                for title, keys in self.sections:
                    t.add_row(Text(title, style="bold underline"), "")
                    for key, desc in keys:
                        t.add_row(Text(key), Text(desc))
                yield Static(t, id="help-table")

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()


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
    """Shown while the terminal is smaller than the explorer needs; goes away when it grows."""

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
        self.app.call_later(self.app.check_size)

    def update_size(self) -> None:
        w, h = self.app.size
        self.query_one("#too-small", Static).update(
            f"Terminal too small: {w}×{h}.\nneuron-tui needs at least {self.need[0]}×{self.need[1]}.\n"
            "Enlarge the window (or press q to quit)."
        )
