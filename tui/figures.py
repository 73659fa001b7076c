"""The paper's figures as files (`neuron-tui figures A.h5 [B.h5 ...] -o DIR [--format svg|png|pdf]`):
matplotlib on its headless Agg backend draws what core.read.figures computes, and DIR/figures.json keeps
every plotted number.

One file per figure, its panels side by side (three to a row), one line per model with the model's
name and corpus size in the legend, the caption under the panels. Shares are drawn in percent. The
files are reproducible (no dates in their metadata, a fixed SVG id salt), so committed images change
only when the numbers do.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from neuron_tui.core.errors import UsageError
from neuron_tui.core.read.figures import Figure

FORMATS = ("svg", "png", "pdf")
PANEL_SIZE = (4.2, 3.0)  # inches per panel
METADATA = {"svg": {"Date": None}, "pdf": {"CreationDate": None, "ModDate": None}, "png": {"Software": None}}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UsageError("figures need matplotlib: pip install 'neuron-tui[figures]' (or pip install matplotlib)") from None
    matplotlib.use("Agg", force=True)
    matplotlib.rcParams["svg.hashsalt"] = "neuron-tui"
    import matplotlib.pyplot as plt

    return plt


def draw(figure: Figure, path: Path, fmt: str) -> Path:
    """One figure into `path` (its format `fmt`)."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    n = len(figure.panels)
    cols = 2 if n == 4 else min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * rows + 0.9), squeeze=False)
    profiles = figure.xlabel.startswith("position")
    for ax, panel in zip(axes.flat, figure.panels):
        for series in panel.series:
            y = [math.nan if v is None else v for v in series.y]
            style = {"linewidth": 1.2} if profiles else {"marker": "o", "markersize": 3, "linewidth": 1.5}
            ax.plot(series.x, y, label=series.label if profiles else series.model, **style)
        if panel.title:
            ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(figure.xlabel, fontsize=8)
        ax.set_ylabel(panel.ylabel, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)  # counts and shares: the zero line is part of the reading
        if figure.share:
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        else:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if profiles:
            if panel.series:
                ax.legend(fontsize=6, loc="upper right")
            else:
                ax.text(0.5, 0.5, "none of this type", ha="center", va="center", transform=ax.transAxes, fontsize=9,
                        color="gray")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    if not profiles:  # one legend for the figure: the models and their corpus sizes
        labels = {s.model: s.label for p in figure.panels for s in p.series}
        handles = axes.flat[0].get_lines()
        fig.legend(handles, [labels[h.get_label()] for h in handles], loc="upper right", fontsize=8, frameon=False)
    fig.suptitle(figure.title, fontsize=12, x=0.02, ha="left")
    fig.text(0.02, 0.01, figure.caption, fontsize=8, ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.08, 1, 0.93))
    fig.savefig(path, format=fmt, metadata=METADATA[fmt], dpi=120)
    plt.close(fig)
    return path


def write_figures(figures: Sequence[Figure], out: Path, fmt: str, models: list[dict]) -> list[Path]:
    """Every figure as DIR/NAME.fmt, and DIR/figures.json with every plotted number."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {out}: {exc.strerror or exc}") from None
    _pyplot()  # refuse before writing anything when matplotlib is missing
    paths = []
    try:
        for figure in figures:
            paths.append(draw(figure, out / f"{figure.name}.{fmt}", fmt))
        data = {"format": fmt, "models": models, "figures": [f.to_json() for f in figures],
                "files": [p.name for p in paths]}
        (out / "figures.json").write_text(json.dumps(data, indent=1) + "\n")
    except OSError as exc:
        raise UsageError(f"cannot write into {out}: {exc.strerror or exc}") from None
    return paths
