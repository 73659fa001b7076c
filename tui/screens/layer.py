"""The layer screen: one layer's neuron table, filtered, sorted and searched; `[` `]` change the layer."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Footer, Input, Static

from neuron_tui.core.read import kinds
from neuron_tui.core.read.queries import DEFAULT_DESCENDING
from neuron_tui.core.read.table import FILTERS, SEARCH_RULE

from ..messages import MarkRequested, OpenNeuron, OpenProbe, PickFilter, ReadFailed, UnmarkRequested
from ..present.layers import empty_message, filter_bar, filter_choice, layer_heading
from ..viewmodel import ANALYSIS_FILTERS, COLUMNS, LayerView, ViewState
from ..widgets import NeuronTable
from ..workers import read_in_thread
from .base import ExplorerScreen


class LayerScreen(ExplorerScreen):
    """The neuron table of one layer: filter, sort, search, mark; `[` / `]` change the layer. With
    `detail`, the detail of `neuron` opens over it at once (go-to)."""

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
        Binding("f", "pick_filter", "Kinds", show=False, tooltip="pick a filter among every kind of neuron, with "
                "counts and meanings", id="layer.filter.pick"),
        Binding("ctrl+t", "search_mode", "Whole / part", show=False, tooltip="search: the whole token (default) "
                "or any token containing the text; " + SEARCH_RULE, id="layer.search.substring"),
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

    SEARCH_PLACEHOLDER: ClassVar[dict[bool, str]] = {
        False: "a whole trigger token, e.g. ' the' (ctrl+t: part of a token · enter: done · esc: clear)",
        True: "a part of a trigger token, e.g. 'the' (ctrl+t: whole token · enter: done · esc: clear)",
    }

    class ViewLoaded(Message):
        def __init__(self, view: LayerView, neuron: int | None) -> None:
            super().__init__()
            self.view, self.neuron = view, neuron

    def __init__(self, layer: int, state: ViewState | None = None, neuron: int | None = None,
                 detail: bool = False) -> None:
        super().__init__()
        self.layer_index = layer
        self.state = state or ViewState()
        self._keep = neuron
        self._detail = detail and neuron is not None
        self.view: LayerView | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="title", classes="title")
        yield Static("", id="filters")
        yield Static("", id="banner", classes="banner")
        yield NeuronTable(id="table")
        yield Input(placeholder=self.SEARCH_PLACEHOLDER[False], id="search")
        yield Footer(compact=True)

    @property
    def table(self) -> NeuronTable:
        return self.query_one(NeuronTable)

    def on_mount(self) -> None:
        self.show_banner(self.explorer.info)
        search = self.query_one("#search", Input)
        search.display = bool(self.state.query)
        search.value = self.state.query
        search.placeholder = self.SEARCH_PLACEHOLDER[self.state.substring]
        self.table.focus()
        self.request_view(self._keep)
        self.watch(self.app, "marks_version", lambda _: self.request_view(self.table.neuron), init=False)
        if self._detail and self._keep is not None:
            self.open_neuron(self._keep)

    # ---- loading ----
    def request_view(self, neuron: int | None = None) -> None:
        """Recompute the view for the current layer and state in a worker; the table keeps `neuron`."""
        self._update_title(loading=True)
        layer, state = self.layer_index, self.state
        read_in_thread(self, lambda: self.explorer.view(layer, state), group="layer-view",
                       answered=lambda view: self.ViewLoaded(view, neuron),
                       failed=lambda why: ReadFailed(f"cannot read layer {layer}: {why}"))

    @on(ViewLoaded)
    def _view_loaded(self, message: ViewLoaded) -> None:
        view = message.view
        if view.layer != self.layer_index or view.state != self.state:
            return  # a newer request is on its way
        self.view = view
        self.table.empty_text = empty_message(view.layer, view.state, view.counts)
        self.table.set_view(view, message.neuron)
        self._update_title()
        # the neighbours, kept by the summary's table cache (only a guess: a failure is the real read's to report)
        neighbours = [n for n in (view.layer + 1, view.layer - 1) if 0 <= n < self.explorer.info.n_layers]
        read_in_thread(self, lambda: [self.explorer.table(n) for n in neighbours], group="prefetch")

    # ---- header lines ----
    def _update_title(self, loading: bool = False) -> None:
        info, view = self.explorer.info, self.view
        sort_title = next(c.title for c in COLUMNS if c.key == self.state.sort)
        shown = len(view) if view is not None and not loading else None
        self.query_one("#title", Static).update(layer_heading(info, self.layer_index, self.state, sort_title, shown))
        counts = view.counts if view is not None and view.layer == self.layer_index else {}
        present = view.present if view is not None else ()
        self.query_one("#filters", Static).update(filter_bar(info, self.state, counts, self.filter_keys(), present,
                                                             self.size.width or 80))

    def on_resize(self) -> None:
        self._update_title(loading=self.view is None)

    def filter_keys(self) -> dict[str, str]:
        """The key of each filter (and of the picker, "pick"), as bound now (a keymap may rebind them)."""
        keys: dict[str, str] = {}
        for key, binding in self._bindings:
            if binding.id and binding.id.startswith("layer.filter."):
                keys.setdefault(binding.id.removeprefix("layer.filter."), self.app.get_key_display(binding))
        return keys

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

    def action_pick_filter(self) -> None:
        info, counts = self.explorer.info, self.view.counts if self.view is not None else {}
        keys = self.filter_keys()
        choices = []
        for name in FILTERS:
            available = name not in ANALYSIS_FILTERS or info.has_analysis
            choices.append((name, filter_choice(name, keys.get(name, ""), counts.get(name), available), available))
        self.post_message(PickFilter(choices, self.state.filter,
                                     lambda name: self.action_filter(name) if name is not None else None))

    def action_search_mode(self) -> None:
        """Search the whole token (` of`), or any token containing the text (` offering` too)."""
        substring = not self.state.substring
        self.query_one("#search", Input).placeholder = self.SEARCH_PLACEHOLDER[substring]
        self.notify("search: any token containing the text" if substring else "search: the whole token", timeout=2)
        self._set_state(substring=substring)

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
        self.post_message(OpenNeuron(self.layer_index, neuron, lambda: self.view.order if self.view else None,
                                     self.detail_closed))

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
        self.post_message(OpenProbe(self.layer_index, self.table.neuron))

    def action_mark(self) -> None:
        if self.table.neuron is not None:
            self.post_message(MarkRequested(self.layer_index, self.table.neuron))

    def action_unmark(self) -> None:
        if self.table.neuron is not None:
            self.post_message(UnmarkRequested(self.layer_index, self.table.neuron))
