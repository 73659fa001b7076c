"""Values drawn with block characters: the one plot of the explorer and the command line (a firing
rate by position, a curve over depth), and the overview's horizontal bars."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from rich.style import Style
from rich.text import Text

BLOCKS = " ▁▂▃▄▅▆▇█"
HBLOCKS = " ▏▎▍▌▋▊▉█"
LABEL_WIDTH = 8  # the scale's labels, left of the plot


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


def plot(values: np.ndarray, width: int, height: int, x_label: str = "t={}", x_unit: str = "positions",
         scale_text: Callable[[float], str] | None = None, bar: Style | str = "", axis: Style | str = "") -> Text:
    """`values` over positions (or layers) in `width` x `height` cells: rows of bars scaled to the
    largest value, its scale on the left, the first and last x below (`x_label` formats an x)."""
    rows = max(2, height) - 1
    plot_width = max(1, width - LABEL_WIDTH)
    scale_text = scale_text or (lambda v: f"{v:.3g}")
    text = Text(no_wrap=True, overflow="crop")
    if len(values) == 0:
        text.append("no positions", style=axis)
        return text
    data, per, _ = buckets(values, plot_width)
    vmax = float(values.max())
    scaled = data / vmax * rows * 8 if vmax > 0 else np.zeros_like(data)
    for r in range(rows):
        label = scale_text(vmax) if r == 0 else ("0" if r == rows - 1 else "")
        text.append(label.rjust(LABEL_WIDTH - 1) + "┤", style=axis)
        floor = (rows - 1 - r) * 8
        text.append("".join(BLOCKS[int(min(8, max(0, round(v - floor))))] for v in scaled), style=bar)
        text.append("\n")
    left, right = x_label.format(0), x_label.format(len(values) - 1)
    span = len(data)
    mid = f"{per} {x_unit} per column" if per > 1 else ""
    line = left + mid.center(max(0, span - len(left) - len(right))) + right if span >= len(left) + len(right) else left
    text.append(" " * LABEL_WIDTH + line, style=axis)
    return text
