"""The command line's tables (`report`, `report A B`, `neurons`): columns as wide as their widest cell,
one line per row, never wrapped.

A Rich `Table` measures every cell of every row and wraps what does not fit, so a model-wide `neurons`
(46,080 rows for SmolLM2) took a minute, and a narrow screen cut numbers. Here a column of numbers is
always as wide as its widest number (the formatters in `formats` bound that width); only a column of
text marked `flexible` gives way when the table is wider than the screen, cut with "…"; a table still
wider than the screen is printed whole (its lines longer than the screen) rather than cut. Lines carry no
trailing spaces and no blank line comes before the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len, set_cell_size
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

GAP = " "  # between columns


@dataclass(frozen=True)
class Column:
    header: str
    justify: str = "right"  # "left" for text
    flexible: bool = False  # text that may be cut with … when the table is wider than the screen


class ColumnTable:
    """A title line, a header, a rule and one line per row of plain-text cells."""

    def __init__(self, columns: Sequence[Column], rows: Sequence[Sequence[str]], title: Text | str | None = None):
        self.columns, self.rows, self.title = list(columns), rows, title

    def widths(self, max_width: int) -> list[int]:
        """Each column's width: its widest cell; flexible ones shrink (to their header, at least 8
        cells) while the table is wider than `max_width`."""
        widths = [max([cell_len(c.header), *(cell_len(r[k]) for r in self.rows)]) for k, c in enumerate(self.columns)]
        excess = sum(widths) + len(GAP) * (len(widths) - 1) - max_width
        for k, c in enumerate(self.columns):
            if excess > 0 and c.flexible:
                floor = max(cell_len(c.header), min(8, widths[k]))
                cut = min(excess, widths[k] - floor)
                widths[k] -= cut
                excess -= cut
        return widths

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        """At least the width of every column of numbers (flexible text shrunk), at most the natural
        width: a console narrower than the minimum must widen to it (`Output.show`), never cut."""
        def total(widths: list[int]) -> int:
            return sum(widths) + len(GAP) * (len(widths) - 1)

        return Measurement(total(self.widths(0)), total(self.widths(1 << 30)))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        widths = self.widths(options.max_width)
        if self.title:
            yield from console.render(Text(self.title) if isinstance(self.title, str) else self.title, options)
        yield Segment(self._line([c.header for c in self.columns], widths), Style(bold=True))
        yield Segment.line()
        yield Segment("─" * (sum(widths) + len(GAP) * (len(widths) - 1)))
        yield Segment.line()
        for row in self.rows:
            yield Segment(self._line(row, widths) + "\n")

    def _line(self, cells: Sequence[str], widths: list[int]) -> str:
        out = []
        for cell, width, column in zip(cells, widths, self.columns):
            if cell_len(cell) > width:
                cell = set_cell_size(cell, width - 1) + "…"
            pad = " " * (width - cell_len(cell))
            out.append(pad + cell if column.justify == "right" else cell + pad)
        return GAP.join(out).rstrip()
