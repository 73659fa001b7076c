"""Widgets of the explorer: the virtual neuron table, the position plot, depth bars.

Widgets only format what the view-models (`viewmodel.py`) computed; no summary logic lives here.
"""

from __future__ import annotations

import math

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

from neuron_tui.core.read import kinds

from .viewmodel import COLUMNS, LayerView, Row, rank_text

BLOCKS = " ▁▂▃▄▅▆▇█"
HBLOCKS = " ▏▎▍▌▋▊▉█"

CATEGORY_STYLES = {**{k.letter: Style.parse(k.style) for k in kinds.KINDS}, "·": Style(dim=True)}


def hbar(fraction: float, width: int) -> str:
    """A horizontal bar of `width` cells filled to `fraction` (0..1) with eighth-block precision."""
    if width <= 0:
        return ""
    fraction = 0.0 if not math.isfinite(fraction) else min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    if fraction > 0 and eighths == 0:
        eighths = 1  # a non-zero value is never drawn as nothing
    full, part = divmod(eighths, 8)
    return ("█" * full + (HBLOCKS[part] if part else "")).ljust(width)


def fmt_rate(rate: float) -> str:
    if rate == 0:
        return "0"
    return f"{rate:.3g}"


def fmt_count(value: float) -> str:
    """Counts: exact integers as such, estimates (from sampled events) with a ~."""
    if value >= 1e6:
        return f"{value / 1e6:.3g}M"
    if value >= 1e4:
        return f"{value / 1e3:.3g}k"
    return f"{value:,.0f}"


def layout_columns(width: int) -> list[tuple[str, str, int, str]]:
    """(key, title, width, align) of each table column for a table `width` cells wide."""
    fixed = sum(c.width for c in COLUMNS if c.key != "top") + (len(COLUMNS) - 1)
    top = max(COLUMNS[4].width, width - fixed - 1)
    return [(c.key, c.title, top if c.key == "top" else c.width, c.align) for c in COLUMNS]


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
            for key, _, width, _ in layout_columns(self.size.width):
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
        columns = layout_columns(width)
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
                for ch in row.cat[:w].ljust(w):
                    segments.append(Segment(ch, style + CATEGORY_STYLES.get(ch, Style())))
            elif key == "id":
                text = f"{row.neuron}"
                pad = max(0, w - len(text) - 1)
                segments.append(Segment(" " * pad + ("*" if row.marked else " "), mark_style))
                segments.append(Segment(text[: w - 1], style))
            else:
                if key == "rate":
                    text = fmt_rate(row.rate)
                elif key == "distinct":
                    text = "–" if row.distinct < 0 else str(row.distinct)
                elif key == "top":
                    text = row.top or ("–" if row.distinct < 0 else "")
                elif key == "pos":
                    text = "–" if math.isnan(row.pos_mi) else f"{row.pos_mi:.3f}"
                elif key == "supp":
                    text = rank_text(row.supp)
                else:
                    text = ""
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
                 scale_text=None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.values = np.zeros(0) if values is None else np.asarray(values, dtype=np.float64)
        self.x_label, self.x_unit = x_label, x_unit  # how an x value reads under the plot ("t={}", "L{}")
        self.scale_text = scale_text or (lambda v: f"{v:.3g}")  # how the top of the scale reads

    def set_values(self, values: np.ndarray) -> None:
        self.values = np.asarray(values, dtype=np.float64)
        self.refresh()

    @staticmethod
    def buckets(values: np.ndarray, width: int) -> tuple[np.ndarray, int, int]:
        """Columns to draw for `width` cells: (column heights, positions per column, columns per position).

        More positions than cells: each column is the maximum of a run of positions (peaks survive);
        fewer: each position is drawn `width // n` columns wide, so the plot fills the width.
        """
        n = len(values)
        if n == 0 or width <= 0:
            return np.zeros(0), 1, 1
        if n <= width:
            repeat = max(1, width // n)
            return np.repeat(values, repeat), 1, repeat
        per = math.ceil(n / width)
        padded = np.full(math.ceil(n / per) * per, -np.inf)
        padded[:n] = values
        return padded.reshape(-1, per).max(1), per, 1

    def render(self) -> Text:
        height = max(2, self.size.height)
        rows = height - 1
        label_w = 8
        width = max(1, self.size.width - label_w)
        bar = self.get_component_rich_style("position-plot--bar")
        axis = self.get_component_rich_style("position-plot--axis")
        values = self.values
        text = Text(no_wrap=True, overflow="crop")
        if len(values) == 0:
            text.append("no positions", style=axis)
            return text
        data, per, repeat = self.buckets(values, width)
        vmax = float(values.max())
        scaled = data / vmax * rows * 8 if vmax > 0 else np.zeros_like(data)
        for r in range(rows):
            label = self.scale_text(vmax) if r == 0 else ("0" if r == rows - 1 else "")
            text.append(label.rjust(label_w - 1) + "┤", style=axis)
            floor = (rows - 1 - r) * 8
            cells = "".join(BLOCKS[int(min(8, max(0, round(v - floor))))] for v in scaled)
            text.append(cells, style=bar)
            text.append("\n")
        left, right = self.x_label.format(0), self.x_label.format(len(values) - 1)
        span = len(data)
        mid = f"{per} {self.x_unit} per column" if per > 1 else ""
        line = left + mid.center(max(0, span - len(left) - len(right))) + right if span >= len(left) + len(right) else left
        text.append(" " * label_w + line, style=axis)
        return text


def share_text(frac: float) -> str:
    """A share of a layer as the overview prints it: whole percents from 10%, one decimal below."""
    return f"{100 * frac:.0f}%" if frac >= 0.095 or frac == 0 else f"{100 * frac:.1f}%"


def depth_bar_cell(count: int | None, total: int, scale: float, width: int, show_count: bool) -> Text:
    """One overview cell: percentage (and count) of the layer, plus a bar whose full width is `scale`
    (the column's largest share, which its header shows)."""
    if count is None:
        return Text("–".center(width), style="dim")
    frac = count / total if total else 0.0
    pct = share_text(frac)
    label = f"{count:>6,} {pct:>5}" if show_count else f"{pct:>5}"
    bar_w = max(1, width - len(label) - 1)
    text = Text(label + " ")
    text.append(hbar(frac / scale if scale > 0 else 0.0, bar_w), style="bold")
    return text
