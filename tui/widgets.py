"""Widgets of the explorer: the virtual neuron table and the plot of values by position (or layer).

Widgets place what `tui.present` makes of the view-models (`viewmodel.py`); no summary logic and no
number format lives here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from .present.layers import CATEGORY_STYLES, table_cell
from .present.plot import plot
from .viewmodel import COLUMNS, LayerView, Row


def layout_columns(width: int, kind_width: int = 3) -> list[tuple[str, str, int, str]]:
    """(key, title, width, align) of each table column for a table `width` cells wide whose category
    column needs `kind_width` cells (the most kinds one neuron of the layer has)."""
    widths = {c.key: max(c.width, kind_width) if c.key == "cat" else c.width for c in COLUMNS}
    fixed = sum(w for k, w in widths.items() if k != "top") + (len(COLUMNS) - 1)
    widths["top"] = max(widths["top"], width - fixed - 1)
    return [(c.key, c.title, widths[c.key], c.align) for c in COLUMNS]


class NeuronTable(ScrollView, can_focus=True):
    """A neuron table that renders only the rows on screen (Line API), over a `LayerView`.

    Row 0 is a fixed header (sort column marked with ▲/▼); the cursor is a row of the view. A layer of
    36,864 neurons costs the same as one of 100: only `height` rows are ever formatted.
    """

    COMPONENT_CLASSES = {
        "neuron-table--header",
        "neuron-table--cursor",
        "neuron-table--sorted",
        "neuron-table--marked",
        "neuron-table--empty",
    }

    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False, tooltip="previous row", id="table.up"),
        Binding("down,j", "cursor(1)", "Down", show=False, tooltip="next row", id="table.down"),
        Binding("pageup", "page(-1)", "Page up", show=False, tooltip="one page up", id="table.pageup"),
        Binding("pagedown,space", "page(1)", "Page down", show=False, tooltip="one page down", id="table.pagedown"),
        Binding("home", "jump(0)", "First row", show=False, tooltip="first row", id="table.home"),
        Binding("end", "jump(-1)", "Last row", show=False, tooltip="last row", id="table.end"),
        Binding("enter", "select", "Open", tooltip="open the neuron's detail", id="table.open"),
    ]

    cursor = reactive(0, always_update=True)

    class Highlighted(Message):
        def __init__(self, table: "NeuronTable", neuron: int | None) -> None:
            super().__init__()
            self.table, self.neuron = table, neuron

    class Selected(Message):
        def __init__(self, table: "NeuronTable", neuron: int) -> None:
            super().__init__()
            self.table, self.neuron = table, neuron

    class HeaderClicked(Message):
        def __init__(self, table: "NeuronTable", column: str) -> None:
            super().__init__()
            self.table, self.column = table, column

    PAGES = 64  # pages of rows kept formatted (each one screen high)

    def __init__(self, *, empty_text: str = "no neurons match", **kwargs) -> None:
        super().__init__(**kwargs)
        self.view: LayerView | None = None
        self.empty_text = empty_text
        self._pages: LRUCache[int, list[Row]] = LRUCache(self.PAGES)

    # ---- data ----
    def set_view(self, view: LayerView | None, neuron: int | None = None) -> None:
        """Show `view`; put the cursor on `neuron` when it is in the view, else on the first row."""
        self.view = view
        self._pages.clear()
        n = len(view) if view is not None else 0
        self.virtual_size = Size(0, n + 1)
        row = view.row_of(neuron) if (view is not None and neuron is not None) else None
        self.cursor = row if row is not None else 0
        if row is None:
            self.scroll_to(y=0, animate=False, immediate=True)
        self.call_after_refresh(self.scroll_cursor_into_view)  # once laid out: a table not shown yet has no height
        self.refresh()

    def show_neuron(self, neuron: int) -> None:
        """Put the cursor on `neuron` (when the view holds it) and scroll it into view: the detail
        screen stepped to it, or go-to opened it."""
        row = self.view.row_of(neuron) if self.view is not None else None
        if row is not None:
            self.cursor = row
            self.call_after_refresh(self.scroll_cursor_into_view)

    @property
    def neuron(self) -> int | None:
        return self.view.neuron_at(self.cursor) if self.view is not None else None

    def _row(self, index: int) -> Row | None:
        if self.view is None or not 0 <= index < len(self.view):
            return None
        height = max(1, self.size.height)
        start = index - index % height
        page = self._pages.get(start)
        if page is None:
            page = self._pages[start] = self.view.page(start, height)
        return page[index - start] if index - start < len(page) else None

    # ---- cursor ----
    def validate_cursor(self, value: int) -> int:
        n = len(self.view) if self.view is not None else 0
        return max(0, min(value, n - 1)) if n else 0

    def watch_cursor(self, value: int) -> None:
        self.scroll_cursor_into_view()
        self.refresh()
        self.post_message(self.Highlighted(self, self.neuron))

    def scroll_cursor_into_view(self) -> None:
        """Scroll so the cursor's row is on screen: to the nearest edge for a step, to the middle for
        a jump from far away."""
        body = self.size.height - 1
        if body < 1:
            return  # not laid out yet; on_resize comes back here
        top = int(self.scroll_offset.y)
        if top <= self.cursor < top + body:
            return
        if top - body <= self.cursor < top + 2 * body:  # a step or a page: keep the motion smooth
            y = self.cursor if self.cursor < top else self.cursor - body + 1
        else:
            y = self.cursor - body // 2
        self.scroll_to(y=max(0, y), animate=False, immediate=True)

    def action_cursor(self, delta: int) -> None:
        self.cursor += delta

    def action_page(self, direction: int) -> None:
        self.cursor += direction * max(1, self.size.height - 2)

    def action_jump(self, where: int) -> None:
        self.cursor = 0 if where == 0 else (len(self.view) - 1 if self.view is not None else 0)

    def action_select(self) -> None:
        neuron = self.neuron
        if neuron is not None:
            self.post_message(self.Selected(self, neuron))

    def on_resize(self, event: events.Resize) -> None:
        n = len(self.view) if self.view is not None else 0
        self.virtual_size = Size(0, n + 1)
        self._pages.clear()
        self.scroll_cursor_into_view()

    def on_click(self, event: events.Click) -> None:
        if event.y == 0:
            x = 0
            for key, _, width, _ in self._columns(self.size.width):
                if x <= event.x < x + width + 1:
                    self.post_message(self.HeaderClicked(self, key))
                    return
                x += width + 1
            return
        index = int(self.scroll_offset.y) + event.y - 1
        if self.view is not None and 0 <= index < len(self.view):
            if index == self.cursor and event.chain >= 2:
                self.action_select()
            self.cursor = index

    # ---- rendering ----
    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        columns = self._columns(width)
        if y == 0:
            return self._header(columns, width, base)
        index = int(self.scroll_offset.y) + y - 1
        row = self._row(index)
        if row is None:
            if index == 0:
                style = base + self.get_component_rich_style("neuron-table--empty")
                return Strip([Segment(set_cell_size(f" {self.empty_text}", width), style)], width)
            return Strip.blank(width, base)
        style = base
        if index == self.cursor:
            style = base + self.get_component_rich_style("neuron-table--cursor")
            if not self.has_focus:
                style += Style(dim=True)
        return self._row_strip(row, columns, width, style)

    def _columns(self, width: int) -> list[tuple[str, str, int, str]]:
        return layout_columns(width, self.view.kind_width if self.view is not None else 3)

    def _header(self, columns, width: int, base: Style) -> Strip:
        style = base + self.get_component_rich_style("neuron-table--header")
        sorted_style = style + self.get_component_rich_style("neuron-table--sorted")
        state = self.view.state if self.view is not None else None
        segments = []
        for i, (key, title, w, align) in enumerate(columns):
            label = title
            is_sorted = state is not None and state.sort == key
            if is_sorted:
                label = f"{title}{'▼' if state.descending else '▲'}"
            label = label.rjust(w) if align == "right" else label.ljust(w)
            segments.append(Segment(set_cell_size(label, w), sorted_style if is_sorted else style))
            if i < len(columns) - 1:
                segments.append(Segment(" ", style))
        return _fill_strip(segments, width, style)

    def _row_strip(self, row: Row, columns, width: int, style: Style) -> Strip:
        segments: list[Segment] = []
        mark_style = style + self.get_component_rich_style("neuron-table--marked")
        for i, (key, _, w, align) in enumerate(columns):
            if key == "cat":
                letters = table_cell(row, key)
                segments.extend(Segment(ch, style + CATEGORY_STYLES[ch]) for ch in letters[:w])
                segments.append(Segment(" " * (w - len(letters[:w])), style))
            elif key == "id":
                text = f"{row.neuron}"
                pad = max(0, w - len(text) - 1)
                segments.append(Segment(" " * pad + ("*" if row.marked else " "), mark_style))
                segments.append(Segment(text[: w - 1], style))
            else:
                text = table_cell(row, key)
                text = text.rjust(w) if align == "right" else text.ljust(w)
                segments.append(Segment(set_cell_size(text, w), style))
            if i < len(columns) - 1:
                segments.append(Segment(" ", style))
        return _fill_strip(segments, width, style)


def _fill_strip(segments: list[Segment], width: int, style: Style) -> Strip:
    """A table line of exactly `width` cells: padded with `style` when short, cropped when long."""
    used = sum(cell_len(s.text) for s in segments)
    if used < width:
        segments.append(Segment(" " * (width - used), style))
    return Strip(segments, width).crop(0, width)


class PositionPlot(Widget):
    """Values over positions (or layers) as a multi-row sparkline, its scale on the left and the first
    and last x below: the neuron screen's firing rate by position, the overview's curves over depth."""

    DEFAULT_CSS = """
    PositionPlot { height: 5; }
    """

    COMPONENT_CLASSES = {"position-plot--bar", "position-plot--axis"}

    def __init__(self, values: np.ndarray | None = None, x_label: str = "t={}", x_unit: str = "positions",
                 scale_text: Callable[[float], str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.values = np.zeros(0) if values is None else np.asarray(values, dtype=np.float64)
        self.x_label, self.x_unit = x_label, x_unit  # how an x value reads under the plot ("t={}", "L{}")
        self.scale_text = scale_text  # how the top of the scale reads (None: 3 significant digits)

    def set_values(self, values: np.ndarray) -> None:
        self.values = np.asarray(values, dtype=np.float64)
        self.refresh()

    def render(self) -> Text:
        return plot(self.values, self.size.width, self.size.height, self.x_label, self.x_unit, self.scale_text,
                    bar=self.get_component_rich_style("position-plot--bar"),
                    axis=self.get_component_rich_style("position-plot--axis"))
