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
    fig = layout(figure)
    fig.savefig(path, format=fmt, metadata=METADATA[fmt], dpi=120)
    plt.close(fig)
    return path


def layout(figure: Figure):
    """The matplotlib figure of `figure`: bands from the top, each as high as it needs (in inches, so
    nothing overlaps whatever the count of panels and models): the title, the legend of the models,
    the panels, the caption. Counts are drawn as whole numbers, shares in percent."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    n = len(figure.panels)
    cols = 2 if n == 4 else min(3, n)
    rows = math.ceil(n / cols)
    profiles = figure.xlabel.startswith("position")
    models = {s.model: s.label for p in figure.panels for s in p.series}
    width = PANEL_SIZE[0] * cols
    caption_lines = max(1, math.ceil(len(figure.caption) / (width * 15)))  # about 15 characters an inch at 8 pt
    caption = 0.2 + 0.16 * caption_lines  # inches under the panels
    per_row = max(1, int(width // 3))  # legend entries of about 3 inches
    legend = 0 if profiles or not figure.legend else 0.22 * math.ceil(len(models) / per_row) + 0.05
    title = 0.45
    height = PANEL_SIZE[1] * rows + title + legend + caption
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
    for ax, panel in zip(axes.flat, figure.panels):
        top = 0.0
        for series in panel.series:
            y = [math.nan if v is None else v for v in series.y]
            top = max([top, *(v for v in y if not math.isnan(v))])
            style = {"linewidth": 1.2} if profiles else {"marker": "o", "markersize": 3, "linewidth": 1.5}
            ax.plot(series.x, y, label=series.label if profiles else series.model, **style)
        if panel.title:
            ax.set_title(panel.title, fontsize=10)
        if figure.xscale == "symlog":  # linear within the smallest bin around 0, logarithmic beyond
            xs = [abs(x) for s in panel.series for x in s.x if x]
            ax.set_xscale("symlog", linthresh=min(xs, default=1.0))
        ax.set_xlabel(figure.xlabel, fontsize=8)
        ax.set_ylabel(panel.ylabel, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if figure.share:  # shares: the zero line is part of the reading; a panel of zeros spans 0..1%
            ax.set_ylim(0, None if top > 0 else 0.01)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        elif not profiles:  # counts: whole numbers, and a panel of zeros spans 0..1, not 0..0.05
            ax.set_ylim(0, max(1.0, top * 1.05))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            ax.set_ylim(bottom=0)
        if profiles:
            if panel.series:
                ax.legend(fontsize=6, loc="best")
            else:
                ax.text(0.5, 0.5, "none of this type", ha="center", va="center", transform=ax.transAxes, fontsize=9,
                        color="gray")
                ax.set_xticks([])  # no scale for nothing
                ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(figure.title, fontsize=12, x=0.01, y=1 - 0.08 / height, ha="left", va="top")
    if legend:  # one legend for the figure, in a band of its own under the title
        handles = axes.flat[0].get_lines()
        fig.legend(handles, [models[h.get_label()] for h in handles], loc="upper left", fontsize=8, frameon=False,
                   bbox_to_anchor=(0.005, 1 - title / height), ncols=min(len(handles), per_row), borderaxespad=0)
    fig.text(0.01, 0.01, figure.caption, fontsize=8, ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, caption / height, 1, 1 - (title + legend) / height), pad=0.4, h_pad=1.2, w_pad=1.2)
    return fig


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
